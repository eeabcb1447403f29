"""`labeler export`: a run's splits, filtered and compacted, in a form other tools read as they are.

```
OUT/
  manifest.json                   # the run's fingerprints, each new shard with rows and sha256, and what
                                  # the export did: source run, options, rows each filter removed
  README.md                       # the dataset card, with an Export section
  preferences/shard-00000.arrow   # trl: Arrow IPC streams (or .parquet, or .jsonl), one schema per split
```

An export is itself a run folder: `labeler train-rm`, `report`, `push` and `export` read it, verified.
Only shards the run's manifest lists are read (each checked against its sha256), and a split still being
written is refused unless `allow_partial`. Everything is written into a temporary folder next to OUT,
which is renamed to OUT at the end: OUT is either absent or the whole export. The temporary folder of an
export that was killed is removed by the next export into the same OUT; a write that fails (a full disk)
is one `ExportWriteError` naming the file, and leaves OUT as it was. What a link out of the run points to
is never read (the run is refused, naming the link), and the manifest and card name files, never paths
of the machine (see `labeler.store.published`).

Filters apply to the preference split, in this order, each counting the rows it removed of those the
ones before it kept: `drop_flags` (one step per flag), `min_margin`, `min_consistency`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labeler.core.errors import InputError
from labeler.core.outputs import check_output_folder, check_outputs
from labeler.core.records import (
    FLAG_HUMAN_LABEL,
    FLAG_TIE,
    FLAGS,
    SPLITS,
    PreferenceRecord,
    RankingRecord,
    UltraFeedbackRecord,
    known_flags,
)
from labeler.store.atomic import TEMP_SUFFIX, atomic_write_text, fsync_dir
from labeler.store.card import CARD_NAME, HubMetadata, render_card
from labeler.store.fingerprint import sha256_bytes
from labeler.store.human import human_sides
from labeler.store.manifest import (
    MANIFEST_NAME,
    ExportedSplit,
    ExportInfo,
    FilterCount,
    Manifest,
    ShardInfo,
    SplitEntry,
    load_manifest,
    manifest_path,
    new_manifest,
    write_manifest,
)
from labeler.store.published import check_inside_run, published_manifest
from labeler.store.readers import iter_shard_tables
from labeler.store.shards import ShardFormat, encode_table, shard_name

ExportFormat = Literal["trl", "parquet", "jsonl"]
SHARD_FORMATS: dict[ExportFormat, ShardFormat] = {"trl": "arrow", "parquet": "parquet", "jsonl": "jsonl"}
DEFAULT_SHARD_SIZE = "500MB"
MAX_SHARD_SIZE = 2**63 - 1
AGREEMENT_TOLERANCE = 1e-9  # p_a_ab and p_a_ba are sums of floats: 0.8 must meet --min-consistency 0.8

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip


def parse_size(text: str) -> int:
    """Bytes in a size such as `500MB` (decimal units KB, MB, GB, TB; binary KiB, MiB, GiB, TiB).

    >>> parse_size("500MB"), parse_size("1.5 GiB"), parse_size("4096")
    (500000000, 1610612736, 4096)
    >>> parse_size("lots")
    Traceback (most recent call last):
    ...
    ValueError: expected a size such as 500MB, 2GiB or 4096 (bytes), not 'lots'
    >>> parse_size("99999999999TB")
    Traceback (most recent call last):
    ...
    ValueError: '99999999999TB' is more than any shard can hold: at most 2**63 - 1 bytes (about 9.2 EB)
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match[2].upper() if match else ""
    if match is None or unit not in _UNITS or float(match[1]) <= 0:
        raise ValueError(f"expected a size such as 500MB, 2GiB or 4096 (bytes), not {text!r}")
    size = max(1, int(float(match[1]) * _UNITS[unit]))
    if size > MAX_SHARD_SIZE:  # Arrow counts a shard's rows and bytes in int64
        raise ValueError(f"{text!r} is more than any shard can hold: at most 2**63 - 1 bytes (about 9.2 EB)")
    return size


def order_agreement(p_a_ab: np.ndarray, p_a_ba: np.ndarray) -> np.ndarray:
    """How far the two presentation orders agree on P(response_a is better), per pair: 1 − |p_a_ab − p_a_ba|.

    1 when both orders give the same probability, 0 when one is certain of A and the other of B.

    >>> order_agreement(np.array([0.9, 1.0]), np.array([0.7, 0.0])).tolist()
    [0.8, 0.0]
    """
    return np.round(1.0 - np.abs(p_a_ab - p_a_ba), 12)


class ExportConfig(BaseModel):
    """Options of `labeler export`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run: Path = Field(description="Run folder to export (with manifest.json).")
    out: Path = Field(description="New folder for the export; it must not exist, or be empty.")
    format: ExportFormat = Field(
        "trl",
        description="trl: Arrow shards with TRL's conversational columns (datasets loads them; TRL's "
        "RewardTrainer and DPOTrainer train on them); parquet; jsonl (one JSON object per row).",
    )
    split: tuple[str, ...] = Field((), description="Split to export (repeat for several; default: every split).")
    min_margin: float | None = Field(
        None, ge=0.0, le=1.0, description="Keep only preference pairs whose margin (2·|p_a − 0.5|) is at least this."
    )
    drop_flags: tuple[str, ...] = Field(
        (), description=f"Drop preference pairs carrying any of these flags, comma-separated: {','.join(FLAGS)}."
    )
    min_consistency: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Keep only pairs whose two presentation orders agree: both prefer the same response "
        "(`consistent`) and 1 − |p_a_ab − p_a_ba| is at least this (0 keeps every consistent pair).",
    )
    shard_rows: int | None = Field(None, ge=1, description="Rows per output shard (instead of ‹shard_size›).")
    shard_size: str | None = Field(
        None,
        description=f"Target size of an output shard, e.g. 500MB or 2GiB, measured in memory before encoding "
        f"(default {DEFAULT_SHARD_SIZE} unless ‹shard_rows› is given).",
    )
    allow_partial: bool = Field(False, description="Export a split that is still being written (marked partial).")
    prefer_human: bool = Field(
        False,
        description="Where people labelled a pair with `labeler review` (RUN/human/), their side (the majority "
        "of their A/B choices) replaces the judge's: chosen, rejected, p_a (1 or 0) and margin (1), flag "
        "human_label; the card says how many. Applied before the filters.",
    )
    ultrafeedback: bool = Field(
        False,
        description="Write the rankings split in UltraFeedback's shape, as the split `ultrafeedback`: one row per "
        "prompt with `prompt` and `completions` (each response with its id, score, standard error and rank).",
    )

    @field_validator("drop_flags")
    @classmethod
    def _known_flags(cls, flags: tuple[str, ...]) -> tuple[str, ...]:
        return known_flags(flags)

    @field_validator("split")
    @classmethod
    def _known_splits(cls, splits: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in splits if name not in SPLITS]
        if unknown:
            raise ValueError(f"unknown split {unknown[0]!r}; known: {', '.join(SPLITS)}")
        return tuple(dict.fromkeys(splits))

    @field_validator("shard_size")
    @classmethod
    def _size(cls, size: str | None) -> str | None:
        if size is not None:
            parse_size(size)
        return size

    @model_validator(mode="after")
    def _one_shard_target(self) -> ExportConfig:
        if self.shard_rows is not None and self.shard_size is not None:
            raise ValueError("give ‹shard_rows› or ‹shard_size›, not both")
        return self

    @property
    def filters_given(self) -> list[str]:
        """The filter options given, as their flags."""
        given = [("--drop-flags", bool(self.drop_flags)), ("--min-margin", self.min_margin is not None),
                 ("--min-consistency", self.min_consistency is not None)]  # fmt: skip
        return [flag for flag, on in given if on]


@dataclass(frozen=True)
class RowFilter:
    """One filter step: its label in the card and a function giving the rows it keeps."""

    label: str
    keep: Callable[[pa.Table], np.ndarray]  # table -> (rows,) bool


def flagged(flags: pa.ChunkedArray | pa.Array, flag: str) -> np.ndarray:
    """(rows,) bool: which rows' flag lists hold `flag`.

    >>> flagged(pa.array([["low_mass"], [], ["tie", "low_mass"]]), "low_mass").tolist()
    [True, False, True]
    """
    array = flags.combine_chunks() if isinstance(flags, pa.ChunkedArray) else flags
    rows = np.zeros(len(array), dtype=bool)
    hits = pc.equal(pc.list_flatten(array), flag)
    rows[pc.list_parent_indices(array).filter(pc.fill_null(hits, False)).to_numpy()] = True
    return rows


def _without_flag(flag: str) -> RowFilter:
    return RowFilter(f"--drop-flags {flag}", lambda table: ~flagged(table.column("flags"), flag))


def preference_filters(config: ExportConfig) -> list[RowFilter]:
    """The filter steps of an export, in the order they apply."""
    steps = [_without_flag(flag) for flag in config.drop_flags]
    if config.min_margin is not None:
        threshold = config.min_margin

        def strong(table: pa.Table) -> np.ndarray:
            return np.asarray(table.column("margin").to_numpy() >= threshold - AGREEMENT_TOLERANCE)

        steps.append(RowFilter(f"--min-margin {threshold:g}", strong))
    if config.min_consistency is not None:
        least = config.min_consistency

        def agree(table: pa.Table) -> np.ndarray:
            consistent = table.column("consistent").to_numpy(zero_copy_only=False).astype(bool)
            agreement = order_agreement(table.column("p_a_ab").to_numpy(), table.column("p_a_ba").to_numpy())
            return np.asarray(consistent & (agreement >= least - AGREEMENT_TOLERANCE))

        steps.append(RowFilter(f"--min-consistency {least:g}", agree))
    return steps


@dataclass
class _Counts:
    rows_in: int = 0
    rows_out: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    human: int = 0  # rows whose label came from people (--prefer-human)


def with_human_sides(table: pa.Table, sides: Mapping[str, bool]) -> tuple[pa.Table, int]:
    """`table` of preference rows with each pair in `sides` labelled by people: chosen and rejected follow
    their side, p_a is 1 (response_a) or 0, margin 1, the flag human_label added (and tie dropped); the
    judge's own columns (p_a_ab, p_a_ba, masses, log-probabilities) stay. Also how many rows changed."""
    hits = pc.is_in(table.column("id"), value_set=pa.array(sorted(sides), pa.string()))
    if not sides or not pc.any(hits).as_py():
        return table, 0
    rows = table.to_pylist()
    changed = 0
    for row in rows:
        a_better = sides.get(row["id"])
        if a_better is None:
            continue
        a, b = row["response_a"], row["response_b"]
        chosen, rejected = (a, b) if a_better else (b, a)
        flags = [flag for flag in row["flags"] if flag not in (FLAG_TIE, FLAG_HUMAN_LABEL)] + [FLAG_HUMAN_LABEL]
        row.update(
            chosen=[{"role": "assistant", "content": chosen}], rejected=[{"role": "assistant", "content": rejected}],
            chosen_text=chosen, rejected_text=rejected, p_a=1.0 if a_better else 0.0, margin=1.0, flags=flags,
        )  # fmt: skip
        changed += 1
    return pa.Table.from_pylist(rows, schema=table.schema), changed


def human_labelled(tables: Iterable[pa.Table], sides: Mapping[str, bool], counts: _Counts) -> Iterator[pa.Table]:
    """Each table with people's labels in place of the judge's where they gave one (`with_human_sides`)."""
    for table in tables:
        table, changed = with_human_sides(table, sides)
        counts.human += changed
        yield table


def filtered(tables: Iterable[pa.Table], steps: list[RowFilter], counts: _Counts) -> Iterator[pa.Table]:
    """Each table with the rows every step keeps, counting what each step removed."""
    for step in steps:
        counts.removed.setdefault(step.label, 0)
    for table in tables:
        counts.rows_in += table.num_rows
        for step in steps:
            keep = step.keep(table)
            counts.removed[step.label] += int((~keep).sum())
            table = table.filter(pa.array(keep))
        counts.rows_out += table.num_rows
        yield table


def packed(tables: Iterable[pa.Table], *, rows: int | None = None, size: int | None = None) -> Iterator[pa.Table]:
    """The rows of `tables`, in order, regrouped into tables of `rows` rows or about `size` bytes each
    (in memory; the last may be smaller). Empty input gives nothing.

    >>> parts = packed([pa.table({"x": list(range(5))}), pa.table({"x": [5, 6]})], rows=3)
    >>> [t.column("x").to_pylist() for t in parts]
    [[0, 1, 2], [3, 4, 5], [6]]
    """
    if (rows is None) == (size is None):
        raise ValueError("give exactly one of rows and size")
    pending: list[pa.Table] = []
    pending_rows = 0
    pending_bytes = 0.0
    for table in tables:
        per_row = table.nbytes / table.num_rows if table.num_rows else 0.0
        while table.num_rows:
            if rows is not None:
                room = rows - pending_rows
            else:
                assert size is not None
                room = max(1, math.ceil((size - pending_bytes) / per_row)) if per_row else table.num_rows
            take = table.slice(0, room)
            table = table.slice(take.num_rows)
            pending.append(take)
            pending_rows += take.num_rows
            pending_bytes += take.num_rows * per_row
            if (rows is not None and pending_rows >= rows) or (size is not None and pending_bytes >= size):
                yield pa.concat_tables(pending)
                pending, pending_rows, pending_bytes = [], 0, 0.0
    if pending_rows:
        yield pa.concat_tables(pending)


@dataclass(frozen=True)
class ExportPlan:
    """What the checks of an export found, before anything is written."""

    manifest: Manifest
    splits: tuple[str, ...]


def check_export(config: ExportConfig) -> ExportPlan:
    """Every check of an export that reads no shard: the run, the splits, the options and the output folder.

    Shards are verified (sha256, columns, rows) as they are read; a damaged one stops the export before
    OUT exists.
    """
    run = config.run
    check_inside_run(run, MANIFEST_NAME)
    manifest = load_manifest(run, where="RUN")
    splits = config.split or tuple(name for name in SPLITS if name in manifest.splits)
    missing = [name for name in splits if name not in manifest.splits]
    if missing or not splits:
        have = ", ".join(sorted(manifest.splits)) or "none"
        wanted = f"{missing[0]!r} split" if missing else "split"
        raise InputError(f"the run has no {wanted} (it has: {have})", file=manifest_path(run), field="split")
    running = [name for name in splits if manifest.splits[name].status != "complete"]
    if running and not config.allow_partial:
        raise InputError(
            f"split {running[0]!r} is still being written ({manifest.splits[running[0]].rows} records so far); "
            "finish the run, or pass ‹allow_partial› to export what is there (the export is marked partial)",
            file=manifest_path(run),
            field="allow_partial",
        )
    if config.ultrafeedback and RankingRecord.split not in splits:
        raise InputError("writes the rankings split in UltraFeedback's shape, and this export has no rankings split",
                         field="ultrafeedback")
    if config.filters_given and PreferenceRecord.split not in splits:
        raise InputError("filters apply to the preference split, which this export does not include",
                         where=config.filters_given[0])  # fmt: skip
    check_outputs(config.out, "empty", {"RUN": run})
    check_output_folder(config.out, field="out")
    if config.out.is_dir() and any(config.out.iterdir()):
        raise InputError("is not empty; export into a new or empty folder", file=config.out, field="out")
    if config.out.resolve() == run.resolve():
        raise InputError("is the run itself; export into a new folder", file=config.out, field="out")
    for name in splits:
        for shard in manifest.splits[name].shards:
            check_inside_run(run, shard.file)  # never read what a link out of the run points to
    return ExportPlan(manifest, splits)


@dataclass(frozen=True)
class ExportResult:
    out: Path
    splits: dict[str, ExportedSplit]
    removed: tuple[Path, ...] = ()  # temporary folders of killed exports into the same OUT, removed


class ExportWriteError(Exception):
    """Writing the export failed (a full disk, a quota): nothing was exported, OUT is as it was. Exit 1."""

    def __init__(self, out: Path, name: str, error: OSError) -> None:
        self.out = out
        self.name = name
        self.error = error
        reason = error.strerror or str(error)
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        hint = " (free some space and run the same command again)" if full else ""
        left = "is left empty, as it was" if out.is_dir() else "was not created"
        super().__init__(f"{out}: writing the export failed at {name}: {reason}; nothing was exported ({out.name} "
                         f"{left}){hint}")  # fmt: skip


@contextlib.contextmanager
def _writing(out: Path, name: str) -> Iterator[None]:
    """Turn a failure to write `name` (a file of the export) into an `ExportWriteError` naming it."""
    try:
        yield
    except OSError as exc:
        raise ExportWriteError(out, name, exc) from exc


def _temp_name(out: Path) -> re.Pattern[str]:
    """The names of the temporary folders exports into `out` write in (the pid of the process that made it,
    then a random tag).

    >>> bool(_temp_name(Path("x/out")).fullmatch(".out.123-0a1b2c3d.partial"))
    True
    """
    return re.compile(rf"\.{re.escape(out.name)}\.(\d+)-[0-9a-f]{{8}}{re.escape(TEMP_SUFFIX)}")


def _alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine (one of another user counts)."""
    try:
        os.kill(pid, 0)  # signal 0: no signal sent, only the check that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    return True


def remove_stale_exports(out: Path) -> list[Path]:
    """Remove the temporary folders that exports into `out` left when they were killed; returns them.

    Only labeler's own: a folder (not a link) next to OUT whose name is that of an export into OUT, whose
    process is gone, and whose lock no other process holds (a live export, even on another machine of a
    shared file system, holds the lock of its folder until it is renamed to OUT).
    """
    pattern = _temp_name(out)
    removed = []
    for entry in sorted(out.parent.iterdir()) if out.parent.is_dir() else []:
        match = pattern.fullmatch(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir() or _alive(int(match[1])):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone meanwhile, or not ours to open: it stays as it is
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(entry)
        except OSError:
            continue  # locked (an export still writes it), or not ours to remove: what is left stays
        else:
            removed.append(entry)
        finally:
            os.close(fd)
    return removed


def _locked_folder(path: Path) -> int:
    """Create the folder `path` and hold an exclusive lock on it (released when the fd is closed)."""
    path.mkdir()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass  # a file system without locks: the process id in the name still protects the folder
    return fd


def export_run(config: ExportConfig) -> ExportResult:
    """Export the run's splits into `config.out`: filtered, compacted, with a manifest and a card.

    Temporary folders of earlier exports into the same OUT that were killed are removed first. A failure
    to write (a full disk) raises `ExportWriteError` and leaves OUT as it was.
    """
    plan = check_export(config)
    out = config.out
    shard_format = SHARD_FORMATS[config.format]
    rows = config.shard_rows
    size = None if rows is not None else parse_size(config.shard_size or DEFAULT_SHARD_SIZE)
    with _writing(out, f"the folder {out.parent}"):
        out.parent.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_exports(out)
    temp = out.parent / f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"
    with _writing(out, f"the temporary folder {temp.name}"):
        lock = _locked_folder(temp)
    try:
        manifest = new_manifest()
        exported: dict[str, ExportedSplit] = {}
        for split in plan.splits:
            source = plan.manifest.splits[split]
            counts = _Counts()
            steps = preference_filters(config) if split == PreferenceRecord.split else []
            tables = iter_shard_tables(config.run, split, require_complete=not config.allow_partial)
            if split == PreferenceRecord.split and config.prefer_human:
                tables = human_labelled(tables, human_sides(config.run), counts)
            if split == RankingRecord.split and config.ultrafeedback:
                tables, split = map(_ultrafeedback_table, tables), UltraFeedbackRecord.split
            with _writing(out, f"{split}/"):
                (temp / split).mkdir()
            shards: list[ShardInfo] = []
            for seq, table in enumerate(packed(filtered(tables, steps, counts), rows=rows, size=size)):
                name = f"{split}/{shard_name(seq, source.part, shard_format)}"
                data = encode_table(table, shard_format)
                with _writing(out, name):
                    _write_file(temp / name, data)
                shards.append(ShardInfo(file=name, rows=table.num_rows, sha256=sha256_bytes(data)))
            with _writing(out, f"{split}/"):
                fsync_dir(temp / split)
            entry = SplitEntry(fingerprint=source.fingerprint, status=source.status, shards=tuple(shards),
                               part=source.part, stats=source.stats)  # fmt: skip
            manifest = manifest.with_split(split, entry)
            exported[split] = ExportedSplit(
                rows_in=counts.rows_in,
                rows_out=counts.rows_out,
                removed=tuple(FilterCount(filter=label, removed=n) for label, n in counts.removed.items()),
                complete=source.status == "complete",
                human_labels=counts.human if split == PreferenceRecord.split and config.prefer_human else None,
            )
        options = config.model_dump(mode="json", exclude={"run", "out"})
        info = ExportInfo(source=config.run.resolve().name, format=config.format, options=options, splits=exported)
        # What an export writes is published as it is: its manifest names files, never local paths.
        with _writing(out, MANIFEST_NAME):
            write_manifest(temp, published_manifest(manifest.model_copy(update={"export": info})))
        card = render_card(temp, hub=HubMetadata(pretty_name=out.name))
        with _writing(out, CARD_NAME):
            atomic_write_text(temp / CARD_NAME, card)
        with _writing(out, f"the rename of the finished export to {out.name}"):
            fsync_dir(temp)
            os.replace(temp, out)  # an empty OUT is replaced; from here on OUT is the whole export
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    finally:
        os.close(lock)
    fsync_dir(out.parent)
    return ExportResult(out, exported, tuple(removed))
def _ultrafeedback_table(table: pa.Table) -> pa.Table:
    """A rankings table in UltraFeedback's shape (`UltraFeedbackRecord`)."""
    return UltraFeedbackRecord.to_table([UltraFeedbackRecord.from_ranking(r) for r in RankingRecord.from_table(table)])


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
