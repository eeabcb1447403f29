"""`RUN/manifest.json`: what a run directory holds, split by split.

```json
{"format": 1, "labeler_version": "0.1.0", "created": "...Z", "updated": "...Z",
 "splits": {"preferences": {"fingerprint": {...}, "status": "running",
                            "shards": [{"file": "preferences/shard-00000.arrow", "rows": 512, "sha256": "..."}],
                            "part": [0, 4], "stats": null}}}
```

A shard exists for readers only once it is listed here: the manifest is the commit record. It is
rewritten atomically, under a lock, after every shard; `status` turns "complete" only when the
stage says it has written every record.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from labeler import __version__
from labeler.core.errors import InputError
from labeler.core.layout import MANIFEST_LOCK, MANIFEST_NAME
from labeler.store.atomic import atomic_write_text, exclusive_lock

MANIFEST_FORMAT = 1


class ShardInfo(BaseModel):
    """One committed shard: where it is, how many rows it holds, and its checksum."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str = Field(description="Path relative to the run folder, e.g. preferences/shard-00000.arrow.")
    rows: int = Field(ge=0, description="Number of records in the shard.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the shard file's bytes.")

    @field_validator("file")
    @classmethod
    def _inside_the_run(cls, file: str) -> str:
        problem = confinement_problem(file)
        if problem is not None:
            raise ValueError(f"shard path {file!r} {problem}: the manifest was altered")
        return file


class SplitEntry(BaseModel):
    """The state of one split of a run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fingerprint: dict[str, Any] = Field(description="What the records depend on; see labeler.store.fingerprint.")
    status: Literal["running", "complete"] = Field(description="complete once every record is written.")
    shards: tuple[ShardInfo, ...] = Field(default=(), description="Committed shards, in the order they were written.")
    part: tuple[int, int] | None = Field(
        default=None, description="(index, count) when this run is one part of a job array, index from 0."
    )
    stats: dict[str, Any] | None = Field(default=None, description="Statistics the stage reported on completion.")

    @field_validator("part")
    @classmethod
    def _part_in_range(cls, part: tuple[int, int] | None) -> tuple[int, int] | None:
        if part is not None and not 0 <= part[0] < part[1]:
            raise ValueError(f"part index {part[0]} is not in 0..{part[1] - 1}")
        return part

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.shards)


class FilterCount(BaseModel):
    """How many rows one export filter removed (of those the filters before it left)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    filter: str = Field(description="The filter, as its option spells it (e.g. `--min-margin 0.2`).")
    removed: int = Field(ge=0, description="Rows it removed.")


class ExportedSplit(BaseModel):
    """What an export did to one split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows_in: int = Field(ge=0, description="Rows of the split in the run exported.")
    rows_out: int = Field(ge=0, description="Rows written.")
    removed: tuple[FilterCount, ...] = Field(default=(), description="Each filter in the order applied.")
    complete: bool = Field(description="Whether the run's split was complete (else exported with --allow-partial).")
    human_labels: int | None = Field(
        default=None, description="With --prefer-human: rows whose label came from people (RUN/human/)."
    )


class ExportInfo(BaseModel):
    """How a folder written by `labeler export` was made from a run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(description="Name of the run folder exported (its path stays on the machine).")
    format: str = Field(description="trl (Arrow shards), parquet or jsonl.")
    options: dict[str, Any] = Field(description="The export's options, as given.")
    splits: dict[str, ExportedSplit] = Field(description="Each split exported.")


class Manifest(BaseModel):
    """The whole manifest of a run directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = Field(default=MANIFEST_FORMAT, description="Version of this file's layout.")
    labeler_version: str = Field(description="labeler version that last wrote the manifest.")
    created: str = Field(description="When the run directory was created (UTC, ISO 8601).")
    updated: str = Field(description="When the manifest was last written (UTC, ISO 8601).")
    splits: dict[str, SplitEntry] = Field(default_factory=dict, description="Each split by name.")
    export: ExportInfo | None = Field(
        default=None, description="Set in a folder written by `labeler export`: what was exported and filtered."
    )

    def with_split(self, name: str, entry: SplitEntry) -> Manifest:
        """A copy with split `name` set to `entry`."""
        return self.model_copy(update={"splits": {**self.splits, name: entry}})


def confinement_problem(file: str) -> str | None:
    """Why a shard path of a manifest could lead outside its run folder, or None when it cannot: a
    manifest lists shards by paths relative to the run, each part a plain name.

    >>> confinement_problem("preferences/shard-00000.arrow") is None
    True
    >>> confinement_problem("../other/shard-00000.arrow"), confinement_problem("/tmp/x.arrow")
    ("goes up out of the run folder ('..')", 'is absolute, not relative to the run folder')
    """
    if file.startswith("/") or "\\" in file or (len(file) > 1 and file[1] == ":"):
        return "is absolute, not relative to the run folder"
    parts = file.split("/")
    if ".." in parts:
        return "goes up out of the run folder ('..')"
    if any(part in ("", ".") for part in parts) or "\0" in file:
        return "is not a plain relative path (empty, '.' or NUL parts)"
    return None


def utc_now() -> str:
    """The current time as `2026-11-21T12:34:56Z`."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_manifest() -> Manifest:
    now = utc_now()
    return Manifest(labeler_version=__version__, created=now, updated=now)


def manifest_path(run_dir: Path) -> Path:
    return Path(run_dir) / MANIFEST_NAME


def read_manifest(run_dir: Path) -> Manifest | None:
    """The run's manifest, or None if the folder has none yet; `InputError` if it is unreadable."""
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise InputError("is a file, not a labeler run folder", file=run_dir)
    path = manifest_path(run_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the manifest: {exc}", file=path) from exc
    try:
        return Manifest.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=path, line=exc.lineno) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InputError(f"not a labeler manifest: {first['msg']}", file=path, where=where) from exc
    except ValueError as exc:  # an integer of more digits than Python converts (4300)
        raise InputError(f"not a labeler manifest: {exc}", file=path) from exc
    except RecursionError:
        raise InputError("not a labeler manifest: nested too deeply to read", file=path) from None


def load_manifest(run_dir: Path, *, where: str | None = None) -> Manifest:
    """The run's manifest; `InputError` if the folder is not a labeler run, naming `where` (the argument
    that gave the folder, e.g. "RUN") when given."""
    if where is not None and not run_dir.exists():
        raise InputError("does not exist", file=run_dir, where=where)
    try:
        manifest = read_manifest(run_dir)
    except InputError as exc:
        if where is None or exc.where is not None:
            raise
        raise InputError(exc.message, file=exc.file, line=exc.line, where=where) from exc
    if manifest is None:
        raise InputError(
            f"no {MANIFEST_NAME}: not a labeler run directory (or its first shard was never written)",
            file=run_dir,
            where=where,
        )
    return manifest


def write_manifest(run_dir: Path, manifest: Manifest) -> Manifest:
    """Write `manifest` atomically, stamping `updated` and the labeler version; returns what was written."""
    stamped = manifest.model_copy(update={"updated": utc_now(), "labeler_version": __version__})
    atomic_write_text(manifest_path(run_dir), stamped.model_dump_json(indent=2) + "\n")
    return stamped


def split_entry(manifest: Manifest, split: str, *, run_dir: Path) -> SplitEntry:
    """The entry of `split`; `InputError` naming the splits the run has if it lacks this one."""
    try:
        return manifest.splits[split]
    except KeyError:
        have = ", ".join(sorted(manifest.splits)) or "none"
        raise InputError(
            f"the run has no {split!r} split (it has: {have})", file=manifest_path(run_dir)
        ) from None


@contextlib.contextmanager
def manifest_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's manifest lock: one read-modify-write of the manifest at a time."""
    with exclusive_lock(Path(run_dir) / MANIFEST_LOCK):
        yield
