"""The critique-and-revise stage on the real embedded model, through both engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeler.cli.app import main
from labeler.core.records import SFTRecord
from labeler.engine import GenerationParams
from labeler.inputs.constitution import load_constitution
from labeler.stages.common import WorkSelection
from labeler.stages.revise import ReviseConfig, revise
from labeler.stages.runner import run_stage
from labeler.store import load_manifest, read_split

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions/harmless.yaml"
PROMPTS = REPO / "data/sample_prompts.jsonl"


def config(out: Path, **overrides) -> ReviseConfig:
    fields = dict(
        constitution=HARMLESS,
        prompts=PROMPTS,
        out=out,
        rounds=2,
        sampling=GenerationParams(temperature=0.7, top_p=0.95, max_tokens=12),
        seed=3,
        work=WorkSelection(batch_size=8, quiet=True),
    )
    fields.update(overrides)
    return ReviseConfig(**fields)


def records(run: Path) -> list[SFTRecord]:
    return sorted(SFTRecord.from_table(read_split(run, "sft")), key=lambda r: r.id)


@pytest.mark.slow
@pytest.mark.parametrize("engine_fixture", ["hf_engine", "vllm_engine"])
def test_two_rounds_over_eight_prompts(engine_fixture, request, tmp_path: Path):
    engine = request.getfixturevalue(engine_fixture)
    run_stage(config(tmp_path / "a"), engine)  # as the commands run it: the stage, then the run's card
    rows = records(tmp_path / "a")
    assert len(rows) == 12  # two batches: 8, then 4 (one of them a three-turn conversation)
    revise_ids = {p.id for p in load_constitution(HARMLESS).for_stage("revise")}
    for row in rows:
        assert len(row.rounds) == 2
        assert all(r.principle_id in revise_ids for r in row.rounds)
        assert row.revision == row.rounds[-1].revision
        assert row.messages[:-1] == row.prompt_messages and row.messages[-1].content == row.revision
        assert row.initial and row.model == "SmolLM2-135M-Instruct"
    # each row keeps the whole conversation it was asked about
    from labeler.inputs.rows import read_prompts

    given = {p.id: p.messages for p in read_prompts(PROMPTS)}
    assert all(row.prompt_messages == given[row.id] for row in rows)

    # the same seed chooses the same principles and samples; another seed chooses others
    revise(config(tmp_path / "b"), engine=engine)
    assert records(tmp_path / "b") == rows
    revise(config(tmp_path / "c", seed=4), engine=engine)
    other = records(tmp_path / "c")
    principles = lambda rs: [[r.principle_id for r in row.rounds] for row in rs]  # noqa: E731
    assert principles(other) != principles(rows)

    # the run is recorded: fingerprint with the constitution's hash, complete status, a dataset card
    manifest = load_manifest(tmp_path / "a")
    entry = manifest.splits["sft"]
    assert entry.status == "complete"
    assert entry.fingerprint["constitution_sha256"] == load_constitution(HARMLESS).sha256()
    assert (tmp_path / "a/README.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("engine_fixture", ["hf_engine", "vllm_engine"])
def test_batched_equals_one_at_a_time(engine_fixture, request, tmp_path: Path):
    engine = request.getfixturevalue(engine_fixture)
    small = dict(work=WorkSelection(limit=4, batch_size=4, quiet=True), rounds=1)
    revise(config(tmp_path / "batched", **small), engine=engine)
    one_at_a_time = WorkSelection(limit=4, batch_size=1, quiet=True)
    revise(config(tmp_path / "single", **{**small, "work": one_at_a_time}), engine=engine)
    assert records(tmp_path / "batched") == records(tmp_path / "single")
    assert len(list((tmp_path / "single/sft").glob("*.arrow"))) == 4  # one shard per batch


@pytest.mark.slow
def test_given_responses_are_kept_and_long_prompts_skipped(hf_engine, tmp_path: Path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"id": "given", "prompt": "Name a fruit.", "response": "A banana."},
        {"id": "long", "prompt": "word " * 9000},
        {"id": "plain", "prompt": "Name a colour."},
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = revise(config(tmp_path / "run", prompts=prompts, rounds=1), engine=hf_engine)
    assert result.skipped_too_long == ["long"]
    out = {r.id: r for r in records(tmp_path / "run")}
    assert set(out) == {"given", "plain"}
    assert out["given"].initial == "A banana."
    assert load_manifest(tmp_path / "run").splits["sft"].stats["skipped_too_long"] == 1


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['{"prompt": "ok"}', '{"text": "no prompt field"}'], ":2: row has none of the fields"),
        (['{"prompt": "ok"}', "{not json"], ":2: invalid JSON"),
        (['{"prompt": ""}'], ":1 (field 'prompt'): empty prompt"),
        (['{"messages": [{"role": "user"}]}'], ":1 (field 'messages')"),
        (['{"id": "x", "prompt": "a"}', '{"id": "x", "prompt": "b"}'], "duplicate id"),
    ],
)
def test_bad_prompt_files_exit_2_naming_file_and_line(tmp_path: Path, capsys, lines, expected):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    code = run_cli(["revise", "--constitution", str(HARMLESS), "--prompts", str(prompts), "--out", str(out),
                    "--engine", "hf", "--model", str(tmp_path / "never-loaded")])
    assert code == 2
    err = capsys.readouterr().err
    assert str(prompts) in err and expected in err
    assert not (out / "sft").exists() or not any((out / "sft").glob("*.arrow"))


def test_missing_prompt_file_and_bad_constitution_exit_2(tmp_path: Path, capsys):
    code = run_cli(["revise", "--constitution", str(HARMLESS), "--prompts", str(tmp_path / "none.jsonl"),
                    "--out", str(tmp_path / "run"), "--engine", "hf"])
    assert code == 2 and "none.jsonl" in capsys.readouterr().err
    judge_only = tmp_path / "judge-only.yaml"
    judge_only.write_text("name: j\nprinciples:\n  - id: kind\n    judge: Which response is kinder?\n")
    code = run_cli(["revise", "--constitution", str(judge_only), "--prompts", str(PROMPTS),
                    "--out", str(tmp_path / "run2"), "--engine", "hf"])
    assert code == 2 and "critique and revision" in capsys.readouterr().err
