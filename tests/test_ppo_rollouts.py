"""PPO rollouts through vLLM against those of transformers, on the embedded model in float32.

The policy is a LoRA adapter whose B matrices are set to seeded noise, so it really differs from the
base model (a fresh adapter would not: its B starts at zero). One vLLM engine with LoRA enabled serves
the whole module; the adapter reaches it the way training sends it, saved to a folder per step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from labeler.models import resolve_model
from labeler.padding import pad_rows
from labeler.ppo import math as ppo
from labeler.ppo.config import PPOConfig
from labeler.ppo.model import PolicyWithValueHead, Reference, build_policy, policy_tokenizer
from labeler.ppo.rollout import HFRollouts, Rollout, VLLMRollouts, rollout_engine_for, rollout_from_tokens
from labeler.ppo.train import ppo_update

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

QUESTIONS = ["Is the sky blue?", "Name three rivers of Europe, please.", "Hi", "What is two plus two?"]
SETTINGS: dict[str, Any] = dict(
    reward_rule="word:no", rollout_batch=4, minibatch=2, ppo_epochs=1, max_new_tokens=10, lora_rank=8,
    lora_target_modules=("q_proj", "v_proj"), device="cpu", seed=0, dtype="float32",
)  # fmt: skip
EOS = [2]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ppo_config(tmp_path_factory: pytest.TempPathFactory, embedded_model: Path) -> PPOConfig:
    root = tmp_path_factory.mktemp("rollouts")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    return PPOConfig.model_validate(
        {"policy": str(embedded_model), "prompts": prompts, "out": root / "out", "rollout_engine": "vllm", **SETTINGS}
    )


def noisy_policy(config: PPOConfig) -> tuple[PolicyWithValueHead, Reference]:
    """A LoRA policy whose adapter moves the model (B matrices set to seeded noise), and its reference."""
    torch.manual_seed(0)
    policy, reference = build_policy(config, resolve_model(config.policy, kind="policy"), torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return policy, reference


@pytest.fixture(scope="module")
def policy(ppo_config: PPOConfig) -> PolicyWithValueHead:
    return noisy_policy(ppo_config)[0]


@pytest.fixture(scope="module")
def prompt_ids(ppo_config: PPOConfig) -> list[list[int]]:
    tokenizer = policy_tokenizer(resolve_model(ppo_config.policy, kind="policy"))
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)[
            "input_ids"
        ]
        for q in QUESTIONS
    ]


@pytest.fixture(scope="module")
def lora_engine(embedded_model: Path) -> Iterator[Any]:
    """One vLLM engine on the embedded model with LoRA enabled (rank up to 8), for the whole module."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install .[cpu])")
    from labeler.engine.vllm_engine import VLLMEngine

    with VLLMEngine(embedded_model, dtype="float32", max_lora_rank=8, kv_cache_gib=1, max_model_len=512) as engine:
        yield engine


@pytest.fixture(scope="module")
def samplers(ppo_config: PPOConfig, lora_engine: Any, embedded_model: Path) -> tuple[HFRollouts, VLLMRollouts]:
    device = torch.device("cpu")
    hf = HFRollouts(2, EOS, ppo_config.max_new_tokens, device)
    vllm = VLLMRollouts(ppo_config, embedded_model, 8, 2, EOS, device, engine=lora_engine)
    return hf, vllm


def assert_same_rollout(a: Rollout, b: Rollout) -> None:
    for field in ("sequences", "attention", "responses", "mask", "lengths", "has_eos"):
        assert torch.equal(getattr(a, field), getattr(b, field)), (field, getattr(a, field), getattr(b, field))


def test_greedy_rollouts_are_the_same_tokens_on_both_paths(
    samplers: tuple[HFRollouts, VLLMRollouts], policy: PolicyWithValueHead, prompt_ids: list[list[int]],
    lora_engine: Any,
) -> None:
    hf, vllm = samplers
    from_hf = hf.sample(policy, prompt_ids, step=1, greedy=True)
    from_vllm = vllm.sample(policy, prompt_ids, step=1, greedy=True)
    assert_same_rollout(from_hf, from_vllm)
    assert bool(from_hf.has_eos.any()) and not bool(from_hf.has_eos.all())  # both ways of ending are covered
    # The adapter reached vLLM: without it, greedy decoding says something else.
    base = lora_engine.sample_tokens(prompt_ids, max_tokens=10, seeds=[0] * 4, stop_token_ids=EOS, greedy=True)
    assert [list(s.token_ids) for s in base] != [r[: int(n)].tolist() for r, n in
                                                 zip(from_vllm.responses, from_vllm.lengths)]


def test_sampled_rollouts_come_from_the_training_models_distribution(
    policy: PolicyWithValueHead, prompt_ids: list[list[int]], lora_engine: Any, tmp_path: Path
) -> None:
    """Every token vLLM sampled has, under the training model, the log-probability vLLM sampled it with."""
    adapter = tmp_path / "adapter"
    policy.lm.save_pretrained(adapter, selected_adapters=["default"])
    rows = prompt_ids * 2
    samples = lora_engine.sample_tokens(rows, max_tokens=10, seeds=list(range(8)), stop_token_ids=EOS, adapter=adapter)
    prompt_tokens, prompt_mask = pad_rows(rows, 2, side="left")
    rollout = rollout_from_tokens(prompt_tokens, prompt_mask, [s.token_ids for s in samples], 2, EOS)
    with torch.no_grad():
        logits, _ = policy(rollout.sequences, rollout.attention, rollout.width)
    trained_on = ppo.token_logprobs(logits, rollout.responses)  # (8, R)
    sampled_with = torch.nn.utils.rnn.pad_sequence([torch.tensor(s.logprobs) for s in samples], batch_first=True)
    gap = ((trained_on - sampled_with).abs() * rollout.mask).max()
    assert float(gap) < 1e-3, float(gap)
    # Sampled at temperature 1, not greedy: the 8 rows are not the 4 prompts' answers repeated.
    assert len({s.token_ids for s in samples}) > 4


def test_a_ppo_step_gives_the_same_loss_on_either_paths_rollout(
    samplers: tuple[HFRollouts, VLLMRollouts], ppo_config: PPOConfig, prompt_ids: list[list[int]]
) -> None:
    results = []
    for sampler in samplers:
        policy, reference = noisy_policy(ppo_config)  # the same starting point each time
        optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3, eps=1e-5)
        rollout = sampler.sample(policy, prompt_ids, step=2, greedy=True)
        scores = torch.tensor([1.0, 0.0, -1.0, 0.5])
        generator = torch.Generator().manual_seed(0)
        results.append(ppo_update(policy, reference, optimizer, rollout, scores, ppo_config, generator))
        del policy, reference, optimizer
    assert results[0] == pytest.approx(results[1], abs=1e-6, rel=1e-6), results
    assert results[0]["policy_loss"] != 0.0 and results[0]["kl"] > 0.0  # the adapter is not the reference


def test_auto_picks_vllm_for_lora_on_a_gpu_and_transformers_elsewhere(
    ppo_config: PPOConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    auto = ppo_config.model_copy(update={"rollout_engine": "auto"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    engine, reason = rollout_engine_for(auto)
    assert engine == "hf" and "no GPU" in reason
    assert rollout_engine_for(ppo_config)[0] == "vllm"  # asked for by name, vLLM samples on CPU too
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rollout_engine_for(auto)[0] == "vllm"
    engine, reason = rollout_engine_for(auto.model_copy(update={"lora": False}))
    assert engine == "hf" and "full fine-tuning" in reason
