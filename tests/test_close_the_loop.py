"""Closing the loop on the embedded model: `labeler run` with `stages.iterations: 2`, killed (kill -9) twice
and resumed, then `labeler eval-policy` of the starting policy against itself, and `labeler report`
showing every evaluation.

One iterated run serves every check (it is the slow part: two rounds of labelling, reward-model training,
PPO and evaluation, all tiny): the run resumes at the right stage of the right iteration, every
iteration's folder is complete, each iteration's policy is evaluated against the start with an interval,
and the report shows win rate, reward and KL per iteration. The win rates printed are whatever the tiny
run gives (two PPO steps barely move a policy); the test checks the machinery, not the figure.
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

from labeler.cli.app import main

REPO = Path(__file__).resolve().parent.parent
TRAIN_QUESTIONS = ["Is the sky blue?", "Can birds fly?", "Is fire hot?", "Do fish swim?"]
EVAL_QUESTIONS = ["Is water wet?", "Is ice cold?", "Is grass green?", "Do dogs bark?", "Is snow white?",
                  "Is sugar sweet?"]  # fmt: skip
CONSTITUTION = {
    "name": "brief",
    "version": 1,
    "principles": [{"id": "brief", "judge": "Which reply answers the question more directly?"}],
}

pytestmark = pytest.mark.slow


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


def write_prompts(path: Path, questions: list[str]) -> Path:
    rows = [{"id": f"q{k}", "prompt_messages": [{"role": "system", "content": "Answer briefly."},
                                                 {"role": "user", "content": q}]} for k, q in enumerate(questions)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def loop_config(root: Path, model: Path) -> dict:
    (root / "brief.yaml").write_text(yaml.safe_dump(CONSTITUTION))
    return {
        "out": str(root / "run"),
        "constitution": str(root / "brief.yaml"),
        "prompts": str(write_prompts(root / "train.jsonl", TRAIN_QUESTIONS)),
        "eval_prompts": str(write_prompts(root / "eval.jsonl", EVAL_QUESTIONS)),
        "engine": {"name": "hf", "model": str(model), "dtype": "float32"},
        "work": {"batch_size": 2, "quiet": True},
        "stages": {
            "revise": None,
            "label": {"pairs": "prompts", "pair_sampling": {"n": 2, "temperature": 1.0, "max_tokens": 6}},
            "train_rm": {"max_steps": 2, "batch_size": 2, "max_length": 64, "eval_fraction": 0.0,
                         "logging_steps": 1, "checkpoint_every": 1},
            "ppo": {"policy": str(model), "steps": 2, "rollout_batch": 4, "minibatch": 2, "ppo_epochs": 1,
                    "max_new_tokens": 4, "lora_rank": 8, "lora_target_modules": ["q_proj", "v_proj"],
                    "missing_eos_reward": 0.0, "rollout_engine": "hf", "checkpoint_every": 1, "device": "cpu"},
            "iterations": 2,
            "eval": {"sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 6}},
            "report": True,
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def iterated_run(tmp_path_factory: pytest.TempPathFactory, embedded_model: Path) -> tuple[Path, int]:
    """The iterated run, killed with SIGKILL in iteration 1's PPO and in iteration 2's labelling, then
    run again to the end; returns the run folder and how many kills landed."""
    root = tmp_path_factory.mktemp("loop")
    config_file = root / "run.yaml"
    config_file.write_text(yaml.safe_dump(loop_config(root, embedded_model)))
    out = root / "run"
    command = [sys.executable, "-m", "labeler", "run", str(config_file)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    markers = {
        "iteration 1's PPO": lambda: (out / "iter-1/ppo/checkpoint-1").is_dir(),
        "iteration 2's labelling": lambda: any((out / "iter-2/preferences").glob("shard-*.arrow")),
    }
    kills = 0
    for started in markers.values():
        proc = subprocess.Popen(command, start_new_session=True, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 900
        while proc.poll() is None and not started() and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    assert final.returncode == 0, final.stderr[-3000:]
    return out, kills


def test_an_iterated_run_resumes_after_kill_9_and_reports_every_iteration(
    iterated_run: tuple[Path, int], embedded_model: Path, tmp_path: Path
) -> None:
    from labeler.evaluate.policy_report import read_eval_policy
    from labeler.store import read_split

    out, kills = iterated_run
    assert kills >= 1, "the run finished before it could be interrupted"
    for k in (1, 2):
        folder = out / f"iter-{k}"
        rows = read_split(folder, "preferences").to_pylist()
        assert len(rows) == len(TRAIN_QUESTIONS) == len({r["id"] for r in rows})  # each pair exactly once
        assert (folder / "rm/labeler-rm.json").is_file()
        assert (folder / "ppo/checkpoint-2/adapter").is_dir()
        report = read_eval_policy(folder / "eval-policy.json")
        print(f"iteration {k}: win rate {report.overall.win_rate:.3f} [{report.overall.low:.3f}, "
              f"{report.overall.high:.3f}], KL {report.kl.per_answer.mean if report.kl else None}")
        assert report.overall.n == len(EVAL_QUESTIONS)
        assert report.overall.low <= report.overall.win_rate <= report.overall.high
        assert report.candidate == f"iter-{k}/ppo/checkpoint-2" or report.candidate == "ppo/checkpoint-2"
        assert report.rewards is not None and report.kl is not None
    # Iteration 2 labelled its own policy's samples and continued iteration 1's reward model and policy.
    second = read_split(out / "iter-2", "preferences").to_pylist()
    first = read_split(out / "iter-1", "preferences").to_pylist()
    assert {r["id"] for r in second}.isdisjoint({r["id"] for r in first})
    assert json.loads((out / "iter-2/ppo/training-config.json").read_text())["policy"].endswith("checkpoint-2")

    # The starting policy against itself: about half, within the interval; KL exactly none.
    config = yaml.safe_load((out.parent / "run.yaml").read_text())
    self_json = tmp_path / "self.json"
    assert run_cli([
        "eval-policy", "--baseline", str(embedded_model), "--candidate", str(embedded_model),
        "--prompts", config["eval_prompts"], "--constitution", config["constitution"],
        "--judge-model", str(embedded_model), "--engine", "hf", "--dtype", "float32", "--max-tokens", "6",
        "--out", str(self_json), "--quiet",
    ]) == 0  # fmt: skip
    itself = json.loads(self_json.read_text())
    print(f"itself: win rate {itself['overall']['win_rate']:.3f} "
          f"[{itself['overall']['low']:.3f}, {itself['overall']['high']:.3f}]")
    assert itself["overall"]["low"] <= 0.5 <= itself["overall"]["high"]
    assert abs(itself["kl"]["per_answer"]["mean"]) < 1e-3
    assert any(row["baseline"] != row["candidate"] for row in itself["prompts"])  # two independent answers

    # The report: one row per iteration (plus the file given), its figure and statistics.
    assert run_cli(["report", str(out), "--eval-policy", str(self_json)]) == 0
    index = (out / "report/index.md").read_text()
    assert "## Policy evaluation" in index
    for name in ("iteration 1", "iteration 2", "self.json"):
        assert f"| {name} |" in index
    assert (out / "report/policy_evaluation.png").is_file()
    statistics = json.loads((out / "report/statistics.json").read_text())
    assert [e["name"] for e in statistics["policy_evaluations"]] == ["iteration 1", "iteration 2", "self.json"]
    assert {"iter-1/rm", "iter-2/rm"} <= set(statistics["reward_models"])
