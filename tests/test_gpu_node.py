"""What GPU nodes need, checked here without one: models by Hub id from a local Hugging Face cache (offline),
engine options on every command, the 8-GPU config, and model replicas that make the dataset one makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labeler.cli.app import main
from labeler.core.errors import InputError
from labeler.engine.model_ref import resolve_model

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions" / "harmless.yaml"
PROMPTS = REPO / "data" / "sample_prompts.jsonl"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, model: Path, *repos: str) -> Path:
    """A Hugging Face cache laid out as huggingface_hub writes it, each repo a snapshot of `model`'s files
    (blobs linked, as the hub links them), `refs/main` naming the commit."""
    for repo in repos:
        storage = root / f"models--{repo.replace('/', '--')}"
        snapshot = storage / "snapshots" / COMMIT
        snapshot.mkdir(parents=True)
        for file in model.iterdir():
            if file.is_file():
                (snapshot / file.name).symlink_to(file)
        (storage / "refs").mkdir()
        (storage / "refs" / "main").write_text(COMMIT)
    return root


@pytest.fixture
def offline_cache(tmp_path: Path, embedded_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = hub_cache(tmp_path / "hub", embedded_model, "labeler-test/smol")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_hub_id_resolves_offline_by_id_branch_and_commit(offline_cache: Path) -> None:
    snapshot = offline_cache / "models--labeler-test--smol" / "snapshots" / COMMIT
    for spec in ("labeler-test/smol", "labeler-test/smol@main", f"labeler-test/smol@{COMMIT}"):
        ref = resolve_model(spec, field="judge.model")
        assert ref.source == "hub" and ref.path == snapshot and ref.revision == COMMIT
        assert ref.label == f"labeler-test/smol@{COMMIT}"  # what fingerprints and datasets record: exact


def test_an_unknown_hub_id_offline_is_bad_input_naming_it(offline_cache: Path) -> None:
    with pytest.raises(InputError) as info:
        resolve_model("labeler-test/missing", field="judge.model")
    assert info.value.file == "labeler-test/missing" and info.value.field == "judge.model"
    assert "HF_HUB_OFFLINE" in info.value.message
    with pytest.raises(InputError, match="labeler-test/smol@v9"):
        resolve_model("labeler-test/smol@v9")


def test_a_hub_snapshot_with_only_pickled_weights_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--org--pickled" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (snapshot / "pytorch_model.bin").write_bytes(b"pickle")
    (tmp_path / "hub" / "models--org--pickled" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--pickled" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="safetensors"):
        resolve_model("org/pickled")


ENGINE_OPTIONS = ("--engine", "--dtype", "--tensor-parallel-size", "--data-parallel-size", "--gpu-memory-utilization",
                  "--max-model-len", "--enforce-eager", "--no-enforce-eager", "--kv-block-size", "--engine-config")


@pytest.mark.parametrize("command", ["generate", "revise", "label", "eval-judge"])
def test_every_engine_option_is_on_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    shown = capsys.readouterr().out
    for option in ENGINE_OPTIONS:
        assert option in shown, (command, option)


def test_an_engine_config_file_sets_options_and_the_command_line_wins(tmp_path: Path) -> None:
    from labeler.cli.stages import COMMANDS

    label = next(c for c in COMMANDS if c.name == "label")
    engine_file = tmp_path / "engine.yaml"
    engine_file.write_text("tensor_parallel_size: 4\ndata_parallel_size: 2\nenforce_eager: false\ndtype: float32\n")
    config = label.build({
        "constitution": HARMLESS, "out": tmp_path / "o", "pairs": tmp_path / "p.jsonl",
        "judge__file": engine_file, "judge__dtype": "bfloat16",
    })  # fmt: skip
    judge = config.judge  # type: ignore[attr-defined]
    assert (judge.tensor_parallel_size, judge.data_parallel_size, judge.enforce_eager) == (4, 2, False)
    assert judge.dtype == "bfloat16"  # given on the command line: it wins over the file
    engine_file.write_text("tensor_parallel: 4\n")
    with pytest.raises(InputError, match="tensor_parallel"):
        label.build({"constitution": HARMLESS, "out": tmp_path / "o", "pairs": tmp_path / "p.jsonl",
                     "judge__file": engine_file})


def test_the_8_gpu_config_validates_and_plans_every_gpu(tmp_path: Path, embedded_model: Path) -> None:
    """configs/gpu-node.yaml names its models by Hub id: with them in the cache, it validates offline."""
    models = ("Qwen/Qwen2.5-7B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3")
    cache = hub_cache(tmp_path / "hub", embedded_model, *models)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "labeler", "validate", "configs/gpu-node.yaml"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "revise: policy mistralai/Mistral-7B-Instruct-v0.3, 8 replicas x 1 device = 8 devices" in result.stdout
    assert "label: judge Qwen/Qwen2.5-7B-Instruct, 8 replicas x 1 device = 8 devices" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "labeler", "validate", "configs/gpu-node.yaml"],
                             cwd=REPO, env={**env, "HF_HUB_CACHE": str(tmp_path / "empty")},
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2, missing.stderr
    assert "key policy.model" in missing.stderr and "mistralai/Mistral-7B-Instruct-v0.3" in missing.stderr


@pytest.mark.slow
def test_label_with_a_hub_id_judge_records_its_commit(tmp_path: Path, embedded_model: Path) -> None:
    cache = hub_cache(tmp_path / "hub", embedded_model, "labeler-test/smol")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Is {x} safe?", "response_a": "Yes.", "response_b": "No."}) + "\n"
                             for x in ("ice", "fire")))
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "labeler", "label", "--constitution", str(HARMLESS), "--pairs", str(pairs),
         "--out", str(out), "--engine", "hf", "--dtype", "float32", "--judge-model", "labeler-test/smol", "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    from labeler.store import iter_records, load_manifest

    label = f"labeler-test/smol@{COMMIT}"
    assert load_manifest(out).splits["preferences"].fingerprint["models"]["judge"] == label
    assert {record.judge_model for record in iter_records(out, "preferences")} == {label}  # type: ignore[attr-defined]
    assert label in (out / "README.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_model_replicas_make_the_dataset_one_makes(tmp_path: Path, embedded_model: Path) -> None:
    """`--data-parallel-size 2`: two processes, one core and one model each, each a part of the prompts,
    merged into one run: the same records and fingerprint as one replica."""
    from labeler.core.layout import RUN_PARTS_FOLDER
    from labeler.store import iter_records, load_manifest

    def revise(out: Path, *extra: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "labeler", "revise", "--constitution", str(HARMLESS), "--prompts", str(PROMPTS),
             "--out", str(out), "--engine", "hf", "--model", str(embedded_model), "--dtype", "float32",
             "--limit", "5", "--batch-size", "2", "--rounds", "1", "--max-tokens", "12", "--quiet", *extra],
            cwd=REPO, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]

    revise(tmp_path / "one")
    revise(tmp_path / "two", "--data-parallel-size", "2")

    def records(out: Path) -> dict[str, object]:
        return {record.id: record.model_dump() for record in iter_records(out, "sft")}

    assert records(tmp_path / "two") == records(tmp_path / "one") and len(records(tmp_path / "one")) == 5
    parts = sorted((tmp_path / "two" / RUN_PARTS_FOLDER / "sft").iterdir())
    assert [p.name for p in parts] == ["part-00000-of-00002", "part-00001-of-00002"]
    assert all(records(part) for part in parts)  # each replica had prompts
    one, two = (load_manifest(tmp_path / name).splits["sft"] for name in ("one", "two"))
    assert one.fingerprint == two.fingerprint and two.status == "complete"
