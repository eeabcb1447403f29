"""`dpo` as a stage of `labeler run`, and as the policy update of `stages.iterations`: two iterations of
sample → label → DPO → eval-policy, killed (kill -9) in iteration 1's DPO and resumed to the end.

The tiny random model is both the policy and the judge on the transformers engine (its samples and its
verdicts are nonsense, and quick): the test checks the machinery, not a figure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from labeler.pipeline.run import RunConfig, device_plan

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = ["Is the sky blue?", "Can birds fly?", "Is fire hot?", "Do fish swim?"]
CONSTITUTION = {"name": "brief", "version": 1,
                "principles": [{"id": "brief", "judge": "Which reply answers the question more directly?"}]}


def write_prompts(path: Path, questions: list[str]) -> Path:
    rows = [{"id": f"q{k}", "prompt_messages": [{"role": "user", "content": q}]} for k, q in enumerate(questions)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def loop_config(root: Path, policy: Path) -> dict:
    (root / "brief.yaml").write_text(yaml.safe_dump(CONSTITUTION))
    return {
        "out": str(root / "run"),
        "constitution": str(root / "brief.yaml"),
        "prompts": str(write_prompts(root / "train.jsonl", QUESTIONS)),
        "eval_prompts": str(write_prompts(root / "eval.jsonl", QUESTIONS[::-1])),
        "engine": {"name": "hf", "model": str(policy), "dtype": "float32"},
        "work": {"batch_size": 4, "quiet": True},
        "stages": {
            "revise": None,
            "label": {"pairs": "prompts", "pair_sampling": {"n": 2, "temperature": 1.0, "max_tokens": 6}},
            "dpo": {"policy": str(policy), "max_steps": 2, "batch_size": 2, "max_length": 64, "eval_fraction": 0.0,
                    "logging_steps": 1, "checkpoint_every": 1, "lora_rank": 4, "learning_rate": 1e-2},
            "iterations": 2,
            "eval": {"sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 6}, "kl": False},
            "report": False,
        },
    }  # fmt: skip


def test_config_takes_dpo_as_the_policy_update(tmp_path: Path) -> None:
    base = {"out": "o", "constitution": "c", "prompts": "p", "eval_prompts": "e", "engine": {"model": "m"}}
    stages = {"revise": None, "label": {"pairs": "prompts"}, "iterations": 2}
    config = RunConfig.model_validate({**base, "stages": {**stages, "dpo": {"policy": "m"}}})
    assert any(line.startswith("iterations: 2 x (label, dpo,") for line in device_plan(config))
    with pytest.raises(ValueError, match="stages.ppo or stages.dpo, not both"):
        RunConfig.model_validate({**base, "stages": {**stages, "dpo": {"policy": "m"}, "train_rm": {},
                                                     "ppo": {"policy": "m"}}})  # fmt: skip
    with pytest.raises(ValueError, match=r"must be the policy DPO starts from \(stages.dpo.policy 'other'\)"):
        RunConfig.model_validate({**base, "stages": {**stages, "dpo": {"policy": "other"}}})
    with pytest.raises(ValueError, match="stages.dpo.beta"):
        RunConfig.model_validate({**base, "stages": {**stages, "dpo": {"policy": "m", "beta": 0}}})


@pytest.mark.slow
def test_iterated_dpo_resumes_after_kill_9(tmp_path: Path, tiny_model: Path) -> None:
    from labeler.evaluate.policy_report import read_eval_policy
    from labeler.store import read_split
    from labeler.train.dpo.train import DPO_CARD

    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(loop_config(tmp_path, tiny_model)))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "labeler", "run", str(config_file)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    proc = subprocess.Popen(command, start_new_session=True, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 600
    while proc.poll() is None and not (out / "iter-1/dpo/checkpoint-1").is_dir() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before its DPO could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "iter-1/dpo" / DPO_CARD).exists()
    final = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert final.returncode == 0, final.stderr[-3000:]

    for k in (1, 2):
        folder = out / f"iter-{k}"
        rows = read_split(folder, "preferences").to_pylist()
        assert len(rows) == len(QUESTIONS) == len({r["id"] for r in rows})  # each pair exactly once
        card = json.loads((folder / "dpo" / DPO_CARD).read_text())
        assert card["steps"] == 2 and (folder / "dpo/adapter_model.safetensors").is_file()
        report = read_eval_policy(folder / "eval-policy.json")
        assert report.overall.n == len(QUESTIONS)
        assert report.candidate == "dpo"  # the folder it resolved: iter-<k>/dpo
    # iteration 2 sampled from and started at iteration 1's DPO policy
    assert json.loads((out / "iter-2/dpo/training-config.json").read_text())["policy"] == str(out / "iter-1/dpo")
    first = {r["id"] for r in read_split(out / "iter-1", "preferences").to_pylist()}
    assert first.isdisjoint({r["id"] for r in read_split(out / "iter-2", "preferences").to_pylist()})
