"""Seeded choices that do not depend on batch composition or on how often a run was resumed.

Every random choice is drawn from a generator seeded by (run seed, record key, purpose), so the same
prompt gets the same principles and samples whether it runs alone, in a batch, or after a crash.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def seed_for(seed: int, *keys: object) -> int:
    """A 31-bit seed derived from the run seed and any keys.

    >>> seed_for(0, "p1", "initial") == seed_for(0, "p1", "initial")
    True
    >>> seed_for(0, "p1", "initial") != seed_for(1, "p1", "initial")
    True
    """
    blob = "\x1f".join([str(seed), *map(str, keys)]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little") & 0x7FFFFFFF


def rng_for(seed: int, *keys: object) -> random.Random:
    return random.Random(seed_for(seed, *keys))


def weighted_sample(items: Sequence[T], weights: Sequence[float], k: int, rng: random.Random) -> list[T]:
    """k distinct items, drawn without replacement with probability proportional to weight.

    >>> weighted_sample(["a", "b", "c"], [1, 1, 1], 3, random.Random(0)) == ["a", "b", "c"]
    False
    >>> sorted(weighted_sample(["a", "b", "c"], [1, 1, 1], 3, random.Random(0)))
    ['a', 'b', 'c']
    """
    if k > len(items):
        raise ValueError(f"cannot sample {k} of {len(items)} items")
    pool = list(zip(items, weights))
    chosen: list[T] = []
    for _ in range(k):
        total = sum(w for _, w in pool)
        pick = rng.uniform(0, total)
        for index, (item, weight) in enumerate(pool):
            pick -= weight
            if pick <= 0 or index == len(pool) - 1:
                chosen.append(item)
                pool.pop(index)
                break
    return chosen
