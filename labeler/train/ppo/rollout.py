"""PPO's rollouts: one completion per prompt from the current policy, by transformers or by vLLM.

Both paths return the same `Rollout` tensors, so everything after sampling (scores, log-probabilities
from the training model, advantages, the update) is the same code whichever sampled:

- `hf`: the training model's own `generate` (plain softmax sampling, every logits processor neutral);
- `vllm`: a vLLM engine given the policy as it is now at each step: its weights merged and loaded in
  place (LoRA or full fine-tuning), or its LoRA adapter loaded per request (`LoRARequest`).

Shapes: B = rollout batch, P = padded prompt length, R = padded response length.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from labeler.core.errors import InputError
from labeler.core.padding import pad_rows
from labeler.core.sampling import seed_for
from labeler.engine.base import TokenSampler
from labeler.engine.model_ref import ModelRef
from labeler.train.ppo import math as ppo
from labeler.train.ppo.config import PPOConfig
from labeler.train.ppo.model import POLICY_ADAPTER, PolicyWithValueHead
from labeler.train.ppo.weights import adapter_config_blocker, save_merged

RolloutEngineName = Literal["hf", "vllm"]
RolloutWeights = Literal["merged", "adapter"]  # how vLLM is given the policy each step
ROLLOUT_WEIGHTS = ".rollout-weights"  # inside the run's output folder: what vLLM loads each step

# PPO's log-probabilities are those of the distribution the tokens were sampled from: plain softmax
# sampling, so every logits processor a model's generation_config might switch on is set to neutral.
SAMPLING = dict(
    do_sample=True,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
    typical_p=1.0,
    repetition_penalty=1.0,
    no_repeat_ngram_size=0,
    num_beams=1,
)


@dataclass(frozen=True)
class Rollout:
    """A batch of prompts with one sampled response each, laid out for the training model."""

    sequences: Tensor  # (B, P + R) left-padded prompt, then the response right-padded with the pad id
    attention: Tensor  # (B, P + R) 1 on real prompt tokens and on generated tokens (EOS included)
    responses: Tensor  # (B, R) the response part of `sequences`
    mask: Tensor  # (B, R) float: 1.0 on generated tokens, EOS included
    lengths: Tensor  # (B,) generated tokens per response, EOS included
    has_eos: Tensor  # (B,) whether the response ended with an EOS (else it hit max_new_tokens)

    @property
    def width(self) -> int:
        """R: the longest response of the batch."""
        return int(self.responses.shape[1])


def rollout_from_sequences(
    prompt_tokens: Tensor, prompt_mask: Tensor, sequences: Tensor, eos_ids: Sequence[int]
) -> Rollout:
    """The rollout of `generate`'s output: `sequences` (B, P + R) continues `prompt_tokens` (B, P)."""
    width = sequences.shape[1] - prompt_tokens.shape[1]  # R: generate stops when every row has ended
    responses = sequences[:, prompt_tokens.shape[1] :]  # (B, R)
    lengths, has_eos = ppo.response_lengths(responses, eos_ids)  # (B,), (B,)
    mask = ppo.length_mask(lengths, width)  # (B, R)
    attention = torch.cat([prompt_mask, mask.long()], dim=1)  # (B, P + R)
    return Rollout(sequences, attention, responses, mask, lengths, has_eos)


def rollout_from_tokens(
    prompt_tokens: Tensor,
    prompt_mask: Tensor,
    completions: Sequence[Sequence[int]],
    pad_id: int,
    eos_ids: Sequence[int],
) -> Rollout:
    """The rollout of completions given as token lists (vLLM's): right-padded with `pad_id` to the longest,
    as `generate` pads rows that ended early, so both paths give identical tensors for identical tokens.
    (A completion without EOS ran to max_new_tokens, so it is never shorter than one that ended.)

    >>> r = rollout_from_tokens(torch.tensor([[0, 5], [6, 7]]), torch.tensor([[0, 1], [1, 1]]), [[2], [9, 8]], 0, [2])
    >>> r.sequences.tolist(), r.mask.tolist(), r.has_eos.tolist()
    ([[0, 5, 2, 0], [6, 7, 9, 8]], [[1.0, 0.0], [1.0, 1.0]], [True, False])
    """
    if any(len(c) == 0 for c in completions):
        raise RuntimeError("the rollout engine returned an empty completion")
    responses, _ = pad_rows([list(c) for c in completions], pad_id, side="right")  # (B, R)
    responses = responses.to(prompt_tokens.device)
    return rollout_from_sequences(prompt_tokens, prompt_mask, torch.cat([prompt_tokens, responses], dim=1), eos_ids)


class RolloutSampler(Protocol):
    """Samples one completion per prompt from the policy as it is now."""

    name: RolloutEngineName

    def sample(self, policy: PolicyWithValueHead, prompts: Sequence[Sequence[int]], step: int, *,
               greedy: bool = False) -> Rollout: ...

    def close(self) -> None: ...


class HFRollouts:
    """Rollouts from the training model's own `generate`, drawing from torch's global generator."""

    name: RolloutEngineName = "hf"

    def __init__(self, pad_id: int, eos_ids: Sequence[int], max_new_tokens: int, device: torch.device) -> None:
        self.pad_id, self.eos_ids, self.max_new_tokens, self.device = pad_id, list(eos_ids), max_new_tokens, device

    def sample(self, policy: PolicyWithValueHead, prompts: Sequence[Sequence[int]], step: int, *,
               greedy: bool = False) -> Rollout:
        prompt_tokens, prompt_mask = pad_rows(prompts, self.pad_id, side="left")  # (B, P)
        prompt_tokens, prompt_mask = prompt_tokens.to(self.device), prompt_mask.to(self.device)
        sampling: dict[str, Any] = {**SAMPLING, "do_sample": False} if greedy else SAMPLING
        policy.eval()
        with torch.no_grad():
            sequences = policy.lm.generate(
                input_ids=prompt_tokens,
                attention_mask=prompt_mask,
                max_new_tokens=self.max_new_tokens,
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
                **sampling,
            )  # (B, P + R)
        return rollout_from_sequences(prompt_tokens, prompt_mask, sequences, self.eos_ids)

    def close(self) -> None:
        pass


class VLLMRollouts:
    """Rollouts from a vLLM engine that is given the policy as it is now at each step, in one of two ways:

    - `merged`: the policy's weights (the adapter merged in, or the whole model) are written to
      `OUT/.rollout-weights/step-<k>.safetensors` and loaded in place into the engine's model, which runs
      without LoRA (`weights.py`, `VLLMEngine.replace_weights`);
    - `adapter`: the LoRA adapter is saved to `OUT/.rollout-weights/step-<k>/` and loaded per request
      (vLLM's LoRA support) on an engine of the base model.

    The engine starts on the first rollout (a finished run that resumes never waits for it), and the
    step's file or folder is deleted once loaded. Per-prompt seeds come from (run seed, step, row), so a
    resumed run samples what the uninterrupted one would have.
    """

    name: RolloutEngineName = "vllm"

    def __init__(self, config: PPOConfig, base: Path, weights: RolloutWeights, lora_rank: int, pad_id: int,
                 eos_ids: Sequence[int], device: torch.device, engine: TokenSampler | None = None) -> None:
        """`base`: the model the engine starts on (the starting policy's base); `lora_rank`: the most an
        `adapter` engine must hold. `engine`: an open `VLLMEngine` on `base` to use (and leave open), with
        LoRA enabled for `adapter`; else one is started on the first rollout and closed by `close`."""
        self.config, self.base, self.weights, self.lora_rank = config, base, weights, lora_rank
        self.pad_id, self.eos_ids, self.device = pad_id, list(eos_ids), device
        self.folder = config.out / ROLLOUT_WEIGHTS
        self._engine = engine
        self._owns_engine = engine is None

    def _start(self) -> TokenSampler:
        from labeler.engine import EngineConfig, start_vllm
        from labeler.engine.model_ref import guard_model_load

        guard_model_load(f"the vllm rollout engine on {self.base}")
        started = time.monotonic()
        engine = start_vllm(
            EngineConfig(
                dtype=self.config.dtype,
                max_model_len=self.config.max_prompt_tokens + self.config.max_new_tokens,
                kv_cache_gib=self.config.rollout_kv_cache_gib,
                gpu_memory_utilization=self.config.rollout_gpu_memory_utilization,
                seed=self.config.seed,
            ),
            self.base,
            max_lora_rank=self.lora_rank if self.weights == "adapter" else None,
        )
        print(f"vllm rollout engine started in {time.monotonic() - started:.0f} s", file=sys.stderr)
        return engine

    def _send(self, policy: PolicyWithValueHead, step: int) -> Path | None:
        """Give the engine the policy as it is now; returns the adapter folder to sample with, if any."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.weights == "adapter":
            adapter = self.folder / f"step-{step}"
            if adapter.exists():  # left by a run that crashed while sampling this step
                shutil.rmtree(adapter)
            policy.lm.save_pretrained(adapter, selected_adapters=[POLICY_ADAPTER], safe_serialization=True)
            return adapter  # loaded by the first request that names it; deleted after sampling
        # The engine runs the base model's frozen embeddings and head already: they are not sent again.
        merged = save_merged(policy.lm, self.folder / f"step-{step}.safetensors", complete=False)
        assert self._engine is not None  # started by `sample` before anything is sent
        try:
            self._engine.replace_weights(merged)
        finally:
            merged.unlink(missing_ok=True)
        return None

    def sample(self, policy: PolicyWithValueHead, prompts: Sequence[Sequence[int]], step: int, *,
               greedy: bool = False) -> Rollout:
        if self._engine is None:
            self._engine = self._start()
        engine = self._engine
        adapter = self._send(policy, step)
        try:
            seeds = [seed_for(self.config.seed, "rollout", step, row) for row in range(len(prompts))]
            samples = engine.sample_tokens(
                prompts, max_tokens=self.config.max_new_tokens, seeds=seeds, stop_token_ids=self.eos_ids,
                greedy=greedy, adapter=adapter,
            )
        finally:
            if adapter is not None:
                shutil.rmtree(adapter, ignore_errors=True)  # vLLM holds the weights in memory once loaded
        prompt_tokens, prompt_mask = pad_rows(prompts, self.pad_id, side="left")  # (B, P)
        return rollout_from_tokens(
            prompt_tokens.to(self.device), prompt_mask.to(self.device), [s.token_ids for s in samples],
            self.pad_id, self.eos_ids,
        )

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None and self._owns_engine:
            engine.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass(frozen=True)
class RolloutPlan:
    """Which engine samples the rollouts, how vLLM is given the policy, and why."""

    engine: RolloutEngineName
    weights: RolloutWeights | None  # None for hf
    reason: str  # the options that chose it, or what kept `auto` from vLLM


def rollout_plan(config: PPOConfig, start: ModelRef | None = None) -> RolloutPlan:
    """How the rollouts of a run are sampled; `InputError` when vLLM is asked for but cannot be.

    `start`: the starting policy, whose adapter (if any) must be plain LoRA for vLLM to take it.
    """
    from labeler.engine import vllm_available

    if config.rollout_engine == "hf":
        return RolloutPlan("hf", None, "--rollout-engine hf")
    weights: RolloutWeights
    if config.rollout_weights != "auto":
        weights = config.rollout_weights
    else:
        # On a GPU vLLM's LoRA kernels are its own fast path and nothing the size of the model moves each
        # step; on CPU its LoRA generation measured 1.88x slower than the plain model (bench/ppo.py).
        weights = "adapter" if config.lora and torch.cuda.is_available() else "merged"
    blocker, field = None, "rollout_engine"
    if not vllm_available():
        blocker = "vLLM is not installed (pip install 'labeler[cpu]' or 'labeler[gpu]')"
    elif weights == "adapter" and not config.lora:
        blocker = "full fine-tuning (‹lora› off) has no adapter to load: use ‹rollout_weights› merged"
        field = "rollout_weights"
    elif config.lora and start is not None and start.is_adapter:  # (full fine-tuning merges it at load)
        adapter_config = json.loads((start.folder() / "adapter_config.json").read_text(encoding="utf-8"))
        blocker = adapter_config_blocker(adapter_config)
        field = "policy"
    if blocker is not None and config.rollout_engine == "vllm":
        raise InputError(f"vLLM cannot sample these rollouts: {blocker}", field=field)
    if blocker is not None:
        return RolloutPlan("hf", None, blocker)
    return RolloutPlan("vllm", weights, f"--rollout-engine {config.rollout_engine} --rollout-weights {weights}")
