"""The users' own ids travel: an `id` in the input becomes `source_id` in both splits (null where a row has
none), with the input file's name in `source`, through the stages, a job array's merge and an export.
Record ids stay content hashes (or the prompt id, for SFT rows), so resuming is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_engine import FakeEngine

from labeler.core.errors import InputError
from labeler.core.records import PreferenceRecord, SFTRecord
from labeler.engine import GenerationParams
from labeler.publish.export import ExportConfig, export_run
from labeler.stages.common import WorkSelection
from labeler.stages.label import LabelConfig, label
from labeler.stages.pairs import pair_id
from labeler.stages.revise import ReviseConfig, revise
from labeler.store import iter_records, load_manifest, merge_runs

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions/harmless.yaml"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


PROMPTS = [
    {"id": "hh-0017", "prompt": "How do I keep basil alive?"},
    {"id": 42, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
                            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Tea or coffee?"}]},
    {"prompt": "Name a prime number."},  # no id of its own
]  # fmt: skip


def test_ids_travel_from_prompts_through_revise_label_merge_and_export(tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "inputs" / "prompts.jsonl", PROMPTS)
    work = WorkSelection(batch_size=2, quiet=True)
    sampling = GenerationParams(temperature=0.7, max_tokens=8)
    revise(ReviseConfig(constitution=HARMLESS, prompts=prompts, out=tmp_path / "run", rounds=1, sampling=sampling,
                        work=work), engine=FakeEngine())  # fmt: skip
    sft = {r.prompt: r for r in iter_records(tmp_path / "run", "sft") if isinstance(r, SFTRecord)}
    assert {p: (r.source_id, r.source) for p, r in sft.items()} == {
        "How do I keep basil alive?": ("hh-0017", "prompts_file:prompts.jsonl"),
        "Tea or coffee?": ("42", "prompts_file:prompts.jsonl"),
        "Name a prime number.": (None, "prompts_file:prompts.jsonl"),
    }
    assert sft["How do I keep basil alive?"].id == "hh-0017"  # SFT ids are the prompt ids, as before

    parts = [tmp_path / f"part-{i}" for i in range(2)]
    for index, part in enumerate(parts):
        label(LabelConfig(constitution=HARMLESS, pairs_from=tmp_path / "run", out=part,
                          work=work.model_copy(update={"shard_index": index, "num_shards": 2})),
              judge=FakeEngine())  # fmt: skip
    merged = merge_runs(parts, tmp_path / "merged")
    pairs = [r for r in iter_records(merged, "preferences") if isinstance(r, PreferenceRecord)]
    assert len(pairs) == 3
    for pair in pairs:
        row = sft[pair.prompt_text]
        assert (pair.source_id, pair.source) == (row.source_id, "revision_vs_initial:prompts.jsonl")
        assert pair.id == pair_id(pair.prompt, pair.response_a, pair.response_b)  # still a content hash
    assert len(next(p for p in pairs if p.source_id == "42").prompt) == 4  # every turn of the conversation

    export_run(ExportConfig(run=merged, out=tmp_path / "export", format="jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "export/preferences/shard-00000.jsonl").read_text().splitlines()]
    assert sorted((row["source_id"] or "") for row in rows) == ["", "42", "hh-0017"]
    assert load_manifest(tmp_path / "export").export is not None


def test_ids_travel_from_a_pairs_file(tmp_path: Path) -> None:
    pairs = write_jsonl(tmp_path / "data" / "batch-3" / "pairs.jsonl", [
        {"id": "pair-1", "prompt": "Hi?", "response_a": "Hello.", "response_b": "Go away."},
        {"prompt": "Bye?", "response_a": "Bye!", "response_b": "Whatever."},
    ])  # fmt: skip
    label(LabelConfig(constitution=HARMLESS, pairs=pairs, out=tmp_path / "run", work=WorkSelection(quiet=True)),
          judge=FakeEngine())  # fmt: skip
    found = iter_records(tmp_path / "run", "preferences")
    records = {r.prompt_text: r for r in found if isinstance(r, PreferenceRecord)}
    # the file's name only: a dataset that travels carries no local folders
    assert {p: (r.source_id, r.source) for p, r in records.items()} == {
        "Hi?": ("pair-1", "pairs_file:pairs.jsonl"),
        "Bye?": (None, "pairs_file:pairs.jsonl"),
    }


@pytest.mark.parametrize("bad_id", [[1, 2], {"a": 1}, True, "  "])
def test_an_id_that_is_not_text_or_a_whole_number_names_the_row(tmp_path: Path, bad_id: object) -> None:
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"id": "fine", "prompt": "Hi?", "response_a": "a", "response_b": "b"},
        {"id": bad_id, "prompt": "Hi?", "response_a": "a", "response_b": "c"},
    ])  # fmt: skip
    with pytest.raises(InputError) as info:
        label(LabelConfig(constitution=HARMLESS, pairs=pairs, out=tmp_path / "run", work=WorkSelection(quiet=True)),
              judge=FakeEngine())  # fmt: skip
    assert (info.value.line, info.value.where) == (2, "field 'id'")
    assert not (tmp_path / "run").exists()
