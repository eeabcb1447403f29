"""What the review pages read of a run: filters and sorts against a slow obvious reference, paging, and a
run still being written (the index shows what is committed, and takes in new shards)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sample_runs import fingerprint, make_review_run, review_pair

from labeler.review.app import list_query
from labeler.review.index import ListQuery, RunIndex
from labeler.store import RunStore


def _reference(pairs: int, query: ListQuery) -> list[str]:
    records = [review_pair(i) for i in range(pairs)]
    kept = [
        (i, r) for i, r in enumerate(records)
        if query.p_min <= r.p_a <= query.p_max and (not query.flag or query.flag in r.flags)
        and (not query.principle or query.principle in r.principle_ids)
        and (not query.text or any(query.text.lower() in t.lower() for t in (r.prompt_text, r.response_a,
                                                                              r.response_b)))
    ]  # fmt: skip
    keys = {
        "position": lambda item: item[0],
        "p_a": lambda item: (item[1].p_a, item[0]),
        "-p_a": lambda item: (-item[1].p_a, item[0]),
        "uncertain": lambda item: (abs(item[1].p_a - 0.5), item[0]),
        "order_gap": lambda item: (-abs(item[1].p_a_ab - item[1].p_a_ba), item[0]),
    }
    return [r.id for _, r in sorted(kept, key=keys[query.sort])]


@pytest.mark.parametrize(
    "query",
    [
        ListQuery(),
        ListQuery(flag="order_flip", sort="-p_a"),
        ListQuery(principle="honest", p_min=0.3, p_max=0.7, sort="uncertain"),
        ListQuery(text="SECOND ANSWER 1", sort="order_gap"),
        ListQuery(flag="low_mass", principle="kind", sort="p_a"),
    ],
)
def test_filters_and_sorts_match_a_slow_reference(tmp_path: Path, query: ListQuery) -> None:
    index = RunIndex(make_review_run(tmp_path, 30))
    positions = index.select(query).to_pylist()
    assert [review_pair(at).id for at in positions] == _reference(30, query)


def test_pages_and_neighbours(tmp_path: Path) -> None:
    index = RunIndex(make_review_run(tmp_path, 30))
    pages = [index.page(ListQuery(page=page, size=7)) for page in (1, 5, 9)]
    assert [len(p.rows) for p in pages] == [7, 2, 2] and pages[2].page == 5 and pages[0].pages == 5
    assert pages[1].rows[-1].id == review_pair(29).id
    assert index.neighbour(review_pair(3).id, ListQuery(), 1) == review_pair(4).id
    assert index.neighbour(review_pair(0).id, ListQuery(), -1) is None
    assert index.pair(review_pair(17).id) == review_pair(17)
    assert index.pair("no-such-id") is None


def test_bad_query_values_fall_back_to_no_filter() -> None:
    query = list_query({"p_min": "nan", "p_max": "x", "sort": "drop table", "page": "-3"}, 50)
    assert (query.p_min, query.p_max, query.sort, query.page) == (0.0, 1.0, "position", 1)


def test_a_run_still_being_written_shows_what_is_committed(tmp_path: Path) -> None:
    run = make_review_run(tmp_path, 16, complete=False)
    index = RunIndex(run)
    assert index.pairs == 16 and index.status("preferences") == "running"
    store = RunStore.open(run, "preferences", fingerprint("label"))  # the labelling process goes on
    store.write_shard([review_pair(i) for i in range(16, 24)])
    index.refresh()
    assert index.pairs == 24 and index.pair(review_pair(20).id) == review_pair(20)
    store.mark_complete({"rows": 24})
    index.refresh()
    assert index.status("preferences") == "complete"
