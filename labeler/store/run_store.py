"""Writing one split of a run directory: shard by shard, resumable after a crash, never mixing runs.

    store = RunStore.open(run_dir, "preferences", fingerprint)
    todo = [pair for pair in pairs if pair_id(pair) not in store.done_ids()]
    for batch in batches(todo):
        store.write_shard(judge(batch))        # one committed shard per call
    store.mark_complete(stats)

Commit protocol for a shard: write the bytes to a temporary name in the split folder, fsync, rename
to the next free `shard-NNNNN.arrow`, then list it (rows, sha256) in `manifest.json`. A crash before
the rename leaves a `.partial` file, deleted on the next open. A crash between the rename and the
manifest write leaves an *orphan*: a complete shard the manifest does not list. The next open adopts
it if it reads fully with the split's schema and holds only new ids, and deletes it otherwise, so
every record ends up in the split exactly once either way.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labeler.core.errors import InputError
from labeler.core.outputs import check_output_folder
from labeler.core.records import SPLITS, Record
from labeler.store.atomic import TEMP_SUFFIX, atomic_write_bytes
from labeler.store.fingerprint import fingerprint_diff, normalize_fingerprint, sha256_bytes
from labeler.store.lock import acquire, refuse_linked_lock_files, release
from labeler.store.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    SplitEntry,
    load_manifest,
    manifest_lock,
    manifest_path,
    new_manifest,
    read_manifest,
    split_entry,
    write_manifest,
)
from labeler.store.shards import decode_shard, encode_shard, ids_of, read_verified_shard, shard_name, shard_seq

logger = logging.getLogger(__name__)


class RunStore:
    """The writer of one split of one run directory. Create it with `RunStore.open`."""

    def __init__(
        self,
        run_dir: Path,
        split: str,
        fingerprint: dict[str, Any],
        part: tuple[int, int] | None,
        done: set[str],
    ) -> None:
        self.run_dir = run_dir
        self.split = split
        self.record_type: type[Record] = SPLITS[split]
        self.fingerprint = fingerprint
        self.part = part
        self._done = done
        self._replaces_old = False  # --overwrite: the old split is deleted at the first write

    @classmethod
    def open(
        cls,
        run_dir: Path,
        split: str,
        fingerprint: dict[str, Any],
        *,
        overwrite: bool = False,
        part: tuple[int, int] | None = None,
    ) -> RunStore:
        """Open `run_dir/split` for writing, creating the run if needed, resuming it if it exists.

        An existing split with another fingerprint (or another part) is refused with an `InputError`
        naming the differing keys, unless `overwrite`, which deletes its shards at the first write (so a
        run that fails before it keeps the old split). Committed shards are verified (checksum, schema,
        rows); orphan shards from a crash are adopted or deleted; shards that repeat the records of
        earlier ones (two processes that wrote at once) are dropped, their other records redone.

        The store holds the run's writer lock (`labeler.store.lock`) until it is garbage collected: a
        second process opening the run meanwhile gets an `InputError` naming this one's pid.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(sorted(SPLITS))}")
        if part is not None:
            _check_part(part)
        fingerprint = normalize_fingerprint(fingerprint)
        run_dir = Path(run_dir)
        # Every check comes before the first write: a run refused as bad input leaves nothing behind.
        check_output_folder(run_dir, field="out")
        refuse_linked_lock_files(run_dir)
        if not overwrite:
            _refuse_linked_split(run_dir, split)
        # One writer per run, from here to the end of the command (see labeler.store.lock).
        key = acquire(run_dir)
        try:
            store = cls._open_locked(run_dir, split, fingerprint, overwrite=overwrite, part=part)
        except BaseException:
            release(key)
            raise
        weakref.finalize(store, release, key)
        return store

    @classmethod
    def _open_locked(
        cls, run_dir: Path, split: str, fingerprint: dict[str, Any], *, overwrite: bool, part: tuple[int, int] | None
    ) -> RunStore:
        split_dir = run_dir / split
        with manifest_lock(run_dir):
            existing = read_manifest(run_dir)
            manifest = existing or new_manifest()
            entry = manifest.splits.get(split)
            if overwrite:
                # The old split stays until the new one writes its first shard (`_replace_old_split`):
                # a run that fails before that (a server down, a bad first batch) loses nothing.
                store = cls(run_dir, split, fingerprint, part, set())
                store._replaces_old = True
                return store
            if entry is None:
                _refuse_unlisted_shards(run_dir, split)
                entry = SplitEntry(fingerprint=fingerprint, status="running", part=part)
            else:
                _refuse_other_run(run_dir, split, entry, fingerprint, part)
            done, entry = _verified_ids(run_dir, split, entry)
            split_dir.mkdir(exist_ok=True)
            for temp in split_dir.glob(f"*{TEMP_SUFFIX}"):
                # A write that never reached its rename: the records in it were never committed.
                temp.unlink()
            _remove_manifest_leftovers(run_dir)
            entry = _recover_orphans(run_dir, split, entry, done)
            if existing is None or existing.splits.get(split) != entry:
                write_manifest(run_dir, manifest.with_split(split, entry))
        return cls(run_dir, split, fingerprint, part, done)

    def _replace_old_split(self) -> None:
        """--overwrite, at the first write: delete the old split's files (a split folder that is a
        symbolic link: the link itself, never the files it points to) and start the new entry."""
        with manifest_lock(self.run_dir):
            manifest = read_manifest(self.run_dir) or new_manifest()
            if self.split_dir.is_symlink():
                self.split_dir.unlink()
            elif self.split_dir.is_dir():
                _delete_split_files(self.split_dir)
            self.split_dir.mkdir(exist_ok=True)
            _remove_manifest_leftovers(self.run_dir)
            entry = SplitEntry(fingerprint=self.fingerprint, status="running", part=self.part)
            write_manifest(self.run_dir, manifest.with_split(self.split, entry))
        self._replaces_old = False

    @property
    def split_dir(self) -> Path:
        return self.run_dir / self.split

    def done_ids(self) -> set[str]:
        """Ids of every record already committed to this split (a copy: skip these when resuming)."""
        return set(self._done)

    @property
    def is_complete(self) -> bool:
        """Whether the manifest marks this split complete (never before an overwrite's first write)."""
        return not self._replaces_old and load_manifest(self.run_dir).splits[self.split].status == "complete"

    def write_shard(self, records: Sequence[Record]) -> ShardInfo | None:
        """Commit `records` as one new shard; returns its manifest entry (None if `records` is empty).

        Every record must be of the split's record type and carry an id not yet written: an id
        written twice would break "every record exactly once", so it is a `ValueError`.
        Writing marks the split "running" until `mark_complete`.
        """
        if not records:
            return None
        wrong = sorted({type(r).__name__ for r in records if type(r) is not self.record_type})
        if wrong:
            raise TypeError(f"split {self.split!r} takes {self.record_type.__name__}, got {', '.join(wrong)}")
        ids = [record.id for record in records]
        repeated = sorted({i for i in ids if i in self._done} | _duplicates(ids))
        if repeated:
            raise ValueError(
                f"{len(repeated)} record id(s) already written or repeated in this batch "
                f"(first: {repeated[0]}); skip the ids in done_ids() and deduplicate inputs"
            )
        data = encode_shard(self.record_type.to_table(records))
        if self._replaces_old:
            self._replace_old_split()
        with manifest_lock(self.run_dir):
            manifest, entry = self._own_entry()
            path = self.split_dir / shard_name(self._next_seq(entry), self.part)
            atomic_write_bytes(path, data)
            info = ShardInfo(file=_relative(self.run_dir, path), rows=len(records), sha256=sha256_bytes(data))
            entry = entry.model_copy(update={"shards": (*entry.shards, info), "status": "running"})
            write_manifest(self.run_dir, manifest.with_split(self.split, entry))
        self._done.update(ids)
        return info

    def mark_complete(self, stats: dict[str, Any] | None = None) -> None:
        """Mark the split complete (every record written), with optional JSON-able statistics."""
        stats = json.loads(json.dumps(stats, allow_nan=False)) if stats is not None else None
        if self._replaces_old:
            self._replace_old_split()
        with manifest_lock(self.run_dir):
            manifest, entry = self._own_entry()
            entry = entry.model_copy(update={"status": "complete", "stats": stats})
            write_manifest(self.run_dir, manifest.with_split(self.split, entry))

    def _own_entry(self) -> tuple[Manifest, SplitEntry]:
        """The manifest re-read under the lock, and this split's entry, still this run's."""
        manifest = load_manifest(self.run_dir)
        entry = split_entry(manifest, self.split, run_dir=self.run_dir)
        if entry.fingerprint != self.fingerprint or entry.part != self.part:
            raise InputError(
                f"split {self.split!r} was overwritten by another run while this one was writing it",
                file=manifest_path(self.run_dir),
                where=f"splits.{self.split}",
            )
        return manifest, entry

    def _next_seq(self, entry: SplitEntry) -> int:
        """One past the highest sequence number in use, on disk or in the manifest: never overwrite a file."""
        names = [Path(shard.file).name for shard in entry.shards]
        names += [path.name for path in self.split_dir.glob("shard-*.arrow")]
        used = [seq for seq in map(shard_seq, names) if seq is not None]
        return max(used, default=-1) + 1


def check_run(
    run_dir: Path, split: str, fingerprint: dict[str, Any], *, overwrite: bool = False, part: tuple[int, int] | None
) -> None:
    """The checks `RunStore.open` makes of an output folder, without writing anything (shards are
    verified when the store opens): writable, and any run there of the same settings and part."""
    check_output_folder(run_dir, field="out")
    refuse_linked_lock_files(run_dir)
    manifest = read_manifest(run_dir)
    entry = manifest.splits.get(split) if manifest is not None else None
    if overwrite:
        return
    _refuse_linked_split(run_dir, split)
    if entry is None:
        _refuse_unlisted_shards(run_dir, split)
    else:
        _refuse_other_run(run_dir, split, entry, normalize_fingerprint(fingerprint), part)


def _check_part(part: tuple[int, int]) -> None:
    index, num = part
    if not (num >= 1 and 0 <= index < num):
        raise InputError(f"part {index} of {num} is not valid: need 0 <= index < count", where="part")


def _relative(run_dir: Path, path: Path) -> str:
    return path.relative_to(run_dir).as_posix()


def _duplicates(ids: Sequence[str]) -> set[str]:
    return {i for i, count in Counter(ids).items() if count > 1}


def _delete_split_files(split_dir: Path) -> None:
    for path in [*split_dir.glob("*.arrow"), *split_dir.glob(f"*{TEMP_SUFFIX}")]:
        path.unlink()


def _refuse_unlisted_shards(run_dir: Path, split: str) -> None:
    """A split the manifest does not know must not already hold .arrow files of unknown origin."""
    strays = sorted((run_dir / split).glob("*.arrow"))
    if strays:
        raise InputError(
            f"{len(strays)} .arrow file(s) in {split}/ that {manifest_path(run_dir).name} does not list, "
            "so their origin is unknown; pass ‹overwrite› to delete them",
            file=strays[0],
        )


def _refuse_other_run(
    run_dir: Path, split: str, entry: SplitEntry, fingerprint: dict[str, Any], part: tuple[int, int] | None
) -> None:
    where = f"splits.{split}"
    differing = fingerprint_diff(entry.fingerprint, fingerprint)
    if differing:
        raise InputError(
            f"split {split!r} holds {entry.rows} records made with different settings "
            f"(differing: {', '.join(differing)}); rerun with the same settings to resume, "
            "use another output folder, or pass ‹overwrite› to discard them",
            file=manifest_path(run_dir),
            where=where,
        )
    if entry.part != part:
        raise InputError(
            f"split {split!r} was written as {_describe_part(entry.part)}, not {_describe_part(part)}; "
            "use one output folder per part, or pass ‹overwrite›",
            file=manifest_path(run_dir),
            where=where,
        )


def _describe_part(part: tuple[int, int] | None) -> str:
    return "a whole run" if part is None else f"part {part[0]} of {part[1]}"


def _verified_ids(run_dir: Path, split: str, entry: SplitEntry) -> tuple[set[str], SplitEntry]:
    """Ids in the committed shards, after verifying each; `InputError` names a damaged shard.

    A shard that repeats ids of earlier shards is what two processes writing the split at once leave
    (each committed the same batches): it is dropped from the entry returned, and its file, now an
    orphan that repeats records, is deleted by `_recover_orphans`; records only it held are redone.
    """
    done: set[str] = set()
    kept: list[ShardInfo] = []
    for shard in entry.shards:
        try:
            table = read_verified_shard(run_dir, shard, SPLITS[split])
        except InputError as exc:
            raise InputError(
                f"{exc.message}. Delete its entry from manifest.json to redo its records, "
                "or pass ‹overwrite› to start the split again",
                file=exc.file,
                where=exc.where,
            ) from exc
        ids = ids_of(table)
        inside = _duplicates(ids)
        if inside:
            raise InputError(f"repeats {len(inside)} record id(s) within the shard", file=run_dir / shard.file)
        repeated = done.intersection(ids)
        if repeated:
            logger.warning(
                "dropping shard %s: it repeats %d record(s) of earlier shards (two processes wrote this split "
                "at once); its other records are made again", shard.file, len(repeated),
            )
            continue
        kept.append(shard)
        done.update(ids)
    if len(kept) < len(entry.shards):
        entry = entry.model_copy(update={"shards": tuple(kept), "status": "running"})
    return done, entry


def _refuse_linked_split(run_dir: Path, split: str) -> None:
    """A split folder that is a symbolic link would put the run's shards outside it."""
    split_dir = Path(run_dir) / split
    if split_dir.is_symlink():
        raise InputError(
            "is a symbolic link: a run's split folder must be inside the run; pass ‹overwrite› to replace "
            "the link with a new folder (the files it points to are left alone), or give another ‹out›",
            file=split_dir,
        )


def _remove_manifest_leftovers(run_dir: Path) -> None:
    for temp in run_dir.glob(f".{MANIFEST_NAME}.*{TEMP_SUFFIX}"):
        # A manifest write killed before its rename. Every manifest write holds the manifest lock,
        # so none is in flight now: the file is a leftover, and the manifest is the old one.
        temp.unlink()


def _recover_orphans(run_dir: Path, split: str, entry: SplitEntry, done: set[str]) -> SplitEntry:
    """Adopt or delete shard files that a crash left renamed but not yet listed in the manifest."""
    listed = {shard.file for shard in entry.shards}
    for path in sorted((run_dir / split).glob("*.arrow")):
        file = _relative(run_dir, path)
        if file in listed:
            continue
        seq = shard_seq(path.name)
        if seq is None or shard_name(seq, entry.part) != path.name:
            raise InputError(
                f"not a shard of this run ({_describe_part(entry.part)}); move it out of {split}/ "
                "or pass ‹overwrite›",
                file=path,
            )
        data = path.read_bytes()
        try:
            ids = ids_of(decode_shard(data, file=path, record_type=SPLITS[split]))
        except InputError as exc:
            logger.warning("deleting unreadable uncommitted shard: %s", exc.render())
            path.unlink()
            continue
        if done.intersection(ids) or _duplicates(ids):
            logger.warning("deleting uncommitted shard %s: it repeats records already committed", path)
            path.unlink()
            continue
        logger.info("adopting shard %s (%d records) written just before an interruption", path, len(ids))
        info = ShardInfo(file=file, rows=len(ids), sha256=sha256_bytes(data))
        entry = entry.model_copy(update={"shards": (*entry.shards, info), "status": "running"})
        done.update(ids)
    return entry
