"""Job arrays: split the work of one run into parts by a stable hash, then merge the parts' runs.

Each part writes its own run folder with `RunStore.open(..., part=(index, count))` and keeps only
the items for which `in_part(key, index, count)` holds; `merge_runs` checks that the parts belong
together and cover every index once, then combines them into one run folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from labeler.core.errors import InputError
from labeler.core.outputs import check_outputs
from labeler.core.records import SPLITS
from labeler.store.atomic import TEMP_SUFFIX, fsync_dir, temp_path_for
from labeler.store.fingerprint import fingerprint_diff
from labeler.store.lock import refuse_linked_lock_files, writer_lock
from labeler.store.manifest import (
    Manifest,
    ShardInfo,
    SplitEntry,
    load_manifest,
    manifest_lock,
    manifest_path,
    new_manifest,
    read_manifest,
    write_manifest,
)
from labeler.store.shards import ids_of, read_verified_shard


def part_of(key: str, num: int) -> int:
    """The part (from 0) of `num` that `key` falls into: sha256-based, the same on every machine and run.

    Python's `hash()` is salted per process, so it would scatter keys differently in every job.

    >>> part_of("prompt-17", 1)
    0
    >>> part_of("prompt-17", 4) == part_of("prompt-17", 4)
    True
    """
    if num < 1:
        raise ValueError(f"number of parts must be at least 1, got {num}")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num


def in_part(record_id: str, index: int, num: int) -> bool:
    """Whether `record_id` (or any stable key) belongs to part `index` (from 0) of `num`.

    Every key is in exactly one of the `num` parts.

    >>> sum(in_part("prompt-17", i, 4) for i in range(4))
    1
    """
    if not 0 <= index < num:
        raise ValueError(f"part index must satisfy 0 <= index < {num}, got {index}")
    return part_of(record_id, num) == index


def merge_runs(parts: Sequence[Path], out: Path, *, replace: bool = False) -> Path:
    """Combine the run folders of every part of a job array into one complete run at `out` (a new folder,
    or a run that does not hold these splits yet; with `replace`, a run whose splits of the same names
    the merge replaces, once every check has passed: --overwrite of a run in parts).

    Checks, each failure an `InputError` naming the part: every part has the same splits, each split
    complete, with equal fingerprints (the part info aside); the parts are 0..n-1 of the same n, each
    once; every shard matches its checksum; no record id appears twice. Shards are hard-linked into
    `out` (copied where links are impossible), then one manifest is written (the card is the caller's:
    `labeler.stages.runner.merge_parts`).
    """
    parts = [Path(part) for part in parts]
    out = Path(out)
    if not parts:
        raise InputError("no part folders given", where="parts")
    check_outputs(out, "run", {"RUN_PART": parts})
    refuse_linked_lock_files(out)
    existing = read_manifest(out)
    manifests = {part: load_manifest(part) for part in parts}
    splits = _common_splits(manifests)
    if existing is not None and set(splits) & set(existing.splits) and not replace:
        taken = sorted(set(splits) & set(existing.splits))
        raise InputError(f"already holds the split(s) {taken}; merge into a new folder", file=manifest_path(out))
    if not replace:
        _refuse_linked_splits(out, splits)

    merged = existing or new_manifest()
    copies: list[tuple[Path, Path]] = []
    for split in splits:
        entries = [(part, manifests[part].splits[split]) for part in parts]
        entries = _check_parts_belong_together(split, entries)
        _check_shards(split, entries)
        shards = tuple(shard for _, entry in entries for shard in entry.shards)
        if not replace:
            _refuse_foreign_files(out, split, shards)
        copies += [(part / shard.file, out / shard.file) for part, entry in entries for shard in entry.shards]
        stats = {
            "parts": [{"run": str(part), "part": entry.part, "stats": entry.stats} for part, entry in entries]
        }
        merged = merged.with_split(
            split,
            SplitEntry(fingerprint=entries[0][1].fingerprint, status="complete", shards=shards, stats=stats),
        )

    with writer_lock(out):  # one writer per run, after every check
        if replace:
            _drop_splits(out, splits)
        for src, dest in copies:
            dest.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(src, dest)
        for split in splits:
            fsync_dir(out / split)
        # The manifest goes last: until it lists the splits, they are not part of the run, and merging
        # again starts over. Its other splits (a run that already held one) stay as they are.
        with manifest_lock(out):
            current = read_manifest(out) or new_manifest()
            for split in splits:
                current = current.with_split(split, merged.splits[split])
            write_manifest(out, current)
    return out


def _common_splits(manifests: dict[Path, Manifest]) -> list[str]:
    (first, first_manifest), *others = manifests.items()
    splits = sorted(first_manifest.splits)
    if not splits:
        raise InputError("has no splits", file=manifest_path(first))
    for part, manifest in others:
        if sorted(manifest.splits) != splits:
            raise InputError(
                f"has splits {sorted(manifest.splits)}, but {first} has {splits}", file=manifest_path(part)
            )
    return splits


def _check_parts_belong_together(
    split: str, entries: list[tuple[Path, SplitEntry]]
) -> list[tuple[Path, SplitEntry]]:
    """The entries sorted by part index, after checking they are the parts 0..n-1 of one run."""
    first, first_entry = entries[0]
    indexed: dict[int, tuple[Path, SplitEntry]] = {}
    counts: set[int] = set()
    for part, entry in entries:
        where = f"splits.{split}"
        if entry.status != "complete":
            raise InputError(
                f"split {split!r} is incomplete ({entry.rows} records); rerun that part to finish it",
                file=manifest_path(part),
                where=where,
            )
        differing = fingerprint_diff(first_entry.fingerprint, entry.fingerprint)
        if differing:
            raise InputError(
                f"made with different settings than {first} (differing: {', '.join(differing)})",
                file=manifest_path(part),
                where=f"{where}.fingerprint",
            )
        if entry.part is None:
            raise InputError("is a whole run, not one part of a job array", file=manifest_path(part), where=where)
        index, num = entry.part
        if index in indexed:
            raise InputError(f"is part {index} of {num}, like {indexed[index][0]}", file=manifest_path(part))
        indexed[index] = (part, entry)
        counts.add(num)
    if len(counts) != 1:
        raise InputError(f"the parts disagree on the number of parts: {sorted(counts)}", where=f"splits.{split}.part")
    (num,) = counts
    missing = sorted(set(range(num)) - set(indexed))
    if missing:
        raise InputError(
            f"split {split!r}: part(s) {', '.join(map(str, missing))} of {num} are missing; "
            "merge all of them, or the dataset would be incomplete",
            where="parts",
        )
    return [indexed[index] for index in sorted(indexed)]


def _check_shards(split: str, entries: list[tuple[Path, SplitEntry]]) -> None:
    """Verify every shard and that no record id is in two places."""
    owner: dict[str, Path] = {}
    names: Counter[str] = Counter()
    for part, entry in entries:
        for shard in entry.shards:
            path = part / shard.file
            names[shard.file] += 1
            if names[shard.file] > 1:
                raise InputError("another part has a shard of the same name", file=path)
            for record_id in ids_of(read_verified_shard(part, shard, SPLITS[split], upgrade=True)):
                if record_id in owner:
                    raise InputError(f"record {record_id} is also in {owner[record_id]}", file=path)
                owner[record_id] = path


def _refuse_foreign_files(out: Path, split: str, shards: tuple[ShardInfo, ...]) -> None:
    """`out/split` may only hold files of this merge (left by an interrupted attempt), nothing else."""
    expected = {Path(shard.file).name for shard in shards}
    foreign = sorted(p for p in (out / split).glob("*.arrow") if p.name not in expected)
    if foreign:
        raise InputError("is not part of this merge; merge into an empty folder", file=foreign[0])


def _refuse_linked_splits(out: Path, splits: Sequence[str]) -> None:
    """A split folder that is a symbolic link would put the merged shards outside the run."""
    for split in splits:
        if (out / split).is_symlink():
            raise InputError(
                "is a symbolic link: a run's split folder must be inside the run; merge into another folder",
                file=out / split,
            )


def _drop_splits(out: Path, splits: Sequence[str]) -> None:
    """`replace`: take the old `splits` out of `out`'s manifest first (no manifest ever lists a file
    that is being replaced), then delete their files; a split folder that is a symbolic link loses
    the link only, never the files it points to."""
    with manifest_lock(out):
        current = read_manifest(out)
        if current is not None and set(splits) & set(current.splits):
            kept = {name: entry for name, entry in current.splits.items() if name not in splits}
            write_manifest(out, current.model_copy(update={"splits": kept}))
    for split in splits:
        folder = out / split
        if folder.is_symlink():
            folder.unlink()
        elif folder.is_dir():
            for path in [*folder.glob("*.arrow"), *folder.glob(f"*{TEMP_SUFFIX}")]:
                path.unlink()


def _link_or_copy(src: Path, dest: Path) -> None:
    """Put `src` at `dest` atomically: a hard link when possible (no extra space), else a copy."""
    temp = temp_path_for(dest)
    try:
        os.link(src, temp)
    except OSError:
        # Links fail across filesystems and on some network filesystems; a copy holds the same bytes.
        shutil.copyfile(src, temp)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
    os.replace(temp, dest)
