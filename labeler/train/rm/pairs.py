"""The judged pairs a reward model trains on: read from runs, split into train and eval, batched by epoch.

Pairs are the `PreferenceRecord`s of each run's preference split, read through the store, which
verifies every shard's checksum and schema and refuses a split that is still being written; the record
model itself checks every value (p_a a probability, chosen one of the pair).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from labeler.core.errors import InputError
from labeler.core.records import PreferenceRecord

PREFERENCES = "preferences"


@dataclass(frozen=True)
class SourceRun:
    """Where a run's pairs came from, recorded in the saved model's `labeler-rm.json`."""

    path: str
    rows: int
    split_sha256: str  # sha256 of the manifest's preference entry: fingerprint and every shard's checksum


def check_runs(runs: Sequence[Path]) -> list[SourceRun]:
    """Check that every run has a complete, verified preference split with rows, and that no pair is given
    twice: the same folder under two spellings, or two runs sharing pairs (a run and its export, a merged
    run and one of its parts) would train on those pairs twice."""
    from labeler.store import iter_shard_tables, load_manifest

    if not runs:
        raise InputError("no run given: pass at least one run folder with ‹data› RUN", field="data")
    sources = []
    folders: dict[tuple[int, int], Path] = {}  # (device, inode) of each run folder -> the --data naming it
    read_from: dict[str, Path] = {}  # pair id -> the run it was read from
    for run in map(Path, runs):
        if not run.is_dir():
            raise InputError("not a folder (expected a labeler run folder)", file=run, field="data")
        info = run.stat()
        earlier = folders.setdefault((info.st_dev, info.st_ino), run)
        if earlier is not run:
            raise InputError(
                f"is the same run as ‹data› {earlier}: every pair would be trained on twice; give each run once",
                file=run,
                field="data",
            )
        rows = 0
        for table in iter_shard_tables(run, PREFERENCES):
            rows += table.num_rows
            _refuse_repeated_pairs(run, table.column("id").to_pylist(), read_from)
        if rows == 0:
            raise InputError("the preference split has no rows", file=run / PREFERENCES, field="data")
        entry = load_manifest(run).splits[PREFERENCES]
        digest = hashlib.sha256(entry.model_dump_json().encode("utf-8")).hexdigest()
        sources.append(SourceRun(path=str(run.resolve()), rows=rows, split_sha256=digest))
    return sources


def scored_principles(runs: Sequence[Path]) -> set[str]:
    """The principle ids that some pair of the runs has a `principle_scores` entry for (read from the shards'
    column alone, before any record is built)."""
    from labeler.store import iter_shard_tables

    ids: set[str] = set()
    for run in map(Path, runs):
        for table in iter_shard_tables(run, PREFERENCES):
            for scores in table.column("principle_scores").to_pylist():
                ids.update(entry["principle_id"] for entry in scores or ())
    return ids


def _refuse_repeated_pairs(run: Path, ids: Sequence[str], read_from: dict[str, Path]) -> None:
    """Record where each pair id was read; `InputError` when another --data run already had it."""
    for pair_id in ids:
        earlier = read_from.setdefault(pair_id, run)
        if earlier is not run:
            shared = sum(1 for i in ids if read_from.get(i) is earlier)
            raise InputError(
                f"holds pairs that ‹data› {earlier} holds too ({shared} in one shard, first id {pair_id}): "
                "they would be trained on twice; give each pair's run once",
                file=run,
                field="data",
            )


def load_pairs(runs: Sequence[Path]) -> list[PreferenceRecord]:
    """Every preference record of each run, in order (checked first with `check_runs`)."""
    from labeler.store import iter_records

    pairs: list[PreferenceRecord] = []
    for run in runs:
        pairs += [record for record in iter_records(Path(run), PREFERENCES) if isinstance(record, PreferenceRecord)]
    return pairs


def split_train_eval(ids: Sequence[str], eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Positions of the training and evaluation rows: a seeded fraction held out, decided by id alone.

    A row is held out when sha256(seed, id), read as a number in [0, 1), falls below `eval_fraction`,
    so a pair that appears in two runs lands on the same side, and adding runs never moves an old pair
    across. When that leaves a side empty (tiny data), the row nearest the threshold moves over, so
    both sides have a row once there are two rows or more and the fraction is positive.

    >>> split_train_eval(["a", "b", "c", "d", "e", "f"], 0.3, seed=0)
    ([0, 1, 2, 3, 4], [5])
    >>> split_train_eval(["a", "b"], 0.0, seed=0)
    ([0, 1], [])
    """
    if eval_fraction <= 0.0 or len(set(ids)) < 2:
        return list(range(len(ids))), []

    def position(pair_id: str) -> float:
        return int(hashlib.sha256(f"{seed}:{pair_id}".encode()).hexdigest()[:15], 16) / 16**15

    unique = sorted(set(ids), key=position)
    held_ids = {pair_id for pair_id in unique if position(pair_id) < eval_fraction}
    if not held_ids:
        held_ids = {unique[0]}
    if len(held_ids) == len(unique):
        held_ids.discard(unique[-1])
    eval_rows = [i for i, pair_id in enumerate(ids) if pair_id in held_ids]
    train_rows = [i for i, pair_id in enumerate(ids) if pair_id not in held_ids]
    return train_rows, eval_rows


def epoch_batches(
    num_examples: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """This process's batches of example positions for one epoch: a seeded shuffle, then sharding.

    With several processes the remainder is dropped so that every process takes the same number of
    steps (they synchronise gradients at every step); the last batch of a process may be short.

    >>> epoch_batches(5, 2, seed=0, epoch=0)
    [[2, 3], [1, 0], [4]]
    >>> [len(b) for b in epoch_batches(5, 2, seed=0, epoch=0, rank=1, world_size=2)]
    [2]
    """
    order = list(range(num_examples))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    per_process = num_examples // world_size
    mine = order[rank::world_size][:per_process]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
