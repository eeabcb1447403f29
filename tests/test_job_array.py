"""Job arrays: each task runs one part (`--shard-index i --num-shards N`) into its own folder, then
`labeler merge` joins the parts; the merged run must be the same dataset as a single-process run.

Fast tests drive the stages through the library with the scripted fake engine; the slow one runs
the CLI on the embedded model, the tasks at the same time as a scheduler would start them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_engine import FakeEngine

from labeler.cli.app import main
from labeler.engine import GenerationParams
from labeler.stages.common import WorkSelection
from labeler.stages.label import LabelConfig, label
from labeler.stages.revise import ReviseConfig, revise
from labeler.store import fingerprint_diff, iter_records, load_manifest, merge_runs

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions/harmless.yaml"
PROMPTS = REPO / "data/sample_prompts.jsonl"


def records_by_id(run: Path, split: str) -> dict[str, dict]:
    """Every record of a finished split, by id (read_split's checks: checksums, no repeated id)."""
    return {record.id: record.model_dump() for record in iter_records(run, split)}


def in_parts(config: ReviseConfig | LabelConfig, root: Path, num: int) -> list[ReviseConfig | LabelConfig]:
    """The config of each task of an array of `num`, each writing its own folder under `root`."""
    return [
        config.model_copy(
            update={
                "out": root / f"part-{index}",
                "work": config.work.model_copy(update={"shard_index": index, "num_shards": num}),
            }
        )
        for index in range(num)
    ]


def revise_config(out: Path, **work: object) -> ReviseConfig:
    return ReviseConfig(
        constitution=HARMLESS,
        prompts=PROMPTS,
        out=out,
        rounds=2,
        sampling=GenerationParams(temperature=0.7, top_p=0.95, max_tokens=12),
        seed=5,
        work=WorkSelection(batch_size=3, quiet=True, **work),
    )


@pytest.mark.parametrize("num", [2, 3])
def test_revise_parts_merge_into_the_single_process_run(tmp_path: Path, num: int) -> None:
    single = revise(revise_config(tmp_path / "single"), engine=FakeEngine())
    assert single.written == 12

    parts = in_parts(revise_config(tmp_path / "unused"), tmp_path / "parts", num)
    written = [revise(part, engine=FakeEngine()).written for part in parts]
    assert sum(written) == 12 and all(0 < n < 12 for n in written)  # the prompts are really split
    merged = merge_runs([part.out for part in parts], tmp_path / "merged")

    assert records_by_id(merged, "sft") == records_by_id(tmp_path / "single", "sft")
    # Same fingerprint as a single-process run (the part is not part of it), so the merged folder
    # is a finished run of the same command: running it there again finds nothing to do.
    merged_entry = load_manifest(merged).splits["sft"]
    assert merged_entry.status == "complete" and merged_entry.part is None
    single_entry = load_manifest(tmp_path / "single").splits["sft"]
    assert fingerprint_diff(merged_entry.fingerprint, single_entry.fingerprint) == []
    again = revise(revise_config(merged), engine=FakeEngine())
    assert (again.written, again.already_done) == (0, 12)


def test_label_parts_merge_into_the_single_process_run(tmp_path: Path) -> None:
    revise(revise_config(tmp_path / "sft"), engine=FakeEngine())
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"prompt": f"Question {i}?", "response_a": f"answer {i}", "response_b": f"reply {i} {i}"}) + "\n"
            for i in range(10)
        )
    )
    for source in ({"pairs_from": tmp_path / "sft"}, {"pairs": pairs}, {"prompts": PROMPTS}):
        name = next(iter(source))
        config = LabelConfig(constitution=HARMLESS, out=tmp_path / f"single-{name}",
                             work=WorkSelection(batch_size=4, quiet=True), **source)
        engine = FakeEngine()
        single = label(config, judge=engine)
        assert single.written >= 10  # ten pairs or twelve prompts; a revision may equal its initial response
        parts = in_parts(config, tmp_path / f"parts-{name}", 2)
        engines = [FakeEngine(), FakeEngine()]
        written = [label(part, judge=part_engine).written for part, part_engine in zip(parts, engines)]
        assert sum(written) == single.written and 0 not in written
        merged = merge_runs([part.out for part in parts], tmp_path / f"merged-{name}")
        assert records_by_id(merged, "preferences") == records_by_id(config.out, "preferences")
        # Each task samples pairs for its own prompts only: together no more than one process.
        assert sum(e.requests["generate"] for e in engines) == engine.requests["generate"]


def test_merge_refuses_a_missing_part(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parts = in_parts(revise_config(tmp_path / "unused"), tmp_path / "parts", 3)
    for part in parts[:2]:
        revise(part, engine=FakeEngine())
    with pytest.raises(SystemExit) as exit_info:
        main(["merge", str(parts[0].out), str(parts[1].out), "--out", str(tmp_path / "merged")])
    assert exit_info.value.code == 2
    assert "part(s) 2 of 3 are missing" in capsys.readouterr().err
    assert not (tmp_path / "merged" / "manifest.json").exists()


def test_parts_run_in_different_dtypes_under_auto_do_not_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--dtype auto` is recorded as what it resolved to: a bfloat16 part and a float32 part differ."""
    import torch

    import labeler.engine.dtype as engine_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    parts = in_parts(revise_config(tmp_path / "unused"), tmp_path / "parts", 2)
    assert parts[0].engine.dtype == "auto"
    for part, flags in zip(parts, ({"avx2", "amx_bf16"}, {"avx2"})):  # a CPU with native bfloat16, one without
        monkeypatch.setattr(engine_dtype, "cpu_flags", lambda flags=flags: frozenset(flags))
        revise(part, engine=FakeEngine())
    recorded = [load_manifest(part.out).splits["sft"].fingerprint["config"]["engine"]["dtype"] for part in parts]
    assert recorded == ["bfloat16", "float32"]
    with pytest.raises(SystemExit) as exit_info:
        main(["merge", str(parts[0].out), str(parts[1].out), "--out", str(tmp_path / "merged")])
    assert exit_info.value.code == 2
    assert "config.engine.dtype" in capsys.readouterr().err
    assert not (tmp_path / "merged" / "manifest.json").exists()


def cli_env() -> dict[str, str]:
    # Passive OpenMP waiting: several engines share two cores here, and spinning threads starve each other.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_WAIT_POLICY": "PASSIVE"}


def revise_command(model: Path, out: Path, *extra: str) -> list[str]:
    """A tiny revise run on the embedded model; fp32, where batching does not change sampled tokens."""
    return [
        sys.executable, "-m", "labeler", "revise", "--constitution", str(HARMLESS), "--prompts", str(PROMPTS),
        "--out", str(out), "--engine", "hf", "--model", str(model), "--dtype", "float32", "--limit", "5",
        "--batch-size", "2", "--rounds", "1", "--max-tokens", "16", "--quiet", *extra,
    ]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cli_job_array_of_two_equals_one_process(embedded_model: Path, tmp_path: Path) -> None:
    commands = [revise_command(embedded_model, tmp_path / "single")]
    commands += [
        revise_command(embedded_model, tmp_path / f"part-{i}", "--shard-index", str(i), "--num-shards", "2")
        for i in range(2)
    ]
    # All three at once, as an array's tasks start together (and to save wall-clock time).
    processes = [
        subprocess.Popen(command, cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for command in commands
    ]
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]

    merge = subprocess.run(
        [sys.executable, "-m", "labeler", "merge", str(tmp_path / "part-0"), str(tmp_path / "part-1"),
         "--out", str(tmp_path / "merged")],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300,
    )
    assert merge.returncode == 0, merge.stderr[-3000:]
    parts = [len(records_by_id(tmp_path / f"part-{i}", "sft")) for i in range(2)]
    assert sum(parts) == 5 and 0 not in parts  # both tasks had work
    single = records_by_id(tmp_path / "single", "sft")
    assert len(single) == 5
    assert records_by_id(tmp_path / "merged", "sft") == single
