"""What the review pages show of a run, read shard by shard through the store's verified readers.

The list of pairs is answered from a small in-memory index of a few columns per pair (id, the
probabilities, flags, principles, a prompt preview, where the row is); the whole rows are read from
their shard only when a page shows them, and the few shards read last are kept. The index follows the
manifest: a shard committed by a process still labelling the run joins it at the next request, so the
pages show what is complete so far. Text search reads the shards' text columns one shard at a time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from labeler.core.records import PreferenceRecord, SFTRecord
from labeler.store.manifest import ShardInfo, load_manifest, manifest_path
from labeler.store.readers import read_committed_shard

PREVIEW_CHARS = 160
CACHED_SHARDS = 4
CACHED_SEARCHES = 16
SEARCH_COLUMNS = ("prompt_text", "response_a", "response_b")
SORTS = {
    "position": "the order the run wrote them",
    "p_a": "p_a, lowest first",
    "-p_a": "p_a, highest first",
    "uncertain": "p_a closest to 0.5 first",
    "order_gap": "largest gap between the two orders first",
}


@dataclass(frozen=True)
class ListQuery:
    """The filters, sort and page of the list of pairs (every field optional but page and size)."""

    flag: str = ""
    principle: str = ""
    p_min: float = 0.0
    p_max: float = 1.0
    text: str = ""
    sort: str = "position"
    page: int = 1
    size: int = 50


@dataclass(frozen=True)
class ListRow:
    id: str
    position: int
    p_a: float
    p_a_ab: float
    p_a_ba: float
    flags: tuple[str, ...]
    principles: tuple[str, ...]
    preview: str


@dataclass(frozen=True)
class ListPage:
    rows: list[ListRow]
    total: int  # pairs that pass the filters
    pairs: int  # pairs committed so far
    page: int
    pages: int


def _wrapped(values: list[tuple[str, ...]] | pa.ChunkedArray) -> pa.Array:
    """Each list of names as one ",a,b," string, so that "has name x" is a substring test of ",x,".

    >>> _wrapped([("low_mass", "tie"), ()]).to_pylist()
    [',low_mass,tie,', ',']
    """
    items = values.to_pylist() if isinstance(values, pa.ChunkedArray) else values
    return pa.array(["," + "".join(f"{name}," for name in names) for names in items], pa.string())


def index_columns(table: pa.Table, shard: int) -> pa.Table:
    """The list columns of one shard of preference rows, with where each row is."""
    return pa.table(
        {
            "id": table.column("id"),
            "p_a": table.column("p_a"),
            "p_a_ab": table.column("p_a_ab"),
            "p_a_ba": table.column("p_a_ba"),
            "flags": _wrapped(table.column("flags")),
            "principles": _wrapped(table.column("principle_ids")),
            "preview": pc.utf8_slice_codeunits(table.column("prompt_text"), 0, PREVIEW_CHARS),
            "shard": pa.array([shard] * table.num_rows, pa.int32()),
            "row": pa.array(range(table.num_rows), pa.int32()),
        }
    )


class RunIndex:
    """The pairs and SFT rows of one run, as far as they are committed; safe to share between threads."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._lock = threading.Lock()
        self._seen_manifest: tuple[int, int] | None = None
        self._shards: dict[str, list[ShardInfo]] = {"preferences": [], "sft": []}
        self._status: dict[str, str] = {}
        self._index = index_columns(PreferenceRecord.arrow_schema().empty_table(), 0)
        self._positions: dict[str, int] = {}
        self._sft_rows: list[tuple[str, int, int]] = []  # (id, shard, row)
        self._sft_positions: dict[str, int] = {}
        self._tables: OrderedDict[tuple[str, str], pa.Table] = OrderedDict()
        self._searches: OrderedDict[tuple[int, str], pa.Array] = OrderedDict()
        self.refresh()

    # --- following the manifest -------------------------------------------------------------

    def refresh(self) -> None:
        """Take in the shards committed since the last call (a changed manifest); cheap when none were."""
        path = manifest_path(self.run_dir)
        stat = path.stat()
        seen = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if seen == self._seen_manifest:
                return
            manifest = load_manifest(self.run_dir)
            for split in ("preferences", "sft"):
                entry = manifest.splits.get(split)
                shards = list(entry.shards) if entry is not None else []
                self._status[split] = entry.status if entry is not None else "absent"
                known = self._shards[split]
                if shards[: len(known)] != known:  # rewritten (--overwrite, merge): start again
                    known = []
                    self._reset(split)
                for number in range(len(known), len(shards)):
                    self._add_shard(split, number, shards[number])
                self._shards[split] = shards
            self._seen_manifest = seen

    def _reset(self, split: str) -> None:
        if split == "preferences":
            self._index = index_columns(PreferenceRecord.arrow_schema().empty_table(), 0)
            self._positions = {}
            self._searches.clear()
        else:
            self._sft_rows, self._sft_positions = [], {}
        self._tables.clear()

    def _add_shard(self, split: str, number: int, shard: ShardInfo) -> None:
        table = self._read(split, shard)
        if split == "preferences":
            start = self._index.num_rows
            self._index = pa.concat_tables([self._index, index_columns(table, number)])
            for offset, record_id in enumerate(table.column("id").to_pylist()):
                self._positions[record_id] = start + offset
            self._searches.clear()
        else:
            for row, record_id in enumerate(table.column("id").to_pylist()):
                self._sft_positions[record_id] = len(self._sft_rows)
                self._sft_rows.append((record_id, number, row))

    def _read(self, split: str, shard: ShardInfo) -> pa.Table:
        """A verified shard, from the few kept in memory when it was read lately."""
        key = (split, shard.sha256)
        table = self._tables.get(key)
        if table is None:
            table = read_committed_shard(self.run_dir, split, shard)
            self._tables[key] = table
            while len(self._tables) > CACHED_SHARDS:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(key)
        return table

    # --- what the pages ask -----------------------------------------------------------------

    def status(self, split: str) -> str:
        """ "complete", "running" (still being written: the pages show what is committed) or "absent"."""
        return self._status.get(split, "absent")

    @property
    def pairs(self) -> int:
        return self._index.num_rows

    @property
    def sft_rows(self) -> int:
        return len(self._sft_rows)

    def flags(self) -> list[str]:
        """Every flag some pair carries, sorted."""
        return self._names("flags")

    def principles(self) -> list[str]:
        """Every principle some pair was judged under, sorted."""
        return self._names("principles")

    def _names(self, column: str) -> list[str]:
        wrapped = pc.unique(self._index.column(column)).to_pylist()
        return sorted({name for value in wrapped for name in value.split(",") if name})

    def select(self, query: ListQuery, *, only: set[str] | None = None, without: set[str] | None = None) -> pa.Array:
        """Positions of the pairs that pass `query`'s filters, in its sort order; `only`/`without`
        keep/drop the pairs of those ids (the human-label filters)."""
        index = self._index
        mask = pc.and_(
            pc.greater_equal(index.column("p_a"), query.p_min), pc.less_equal(index.column("p_a"), query.p_max)
        )
        if query.flag:
            mask = pc.and_(mask, pc.match_substring(index.column("flags"), f",{query.flag},"))
        if query.principle:
            mask = pc.and_(mask, pc.match_substring(index.column("principles"), f",{query.principle},"))
        if query.text:
            mask = pc.and_(mask, self._text_matches(query.text))
        if only is not None:
            mask = pc.and_(mask, pc.is_in(index.column("id"), value_set=pa.array(sorted(only), pa.string())))
        if without:
            mask = pc.and_(
                mask, pc.invert(pc.is_in(index.column("id"), value_set=pa.array(sorted(without), pa.string())))
            )
        positions = pc.indices_nonzero(mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask)
        if query.sort == "position" or len(positions) == 0:
            return positions
        p_a = pc.take(index.column("p_a"), positions)
        if query.sort in ("p_a", "-p_a"):
            key = p_a
        elif query.sort == "uncertain":
            key = pc.abs(pc.subtract(p_a, 0.5))
        else:  # order_gap: largest first
            gap = pc.abs(
                pc.subtract(pc.take(index.column("p_a_ab"), positions), pc.take(index.column("p_a_ba"), positions))
            )
            key = pc.negate(gap)
        order = "descending" if query.sort == "-p_a" else "ascending"
        ranks = pc.sort_indices(
            pa.table({"key": key, "at": positions}), sort_keys=[("key", order), ("at", "ascending")]
        )
        return pc.take(positions, ranks)

    def page(self, query: ListQuery, **human: set[str] | None) -> ListPage:
        positions = self.select(query, **human)
        total = len(positions)
        pages = max(1, -(-total // query.size))
        page = min(max(1, query.page), pages)
        chosen = positions[(page - 1) * query.size : page * query.size]
        rows = pc.take(self._index, chosen).to_pylist() if len(chosen) else []
        return ListPage(
            rows=[
                ListRow(
                    id=row["id"],
                    position=int(at.as_py()),
                    p_a=row["p_a"],
                    p_a_ab=row["p_a_ab"],
                    p_a_ba=row["p_a_ba"],
                    flags=tuple(_names(row["flags"])),
                    principles=tuple(_names(row["principles"])),
                    preview=row["preview"],
                )  # fmt: skip
                for row, at in zip(rows, chosen, strict=True)
            ],
            total=total,
            pairs=self.pairs,
            page=page,
            pages=pages,
        )

    def neighbour(self, pair_id: str, query: ListQuery, step: int, **human: set[str] | None) -> str | None:
        """The id of the pair `step` places after (or before) `pair_id` in `query`'s list, or None."""
        position = self._positions.get(pair_id)
        if position is None:
            return None
        positions = self.select(query, **human).to_pylist()
        if position not in positions:
            return None
        at = positions.index(position) + step
        if not 0 <= at < len(positions):
            return None
        return str(self._index.column("id")[positions[at]].as_py())

    def pair(self, pair_id: str) -> PreferenceRecord | None:
        """The whole row of a pair, from its verified shard; None for an id the run does not hold."""
        with self._lock:
            position = self._positions.get(pair_id)
            if position is None:
                return None
            shard = self._shards["preferences"][self._index.column("shard")[position].as_py()]
            row = self._index.column("row")[position].as_py()
            table = self._read("preferences", shard)
        return PreferenceRecord.from_row(table.slice(row, 1).to_pylist()[0])

    def sft_page(self, page: int, size: int) -> tuple[list[SFTRecord], int]:
        """One page of SFT rows, and the number of pages."""
        pages = max(1, -(-len(self._sft_rows) // size))
        page = min(max(1, page), pages)
        return [record for record in self._sft_records(self._sft_rows[(page - 1) * size : page * size])], pages

    def sft_row(self, row_id: str) -> SFTRecord | None:
        position = self._sft_positions.get(row_id)
        if position is None:
            return None
        return next(self._sft_records([self._sft_rows[position]]))

    def _sft_records(self, where: list[tuple[str, int, int]]) -> Iterator[SFTRecord]:
        for _, shard_number, row in where:
            with self._lock:
                table = self._read("sft", self._shards["sft"][shard_number])
            yield SFTRecord.from_row(table.slice(row, 1).to_pylist()[0])

    def _text_matches(self, text: str) -> pa.Array:
        """Per indexed pair: whether its prompt or a response holds `text` (case-insensitive); read
        shard by shard, kept for the next pages of the same search."""
        key = (self.pairs, text.casefold())
        found = self._searches.get(key)
        if found is not None:
            return found
        parts = []
        with self._lock:
            shards = list(self._shards["preferences"])
        for shard in shards:
            with self._lock:
                table = self._read("preferences", shard)
            hit = pa.array([False] * table.num_rows)
            for column in (*SEARCH_COLUMNS, "id"):
                hit = pc.or_(hit, pc.match_substring(table.column(column), text, ignore_case=True))
            parts.append(hit.combine_chunks() if isinstance(hit, pa.ChunkedArray) else hit)
        found = pa.concat_arrays(parts) if parts else pa.array([], pa.bool_())
        found = found[: self.pairs]
        self._searches[key] = found
        while len(self._searches) > CACHED_SEARCHES:
            self._searches.popitem(last=False)
        return found


def _names(wrapped: str) -> list[str]:
    return [name for name in wrapped.split(",") if name]
