"""`labeler run`: config validation, the README's generated reference, and the whole job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from labeler.cli.app import main
from labeler.core.errors import InputError
from labeler.pipeline.config_reference import END, START, generate
from labeler.pipeline.run import RunConfig, load_run_config

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
    assert gpu.engine.data_parallel_size == 8 and gpu.policy is not None


def test_validate_accepts_the_demo_config(capsys):
    assert run_cli(["validate", str(REPO / "configs/demo.yaml")]) == 0
    assert "run config" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c.update(bogus=1), "key bogus"),
        (lambda c: c["stages"]["label"]["options"].update(principles="most"), "key stages.label.options.principles"),
        (lambda c: c["stages"].update(revise=None), "stages.revise is off"),
        (lambda c: c["stages"]["train_rm"].update(learning_rate=-1), "key stages.train_rm.learning_rate"),
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


CAI_REVISE = REPO / "tests/fixtures/constitutions/anthropic_critique_revision.json"
CAI_LABEL = REPO / "tests/fixtures/constitutions/anthropic_judge_principles.json"


def cai_pairing(tmp_path: Path, **label: object) -> Path:
    """The CAI paper's own pairing: critique/revision requests for revise, labelling principles for label
    (neither file can do the other stage's work); the stage files given relative to the config."""
    for source in (CAI_REVISE, CAI_LABEL):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    config = {
        "out": "run", "constitution": str(REPO / "constitutions/harmless.yaml"),
        "prompts": str(REPO / "data/sample_prompts.jsonl"),
        "stages": {"revise": {"constitution": CAI_REVISE.name},
                   "label": {"constitution": CAI_LABEL.name, "pairs": "revise", **label}},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_each_stage_may_have_its_own_constitution(tmp_path: Path, capsys) -> None:
    from labeler.pipeline.run import TrainRMStage, label_config, revise_config, train_rm_config

    config = load_run_config(cai_pairing(tmp_path))
    assert revise_config(config).constitution == tmp_path / CAI_REVISE.name
    assert label_config(config).constitution == tmp_path / CAI_LABEL.name
    conditioned = TrainRMStage(principle_conditioned=True)
    assert train_rm_config(config, conditioned).constitution == tmp_path / CAI_LABEL.name
    assert run_cli(["validate", str(tmp_path / "run.yaml")]) == 0
    out = capsys.readouterr().out
    assert "revise constitution anthropic_critique_revision" in out and "label constitution" in out
    # without stage files, every stage takes the run's constitution, as before
    plain = load_run_config(REPO / "configs/demo.yaml")
    assert revise_config(plain).constitution == label_config(plain).constitution == plain.constitution


def test_a_stage_constitution_that_cannot_do_the_stage_is_refused_naming_it(tmp_path: Path, capsys) -> None:
    path = cai_pairing(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["stages"]["label"]["constitution"] = CAI_REVISE.name  # critique requests only: nothing to judge by
    path.write_text(yaml.safe_dump(config))
    assert run_cli(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / CAI_REVISE.name) in err


def test_readme_config_reference_is_generated():
    readme = (REPO / "README.md").read_text()
    body = readme.split(START, 1)[1].split(END, 1)[0]
    assert body.strip() == generate().strip(), "run: python -m labeler.pipeline.config_reference --write"
    # every key of the run config appears in it
    for key in RunConfig.model_fields:
        assert f"`{key}`" in body


def job_config(out: Path, model: Path) -> dict:
    return {
        "out": str(out),
        "constitution": str(REPO / "constitutions/harmless.yaml"),
        "prompts": str(REPO / "data/sample_prompts.jsonl"),
        "engine": {"name": "hf", "model": str(model), "dtype": "float32"},
        "work": {"limit": 4, "batch_size": 1, "quiet": True},
        "stages": {
            "revise": {"rounds": 1, "sampling": {"temperature": 0.7, "max_tokens": 12}},
            "label": {"pairs": "revise", "options": {"salmon": True}},
            "train_rm": {"max_steps": 2, "batch_size": 2, "max_length": 128, "eval_fraction": 0.0,
                         "logging_steps": 1, "checkpoint_every": 1},
            "report": True,
        },
    }


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory, embedded_model: Path) -> Path:
    """The whole job run once, uninterrupted, in this process."""
    base = tmp_path_factory.mktemp("job")
    path = base / "run.yaml"
    path.write_text(yaml.safe_dump(job_config(base / "run", embedded_model)))
    assert run_cli(["run", str(path)]) == 0
    return base / "run"


def records_of(run: Path, split: str) -> list[dict]:
    from labeler.store import read_split

    return sorted(read_split(run, split).to_pylist(), key=lambda r: r["id"])


@pytest.mark.slow
def test_whole_job_on_the_embedded_model(finished_job: Path):
    run = finished_job
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["splits"]["sft"]["status"] == "complete"
    assert manifest["splits"]["preferences"]["status"] == "complete"
    prefs = records_of(run, "preferences")
    assert 1 <= len(prefs) <= 4
    assert len({p["principle_id"] for p in prefs[0]["principle_scores"]}) == 16
    assert (run / "rm" / "labeler-rm.json").is_file() and (run / "rm" / "metrics.jsonl").is_file()
    assert (run / "report" / "index.html").is_file()
    assert "preferences" in (run / "README.md").read_text()
    # a second run finds every stage done and changes nothing
    assert run_cli(["run", str(run.parent / "run.yaml")]) == 0
    assert records_of(run, "preferences") == prefs


@pytest.mark.slow
def test_run_resumes_after_kill_9_at_each_stage(finished_job: Path, embedded_model: Path, tmp_path: Path):
    """kill -9 the whole job in the revise stage, in the label stage and in training; re-run each time."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(job_config(out, embedded_model)))
    command = [sys.executable, "-m", "labeler", "run", str(path)]

    def started(marker: str) -> bool:
        if marker == "rm":
            return any((out / "rm").glob("checkpoint-*"))
        return len(list((out / marker).glob("shard-*.arrow"))) >= 1

    kills = 0
    for marker in ("sft", "preferences", "rm"):
        proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 600
        while proc.poll() is None and not started(marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run(command, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]
    assert kills >= 2, "the job finished before it could be interrupted"
    for split in ("sft", "preferences"):
        assert records_of(out, split) == records_of(finished_job, split)
    assert (out / "rm" / "labeler-rm.json").is_file()
