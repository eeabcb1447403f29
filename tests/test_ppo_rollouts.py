"""PPO rollouts through vLLM against those of transformers, on the embedded model in float32.

The policy is a LoRA adapter whose B matrices are set to seeded noise, so it really differs from the
base model (a fresh adapter would not: its B starts at zero). Both ways of giving vLLM the policy are
checked: `merged` on the session's vLLM engine (its weights are put back from the model's own file after
each test), `adapter` on one engine with LoRA enabled for the module. The policy reaches the engine the
way training sends it: a file or folder written per step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from labeler.core.errors import InputError
from labeler.core.padding import pad_rows
from labeler.engine.model_ref import ModelRef, resolve_model
from labeler.train.ppo import math as ppo
from labeler.train.ppo.config import PPOConfig
from labeler.train.ppo.model import PolicyWithValueHead, Reference, build_policy, policy_tokenizer
from labeler.train.ppo.rollout import HFRollouts, Rollout, VLLMRollouts, rollout_from_tokens, rollout_plan
from labeler.train.ppo.train import ppo_update
from labeler.train.ppo.weights import save_merged

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


@pytest.fixture
def merged_engine(
    vllm_engine: Any, embedded_model: Path, prompt_ids: list[list[int]], base_greedy: list[list[int]]
) -> Iterator[Any]:
    """The session's vLLM engine, whose weights a test may replace: the model's own are put back after
    (from its checkpoint file, the way a run's first weights come), and checked to answer as before."""
    yield vllm_engine
    vllm_engine.replace_weights(embedded_model / "model.safetensors")
    restored = vllm_engine.sample_tokens(prompt_ids, max_tokens=10, seeds=[0] * 4, stop_token_ids=EOS, greedy=True)
    assert [list(s.token_ids) for s in restored] == base_greedy


def greedy_tokens(rollout: Rollout) -> list[list[int]]:
    return [row[: int(n)].tolist() for row, n in zip(rollout.responses, rollout.lengths)]


@pytest.fixture(scope="module")
def base_greedy(policy: PolicyWithValueHead, prompt_ids: list[list[int]]) -> list[list[int]]:
    """What the base model (the adapter switched off) answers greedily, by transformers."""
    hf = HFRollouts(2, EOS, 10, torch.device("cpu"))
    with policy.lm.disable_adapter():
        return greedy_tokens(hf.sample(policy, prompt_ids, step=0, greedy=True))


def test_merged_greedy_rollouts_are_the_same_tokens_on_both_paths(
    ppo_config: PPOConfig, policy: PolicyWithValueHead, prompt_ids: list[list[int]], base_greedy: list[list[int]],
    merged_engine: Any, embedded_model: Path,
) -> None:
    device = torch.device("cpu")
    hf = HFRollouts(2, EOS, ppo_config.max_new_tokens, device)
    vllm = VLLMRollouts(ppo_config, embedded_model, "merged", 8, 2, EOS, device, engine=merged_engine)
    from_hf = hf.sample(policy, prompt_ids, step=1, greedy=True)
    from_vllm = vllm.sample(policy, prompt_ids, step=1, greedy=True)
    assert_same_rollout(from_hf, from_vllm)
    assert bool(from_hf.has_eos.any()) and not bool(from_hf.has_eos.all())  # both ways of ending are covered
    assert greedy_tokens(from_vllm) != base_greedy  # the merged weights reached vLLM
    assert not list((ppo_config.out / ".rollout-weights").glob("*.safetensors"))  # deleted once loaded
    # The next step's weights replace these, not add to them: a fresh adapter (B = 0) answers as the base.
    fresh, _ = build_policy(ppo_config, resolve_model(ppo_config.policy, kind="policy"), device)
    assert greedy_tokens(vllm.sample(fresh, prompt_ids, step=2, greedy=True)) == base_greedy


def test_merged_rollouts_of_full_fine_tuning(
    ppo_config: PPOConfig, prompt_ids: list[list[int]], base_greedy: list[list[int]], merged_engine: Any,
    embedded_model: Path,
) -> None:
    """Without LoRA the policy's whole state dict goes to vLLM (tied embeddings written once)."""
    full = ppo_config.model_copy(update={"lora": False})
    torch.manual_seed(0)
    policy, _ = build_policy(full, resolve_model(full.policy, kind="policy"), torch.device("cpu"))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, parameter in policy.lm.named_parameters():
            if "mlp" in name or "embed" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
    device = torch.device("cpu")
    from_hf = HFRollouts(2, EOS, full.max_new_tokens, device).sample(policy, prompt_ids, step=1, greedy=True)
    vllm = VLLMRollouts(full, embedded_model, "merged", 8, 2, EOS, device, engine=merged_engine)
    from_vllm = vllm.sample(policy, prompt_ids, step=1, greedy=True)
    assert_same_rollout(from_hf, from_vllm)
    assert greedy_tokens(from_vllm) != base_greedy


def test_merged_sampled_rollouts_come_from_the_training_models_distribution(
    policy: PolicyWithValueHead, prompt_ids: list[list[int]], merged_engine: Any, tmp_path: Path
) -> None:
    """Every token vLLM sampled has, under the training model, the log-probability vLLM sampled it with."""
    merged_engine.replace_weights(save_merged(policy.lm, tmp_path / "policy.safetensors"))
    assert_sampled_with_training_logprobs(policy, prompt_ids, merged_engine, adapter=None)


def assert_sampled_with_training_logprobs(
    policy: PolicyWithValueHead, prompt_ids: list[list[int]], engine: Any, adapter: Path | None
) -> None:
    rows = prompt_ids * 2
    samples = engine.sample_tokens(rows, max_tokens=10, seeds=list(range(8)), stop_token_ids=EOS, adapter=adapter)
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


@pytest.fixture(scope="module")
def samplers(ppo_config: PPOConfig, lora_engine: Any, embedded_model: Path) -> tuple[HFRollouts, VLLMRollouts]:
    device = torch.device("cpu")
    hf = HFRollouts(2, EOS, ppo_config.max_new_tokens, device)
    vllm = VLLMRollouts(ppo_config, embedded_model, "adapter", 8, 2, EOS, device, engine=lora_engine)
    return hf, vllm


def assert_same_rollout(a: Rollout, b: Rollout) -> None:
    for field in ("sequences", "attention", "responses", "mask", "lengths", "has_eos"):
        assert torch.equal(getattr(a, field), getattr(b, field)), (field, getattr(a, field), getattr(b, field))


def test_adapter_greedy_rollouts_are_the_same_tokens_on_both_paths(
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


def test_adapter_sampled_rollouts_come_from_the_training_models_distribution(
    policy: PolicyWithValueHead, prompt_ids: list[list[int]], lora_engine: Any, tmp_path: Path
) -> None:
    adapter = tmp_path / "adapter"
    policy.lm.save_pretrained(adapter, selected_adapters=["default"])
    assert_sampled_with_training_logprobs(policy, prompt_ids, lora_engine, adapter=adapter)


def test_a_ppo_step_gives_the_same_loss_on_every_paths_rollout(
    samplers: tuple[HFRollouts, VLLMRollouts], ppo_config: PPOConfig, prompt_ids: list[list[int]],
    merged_engine: Any, embedded_model: Path,
) -> None:
    merged = VLLMRollouts(ppo_config, embedded_model, "merged", 8, 2, EOS, torch.device("cpu"), engine=merged_engine)
    results = []
    for sampler in (*samplers, merged):
        policy, reference = noisy_policy(ppo_config)  # the same starting point each time
        optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3, eps=1e-5)
        rollout = sampler.sample(policy, prompt_ids, step=2, greedy=True)
        scores = torch.tensor([1.0, 0.0, -1.0, 0.5])
        generator = torch.Generator().manual_seed(0)
        results.append(ppo_update(policy, reference, optimizer, rollout, scores, ppo_config, generator))
        del policy, reference, optimizer
    assert results[0] == pytest.approx(results[1], abs=1e-6, rel=1e-6), results
    assert results[0] == pytest.approx(results[2], abs=1e-6, rel=1e-6), results
    assert results[0]["policy_loss"] != 0.0 and results[0]["kl"] > 0.0  # the adapter is not the reference


def test_the_plan_merges_on_cpu_and_loads_adapters_on_a_gpu(
    ppo_config: PPOConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    auto = ppo_config.model_copy(update={"rollout_engine": "auto"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert (rollout_plan(auto).engine, rollout_plan(auto).weights) == ("vllm", "merged")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert rollout_plan(auto).weights == "adapter"  # vLLM's LoRA kernels on a GPU
    full = auto.model_copy(update={"lora": False})
    assert rollout_plan(full).weights == "merged"  # full fine-tuning has no adapter: merged everywhere
    assert rollout_plan(auto.model_copy(update={"rollout_engine": "hf"})).engine == "hf"
    with pytest.raises(InputError, match="no adapter to load"):
        rollout_plan(ppo_config.model_copy(update={"lora": False, "rollout_weights": "adapter"}))
    # A starting adapter that is not plain LoRA cannot be merged: auto samples with transformers,
    # vllm by name is refused before anything loads.
    dora = tmp_path / "dora"
    dora.mkdir()
    (dora / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "use_dora": True}))
    start = ModelRef(spec=str(dora), path=dora, label="dora", source="folder", base=resolve_model(ppo_config.policy))
    merged = auto.model_copy(update={"rollout_weights": "merged"})
    plan = rollout_plan(merged, start)
    assert plan.engine == "hf" and "DoRA" in plan.reason
    with pytest.raises(InputError, match="DoRA"):
        rollout_plan(merged.model_copy(update={"rollout_engine": "vllm"}), start)
