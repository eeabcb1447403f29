"""Human labels of a run's pairs: `RUN/human/<annotator>.jsonl`, append-only, one checksummed record a line.

```
{"pair_id": "...", "annotator": "ana", "choice": "A", "note": "", "time": "2026-12-07T15:00:00.123456Z",
 "sha256": "<sha256 of the record's other fields as canonical JSON>"}
```

Each annotator writes their own file; the AI shards of the run are never touched. A label is appended
under an exclusive `flock` of the file, written in one `write` and fsynced before `append_label`
returns, so two processes appending at once lose nothing, and a label that was answered is on disk.

A process killed in the middle of a write leaves a last line without its newline: readers ignore it,
and the next append cuts it off before writing (the repair). Any other line that does not parse or
whose checksum does not match means the file was altered, and is refused naming the file and line.

Reading gives the last record of each (annotator, pair): a person who changes their mind appends a new
record, and the new one counts.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labeler.core.errors import InputError
from labeler.store.atomic import fsync_dir
from labeler.store.fingerprint import sha256_text
from labeler.store.lock import open_no_follow

HUMAN_FOLDER = "human"
"""The folder of a run that holds its human labels."""
LABELS_SUFFIX = ".jsonl"
ANNOTATOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NOTE_MAX_CHARS = 2000

Choice = Literal["A", "B", "tie", "skip"]
CHOICES: tuple[str, ...] = ("A", "B", "tie", "skip")


class HumanLabel(BaseModel):
    """One person's choice on one pair of a run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pair_id: str = Field(min_length=1, max_length=200, description="The `id` of the preference row.")
    annotator: str = Field(pattern=ANNOTATOR_PATTERN, description="Who chose (letters, digits, . _ -).")
    choice: Choice = Field(description="A (response_a is better), B, tie, or skip (not judged).")
    note: str = Field("", max_length=NOTE_MAX_CHARS, description="A short note of the annotator's.")
    time: str = Field(description="When it was chosen: UTC, ISO 8601.")


def human_folder(run_dir: Path) -> Path:
    return Path(run_dir) / HUMAN_FOLDER


def labels_file(run_dir: Path, annotator: str) -> Path:
    """The file of one annotator's labels; `InputError` for a name that is not a plain file name.

    >>> labels_file(Path("run"), "ana").as_posix()
    'run/human/ana.jsonl'
    """
    if not re.match(ANNOTATOR_PATTERN, annotator):
        raise InputError(
            f"annotator name {annotator!r} is not 1 to 64 letters, digits, '.', '_' or '-' (starting with a "
            "letter or digit)",
            field="annotator",
        )
    return human_folder(run_dir) / f"{annotator}{LABELS_SUFFIX}"


def record_checksum(fields: dict[str, str]) -> str:
    """The sha256 of a record's fields as canonical JSON (sorted keys, no spaces).

    >>> record_checksum({"b": "2", "a": "1"}) == record_checksum({"a": "1", "b": "2"})
    True
    """
    return sha256_text(json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def encode_label(label: HumanLabel) -> bytes:
    """One line of a labels file: the record's fields and their checksum, with its newline."""
    fields = label.model_dump()
    line = json.dumps({**fields, "sha256": record_checksum(fields)}, ensure_ascii=False, separators=(",", ":"))
    return (line + "\n").encode("utf-8")


def decode_label(line: bytes, *, file: Path, number: int) -> HumanLabel:
    """The record of one complete line; `InputError` naming the file and line if it is not one, or
    its checksum does not match (the file was altered)."""
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        checksum = data.pop("sha256", None)
        label = HumanLabel.model_validate(data)
    except (UnicodeDecodeError, ValueError, ValidationError) as exc:
        raise InputError(f"not a human label record ({str(exc).splitlines()[0]})", file=file, line=number) from None
    if checksum != record_checksum(label.model_dump()):
        raise InputError("checksum does not match the record: the labels file was altered", file=file, line=number)
    return label


def new_label(pair_id: str, annotator: str, choice: str, note: str = "", *, time: datetime | None = None) -> HumanLabel:
    """A label chosen now (or at `time`); `InputError` naming the field for a bad value."""
    stamp = (time or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        return HumanLabel(pair_id=pair_id, annotator=annotator, choice=choice, note=note, time=stamp)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise InputError(f"{problem['msg']} (got {problem.get('input')!r})", field=field) from None


def append_label(run_dir: Path, label: HumanLabel) -> None:
    """Append `label` to its annotator's file, durably (fsync), under an exclusive lock of the file.

    A torn last line left by a killed writer is cut off first, so every line before the new one is whole.
    """
    path = labels_file(run_dir, label.annotator)
    folder = path.parent
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = open_no_follow(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _cut_torn_tail(fd)
        os.lseek(fd, 0, os.SEEK_END)
        data = encode_label(label)
        written = os.write(fd, data)
        if written != len(data):  # a full disk: leave no part of a record behind
            _cut_torn_tail(fd)
            raise OSError(f"wrote {written} of {len(data)} bytes of a label", str(path))
        os.fsync(fd)
    finally:
        os.close(fd)  # drops the lock
    if created:
        fsync_dir(folder.parent)
    fsync_dir(folder)


def _cut_torn_tail(fd: int) -> None:
    """Truncate an open labels file after its last newline (a record cut short by a crash)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    # Read back from the end in blocks until a newline is found (records are short: one block, usually).
    end = size
    while end > 0:
        start = max(0, end - 4096)
        block = os.pread(fd, end - start, start)
        if end == size and block.endswith(b"\n"):
            return
        newline = block.rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            os.fsync(fd)
            return
        end = start
    os.ftruncate(fd, 0)
    os.fsync(fd)


def read_labels_file(path: Path) -> list[HumanLabel]:
    """Every whole record of one labels file, in the order written (a torn last line is left out)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    complete = lines[:-1]  # the part after the last newline is empty, or a record a crash cut short
    return [decode_label(line, file=path, number=number) for number, line in enumerate(complete, start=1) if line]


def annotators(run_dir: Path) -> list[str]:
    """The annotators who have a labels file in the run, sorted."""
    folder = human_folder(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(LABELS_SUFFIX)] for p in folder.glob(f"*{LABELS_SUFFIX}") if not p.name.startswith("."))


def latest_labels(records: Iterable[HumanLabel]) -> dict[tuple[str, str], HumanLabel]:
    """The last record of each (annotator, pair_id), records taken in the order written.

    >>> first = new_label("p1", "ana", "A"); second = new_label("p1", "ana", "B")
    >>> latest_labels([first, second])[("ana", "p1")].choice
    'B'
    """
    latest: dict[tuple[str, str], HumanLabel] = {}
    for record in records:
        latest[(record.annotator, record.pair_id)] = record
    return latest


def read_human_labels(run_dir: Path) -> dict[tuple[str, str], HumanLabel]:
    """The current label of each (annotator, pair_id) in `RUN/human/` (every annotator's file)."""
    records: list[HumanLabel] = []
    for name in annotators(run_dir):
        records.extend(read_labels_file(labels_file(run_dir, name)))
    return latest_labels(records)


def human_sides(run_dir: Path) -> dict[str, bool]:
    """{pair_id: whether people prefer response_a} for every pair of the run with a human side."""
    sides = {pair: human_side(labels) for pair, labels in labels_by_pair(read_human_labels(run_dir)).items()}
    return {pair: side for pair, side in sides.items() if side is not None}


def labels_by_pair(labels: dict[tuple[str, str], HumanLabel]) -> dict[str, dict[str, HumanLabel]]:
    """{pair_id: {annotator: label}} of the current labels."""
    by_pair: dict[str, dict[str, HumanLabel]] = {}
    for (annotator, pair_id), label in sorted(labels.items()):
        by_pair.setdefault(pair_id, {})[annotator] = label
    return by_pair


def human_side(labels: Mapping[str, HumanLabel]) -> bool | None:
    """Whether the annotators of one pair prefer response_a (majority of A/B choices); None for no side.

    >>> human_side({"x": new_label("p", "x", "A"), "y": new_label("p", "y", "tie")})
    True
    >>> human_side({"x": new_label("p", "x", "A"), "y": new_label("p", "y", "B")}) is None
    True
    """
    a = sum(label.choice == "A" for label in labels.values())
    b = sum(label.choice == "B" for label in labels.values())
    return None if a == b else a > b
