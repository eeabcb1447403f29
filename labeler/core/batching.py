"""One way to cut work into engine calls: consecutive batches of at most `size` items, streamed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items from `items` (the last one shorter), read lazily.

    >>> list(batches(range(5), 2))
    [[0, 1], [2, 3], [4]]
    >>> list(batches([], 3))
    []
    """
    if size < 1:
        raise ValueError(f"a batch holds at least one item, not {size}")
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
