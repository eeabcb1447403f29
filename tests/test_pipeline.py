"""`labeler run`: config validation, the README's generated reference, and the whole job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from labeler.cli import main
from labeler.config_reference import END, START, generate
from labeler.pipeline import RunConfig, load_run_config
from labeler.errors import InputError

REPO = Path(__file__).resolve().parent.parent


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


def test_shipped_configs_load_and_resolve_paths():
    demo = load_run_config(REPO / "configs/demo.yaml")
    assert demo.constitution == (REPO / "constitutions/harmless.yaml").resolve()
    assert demo.out == (REPO / "data/runs/demo").resolve()
    assert demo.stages.train_rm is not None and demo.stages.label.options.salmon
    gpu = load_run_config(REPO / "configs/gpu-node.yaml")
    assert gpu.engine.tensor_parallel_size == 2 and gpu.policy is not None


def test_validate_accepts_the_demo_config(capsys):
    assert run_cli(["validate", str(REPO / "configs/demo.yaml")]) == 0
    assert "run config" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c.update(bogus=1), "key bogus"),
        (lambda c: c["stages"]["label"]["options"].update(principles="most"), "key stages.label.options.principles"),
        (lambda c: c["stages"].update(revise=None), "stages.revise is off"),
        (lambda c: c["stages"]["train_rm"].update(lr=-1), "key stages.train_rm.lr"),
        (lambda c: c["engine"].update(name="tpu"), "key engine.name"),
    ],
)
def test_bad_run_configs_exit_2_naming_file_and_key(tmp_path: Path, capsys, edit, expected):
    config = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    edit(config)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    for command in (["validate", str(path)], ["run", str(path)]):
        assert run_cli(command) == 2
        err = capsys.readouterr().err
        assert str(path) in err and expected in err


def test_invalid_yaml_names_the_line(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("out: x\nstages:\n  revise: [unclosed\n")
    with pytest.raises(InputError) as exc:
        load_run_config(path)
    assert exc.value.line is not None and exc.value.file == str(path)


def test_readme_config_reference_is_generated():
    readme = (REPO / "README.md").read_text()
    body = readme.split(START, 1)[1].split(END, 1)[0]
    assert body.strip() == generate().strip(), "run: python -m labeler.config_reference --write"
    # every key of the run config appears in it
    for key in RunConfig.model_fields:
        assert f"`{key}`" in body


@pytest.mark.slow
def test_whole_job_on_the_embedded_model(tmp_path: Path, embedded_model: Path):
    config = {
        "out": str(tmp_path / "run"),
        "constitution": str(REPO / "constitutions/harmless.yaml"),
        "prompts": str(REPO / "data/sample_prompts.jsonl"),
        "engine": {"name": "hf", "model": str(embedded_model), "dtype": "float32"},
        "work": {"limit": 4, "batch_size": 4, "quiet": True},
        "stages": {
            "revise": {"rounds": 1, "sampling": {"temperature": 0.7, "max_tokens": 12}},
            "label": {"pairs": "revise", "options": {"salmon": True}},
            "train_rm": {"max_steps": 2, "batch_size": 2, "max_length": 128, "eval_fraction": 0.0,
                         "logging_steps": 1},
            "report": True,
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert run_cli(["run", str(path)]) == 0
    run = tmp_path / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["splits"]["sft"]["status"] == "complete"
    assert manifest["splits"]["preferences"]["status"] == "complete"
    from labeler.store import read_split

    prefs = read_split(run, "preferences").to_pylist()
    assert 1 <= len(prefs) <= 4
    salmon_ids = {p["principle_id"] for p in prefs[0]["principle_scores"]}
    assert len(salmon_ids) == 16
    assert (run / "rm" / "labeler-rm.json").is_file() and (run / "rm" / "metrics.jsonl").is_file()
    assert (run / "report" / "index.html").is_file()
    assert (run / "README.md").read_text().count("preferences") >= 1
    # a second run finds everything done and loads no model for the data stages
    assert run_cli(["run", str(path)]) == 0
    assert len(read_split(run, "preferences")) == len(prefs)
