"""The shard store: atomic shards, resume, fingerprints, corruption detection, job arrays, card, progress."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

import labeler.store.atomic as atomic
import labeler.store.run_store as run_store
from labeler.core.chat import Message
from labeler.core.errors import InputError
from labeler.core.progress import progress_bar
from labeler.core.records import (
    FLAG_LOW_MASS,
    FLAG_ORDER_FLIP,
    PreferenceRecord,
    PrincipleScore,
    RevisionRound,
    SFTRecord,
    conversation_columns,
    record_id,
)
from labeler.stages.runner import merge_parts
from labeler.store import (
    RunStore,
    in_part,
    iter_records,
    load_manifest,
    make_fingerprint,
    merge_runs,
    part_of,
    read_split,
)
from labeler.store.card import preference_statistics, sft_statistics, write_card

REPO = Path(__file__).resolve().parent.parent


def preference(i: int) -> PreferenceRecord:
    """A plausible judged pair whose numbers vary with `i` (seeded, so reproducible)."""
    rng = random.Random(i)
    prompt, a, b = f"Question {i}?", f"First answer {i}.", f"Second answer {i}."
    p_ab, p_ba = rng.uniform(0.01, 0.99), rng.uniform(0.01, 0.99)
    mass_ab, mass_ba = rng.uniform(0.05, 1.0), rng.uniform(0.05, 1.0)
    p_a = (p_ab + p_ba) / 2
    consistent = (p_ab > 0.5) == (p_ba > 0.5)
    flags = [FLAG_LOW_MASS] if min(mass_ab, mass_ba) < 0.3 else []
    flags += [] if consistent else [FLAG_ORDER_FLIP]
    return PreferenceRecord(
        id=record_id(prompt, a, b),
        **conversation_columns((Message(role="user", content=prompt),), *((a, b) if p_a >= 0.5 else (b, a))),
        response_a=a,
        response_b=b,
        p_a=p_a,
        p_a_ab=p_ab,
        p_a_ba=p_ba,
        mass_ab=mass_ab,
        mass_ba=mass_ba,
        logprobs_ab=(math.log(p_ab * mass_ab), math.log((1 - p_ab) * mass_ab)),
        logprobs_ba=(math.log(p_ba * mass_ba), math.log((1 - p_ba) * mass_ba)),
        consistent=consistent,
        principle_ids=("harm",),
        principle_scores=(PrincipleScore(principle_id="harm", score=math.log(p_a / (1 - p_a))),),
        margin=abs(p_a - 0.5),
        judge_model="judge",
        source="samples",
        flags=tuple(flags),
    )


def sft(i: int) -> SFTRecord:
    prompt = f"Question {i}?"
    rounds = tuple(
        RevisionRound(principle_id="harm", critique=f"critique {k}", revision=f"revision {k} of {i}")
        for k in range(i % 3)
    )
    final = rounds[-1].revision if rounds else f"initial answer {i}"
    messages = (Message(role="user", content=prompt),)
    return SFTRecord(
        id=record_id(prompt),
        prompt=prompt,
        prompt_messages=messages,
        initial=f"initial answer {i}",
        revision=final,
        rounds=rounds,
        messages=(*messages, Message(role="assistant", content=final)),
        model="policy",
    )


def fingerprint(**config: object) -> dict:
    return make_fingerprint(
        config={"n": 2, "temperature": 0.7, **config},
        models={"judge": "judge"},
        constitution_sha256="c" * 64,
        template_sha256s={"judge.jinja": "t" * 64},
        seed=0,
    )


def write_run(run: Path, records: list, split: str = "preferences", *, per_shard: int = 5, **open_kw) -> RunStore:
    store = RunStore.open(run, split, fingerprint(), **open_kw)
    for start in range(0, len(records), per_shard):
        store.write_shard(records[start : start + per_shard])
    store.mark_complete({"written": len(records)})
    return store


def shards_of(run: Path, split: str = "preferences") -> list[Path]:
    return sorted((run / split).glob("*.arrow"))


# --- writing, atomicity, resume ---------------------------------------------------------------


def test_shards_are_written_to_a_temporary_name_then_renamed(tmp_path: Path, monkeypatch) -> None:
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def recording_replace(src, dst):
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", recording_replace)
    store = RunStore.open(tmp_path / "run", "preferences", fingerprint())
    info = store.write_shard([preference(i) for i in range(3)])
    assert info is not None and info.file == "preferences/shard-00000.arrow" and info.rows == 3
    shard_renames = [(src, dst) for src, dst in renames if dst.suffix == ".arrow"]
    assert len(shard_renames) == 1
    src, dst = shard_renames[0]
    assert src.parent == dst.parent and src.name.endswith(atomic.TEMP_SUFFIX)
    assert any(dst.name == "manifest.json" for _, dst in renames)


def test_a_failed_write_leaves_no_shard_and_the_manifest_unchanged(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    store = RunStore.open(run, "preferences", fingerprint())
    store.write_shard([preference(0)])
    before = load_manifest(run).splits["preferences"].shards

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.write_shard([preference(1)])
    monkeypatch.undo()
    assert [p.name for p in (run / "preferences").iterdir()] == ["shard-00000.arrow"]
    assert load_manifest(run).splits["preferences"].shards == before
    assert RunStore.open(run, "preferences", fingerprint()).done_ids() == {preference(0).id}


def test_a_partial_file_from_a_killed_writer_is_removed_on_reopen(tmp_path: Path) -> None:
    run = tmp_path / "run"
    RunStore.open(run, "preferences", fingerprint()).write_shard([preference(0)])
    partial = run / "preferences" / f".shard-00001.arrow.123-abc{atomic.TEMP_SUFFIX}"
    partial.write_bytes(b"half a shard")
    store = RunStore.open(run, "preferences", fingerprint())
    assert not partial.exists()
    assert store.done_ids() == {preference(0).id}


def test_resume_skips_done_ids_and_ends_with_every_record_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    records = [preference(i) for i in range(12)]
    first = RunStore.open(run, "preferences", fingerprint())
    first.write_shard(records[:4])
    first.write_shard(records[4:7])
    # The process dies here; the same command runs again.
    second = RunStore.open(run, "preferences", fingerprint())
    assert second.done_ids() == {r.id for r in records[:7]}
    assert not second.is_complete
    todo = [r for r in records if r.id not in second.done_ids()]
    assert todo == records[7:]
    second.write_shard(todo)
    second.mark_complete({"pairs": 12})
    assert second.is_complete
    assert sorted(r.id for r in iter_records(run, "preferences")) == sorted(r.id for r in records)
    assert [p.name for p in shards_of(run)] == ["shard-00000.arrow", "shard-00001.arrow", "shard-00002.arrow"]
    entry = load_manifest(run).splits["preferences"]
    assert entry.stats == {"pairs": 12} and entry.rows == 12


def test_write_refuses_repeated_ids_and_wrong_record_types(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "run", "preferences", fingerprint())
    store.write_shard([preference(0)])
    with pytest.raises(ValueError, match="already written"):
        store.write_shard([preference(0), preference(1)])
    with pytest.raises(ValueError, match="repeated"):
        store.write_shard([preference(2), preference(2)])
    with pytest.raises(TypeError, match="PreferenceRecord"):
        store.write_shard([sft(3)])  # type: ignore[list-item]
    assert store.write_shard([]) is None
    assert store.done_ids() == {preference(0).id}


def test_two_splits_share_one_run_and_manifest(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, [preference(i) for i in range(3)])
    write_run(run, [sft(i) for i in range(4)], "sft")
    manifest = load_manifest(run)
    assert set(manifest.splits) == {"preferences", "sft"}
    assert read_split(run, "sft").num_rows == 4 and read_split(run, "preferences").num_rows == 3
    assert json.loads((run / "manifest.json").read_text())["splits"]["sft"]["status"] == "complete"


# --- fingerprints -----------------------------------------------------------------------------


def test_a_different_fingerprint_is_refused_naming_the_keys(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, [preference(i) for i in range(3)])
    changed = fingerprint(n=4)
    changed["seed"] = 7
    with pytest.raises(InputError) as info:
        RunStore.open(run, "preferences", changed)
    message = info.value.render()
    assert "config.n" in message and "seed" in message and "temperature" not in message
    assert "pass `overwrite`" in message and str(run / "manifest.json") in message
    assert read_split(run, "preferences").num_rows == 3  # nothing was touched


def test_overwrite_discards_the_old_split_only(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, [preference(i) for i in range(6)])
    write_run(run, [sft(i) for i in range(2)], "sft")
    store = RunStore.open(run, "preferences", fingerprint(n=4), overwrite=True)
    assert store.done_ids() == set() and not store.is_complete
    # Nothing is deleted before the new split's first write: a run that fails before it keeps the old one.
    assert len(shards_of(run)) == 2 and read_split(run, "preferences").num_rows == 6
    store.write_shard([preference(9)])
    entry = load_manifest(run).splits["preferences"]
    assert entry.fingerprint["config"]["n"] == 4 and entry.status == "running" and entry.rows == 1
    assert len(shards_of(run)) == 1 and read_split(run, "preferences", require_complete=False).num_rows == 1
    assert read_split(run, "sft").num_rows == 2


def test_opening_as_another_part_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    RunStore.open(run, "preferences", fingerprint(), part=(0, 2)).write_shard([preference(0)])
    with pytest.raises(InputError, match="part 0 of 2, not part 1 of 2"):
        RunStore.open(run, "preferences", fingerprint(), part=(1, 2))
    with pytest.raises(InputError, match="part"):
        RunStore.open(tmp_path / "other", "preferences", fingerprint(), part=(2, 2))


# --- corruption -------------------------------------------------------------------------------


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "altered":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "altered", "missing"])
def test_a_damaged_shard_is_detected_and_named(tmp_path: Path, how: str) -> None:
    run = tmp_path / "run"
    write_run(run, [preference(i) for i in range(10)])
    damaged = shards_of(run)[1]
    _damage(damaged, how)
    for attempt in (
        lambda: read_split(run, "preferences"),
        lambda: list(iter_records(run, "preferences")),
        lambda: RunStore.open(run, "preferences", fingerprint()),
    ):
        with pytest.raises(InputError) as info:
            attempt()
        assert str(damaged) in info.value.render()


def test_an_incomplete_split_is_refused_unless_asked_for(tmp_path: Path) -> None:
    run = tmp_path / "run"
    RunStore.open(run, "preferences", fingerprint()).write_shard([preference(i) for i in range(4)])
    with pytest.raises(InputError, match="incomplete"):
        read_split(run, "preferences")
    with pytest.raises(InputError, match="incomplete"):
        next(iter_records(run, "preferences"))
    assert read_split(run, "preferences", require_complete=False).num_rows == 4
    with pytest.raises(InputError, match="no 'sft' split"):
        read_split(run, "sft")


# --- orphans: a crash between the rename and the manifest write -------------------------------


def _crash_before_manifest(store: RunStore, records: list, monkeypatch) -> None:
    def crash(run_dir, manifest):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(run_store, "write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write_shard(records)
    monkeypatch.undo()


def test_an_orphan_shard_is_adopted_once(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    records = [preference(i) for i in range(9)]
    store = RunStore.open(run, "preferences", fingerprint())
    store.write_shard(records[:3])
    _crash_before_manifest(store, records[3:6], monkeypatch)
    assert len(shards_of(run)) == 2 and len(load_manifest(run).splits["preferences"].shards) == 1

    resumed = RunStore.open(run, "preferences", fingerprint())
    assert resumed.done_ids() == {r.id for r in records[:6]}
    resumed.write_shard([r for r in records if r.id not in resumed.done_ids()])
    resumed.mark_complete()
    ids = [r.id for r in iter_records(run, "preferences")]
    assert sorted(ids) == sorted(r.id for r in records)  # every record exactly once
    assert [Path(s.file).name for s in load_manifest(run).splits["preferences"].shards] == [
        "shard-00000.arrow",
        "shard-00001.arrow",
        "shard-00002.arrow",
    ]


def test_an_orphan_that_repeats_records_or_does_not_read_is_deleted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, [preference(i) for i in range(4)], per_shard=4)
    repeating = run / "preferences" / "shard-00001.arrow"
    repeating.write_bytes(shards_of(run)[0].read_bytes())
    garbage = run / "preferences" / "shard-00002.arrow"
    garbage.write_bytes(b"not arrow")
    store = RunStore.open(run, "preferences", fingerprint())
    assert not repeating.exists() and not garbage.exists()
    assert len(store.done_ids()) == 4 and store.is_complete


def test_a_foreign_arrow_file_in_a_split_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, [preference(0)])
    foreign = run / "preferences" / "extra.arrow"
    foreign.write_bytes(shards_of(run)[0].read_bytes())
    with pytest.raises(InputError) as info:
        RunStore.open(run, "preferences", fingerprint())
    assert str(foreign) in info.value.render()

    unlisted = tmp_path / "unlisted"
    (unlisted / "sft").mkdir(parents=True)
    stray = unlisted / "sft" / "shard-00000.arrow"
    stray.write_bytes(b"from some other tool")
    with pytest.raises(InputError, match="does not list") as info:
        RunStore.open(unlisted, "sft", fingerprint())
    assert str(stray) in info.value.render()
    store = RunStore.open(unlisted, "sft", fingerprint(), overwrite=True)
    assert store.done_ids() == set()
    store.mark_complete()  # the new split's first write deletes what it replaces
    assert not stray.exists()


# --- datasets ---------------------------------------------------------------------------------


def test_shards_load_with_datasets(tmp_path: Path) -> None:
    run = tmp_path / "run"
    records = [preference(i) for i in range(7)]
    write_run(run, records, per_shard=4)
    one = datasets.Dataset.from_file(str(shards_of(run)[0]))
    assert one.num_rows == 4 and one[0]["prompt"] == [{"role": "user", "content": "Question 0?"}]
    loaded = datasets.load_dataset(
        "arrow", data_files=str(run / "preferences" / "*.arrow"), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert sorted(loaded["id"]) == sorted(r.id for r in records)
    row = loaded[loaded["id"].index(records[5].id)]
    assert PreferenceRecord.from_row(row) == records[5]


# --- job arrays -------------------------------------------------------------------------------


def test_partition_covers_every_id_exactly_once() -> None:
    ids = [record_id(f"prompt {i}") for i in range(2000)]
    for num in (1, 2, 3, 7):
        owners = [[index for index in range(num) if in_part(i, index, num)] for i in ids]
        assert all(len(owner) == 1 for owner in owners)
        sizes = [sum(owner == [index] for owner in owners) for index in range(num)]
        assert min(sizes) > 0.8 * len(ids) / num  # a hash partition is roughly balanced
    with pytest.raises(ValueError):
        in_part(ids[0], 3, 3)


def test_partition_is_the_same_in_another_process() -> None:
    ids = [f"prompt {i}" for i in range(50)]
    code = "import sys; from labeler.store import part_of; print([part_of(f'prompt {i}', 5) for i in range(50)])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO, env=env)
    assert json.loads(out.stdout) == [part_of(i, 5) for i in ids]


def _part_runs(tmp_path: Path, records: list, num: int, **fingerprint_changes: object) -> list[Path]:
    runs = []
    for index in range(num):
        run = tmp_path / f"part{index}"
        mine = [r for r in records if in_part(r.id, index, num)]
        fp = fingerprint(**fingerprint_changes) if index == num - 1 else fingerprint()
        store = RunStore.open(run, "preferences", fp, part=(index, num))
        for start in range(0, len(mine), 4):
            store.write_shard(mine[start : start + 4])
        store.mark_complete({"pairs": len(mine)})
        runs.append(run)
    return runs


def test_merging_two_parts_equals_one_run(tmp_path: Path) -> None:
    records = [preference(i) for i in range(20)]
    single = tmp_path / "single"
    write_run(single, records)
    parts = _part_runs(tmp_path, records, 2)
    assert all(p.name.startswith("shard-p000") for part in parts for p in shards_of(part))
    merged = merge_parts(parts, tmp_path / "merged", command="labeler merge part0 part1 --out merged")

    by_id = lambda rs: sorted(rs, key=lambda r: r.id)  # noqa: E731
    assert by_id(iter_records(merged, "preferences")) == by_id(iter_records(single, "preferences"))
    entry = load_manifest(merged).splits["preferences"]
    assert entry.status == "complete" and entry.part is None and entry.rows == 20
    assert entry.fingerprint == load_manifest(single).splits["preferences"].fingerprint
    assert [p["stats"]["pairs"] for p in entry.stats["parts"]] == [
        load_manifest(part).splits["preferences"].rows for part in parts
    ]
    assert "labeler merge part0 part1 --out merged" in (merged / "README.md").read_text()


def test_merge_refuses_parts_that_do_not_belong_together(tmp_path: Path) -> None:
    records = [preference(i) for i in range(12)]
    mismatched = _part_runs(tmp_path / "a", records, 2, temperature=1.0)
    with pytest.raises(InputError) as info:
        merge_runs(mismatched, tmp_path / "out-a")
    assert "config.temperature" in info.value.render() and str(mismatched[1]) in info.value.render()
    assert not (tmp_path / "out-a" / "manifest.json").exists()

    parts = _part_runs(tmp_path / "b", records, 3)
    with pytest.raises(InputError, match="part\\(s\\) 1 of 3 are missing"):
        merge_runs([parts[0], parts[2]], tmp_path / "out-b")
    with pytest.raises(InputError, match="is part 0 of 3, like"):
        merge_runs([parts[0], parts[0], parts[1]], tmp_path / "out-c")


def test_merge_refuses_incomplete_parts_and_repeated_ids(tmp_path: Path) -> None:
    records = [preference(i) for i in range(8)]
    part0 = tmp_path / "p0"
    part1 = tmp_path / "p1"
    write_run(part0, records[:5], part=(0, 2))
    unfinished = RunStore.open(part1, "preferences", fingerprint(), part=(1, 2))
    unfinished.write_shard(records[4:])  # record 4 is in both parts
    with pytest.raises(InputError, match="incomplete") as info:
        merge_runs([part0, part1], tmp_path / "out")
    assert str(part1) in info.value.render()
    unfinished.mark_complete()
    with pytest.raises(InputError) as info:
        merge_runs([part0, part1], tmp_path / "out")
    assert records[4].id in info.value.render() and str(part1 / "preferences") in info.value.render()


def test_merge_command_exit_codes(tmp_path: Path) -> None:
    from labeler.cli.app import main

    records = [preference(i) for i in range(6)]
    parts = _part_runs(tmp_path, records, 2)
    with pytest.raises(SystemExit) as info:
        main(["merge", *map(str, parts), "--out", str(tmp_path / "merged")])
    assert info.value.code in (0, None)
    assert read_split(tmp_path / "merged", "preferences").num_rows == 6
    with pytest.raises(SystemExit) as info:
        main(["merge", str(parts[0]), "--out", str(tmp_path / "merged-again")])
    assert info.value.code == 2


# --- dataset card -----------------------------------------------------------------------------


def test_card_states_the_statistics_of_the_shards(tmp_path: Path) -> None:
    run = tmp_path / "run"
    prefs = [preference(i) for i in range(40)]
    sfts = [sft(i) for i in range(7)]
    write_run(run, prefs)
    write_run(run, sfts, "sft")
    card = write_card(run, command="labeler run config.yaml").read_text()
    assert not list(run.glob(f"*{atomic.TEMP_SUFFIX}"))

    n = len(prefs)
    for k in range(10):
        lo, hi = k / 10, (k + 1) / 10
        count = sum(lo <= r.p_a < hi or (k == 9 and r.p_a == 1.0) for r in prefs)
        closing = "]" if k == 9 else ")"
        assert f"| [{lo:.1f}, {hi:.1f}{closing} | {count} |" in card
    consistency = sum(r.consistent for r in prefs) / n
    low_mass = sum("low_mass" in r.flags for r in prefs) / n
    flips = sum("order_flip" in r.flags for r in prefs) / n
    mean_mass = sum((r.mass_ab + r.mass_ba) / 2 for r in prefs) / n
    assert 0 < low_mass < 1 and 0 < flips < 1  # the sample exercises both flags
    assert f"| consistency rate (both orders agree) | {consistency:.1%} |" in card
    assert f"| low-mass rate (`low_mass` flag) | {low_mass:.1%} |" in card
    assert f"| order-flip rate (`order_flip` flag) | {flips:.1%} |" in card
    assert f"| mean mass on the two choice tokens | {mean_mass:.3f} |" in card

    mean_rounds = sum(len(r.rounds) for r in sfts) / len(sfts)
    mean_revision = sum(len(r.revision) for r in sfts) / len(sfts)
    assert f"| mean critique-and-revise rounds | {mean_rounds:.2f} |" in card
    assert f"| mean final revision length (chars) | {mean_revision:.1f} |" in card
    assert "| preferences | 40 | 8 | complete |" in card and "| sft | 7 | 2 | complete |" in card
    assert "labeler run config.yaml" in card and "c" * 64 in card and "`judge.jinja`" in card
    assert 'load_dataset("arrow"' in card and "RewardTrainer" in card and "labeler train-rm" in card


def test_statistics_streamed_over_shards_equal_those_of_the_whole_split(tmp_path: Path) -> None:
    """The card sums shard by shard (to keep memory flat); the totals must not depend on the cut."""
    from labeler.store.readers import iter_shard_tables

    run = tmp_path / "run"
    write_run(run, [preference(i) for i in range(40)])
    write_run(run, [sft(i) for i in range(7)], "sft")
    shards = list(iter_shard_tables(run, "preferences"))
    assert len(shards) > 1
    streamed, whole = preference_statistics(iter(shards)), preference_statistics(read_split(run, "preferences"))
    assert streamed.mean_mass == pytest.approx(whole.mean_mass, rel=1e-12)  # summation order differs
    assert dataclasses.replace(streamed, mean_mass=None) == dataclasses.replace(whole, mean_mass=None)
    assert sft_statistics(iter_shard_tables(run, "sft")) == sft_statistics(read_split(run, "sft"))
    empty = preference_statistics(iter([]))
    assert empty.rows == 0 and empty.mean_mass is None and sum(empty.p_a_histogram) == 0


def test_card_marks_an_incomplete_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    RunStore.open(run, "preferences", fingerprint()).write_shard([preference(i) for i in range(3)])
    card = write_card(run).read_text()
    assert "| preferences | 3 | 1 | running |" in card and "**Incomplete:** preferences" in card


def test_card_front_matter_is_hub_metadata_and_the_card_names_no_local_path(tmp_path: Path) -> None:
    run = tmp_path / "demo-run"
    licensed = make_fingerprint(config={}, models={"judge": "judge"}, constitution_sha256="c" * 64,
                                template_sha256s={}, seed=0,
                                constitution={"name": "harmless", "version": "1", "license": "apache-2.0"})  # fmt: skip
    store = RunStore.open(run, "preferences", licensed)
    store.write_shard([preference(i) for i in range(3)])
    store.mark_complete()
    card = write_card(run).read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "apache-2.0" and front["language"] == ["en"] and front["pretty_name"] == "demo-run"
    assert front["size_categories"] == ["n<1K"] and front["task_categories"] == ["text-generation"]
    assert front["configs"] == [{"config_name": "preferences",
                                 "data_files": [{"split": "train", "path": "preferences/*.arrow"}]}]  # fmt: skip
    assert 'load_dataset("arrow", data_files="preferences/*.arrow", split="train")' in card
    assert "constitution: `harmless` version `1`, license apache-2.0" in card
    assert str(tmp_path) not in card


# --- progress ---------------------------------------------------------------------------------


def test_quiet_progress_prints_plain_lines_every_n_items() -> None:
    stream = io.StringIO()
    with progress_bar(100, "judging", unit="pairs", quiet=True, every=25, stream=stream) as advance:
        for _ in range(10):
            advance(10)
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["30/100", "60/100", "90/100", "100/100"]
    assert all(line.startswith("judging: ") and "pairs/s" in line for line in lines)


def test_progress_bar_counts_resumed_items_and_renders_columns() -> None:
    stream = io.StringIO()
    with progress_bar(50, "revising", completed=20, quiet=False, stream=stream) as advance:
        advance(30)
    text = stream.getvalue()
    assert "revising" in text and "50/50" in text and "items/s" in text
