"""Reading a split back, verified: every shard's sha256, schema and row count against the manifest.

A split still being written (status "running") is refused unless the caller asks for partial data,
so an interrupted run never passes for a finished dataset. Shards of any format a run can hold
(Arrow, and Parquet or JSON Lines in an export) and shards an earlier labeler wrote in a split's
previous layout all come back in the split's current Arrow schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from labeler.core.errors import InputError
from labeler.core.records import SPLITS, Record
from labeler.store.manifest import ShardInfo, SplitEntry, load_manifest, manifest_path, split_entry
from labeler.store.shards import ids_of, read_verified_shard


def committed_split(run_dir: Path, split: str, *, require_complete: bool = True) -> SplitEntry:
    """The manifest entry of a split; `InputError` if missing, or still running and `require_complete`."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; known: {', '.join(sorted(SPLITS))}", where="split")
    entry = split_entry(load_manifest(run_dir), split, run_dir=run_dir)
    if require_complete and entry.status != "complete":
        raise InputError(
            f"split {split!r} is incomplete ({entry.rows} records so far, status {entry.status!r}); "
            "run the same command again to finish it",
            file=manifest_path(run_dir),
            where=f"splits.{split}",
        )
    return entry


def iter_shard_tables(run_dir: Path, split: str, *, require_complete: bool = True) -> Iterator[pa.Table]:
    """Each verified shard of a split as an Arrow table, in commit order; ids checked unique across shards."""
    run_dir = Path(run_dir)
    entry = committed_split(run_dir, split, require_complete=require_complete)
    seen: set[str] = set()
    for shard in entry.shards:
        table = read_verified_shard(run_dir, shard, SPLITS[split], upgrade=True)
        ids = ids_of(table)
        if len(set(ids)) != len(ids):
            raise InputError("repeats record ids within the shard", file=run_dir / shard.file)
        if not seen.isdisjoint(ids):
            raise InputError(
                f"repeats {len(seen.intersection(ids))} record id(s) of earlier shards of the {split!r} split: "
                "two processes wrote it at once. To repair the run, rerun the command that wrote the split, "
                "with the same settings: it drops the shards that repeat records and makes their other records "
                "again (or pass ‹overwrite› to start the split again)",
                file=run_dir / shard.file,
            )
        seen.update(ids)
        yield table


def read_split(run_dir: Path, split: str, *, require_complete: bool = True) -> pa.Table:
    """The whole split as one Arrow table with the split's schema (empty if it has no shards)."""
    tables = list(iter_shard_tables(run_dir, split, require_complete=require_complete))
    if not tables:
        return SPLITS[split].arrow_schema().empty_table()
    return pa.concat_tables(tables)


def iter_records(run_dir: Path, split: str, *, require_complete: bool = True) -> Iterator[Record]:
    """The split's records as validated models (`PreferenceRecord`, `SFTRecord`), shard by shard."""
    for table in iter_shard_tables(run_dir, split, require_complete=require_complete):
        yield from SPLITS[split].from_table(table)


def read_committed_shard(run_dir: Path, split: str, shard: ShardInfo) -> pa.Table:
    """One shard a split's manifest entry lists, verified (sha256, schema, rows), in the split's schema:
    for readers that page through a run shard by shard (`committed_split(..., require_complete=False)`
    gives the shards committed so far, also while another process is still writing the split)."""
    return read_verified_shard(Path(run_dir), shard, SPLITS[split], upgrade=True)
