"""PPO end to end on the real embedded model (SmolLM2-135M-Instruct, CPU), plus its inputs and checkpoints.

The learning test rewards the word "no": asked yes/no questions and told to answer briefly, the model
starts about a quarter of its answers with "No" on its own, so a few PPO steps can make it say it every
time. Responses are 4 tokens long and batches small so that the whole file stays within minutes on
two shared cores; every run is seeded and single-threaded, so it is also repeatable.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from labeler.cli.app import main
from labeler.core.chat import Message
from labeler.core.errors import InputError
from labeler.core.layout import METRICS_FILE
from labeler.core.records import PreferenceRecord, conversation_columns, record_id
from labeler.engine.model_ref import resolve_model
from labeler.store import RunStore
from labeler.train.common.checkpoint import flatten_optimizer_state, unflatten_optimizer_state
from labeler.train.ppo.config import PPOConfig
from labeler.train.ppo.rewards import (
    RewardFn,
    RewardModelReward,
    WordReward,
    check_reward,
    load_reward,
    parse_reward_rule,
)
from labeler.train.ppo.train import load_prompts, train_ppo

QUESTIONS = [
    "Is the sky blue?", "Is water wet?", "Is fire hot?", "Do cats like milk?",
    "Is the sun a star?", "Can birds fly?", "Is ice cold?", "Do fish swim?",
    "Is grass green?", "Are apples fruit?", "Is snow white?", "Do dogs bark?",
    "Is the earth round?", "Can people run?", "Is sugar sweet?", "Do trees grow?",
]  # fmt: skip

# Small enough for CPU, large enough to learn: 8 prompts a step, 4-token answers, 2 gradient steps a step.
LEARNING: dict[str, Any] = dict(
    reward_rule="word:no",
    rollout_batch=8,
    minibatch=8,
    ppo_epochs=2,
    max_new_tokens=4,
    learning_rate=1e-3,
    lora_target_modules=("q_proj", "v_proj"),
    lora_rank=8,
    missing_eos_reward=0.0,  # 4 tokens rarely reach EOS: the penalty would only add noise here
    device="cpu",
    seed=0,
    rollout_engine="hf",  # vLLM rollouts have their own tests (test_ppo_rollouts.py)
)
TINY: dict[str, Any] = {**LEARNING, "rollout_batch": 4, "minibatch": 2, "ppo_epochs": 1, "max_new_tokens": 3}
LEARNING_STEPS = 6
HIGH_KL_STEPS = 6
RM_STEPS = 8  # a learnt reward is noisier than the word rule: a few more steps, averaged


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One thread: on two cores shared with other work, two threads ran the same PPO step several times
    slower (each small kernel waits for the slower thread); one thread also makes every run repeatable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ppo-prompts") / "questions.jsonl"
    rows = [
        {"prompt_messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": q}]}
        for q in QUESTIONS
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def config(policy: Path, prompts: Path, out: Path, **overrides: Any) -> PPOConfig:
    return PPOConfig.model_validate({"policy": str(policy), "prompts": prompts, "out": out, **LEARNING, **overrides})


def metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]


def mean(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(row[key] for row in rows)


@dataclass(frozen=True)
class Run:
    out: Path
    last_checkpoint: Path
    rows: list[dict[str, Any]]


@pytest.fixture(scope="module")
def learning_run(
    one_thread: None, embedded_model: Path, prompts_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    out = tmp_path_factory.mktemp("ppo-learn") / "run"
    cfg = config(embedded_model, prompts_file, out, steps=LEARNING_STEPS, kl_coef=0.05, checkpoint_every=2)
    last = train_ppo(cfg)
    return Run(out, last, metrics(out))


@pytest.fixture(scope="module")
def high_kl_run(
    one_thread: None, embedded_model: Path, prompts_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    out = tmp_path_factory.mktemp("ppo-high-kl") / "run"
    last = train_ppo(config(embedded_model, prompts_file, out, steps=HIGH_KL_STEPS, kl_coef=5.0, kl_estimator="k3"))
    return Run(out, last, metrics(out))


NO_ANSWERS = ("No.", "No, it is not.", "No, not at all.", "No!")
YES_ANSWERS = ("Yes.", "Yes, it is.", "Yes, of course.", "Yes!")


def no_beats_yes(question: str, k: int) -> PreferenceRecord:
    """A labelled pair in which answering "No" beats answering "Yes" (the side of each alternates)."""
    prompt = [Message(role="system", content="Answer briefly."), Message(role="user", content=question)]
    no, yes = NO_ANSWERS[k % len(NO_ANSWERS)], YES_ANSWERS[(k + 1) % len(YES_ANSWERS)]
    a, b = (no, yes) if k % 2 == 0 else (yes, no)
    p_a = 0.95 if a == no else 0.05
    return PreferenceRecord(
        id=record_id(question, a, b), **conversation_columns(prompt, no, yes),
        response_a=a, response_b=b, p_a=p_a, p_a_ab=p_a, p_a_ba=p_a,
        mass_ab=0.9, mass_ba=0.9, logprobs_ab=(-0.1, -2.0), logprobs_ba=(-0.1, -2.0), consistent=True,
        principle_ids=("contrary",), principle_scores=(), margin=0.45, judge_model="rule", source="rule", flags=(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def no_preferring_rm(one_thread: None, embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward model made by `labeler train-rm` (the command, LoRA on the embedded model) from pairs
    in which "No" beats "Yes": the reward the learning test below climbs."""
    root = tmp_path_factory.mktemp("ppo-rm")
    store = RunStore.open(root / "prefs", "preferences", {"rule": "no beats yes"})
    store.write_shard([no_beats_yes(question, k) for k in range(4) for question in QUESTIONS])
    store.mark_complete()
    with pytest.raises(SystemExit) as exit_info:
        main([
            "train-rm", "--data", str(root / "prefs"), "--base-model", str(embedded_model), "--out", str(root / "rm"),
            "--lora", "--learning-rate", "1e-3", "--batch-size", "16", "--max-steps", "8", "--epochs", "4",
            "--max-length", "64", "--eval-fraction", "0",
        ])  # fmt: skip
    assert exit_info.value.code in (0, None)
    return root / "rm"


# ---------------------------------------------------------------------------------------------------
# Learning, and the KL leash
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ppo_raises_the_reward(learning_run: Run) -> None:
    rows = learning_run.rows
    assert [row["step"] for row in rows] == list(range(1, LEARNING_STEPS + 1))
    first, last = mean(rows[:3], "reward"), mean(rows[-3:], "reward")
    assert last > first + 0.5, f"mean reward went from {first:.3f} to {last:.3f}"
    assert rows[-1]["entropy"] < rows[0]["entropy"]  # the policy concentrated on what is rewarded


@pytest.mark.slow
def test_kl_starts_at_zero_and_stays_bounded(learning_run: Run) -> None:
    rows = learning_run.rows
    # A fresh adapter is the reference itself: the first batch has no divergence at all.
    assert abs(rows[0]["kl"]) < 1e-4
    assert all(math.isfinite(row["kl"]) for row in rows)
    # At most a few nats per token, even while the policy learns.
    assert max(row["kl"] for row in rows) < 4.0 * LEARNING["max_new_tokens"]
    assert rows[-1]["kl"] > 0.5  # and it did move away from the reference


@pytest.mark.slow
def test_a_large_kl_coef_keeps_the_policy_near_the_reference(learning_run: Run, high_kl_run: Run) -> None:
    # Both runs share seed and settings; their first step is identical (the KL is 0 there), so compare
    # the steps after it, where only the KL penalty differs.
    leashed, free = high_kl_run.rows[3:HIGH_KL_STEPS], learning_run.rows[3:HIGH_KL_STEPS]
    assert max(row["kl"] for row in high_kl_run.rows) < 3.0
    assert mean(leashed, "kl") < 0.4 * mean(free, "kl"), (mean(leashed, "kl"), mean(free, "kl"))
    assert mean(leashed, "reward") < mean(free, "reward")


@pytest.mark.slow
def test_ppo_raises_the_reward_of_a_model_trained_by_train_rm(
    no_preferring_rm: Path, embedded_model: Path, prompts_file: Path, tmp_path: Path
) -> None:
    """The whole loop: preference data -> `labeler train-rm` -> PPO against that reward model."""
    reward = load_reward(resolve_model(no_preferring_rm, kind="reward"), None)
    prompt = [Message(role="system", content="Answer briefly."), Message(role="user", content="Is snow hot?")]
    no, yes = reward([prompt, prompt], ["No, snow is cold.", "Yes, snow is hot."])
    assert no > yes + 1.0  # the reward model learnt its pairs (and generalises to unseen answers)

    out = tmp_path / "rm-ppo"
    cfg = config(
        embedded_model, prompts_file, out, reward_rule=None, reward_model=str(no_preferring_rm), steps=RM_STEPS,
        kl_coef=0.05,
    )
    train_ppo(cfg)
    rows = metrics(out)
    rewards = [row["reward"] for row in rows]
    assert len(rows) == RM_STEPS and abs(rows[0]["kl"]) < 1e-4
    assert mean(rows[-3:], "reward") > mean(rows[:2], "reward") + 0.3, rewards
    assert max(row["kl"] for row in rows) < 4.0 * LEARNING["max_new_tokens"], [row["kl"] for row in rows]


@pytest.mark.slow
def test_metrics_and_checkpoints_are_complete(learning_run: Run, embedded_model: Path) -> None:
    expected = {
        "step", "reward", "reward_std", "score", "kl", "non_score_reward", "entropy", "clip_frac",
        "value_clip_frac", "policy_loss", "value_loss", "approx_kl", "response_length", "no_eos_frac", "seconds",
        "rollout_tokens", "rollout_seconds",
    }  # fmt: skip
    for row in learning_run.rows:
        assert set(row) == expected
        assert 0.0 <= row["clip_frac"] <= 1.0 and 0.0 <= row["no_eos_frac"] <= 1.0
        assert 1.0 <= row["response_length"] <= LEARNING["max_new_tokens"]
    # checkpoint_every=2 over 6 steps saves 2, 4 and 6; keep_checkpoints=2 leaves the last two.
    names = sorted(p.name for p in learning_run.out.iterdir() if p.name.startswith("checkpoint-"))
    assert names == ["checkpoint-4", "checkpoint-6"]
    last = learning_run.last_checkpoint
    assert last.name == "checkpoint-6"
    saved = PPOConfig.model_validate_json((last / "config.json").read_text())
    assert saved.steps == LEARNING_STEPS and saved.policy == str(embedded_model)
    assert json.loads((last / "state.json").read_text())["step"] == LEARNING_STEPS
    adapter = load_file(last / "adapter" / "adapter_model.safetensors")
    assert adapter and all("lora_" in key for key in adapter)
    assert any(float(t.abs().max()) > 0 for key, t in adapter.items() if "lora_B" in key)  # LoRA B starts at 0
    trainable = load_file(last / "trainable.safetensors")
    assert {"value_head.weight", "value_head.bias"} <= set(trainable)
    assert all("lora_" in key or key.startswith("value_head.") for key in trainable)
    assert load_file(last / "optimizer.safetensors")
    assert {"torch", "generator.data"} <= set(load_file(last / "rng.safetensors"))
    assert not list(learning_run.out.glob(".checkpoint-*"))  # no temporary folder left behind


@pytest.mark.slow
def test_a_trained_adapter_is_its_own_reference(learning_run: Run, prompts_file: Path, tmp_path: Path) -> None:
    """Starting from a trained adapter, the reference is a frozen copy of it, not the base model: the
    first step has no KL although the adapter is far from the base (the learning run measured that)."""
    start = learning_run.last_checkpoint / "adapter"
    out = tmp_path / "continued"
    last = train_ppo(config(start, prompts_file, out, steps=1, **TINY))
    (row,) = metrics(out)
    assert abs(row["kl"]) < 1e-4
    assert learning_run.rows[-1]["kl"] > 0.5
    assert row["reward"] >= 1.0  # the trained policy was loaded: it still says "no"
    # ... and it is the policy that trains, not the frozen copy
    before = load_file(start / "adapter_model.safetensors")
    after = load_file(last / "adapter" / "adapter_model.safetensors")
    assert set(before) == set(after)
    assert any(not torch.equal(before[key], after[key]) for key in before)


class SaysNoJudge:
    """A judge that sees the rule the learning run was trained towards: the reply saying "no" more often
    is the better one (P = sigmoid of 4 x the difference in counts). It wraps the real engine the
    baseline samples with, so everything but the choice is the real thing."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.name, self.model_id = engine, "says-no", "says-no-judge"
        self.max_model_len = engine.max_model_len
        self.prompt_lengths, self.generate = engine.prompt_lengths, engine.generate

    def choice_logprobs(self, requests: Any, choices: Any) -> list[Any]:
        import re

        from labeler.engine import ChoiceScores

        scores = []
        for request in requests:
            text = request.messages[-1].content
            a, b = re.search(r"\n\(A\)\n(.*?)\n\n\(B\)\n(.*?)\n\n", text, re.DOTALL).groups()  # type: ignore[union-attr]
            count_a, count_b = (WordReward("no")([[]], [reply])[0] for reply in (a, b))
            logit = 4.0 * (count_a - count_b)
            scores.append(ChoiceScores((-math.log1p(math.exp(-logit)), -math.log1p(math.exp(logit)))))
        return scores

    def close(self) -> None:
        pass


@pytest.mark.slow
def test_eval_policy_finds_the_trained_policy_winning_with_a_judge_that_sees_its_rule(
    learning_run: Run, embedded_model: Path, prompts_file: Path, hf_engine: Any, tmp_path: Path
) -> None:
    """The demonstration: a policy PPO trained towards saying "no" beats its start, interval and all,
    before a judge that prefers "no"; its KL to the start is positive; the report holds every prompt."""
    from labeler.engine import EngineConfig
    from labeler.evaluate.policy_run import EvalPolicyConfig, eval_policy

    constitution = tmp_path / "no.yaml"
    constitution.write_text("name: says-no\nversion: 1\nprinciples:\n  - id: says-no\n    judge: Which says no?\n")
    config = EvalPolicyConfig(
        baseline=str(embedded_model), candidate=str(learning_run.out), prompts=prompts_file,
        constitution=constitution, judge=EngineConfig(name="hf", model=str(embedded_model), dtype="float32"),
        sampling={"temperature": 1.0, "top_p": 1.0, "max_tokens": LEARNING["max_new_tokens"]},
        out=tmp_path / "eval.json", quiet=True,
    )  # fmt: skip
    report = eval_policy(config, judge=SaysNoJudge(hf_engine), baseline=hf_engine)
    print(f"trained towards 'no' against its start: win rate {report.overall.win_rate:.3f} "
          f"[{report.overall.low:.3f}, {report.overall.high:.3f}]; KL {report.kl.per_answer.mean:.3f}")
    assert report.candidate == f"{learning_run.out.name}/{learning_run.last_checkpoint.name}"
    assert report.overall.n == len(QUESTIONS)
    assert report.overall.low > 0.5, report.overall
    assert report.kl is not None and report.kl.per_answer.mean > 0.1
    assert (tmp_path / "eval.json").is_file()


# ---------------------------------------------------------------------------------------------------
# Rollouts, resuming, the CLI
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_rollout_logprobs_are_those_of_the_sampling_distribution(
    embedded_model: Path, prompts_file: Path, tmp_path: Path
) -> None:
    """The log-probabilities PPO trains on equal those `generate` sampled from, with left-padded prompts
    of different lengths; and a fresh adapter's reference gives the very same numbers."""
    from labeler.core.padding import pad_rows
    from labeler.train.ppo import math as ppo
    from labeler.train.ppo.model import build_policy, policy_tokenizer
    from labeler.train.ppo.train import SAMPLING

    cfg = config(embedded_model, prompts_file, tmp_path / "unused")
    start = resolve_model(embedded_model, kind="policy")
    tokenizer = policy_tokenizer(start)
    policy, reference = build_policy(cfg, start, torch.device("cpu"))
    conversations = [[{"role": "user", "content": q}] for q in ("Hi", "Name three rivers of Europe, please.")]
    rows = [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=True)["input_ids"] for c in conversations
    ]
    prompt_tokens, prompt_mask = pad_rows(rows, tokenizer.pad_token_id, side="left")
    assert prompt_mask[0, 0] == 0  # the short prompt really is padded
    torch.manual_seed(0)
    with torch.no_grad():
        out = policy.lm.generate(
            input_ids=prompt_tokens, attention_mask=prompt_mask, max_new_tokens=6, eos_token_id=[2], pad_token_id=2,
            output_logits=True, return_dict_in_generate=True, **SAMPLING,
        )  # fmt: skip
        width = out.sequences.shape[1] - prompt_tokens.shape[1]
        responses = out.sequences[:, -width:]
        lengths, _ = ppo.response_lengths(responses, [2])
        mask = ppo.length_mask(lengths, width)
        attention = torch.cat([prompt_mask, mask.long()], dim=1)
        logits, values = policy(out.sequences, attention, width)
        sampled_from = ppo.token_logprobs(torch.stack(out.logits, dim=1), responses)
        trained_on = ppo.token_logprobs(logits, responses)
        reference_logprobs = ppo.token_logprobs(reference(out.sequences, attention, width), responses)
    assert values.shape == responses.shape
    assert float(((sampled_from - trained_on).abs() * mask).max()) < 1e-3
    assert float(((reference_logprobs - trained_on).abs() * mask).max()) < 1e-5


@pytest.mark.slow
def test_resume_continues_exactly_where_it_stopped(embedded_model: Path, prompts_file: Path, tmp_path: Path) -> None:
    def run(out: Path, steps: int, **overrides: Any) -> Path:
        settings = {**TINY, "checkpoint_every": 1, **overrides}
        return train_ppo(config(embedded_model, prompts_file, out, steps=steps, **settings))

    straight = run(tmp_path / "straight", 2)
    interrupted = tmp_path / "interrupted"
    run(interrupted, 1)
    with pytest.raises(InputError, match="`resume`"):
        run(interrupted, 2)  # would silently mix two runs in one folder
    with pytest.raises(InputError, match="kl_coef"):
        run(interrupted, 2, resume=True, kl_coef=0.5)  # a different setup cannot continue this run
    resumed = run(interrupted, 2, resume=True)

    assert resumed.name == straight.name == "checkpoint-2"
    for name in ("adapter/adapter_model.safetensors", "trainable.safetensors", "optimizer.safetensors"):
        expected, got = load_file(straight / name), load_file(resumed / name)
        assert set(expected) == set(got)
        for key in expected:
            assert torch.allclose(expected[key], got[key], atol=1e-6, rtol=0), (name, key)
    straight_rows, resumed_rows = metrics(tmp_path / "straight"), metrics(interrupted)
    assert [r["step"] for r in resumed_rows] == [1, 2]  # the interrupted run's step 2 was never logged twice
    for a, b in zip(straight_rows, resumed_rows):
        for timing in ("seconds", "rollout_seconds"):  # timing differs run to run
            del a[timing], b[timing]
        assert a == pytest.approx(b, abs=1e-5)


@pytest.mark.slow
def test_cli_full_fine_tuning_against_a_reward_model(
    no_preferring_rm: Path, embedded_model: Path, prompts_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`labeler ppo --no-lora --reward-model`: the reference is a frozen copy, the policy's own weights
    change, the reward comes from the folder `labeler train-rm` wrote, and `--rollout-engine auto` samples
    with vLLM, the whole policy loaded into it each step (the run starts the engine and closes it)."""
    out = tmp_path / "full"
    with pytest.raises(SystemExit) as exit_info:
        main([
            "ppo", "--policy", str(embedded_model), "--reward-model", str(no_preferring_rm),
            "--prompts", str(prompts_file), "--out", str(out), "--no-lora", "--steps", "1",
            "--rollout-batch", "4", "--minibatch", "2", "--ppo-epochs", "1", "--max-new-tokens", "3",
            "--learning-rate", "1e-5", "--device", "cpu", "--rollout-engine", "auto",
        ])  # fmt: skip
    assert exit_info.value.code in (0, None)
    captured = capsys.readouterr()
    assert captured.out.strip().endswith("checkpoint-1")
    assert "rollouts: vllm (--rollout-engine auto --rollout-weights merged)" in captured.err
    assert "vllm rollout engine started" in captured.err
    assert not (out / ".rollout-weights").exists()  # what vLLM loaded each step is gone
    (row,) = metrics(out)
    assert abs(row["kl"]) < 1e-4 and math.isfinite(row["reward"]) and row["reward_std"] > 0
    trained = load_file(out / "checkpoint-1" / "model" / "model.safetensors")
    base = load_file(embedded_model / "model.safetensors")
    key = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(trained[key], base[key].float())
    assert (out / "checkpoint-1" / "model" / "config.json").is_file()
    assert PPOConfig.model_validate_json((out / "checkpoint-1" / "config.json").read_text()).lora is False


@pytest.mark.slow
def test_reward_model_reward_scores_the_completion_as_the_assistant_turn(embedded_model: Path) -> None:
    reward = RewardModelReward(embedded_model)  # a causal LM read as a classifier: a random head, fine here
    prompt = [Message(role="user", content="Is the sky blue?")]
    scores = reward([prompt, prompt], ["Yes.", "No, it is green."])
    conversation = [  # the plain {role, content} form `score` takes
        {"role": "user", "content": "Is the sky blue?"},
        {"role": "assistant", "content": "No, it is green."},
    ]
    direct = reward.model.score([conversation])
    assert len(scores) == 2 and scores[0] != scores[1]
    assert scores[1] == pytest.approx(float(direct[0]), abs=1e-5)


# ---------------------------------------------------------------------------------------------------
# Inputs, configuration, rewards, optimizer state (no model)
# ---------------------------------------------------------------------------------------------------


def test_prompt_rows_accept_text_and_message_lists(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    system_user = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    path.write_text(
        json.dumps({"prompt": "Name a color."}) + "\n\n"
        + json.dumps({"messages": system_user}) + "\n"
        + json.dumps({"prompt_messages": system_user, "id": "other"}) + "\n"
    )  # fmt: skip
    turns = tuple(Message(**m) for m in system_user)
    assert load_prompts(path) == [(Message(role="user", content="Name a color."),), turns, turns]


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"prompt": "ok"', "JSON"),
        ('{"text": "no prompt field"}', "prompt"),
        ('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}', "assistant"),
        ('{"messages": [{"role": "narrator", "content": "Hi"}]}', "role"),
    ],
)
def test_a_bad_prompt_row_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n")
    with pytest.raises(InputError, match=message) as info:
        load_prompts(path)
    assert info.value.file == str(path) and info.value.line == 2


@pytest.mark.parametrize(
    "rows",
    [
        ['{"id": 7, "prompt": "Hi"}', '{"prompt": "Bye"}', '{"id": "7", "prompt": "Hello"}'],
        ['{"prompt": "Hi"}', '{"prompt": "Bye"}', '{"messages": [{"role": "user", "content": "Hi"}]}'],  # no ids
    ],
)
def test_an_id_given_twice_is_refused_naming_file_and_line(tmp_path: Path, rows: list[str]) -> None:
    """As every stage reads prompts: a row without an `id` is known by its conversation."""
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(row + "\n" for row in rows))
    with pytest.raises(InputError, match=r"duplicate id '[^']+' \(first on line 1\)") as info:
        load_prompts(path)
    assert info.value.file == str(path) and info.value.line == 3


def test_an_empty_prompts_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(InputError, match="no prompts"):
        load_prompts(path)


def test_config_checks_and_derived_values(tmp_path: Path) -> None:
    base = {"policy": str(tmp_path), "prompts": tmp_path / "p.jsonl", "out": tmp_path / "out", "reward_rule": "word:x"}
    cfg = PPOConfig.model_validate({**base, "rollout_batch": 16, "minibatch": 4, "ppo_epochs": 3})
    assert cfg.num_minibatches == 4 and cfg.gradient_steps_per_step == 12
    with pytest.raises(ValueError, match="minibatch=3 must divide rollout_batch=16"):
        PPOConfig.model_validate({**base, "rollout_batch": 16, "minibatch": 3})
    with pytest.raises(ValueError, match="not both"):
        PPOConfig.model_validate({**base, "reward_model": str(tmp_path)})
    with pytest.raises(ValueError, match="kl_estimator"):
        PPOConfig.model_validate({**base, "kl_estimator": "k2"})
    with pytest.raises(ValueError, match="extra"):
        PPOConfig.model_validate({**base, "kl_coeff": 0.1})
    with pytest.raises(ValueError, match="frozen"):
        cfg.steps = 3  # type: ignore[misc]
    later = cfg.model_copy(update={"steps": 500, "resume": True, "kl_coef": 0.2})
    # steps and resume may change on resume; the old name of a setting is refused naming the new one
    assert later.differences(cfg.model_dump(mode="json")) == ["kl_coef: 0.05 then, 0.2 now"]
    with pytest.raises(ValueError, match="'lora_r' is now 'lora_rank'"):
        PPOConfig.model_validate({**base, "lora_r": 8})


def test_word_reward_counts_whole_words_in_any_case() -> None:
    reward = parse_reward_rule("word:no")
    assert isinstance(reward, WordReward) and isinstance(reward, RewardFn)
    prompts = [[Message(role="user", content="?")]] * 4
    assert reward(prompts, ["No, no.", "Nobody knows", "I said NO!", "yes"]) == [2.0, 0.0, 1.0, 0.0]
    assert parse_reward_rule("word:c++")([[]], ["I like C++ and c++."]) == [2.0]  # punctuation is literal


@pytest.mark.parametrize("rule", ["word:", "word", "size:5", "length:0", "length:many", ""])
def test_a_bad_reward_rule_names_the_option(rule: str) -> None:
    with pytest.raises(InputError, match="reward rule") as info:
        parse_reward_rule(rule)
    assert info.value.where == "--reward-rule"


def test_a_missing_reward_model_folder_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as info:
        check_reward(str(tmp_path / "nowhere"), None)
    assert info.value.field == "reward_model"  # the CLI shows it as --reward-model
    with pytest.raises(InputError, match="not a Hugging Face model folder"):
        check_reward(str(tmp_path), None)


def test_optimizer_state_survives_safetensors(tmp_path: Path) -> None:
    """Saved and reloaded through safetensors + JSON, AdamW continues exactly as if never interrupted."""
    torch.manual_seed(0)
    inputs = torch.randn(8, 3)

    def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            optimizer.zero_grad()
            model(inputs).pow(2).mean().backward()
            optimizer.step()

    straight = torch.nn.Linear(3, 2)
    interrupted = torch.nn.Linear(3, 2)
    interrupted.load_state_dict(straight.state_dict())
    straight_opt = torch.optim.AdamW(straight.parameters(), lr=0.1)
    train(straight, straight_opt, 5)

    first_opt = torch.optim.AdamW(interrupted.parameters(), lr=0.1)
    train(interrupted, first_opt, 2)
    tensors, meta = flatten_optimizer_state(first_opt.state_dict())
    save_file(tensors, tmp_path / "optimizer.safetensors")
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    second_opt = torch.optim.AdamW(interrupted.parameters(), lr=0.1)
    saved = load_file(tmp_path / "optimizer.safetensors")
    second_opt.load_state_dict(unflatten_optimizer_state(saved, json.loads((tmp_path / "meta.json").read_text())))
    train(interrupted, second_opt, 3)
    assert torch.equal(straight.weight, interrupted.weight) and torch.equal(straight.bias, interrupted.bias)


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code or 0)


def test_cli_bad_input_exits_2_naming_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Hi"}\n{"nothing": 1}\n')
    common = ["ppo", "--policy", str(tmp_path), "--out", str(tmp_path / "out")]

    assert run_cli([*common, "--prompts", str(prompts), "--reward-rule", "word:x", "--minibatch", "3"]) == 2
    assert "minibatch=3 must divide rollout_batch=16" in capsys.readouterr().err
    assert run_cli([*common, "--prompts", str(prompts), "--reward-rule", "word:x", "--kl-estimator", "k9"]) == 2
    assert "--kl-estimator" in capsys.readouterr().err
    assert run_cli([*common, "--prompts", str(prompts)]) == 2
    assert "--reward-model" in capsys.readouterr().err
    assert run_cli([*common, "--prompts", str(prompts), "--reward-rule", "word:x"]) == 2
    assert f"{prompts}:2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # bad input leaves nothing behind


def test_cli_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["ppo", "--help"]) == 0
    shown = capsys.readouterr().out
    for option in ("--policy", "--reward-model", "--reward-rule", "--prompts", "--out", "--no-lora", "--kl-coef",
                   "--kl-estimator", "--steps", "--rollout-batch", "--minibatch", "--ppo-epochs",
                   "--max-new-tokens", "--seed", "--resume"):
        assert option in shown, option
