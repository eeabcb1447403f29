"""The demonstration of `labeler dpo` on the real embedded model (SmolLM2-135M-Instruct, CPU, LoRA).

Pairs in which answering "No" beats answering "Yes" (the rule PPO's tests train towards) are trained on
with DPO; before a scripted judge that sees the rule, the trained policy beats its start with the win
rate's interval above 50 %. And on the same pairs, soft labels near 0.5 move the policy less than
confident ones, measured on the implicit reward margins. Runs are seeded and single-threaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from test_ppo_train import NO_ANSWERS, QUESTIONS, YES_ANSWERS, SaysNoJudge

from labeler.core.chat import Message
from labeler.core.layout import METRICS_FILE
from labeler.core.records import PreferenceRecord, conversation_columns, record_id
from labeler.store import RunStore
from labeler.train.dpo.config import DPOConfig
from labeler.train.dpo.train import train_dpo

MAX_NEW_TOKENS = 4
TRAINING: dict[str, Any] = dict(max_steps=6, epochs=3, eval_fraction=0.0)  # 16 pairs, 8 a step: 3 epochs
SETTINGS: dict[str, Any] = dict(
    batch_size=8, learning_rate=4e-3, beta=0.1, max_length=64, lora_rank=8, lora_alpha=16,
    lora_target_modules=("q_proj", "v_proj"), logging_steps=1, quiet=True,
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def no_beats_yes(question: str, k: int, p_no: float) -> PreferenceRecord:
    """A judged pair: "No ..." against "Yes ...", the judge preferring "No" with probability p_no."""
    prompt = [Message(role="system", content="Answer briefly."), Message(role="user", content=question)]
    no, yes = NO_ANSWERS[k % len(NO_ANSWERS)], YES_ANSWERS[(k + 1) % len(YES_ANSWERS)]
    a, b = (no, yes) if k % 2 == 0 else (yes, no)
    p_a = p_no if a == no else 1.0 - p_no
    chosen, rejected = (no, yes) if p_no >= 0.5 else (yes, no)
    return PreferenceRecord(
        id=record_id(question, a, b), **conversation_columns(prompt, chosen, rejected),
        response_a=a, response_b=b, p_a=p_a, p_a_ab=p_a, p_a_ba=p_a, mass_ab=0.9, mass_ba=0.9,
        logprobs_ab=(-0.1, -2.0), logprobs_ba=(-0.1, -2.0), consistent=True, principle_ids=("says-no",),
        principle_scores=(), margin=abs(2 * p_a - 1), judge_model="rule", source="rule", flags=(),
    )  # fmt: skip


def labelled_run(folder: Path, p_no: float) -> Path:
    store = RunStore.open(folder, "preferences", {"rule": f"no beats yes at {p_no}"})
    store.write_shard([no_beats_yes(question, k, p_no) for k, question in enumerate(QUESTIONS)])
    store.mark_complete()
    return folder


def last_train_margin(out: Path) -> float:
    rows = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    return float([row for row in rows if row["split"] == "train"][-1]["margin"])


@pytest.fixture(scope="module")
def confident_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return labelled_run(tmp_path_factory.mktemp("dpo-demo") / "confident", 0.95)


@pytest.fixture(scope="module")
def soft_policy(one_thread: None, embedded_model: Path, confident_run: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Path:  # fmt: skip
    out = tmp_path_factory.mktemp("dpo-soft") / "out"
    train_dpo(DPOConfig(data=(confident_run,), policy=str(embedded_model), out=out, **TRAINING, **SETTINGS))
    return out


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dpo-prompts") / "questions.jsonl"
    rows = [
        {"prompt_messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": q}]}
        for q in QUESTIONS
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.slow
def test_dpo_policy_beats_its_start_before_a_judge_that_sees_the_rule(
    soft_policy: Path, embedded_model: Path, prompts_file: Path, hf_engine: Any, tmp_path: Path
) -> None:
    from labeler.engine import EngineConfig
    from labeler.evaluate.policy_run import EvalPolicyConfig, eval_policy

    constitution = tmp_path / "no.yaml"
    constitution.write_text("name: says-no\nversion: 1\nprinciples:\n  - id: says-no\n    judge: Which says no?\n")
    config = EvalPolicyConfig(
        baseline=str(embedded_model), candidate=str(soft_policy), prompts=prompts_file, constitution=constitution,
        judge=EngineConfig(name="hf", model=str(embedded_model), dtype="float32"),
        sampling={"temperature": 1.0, "top_p": 1.0, "max_tokens": MAX_NEW_TOKENS}, out=tmp_path / "eval.json",
        kl=False, quiet=True,
    )  # fmt: skip
    report = eval_policy(config, judge=SaysNoJudge(hf_engine), baseline=hf_engine)
    print(f"DPO (soft labels) against its start: win rate {report.overall.win_rate:.3f} "
          f"[{report.overall.low:.3f}, {report.overall.high:.3f}]")
    assert report.overall.n == len(QUESTIONS)
    assert report.overall.low > 0.5, report.overall


@pytest.mark.slow
def test_labels_near_one_half_move_the_policy_less_than_confident_ones(
    soft_policy: Path, embedded_model: Path, tmp_path: Path
) -> None:
    """Same pairs, same steps (the confident run is the policy above): the judged p of "No" at 0.55 moves
    the implicit reward margin far less than at 0.95 (the soft loss asks for beta h = logit(p), and pulls
    with p - sigmoid(beta h))."""
    out = tmp_path / "dpo-unsure"
    train_dpo(DPOConfig(data=(labelled_run(tmp_path / "unsure", 0.55),), policy=str(embedded_model), out=out,
                        **TRAINING, **SETTINGS))  # fmt: skip
    margins = {"unsure": last_train_margin(out), "confident": last_train_margin(soft_policy)}
    print(f"implicit reward margin after 6 steps: p=0.55 {margins['unsure']:.4f}, p=0.95 {margins['confident']:.4f}")
    assert 0 < margins["unsure"] < 0.5 * margins["confident"]
