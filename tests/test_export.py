"""`labeler export`: filters (checked against a plain row-by-row reference), compaction, formats that other
tools load as they are, partial splits, crash safety, and ids that travel."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest
from sample_runs import HH_CONVERSATION, judged, make_run

import labeler.publish.export as export_module
from labeler.cli.app import main
from labeler.core.errors import InputError
from labeler.core.records import PreferenceRecord
from labeler.publish.export import ExportConfig, export_run, order_agreement, packed, parse_size
from labeler.store import ShardInfo, SplitEntry, iter_records, load_manifest, read_split, sha256_bytes
from labeler.store.manifest import new_manifest, write_manifest
from labeler.store.shards import encode_shard
from labeler.train.rm.pairs import check_runs, load_pairs


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("export"))


def kept_by_reference(records: list[PreferenceRecord], config: ExportConfig) -> tuple[list[str], list[int]]:
    """The slow, obvious filter: row by row, in the documented order; ids kept and rows removed per step."""
    removed = [0] * (len(config.drop_flags) + (config.min_margin is not None) + (config.min_consistency is not None))
    kept = []
    for record in records:
        checks = [flag not in record.flags for flag in config.drop_flags]
        if config.min_margin is not None:
            checks.append(record.margin >= config.min_margin)
        if config.min_consistency is not None:
            checks.append(record.consistent and 1 - abs(record.p_a_ab - record.p_a_ba) >= config.min_consistency - 1e-9)
        failed = next((k for k, ok in enumerate(checks) if not ok), None)
        if failed is None:
            kept.append(record.id)
        else:
            removed[failed] += 1
    return kept, removed


@pytest.mark.parametrize(
    "filters",
    [
        {"drop_flags": ("low_mass", "tie"), "min_margin": 0.3, "min_consistency": 0.5},
        {"min_consistency": 0.0},
        {"drop_flags": ("order_flip",)},
        {"min_margin": 0.9},
        {},
    ],
    ids=["all", "consistent-only", "order-flip", "margin", "none"],
)
def test_filters_keep_what_the_row_by_row_reference_keeps(run: Path, tmp_path: Path, filters: dict) -> None:
    config = ExportConfig(run=run, out=tmp_path / "out", split=("preferences",), **filters)
    result = export_run(config)
    records = [r for r in iter_records(run, "preferences") if isinstance(r, PreferenceRecord)]
    expected_ids, expected_removed = kept_by_reference(records, config)
    exported = [r for r in iter_records(tmp_path / "out", "preferences") if isinstance(r, PreferenceRecord)]
    assert [r.id for r in exported] == expected_ids
    assert exported == [r for r in records if r.id in set(expected_ids)]  # rows unchanged, order kept
    split = result.splits["preferences"]
    assert (split.rows_in, split.rows_out) == (len(records), len(expected_ids))
    assert [step.removed for step in split.removed] == expected_removed
    assert load_manifest(tmp_path / "out").export.splits["preferences"] == split


def test_the_card_says_what_was_filtered_and_how_many_rows_each_filter_removed(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "filtered"
    assert main_exit(["export", str(run), "--out", str(out), "--drop-flags", "low_mass,order_flip",
                      "--min-margin", "0.2"]) == 0  # fmt: skip
    info = load_manifest(out).export
    assert info is not None and info.source == "run" and info.format == "trl"
    steps = {step.filter: step.removed for step in info.splits["preferences"].removed}
    assert list(steps) == ["--drop-flags low_mass", "--drop-flags order_flip", "--min-margin 0.2"]
    card = (out / "README.md").read_text()
    for label, removed in steps.items():
        assert f"| preferences | {label} | {removed} |" in card
    kept = info.splits["preferences"]
    assert f"| preferences | **kept** | {kept.rows_out} of {kept.rows_in} |" in card
    assert "| sft | **kept** | 4 of 4 |" in card  # filters apply to preferences only
    assert str(run.parent) not in card and str(tmp_path) not in card  # no local paths


def main_exit(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.mark.parametrize("fmt, loader, suffix", [("trl", "arrow", ".arrow"), ("parquet", "parquet", ".parquet"),
                                                 ("jsonl", "json", ".jsonl")])  # fmt: skip
def test_every_format_loads_with_datasets_and_reads_back_verified(
    run: Path, tmp_path: Path, fmt: str, loader: str, suffix: str
) -> None:
    out = tmp_path / "out"
    export_run(ExportConfig(run=run, out=out, format=fmt, shard_rows=7))
    shards = sorted((out / "preferences").iterdir())
    assert [p.suffix for p in shards] == [suffix] * 4 and not list(out.glob(".*"))
    loaded = datasets.load_dataset(loader, data_files=str(out / "preferences" / f"*{suffix}"), split="train",
                                   cache_dir=str(tmp_path / "cache"))  # fmt: skip
    records = [r for r in iter_records(run, "preferences") if isinstance(r, PreferenceRecord)]
    assert loaded.num_rows == len(records) == 24
    first = loaded[0]
    # TRL's conversational columns, the multi-turn conversation whole in `prompt`
    assert first["prompt"] == [m.model_dump() for m in HH_CONVERSATION]
    assert first["chosen"] == [{"role": "assistant", "content": first["chosen_text"]}]
    assert first["source_id"] is None and loaded[1]["source_id"] == "user-1"
    # labeler reads every format back through the manifest, checksums verified, in the split's schema
    assert read_split(out, "preferences").schema.equals(PreferenceRecord.arrow_schema(), check_metadata=True)
    assert [r for r in iter_records(out, "preferences")] == records
    assert [r.source_id for r in iter_records(out, "sft")] == [f"task-{i}" for i in range(4)]
    front = (out / "README.md").read_text().split("---")[1]
    assert f"path: preferences/*{suffix}" in front and "license: cc-by-4.0" in front


def test_shards_are_compacted_to_a_row_count_or_a_size(run: Path, tmp_path: Path) -> None:
    export_run(ExportConfig(run=run, out=tmp_path / "rows", split=("preferences",), shard_rows=10))
    assert [s.rows for s in load_manifest(tmp_path / "rows").splits["preferences"].shards] == [10, 10, 4]

    per_row = read_split(run, "preferences").nbytes / 24
    export_run(ExportConfig(run=run, out=tmp_path / "size", split=("preferences",), shard_size=f"{int(per_row * 6)}"))
    sizes = [s.rows for s in load_manifest(tmp_path / "size").splits["preferences"].shards]
    assert sum(sizes) == 24 and len(sizes) >= 3 and max(sizes) <= 8  # about 6 rows of bytes each

    export_run(ExportConfig(run=run, out=tmp_path / "one", split=("preferences",)))  # default 500MB: one shard
    assert [s.rows for s in load_manifest(tmp_path / "one").splits["preferences"].shards] == [24]


def test_packing_and_sizes_are_plain_functions() -> None:
    tables = [pa.table({"x": list(range(n))}) for n in (0, 3, 1, 5)]
    assert [t.num_rows for t in packed(tables, rows=4)] == [4, 4, 1]
    assert list(packed([], rows=4)) == []
    assert parse_size("2kib") == 2048 and parse_size("1.5 KB") == 1500
    for bad in ("", "0MB", "-1MB", "5 parsecs"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert order_agreement(np.array([0.7]), np.array([0.5])).tolist() == [0.8]


def test_an_unfinished_split_is_refused_unless_allow_partial(tmp_path: Path) -> None:
    run = make_run(tmp_path, pairs=8, complete=False)
    with pytest.raises(InputError, match="still being written") as info:
        export_run(ExportConfig(run=run, out=tmp_path / "out"))
    assert info.value.field == "allow_partial" and not (tmp_path / "out").exists()

    export_run(ExportConfig(run=run, out=tmp_path / "out", allow_partial=True))
    manifest = load_manifest(tmp_path / "out")
    assert manifest.splits["preferences"].status == "running" and manifest.splits["sft"].status == "complete"
    assert manifest.export is not None and not manifest.export.splits["preferences"].complete
    assert "**Partial:** preferences" in (tmp_path / "out" / "README.md").read_text()
    with pytest.raises(InputError, match="incomplete"):  # readers still see it as unfinished
        read_split(tmp_path / "out", "preferences")


def test_a_shard_the_manifest_does_not_list_is_never_read(tmp_path: Path) -> None:
    """A `*.arrow` glob would load a shard another process is still writing; an export reads the manifest."""
    run = make_run(tmp_path, pairs=8)
    listed = load_manifest(run).splits["preferences"].shards
    stray = run / "preferences" / "shard-00099.arrow"
    stray.write_bytes((run / listed[0].file).read_bytes())  # a valid shard, just not (yet) in the manifest
    result = export_run(ExportConfig(run=run, out=tmp_path / "out", split=("preferences",)))
    assert result.splits["preferences"].rows_out == 8
    exported = [r.id for r in iter_records(tmp_path / "out", "preferences")]
    assert exported == [r.id for r in iter_records(run, "preferences")]


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda d: {"run": d / "nowhere"}, "RUN"),
        (lambda d: {"run": _file(d / "run.txt")}, "RUN"),
        (lambda d: {"run": d}, "RUN"),  # a folder with no manifest
        (lambda d: {"out": _file(d / "taken" / "x.txt").parent}, "out"),  # the field: the CLI shows --out
        (lambda d: {"out": _file(d / "file")}, "out"),
        (lambda d: {"split": ("sft",), "min_margin": 0.5}, "--min-margin"),
    ],
    ids=["missing-run", "file-as-run", "not-a-run", "out-not-empty", "out-is-a-file", "filter-without-preferences"],
)
def test_bad_input_is_refused_before_anything_is_written(run: Path, tmp_path: Path, change, where: str) -> None:
    values = {"run": run, "out": tmp_path / "out", **change(tmp_path)}
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(InputError) as info:
        export_run(ExportConfig(**values))
    assert where in (info.value.where, info.value.field)
    assert sorted(tmp_path.rglob("*")) == before


def _file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    return path


def test_a_crash_midway_leaves_no_export_behind(run: Path, tmp_path: Path, monkeypatch) -> None:
    calls = []

    def failing_encode(table: pa.Table, shard_format: str) -> bytes:
        calls.append(table.num_rows)
        if len(calls) == 2:
            raise OSError("disk full")
        return encode_shard(table)

    monkeypatch.setattr(export_module, "encode_table", failing_encode)
    with pytest.raises(OSError, match="disk full"):
        export_run(ExportConfig(run=run, out=tmp_path / "out", shard_rows=5))
    assert list(tmp_path.iterdir()) == []  # neither OUT nor its temporary folder


def test_an_export_is_a_run_that_train_rm_reads(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_run(ExportConfig(run=run, out=out, format="parquet", drop_flags=("order_flip",)))
    (data,) = check_runs([out])
    pairs = load_pairs([out])
    assert data.rows == len(pairs) and all("order_flip" not in p.flags for p in pairs)
    assert pairs[0].prompt == HH_CONVERSATION  # the RM trains on the whole conversation


def test_a_run_of_the_earlier_layout_exports_in_the_current_columns(tmp_path: Path) -> None:
    """Runs written before the conversational columns: `export` rewrites them (and train-rm reads them)."""
    record = judged(2)
    row = record.to_row()
    same = ("p_a", "p_a_ab", "p_a_ba", "mass_ab", "mass_ba", "logprobs_ab", "logprobs_ba", "consistent",
            "principle_ids", "principle_scores", "margin", "judge_model", "source", "flags")  # fmt: skip
    old = {"id": row["id"], "prompt": row["prompt_text"], "prompt_messages": row["prompt"],
           "response_a": row["response_a"], "response_b": row["response_b"], "chosen": row["chosen_text"],
           "rejected": row["rejected_text"], **{name: row[name] for name in same}}  # fmt: skip
    run = tmp_path / "old-run"
    (run / "preferences").mkdir(parents=True)
    data = encode_shard(pa.Table.from_pylist([old]))
    (run / "preferences" / "shard-00000.arrow").write_bytes(data)
    entry = SplitEntry(fingerprint={"config": {}}, status="complete",
                       shards=(ShardInfo(file="preferences/shard-00000.arrow", rows=1, sha256=sha256_bytes(data)),))
    write_manifest(run, new_manifest().with_split("preferences", entry))
    assert load_pairs([run]) == [record.model_copy(update={"source_id": None})]
    export_run(ExportConfig(run=run, out=tmp_path / "new"))
    table = pa.ipc.open_stream((tmp_path / "new" / "preferences" / "shard-00000.arrow").read_bytes()).read_all()
    assert table.schema.equals(PreferenceRecord.arrow_schema())


def test_export_writes_json_lines_that_read_as_json(run: Path, tmp_path: Path) -> None:
    export_run(ExportConfig(run=run, out=tmp_path / "out", format="jsonl", split=("preferences",)))
    lines = (tmp_path / "out" / "preferences" / "shard-00000.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 24 and rows[0]["prompt"][0] == {"role": "system", "content": HH_CONVERSATION[0].content}
    assert list(rows[0]) == list(PreferenceRecord.model_fields)
