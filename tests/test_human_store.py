"""The human label store (RUN/human/): append-only checksummed records, safe against kill -9 and
concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labeler.core.errors import InputError
from labeler.store.human import (
    annotators,
    append_label,
    encode_label,
    labels_by_pair,
    labels_file,
    new_label,
    read_human_labels,
    read_labels_file,
)

ROOT = Path(__file__).resolve().parents[1]
APPENDER = """
import sys
from pathlib import Path
from labeler.store.human import append_label, new_label
run, who, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(count):
    append_label(run, new_label(f"pair-{i}", "ana", "A" if who == "one" else "B", note=who + "-" * 300))
"""


def _python(code: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env)


def test_last_record_of_each_annotator_and_pair_wins(tmp_path: Path) -> None:
    append_label(tmp_path, new_label("p1", "ana", "A", "first look"))
    append_label(tmp_path, new_label("p2", "ana", "tie"))
    append_label(tmp_path, new_label("p1", "ana", "B", "changed my mind"))
    append_label(tmp_path, new_label("p1", "bo", "skip"))
    labels = read_human_labels(tmp_path)
    assert {key: label.choice for key, label in labels.items()} == {
        ("ana", "p1"): "B", ("ana", "p2"): "tie", ("bo", "p1"): "skip"}  # fmt: skip
    assert labels[("ana", "p1")].note == "changed my mind"
    assert annotators(tmp_path) == ["ana", "bo"]
    assert sorted(labels_by_pair(labels)["p1"]) == ["ana", "bo"]
    assert len(read_labels_file(labels_file(tmp_path, "ana"))) == 3  # append-only: nothing rewritten


def test_bad_values_name_their_field(tmp_path: Path) -> None:
    with pytest.raises(InputError) as bad_choice:
        new_label("p1", "ana", "C")
    assert bad_choice.value.field == "choice"
    with pytest.raises(InputError) as bad_name:
        labels_file(tmp_path, "../etc")
    assert bad_name.value.field == "annotator"


def test_an_altered_record_is_refused_with_its_line(tmp_path: Path) -> None:
    for choice in ("A", "B", "tie"):
        append_label(tmp_path, new_label(f"p-{choice}", "ana", choice))
    path = labels_file(tmp_path, "ana")
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"choice":"B"', '"choice":"A"')
    path.write_text("".join(lines))
    with pytest.raises(InputError, match="checksum") as error:
        read_human_labels(tmp_path)
    assert error.value.line == 2 and error.value.file == str(path)


def test_concurrent_appends_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    count = 150
    writers = [_python(APPENDER, str(tmp_path), who, str(count)) for who in ("one", "two")]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    records = read_labels_file(labels_file(tmp_path, "ana"))  # every line whole, every checksum right
    assert len(records) == 2 * count
    assert sorted(r.note[:3] for r in records) == ["one"] * count + ["two"] * count
    assert {r.pair_id for r in records if r.choice == "A"} == {f"pair-{i}" for i in range(count)}


def test_kill_9_mid_write_loses_only_the_torn_record_and_the_next_append_repairs(tmp_path: Path) -> None:
    for i in range(3):
        append_label(tmp_path, new_label(f"p{i}", "ana", "A"))
    path = labels_file(tmp_path, "ana")
    # A writer killed halfway through its record: it writes half the line, then is killed with SIGKILL.
    half = encode_label(new_label("torn", "ana", "B"))[:40]
    torn_writer = _python(
        "import os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)\n"
        "os.write(fd, bytes.fromhex(sys.argv[2])); os.fsync(fd)\n"
        "print('written', flush=True); time.sleep(60)\n",
        str(path),
        half.hex(),
    )
    deadline = time.monotonic() + 30
    while path.stat().st_size < 3 * len(encode_label(new_label("p0", "ana", "A"))) + 40:
        assert time.monotonic() < deadline, "the writer never wrote"
        time.sleep(0.05)
    os.kill(torn_writer.pid, signal.SIGKILL)
    assert torn_writer.wait(timeout=30) == -signal.SIGKILL
    assert not path.read_bytes().endswith(b"\n")
    assert sorted(read_human_labels(tmp_path)) == [("ana", "p0"), ("ana", "p1"), ("ana", "p2")]
    append_label(tmp_path, new_label("p3", "ana", "tie"))
    text = path.read_text()
    assert "torn" not in text and text.endswith("\n") and len(text.splitlines()) == 4
    assert read_human_labels(tmp_path)[("ana", "p3")].choice == "tie"


def test_a_real_appender_killed_at_any_moment_leaves_a_readable_file(tmp_path: Path) -> None:
    writer = _python(APPENDER, str(tmp_path), "one", "100000")
    path = labels_file(tmp_path, "ana")
    deadline = time.monotonic() + 30
    while not path.exists() or path.stat().st_size < 20_000:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    before = read_labels_file(path)
    assert before and all(r.choice == "A" for r in before)
    append_label(tmp_path, new_label("after", "ana", "B"))
    after = read_labels_file(path)
    assert after[:-1] == before and after[-1].pair_id == "after"
