"""What leaves a run (`labeler export`, `labeler push`) is the run's own data and nothing of the machine:
no absolute path in a published card, manifest or report; temporary folders of a killed export are removed
by the next one (only those, never anything else next to OUT); a full disk during an export is one
message naming the file, exit 1, and no export left half-written. Links out of the run are refused
(rows of tests/test_bad_input.py, CASES_PUBLISHING); here a link that stays inside the run is followed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sample_runs import judged

from labeler.cli.app import main
from labeler.publish import export as export_module
from labeler.publish.export import ExportConfig, ExportWriteError, export_run
from labeler.publish.push import PushConfig, plan_push
from labeler.store import RunStore, load_manifest, read_split
from labeler.store.published import published_bytes

REPO = Path(__file__).resolve().parent.parent
# An absolute path of two names or more, where a path starts: line start, blank, quote, backtick, `=`, `(`.
ABSOLUTE_PATH = re.compile(r"(?:^|[\s\"'`=(])~?/[^\s/\"'`]+/", re.MULTILINE)


def made_from_local_files(folder: Path, rows: int = 9) -> Path:
    """A run whose fingerprint names its inputs by absolute path, as runs of this labeler do: constitution,
    pairs, a local judge model folder, and stage statistics that mention the input file."""
    inputs = folder / "inputs"
    inputs.mkdir(parents=True)
    constitution, pairs, judge = inputs / "c.yaml", inputs / "p.jsonl", inputs / "models" / "my-judge"
    fingerprint = {
        "config": {"constitution": str(constitution), "pairs": str(pairs), "command": f"label --pairs {pairs}",
                   "few_shot_file": "../private/demos.json", "templates": "my-templates/judge.jinja",
                   "policy": "HuggingFaceTB/SmolLM2-135M-Instruct"},
        "models": {"judge": str(judge)},
        "constitution_sha256": "0" * 64,
        "constitution": {"name": "kind", "version": 1, "license": "cc-by-4.0"},
    }
    run = folder / "runs" / "my-run"
    store = RunStore.open(run, "preferences", fingerprint)
    store.write_shard([judged(i) for i in range(rows)])
    store.mark_complete(stats={"skipped": {str(pairs): 0}, "read_from": str(pairs)})
    return run


def assert_no_local_path(text: str, folder: Path, where: str) -> None:
    assert str(folder) not in text, where
    assert str(Path.home()) + "/" not in text, where
    found = ABSOLUTE_PATH.search(text)
    assert found is None, (where, text[max(0, found.start() - 80) : found.end() + 80])


def test_an_export_publishes_file_names_never_local_paths(tmp_path: Path) -> None:
    run = made_from_local_files(tmp_path)
    assert str(tmp_path) in (run / "manifest.json").read_text()  # the run itself keeps what it was given
    out = tmp_path / "exports" / "kind"
    export_run(ExportConfig(run=run, out=out))

    for path in sorted(out.rglob("*")):
        if path.suffix in (".json", ".md"):
            assert_no_local_path(path.read_text(), tmp_path, path.name)
    card = (out / "README.md").read_text()
    manifest = load_manifest(out)
    config = manifest.splits["preferences"].fingerprint["config"]
    assert config["constitution"] == "c.yaml" and config["pairs"] == "p.jsonl"
    assert config["command"] == "label --pairs p.jsonl"
    assert (config["few_shot_file"], config["templates"]) == ("demos.json", "judge.jinja")  # relative paths too
    assert config["policy"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a Hub id is no path
    assert manifest.splits["preferences"].fingerprint["models"] == {"judge": "my-judge"}
    assert manifest.splits["preferences"].stats == {"skipped": {"p.jsonl": 0}, "read_from": "p.jsonl"}
    assert '"pairs": "p.jsonl"' in card and "judge model: `my-judge`" in card
    assert manifest.splits["preferences"].fingerprint["constitution_sha256"] == "0" * 64  # hashes stay
    assert read_split(out, "preferences").num_rows == 9  # still a run, verified


def test_a_push_sends_no_local_path_in_card_manifest_or_report(tmp_path: Path) -> None:
    from labeler.report import write_report

    run = made_from_local_files(tmp_path)
    write_report(run)
    report_text = (run / "report" / "statistics.json").read_text() + (run / "report" / "index.md").read_text()
    assert str(tmp_path) in report_text  # the report on disk names the run folder
    plan = plan_push(PushConfig(run=run, repo="acme/kind", dry_run=True, with_report=True))
    sent = {upload.path_in_repo: upload for upload in plan.uploads}
    assert {"README.md", "manifest.json", "report/statistics.json", "report/index.md",
            "report/index.html"} <= set(sent)  # fmt: skip
    for name, upload in sent.items():
        data = upload.data if upload.local is None else upload.local.read_bytes()
        assert data is not None
        if name.endswith((".json", ".md", ".html")):
            assert_no_local_path(data.decode(), tmp_path, name)
            assert upload.size == len(data)
    assert json.loads(sent["report/statistics.json"].data or b"")["run"] == "my-run"  # still JSON
    plots = [name for name in sent if name.endswith(".png")]
    assert plots and all(sent[name].local == run / name for name in plots)  # figures go as they are
    manifest = json.loads(sent["manifest.json"].data or b"")
    assert manifest["splits"]["preferences"]["fingerprint"]["config"]["pairs"] == "p.jsonl"


def test_text_keeps_what_only_looks_like_a_path() -> None:
    page = ('<img src="data:image/jpeg;base64,/9j/4AAQ/Sk+/ab=="> from `/home/me/runs/x` --pairs=/srv/p.jsonl, '
            "HuggingFaceTB/SmolLM2 https://huggingface.co/datasets/a/b 3/4 </s> and/or ./data/p.jsonl")
    assert published_bytes(Path("index.html"), page.encode()).decode() == (
        '<img src="data:image/jpeg;base64,/9j/4AAQ/Sk+/ab=="> from `x` --pairs=p.jsonl, '
        "HuggingFaceTB/SmolLM2 https://huggingface.co/datasets/a/b 3/4 </s> and/or ./data/p.jsonl"
    )
    assert published_bytes(Path("plot.png"), b"/home/me/x") == b"/home/me/x"


def test_a_link_that_stays_inside_the_run_is_followed(tmp_path: Path) -> None:
    run = made_from_local_files(tmp_path)
    (run / "report").mkdir()
    (run / "report" / "index.html").write_text("<p>page</p>\n")
    (run / "notes").mkdir()
    (run / "notes" / "method.md").write_text("How it was judged.\n")
    (run / "report" / "method.md").symlink_to(Path("..") / "notes" / "method.md")
    (run / "report" / "again").symlink_to(Path("."))  # a loop inside the run is read once
    plan = plan_push(PushConfig(run=run, repo="acme/kind", dry_run=True, with_report=True))
    sent = {upload.path_in_repo: upload for upload in plan.uploads if upload.path_in_repo.startswith("report/")}
    assert set(sent) == {"report/index.html", "report/method.md"}
    assert sent["report/method.md"].data == b"How it was judged.\n"


# --- a killed export, and the next one ------------------------------------------------------------------

SLOW_EXPORT = """
import sys, time
from pathlib import Path
from labeler.publish import export
from labeler.store.shards import encode_table

calls = []
def slow(table, shard_format):
    calls.append(1)
    if len(calls) == 2:
        Path(sys.argv[3]).write_text("one shard written")
        time.sleep(120)
    return encode_table(table, shard_format)

export.encode_table = slow
export.export_run(export.ExportConfig(run=Path(sys.argv[1]), out=Path(sys.argv[2]), shard_rows=2))
"""


def labeler(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labeler", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)  # fmt: skip


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_next_export_removes_what_a_killed_export_left_and_nothing_else(tmp_path: Path) -> None:
    run = made_from_local_files(tmp_path / "in")
    exports = tmp_path / "exports"
    exports.mkdir()
    out, signal_file = exports / "kind", tmp_path / "started"
    killed = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, str(run), str(out), str(signal_file)], cwd=REPO)
    deadline = time.monotonic() + 60
    while not signal_file.exists():
        assert killed.poll() is None and time.monotonic() < deadline, "the export never started writing"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    (left,) = [path for path in exports.iterdir() if path.name.startswith(".kind.")]
    assert left.name.endswith(".partial") and (left / "preferences" / "shard-00000.arrow").is_file()
    assert not out.exists()

    # What is not a leftover of an export into `kind` stays: other targets, names that only look alike,
    # a folder of a process still running, a locked folder, a link (and what it points to), a file.
    gone = dead_pid()
    private = tmp_path / "private"
    private.mkdir()
    (private / "keep.txt").write_text("mine")
    keep = {
        f".other.{gone}-0123abcd.partial": "dir",
        f".kind.{gone}-0123ABCD.partial": "dir",
        f".kind.{gone}-0123abcd.partial.bak": "dir",
        f"kind.{gone}-0123abcd.partial": "dir",
        f".kind.{os.getpid()}-0123abcd.partial": "dir",
        f".kind.{gone}-feedbeef.partial": "locked",
        f".kind.{gone}-0badf00d.partial": "link",
        f".kind.{gone}-00000000.partial": "file",
    }
    holder = None
    for name, kind in keep.items():
        path = exports / name
        if kind == "link":
            path.symlink_to(private)
        elif kind == "file":
            path.write_text("not a folder")
        else:
            path.mkdir()
            (path / "inside.txt").write_text("x")
        if kind == "locked":  # an export still writing, from a process this machine does not see
            lock_script = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
                           "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)")  # fmt: skip
            holder = subprocess.Popen([sys.executable, "-c", lock_script, str(path)], stdout=subprocess.PIPE, text=True)
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    stale_too = exports / f".kind.{gone}-abcdef01.partial"
    stale_too.mkdir()
    try:
        result = labeler("export", str(run), "--out", str(out))
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    assert result.returncode == 0, result.stderr
    assert f"removed {left.name}" in result.stdout and f"removed {stale_too.name}" in result.stdout
    assert not left.exists() and not stale_too.exists()
    assert read_split(out, "preferences").num_rows == 9
    for name in keep:
        assert (exports / name).is_symlink() or (exports / name).exists(), name
    assert (private / "keep.txt").read_text() == "mine"
    assert sorted(path.name for path in exports.iterdir()) == sorted([*keep, "kind"])


# --- a full disk ------------------------------------------------------------------------------------------


def test_a_write_that_fails_is_one_message_naming_the_file_and_leaves_no_export(tmp_path: Path, monkeypatch,
                                                                                capsys) -> None:  # fmt: skip
    run = made_from_local_files(tmp_path / "in")
    exports = tmp_path / "exports"
    exports.mkdir()
    written = []
    real_write = export_module._write_file

    def disk_full(path: Path, data: bytes) -> None:
        written.append(path.name)
        if len(written) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data)

    monkeypatch.setattr(export_module, "_write_file", disk_full)
    with pytest.raises(ExportWriteError) as info:
        export_run(ExportConfig(run=run, out=exports / "kind", shard_rows=3))
    assert info.value.name == "preferences/shard-00001.arrow"
    assert list(exports.iterdir()) == []

    written.clear()
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run), "--out", str(exports / "kind"), "--shard-rows", "3"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "preferences/shard-00001.arrow" in err and "No space left on device" in err and "Traceback" not in err
    assert str(exports / "kind") in err and "was not created" in err and "free some space" in err
    assert list(exports.iterdir()) == []


def can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
                           capture_output=True)  # fmt: skip
    return probe.returncode == 0


@pytest.mark.skipif(not can_mount_tmpfs(), reason="this machine cannot mount a small tmpfs (no user namespaces)")
def test_a_full_disk_during_export_exits_1_with_a_message_and_leaves_nothing(tmp_path: Path) -> None:
    run = made_from_local_files(tmp_path / "in", rows=200)
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "exports" / "kind"
    # A 96 KiB file system that the export fills (the run is read from outside it); then what is left on it.
    script = 'mnt="$1"; shift; mount -t tmpfs -o size=96k tmpfs "$mnt" || exit 99; "$@"; code=$?; ' \
             'echo "left:"; find "$mnt" -mindepth 1; exit $code'
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(disk), sys.executable, "-m", "labeler", "export",
         str(run), "--out", str(out), "--shard-rows", "20"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "No space left on device" in result.stderr and str(out) in result.stderr, result.stderr
    assert re.search(r"failed at (preferences/shard-\d{5}\.arrow|manifest\.json|README\.md)", result.stderr)
    # After the failure the tmpfs holds only the folder made for OUT's parent, and that folder is empty.
    left = result.stdout.split("left:\n", 1)[1].splitlines()
    assert left == [str(disk / "exports")], result.stdout
