"""PPO for a chat policy against a reward, with a per-token KL penalty to the starting policy.

One loop, read top to bottom: sample a rollout batch, score it, compute advantages, then several epochs
of clipped PPO updates on minibatches. Rollouts come from transformers or from vLLM (`rollout.py`);
every log-probability the loss uses comes from the training model. Shapes: B = rollout batch,
P = padded prompt length, R = padded response length, V = vocabulary size.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from labeler.core.chat import Message
from labeler.core.errors import InputError, show_fields
from labeler.core.progress import progress_bar
from labeler.engine.chat import chat_text, encode_texts
from labeler.engine.model_ref import ModelRef, resolve_model
from labeler.inputs.rows import read_prompts
from labeler.train.common.checkpoint import load_checkpoint, save_checkpoint
from labeler.train.common.metrics import METRICS_FILE, MetricsLog
from labeler.train.common.resume import resume_point, start_run
from labeler.train.ppo import math as ppo
from labeler.train.ppo.config import PPOConfig
from labeler.train.ppo.model import (
    ADAPTER_DIR,
    MODEL_DIR,
    PolicyWithValueHead,
    Reference,
    base_folder,
    build_policy,
    policy_tokenizer,
)
from labeler.train.ppo.rewards import RewardFn, check_reward, load_reward
from labeler.train.ppo.rollout import (
    SAMPLING,
    HFRollouts,
    Rollout,
    RolloutPlan,
    RolloutSampler,
    VLLMRollouts,
    rollout_plan,
)

__all__ = ["METRICS_FILE", "SAMPLING", "check_ppo", "load_prompts", "ppo_update", "train_ppo"]


@dataclass(frozen=True)
class CheckedPPO:
    """What the checks found: the prompts, the starting policy, the reward's model, where to resume from."""

    prompts: list[tuple[Message, ...]]
    policy: ModelRef
    reward_model: ModelRef | None
    resume_from: Path | None
    rollout: RolloutPlan


def check_ppo(config: PPOConfig, *, custom_reward: bool = False) -> CheckedPPO:
    """Every check `train_ppo` makes before it loads a model or writes a file."""
    if not custom_reward and (config.reward_model is None) == (config.reward_rule is None):
        raise InputError(
            "give exactly one of ‹reward_model› DIR and ‹reward_rule› KIND:ARGUMENT", field="reward_model"
        )
    prompts = load_prompts(config.prompts)
    policy = resolve_model(config.policy, field="policy", kind="policy")
    reward_model = None
    if not custom_reward:
        reward_model = check_reward(config.reward_model, config.reward_rule, config.reward_weights)
    rollout = rollout_plan(config, policy)
    return CheckedPPO(prompts, policy, reward_model, resume_point(config), rollout)


def train_ppo(config: PPOConfig, reward_fn: RewardFn | None = None) -> Path:
    """Run PPO as configured; return the last checkpoint folder.

    `reward_fn` overrides the reward the config names (a Python caller's own scoring function).
    """
    # --- Checks first: bad input fails before anything loads or is written
    checked = check_ppo(config, custom_reward=reward_fn is not None)
    resume_from = checked.resume_from
    reward = reward_fn
    if reward is None:
        reward = load_reward(checked.reward_model, config.reward_rule, config.reward_weights)
    tokenizer = policy_tokenizer(checked.policy)
    prompts, prompt_ids = _encode_prompts(tokenizer, checked.prompts, config)
    eos_ids = _eos_token_ids(tokenizer, checked.policy)
    pad_id = int(tokenizer.pad_token_id)

    # --- Output folder, seeds
    out = config.out
    start_run(config)
    metrics = MetricsLog(out)
    torch.manual_seed(config.seed)
    data_generator = torch.Generator().manual_seed(config.seed)  # prompt order and minibatch order
    device = _device(config.device)

    # --- Policy with value head, frozen reference, optimizer, rollout sampler
    policy, reference = build_policy(config, checked.policy, device)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, eps=1e-5)
    generators = {"data": data_generator}
    start_step = 0
    if resume_from is not None:
        start_step = load_checkpoint(resume_from, module=policy, optimizer=optimizer, generators=generators)["step"]
        print(f"resuming from {resume_from} (step {start_step})", file=sys.stderr)
    metrics.truncate_after(start_step)  # the steps after the checkpoint run again
    checkpoint = resume_from
    sampler = rollout_sampler(config, checked, pad_id, eos_ids, device)
    if checked.rollout.engine != config.rollout_engine or config.rollout_weights == "auto":
        print(f"rollouts: {checked.rollout.engine} ({show_fields(checked.rollout.reason)})", file=sys.stderr)

    def export(folder: Path) -> None:
        # A checkpoint's usable policy: the adapter (or the whole model) as a Hugging Face folder.
        target = folder / (ADAPTER_DIR if config.lora else MODEL_DIR)
        if config.lora:
            policy.lm.save_pretrained(target, selected_adapters=["default"], safe_serialization=True)
        else:
            policy.lm.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)

    quiet = config.quiet or None  # None: a bar on a terminal, log lines elsewhere
    with contextlib.closing(sampler), progress_bar(
        config.steps, "ppo", unit="steps", completed=start_step, quiet=quiet
    ) as advance:
        for step in range(start_step + 1, config.steps + 1):
            started = time.monotonic()

            # --- 1. Rollout: one sampled completion per prompt (B, P + R)
            batch = _sample_indices(len(prompts), config.rollout_batch, data_generator).tolist()
            batch_prompts = [prompts[i] for i in batch]
            rollout = sampler.sample(policy, [prompt_ids[i] for i in batch], step)
            rollout_seconds = time.monotonic() - started
            completions = tokenizer.batch_decode(
                [row[: int(n) - int(eos)].tolist() for row, n, eos in
                 zip(rollout.responses, rollout.lengths, rollout.has_eos)],
                skip_special_tokens=True,
            )

            # --- 2. Score each completion; the score is earned at its last token
            raw_scores = _score(reward, batch_prompts, completions).to(device)  # (B,)
            scores = raw_scores + config.missing_eos_reward * (~rollout.has_eos).float()  # (B,)

            # --- 3-5. Log-probabilities, advantages, and the PPO update on this rollout
            stats = ppo_update(policy, reference, optimizer, rollout, scores, config, data_generator)

            # --- 6. Metrics, progress, checkpoint
            row = {
                "step": step,
                "reward": float(raw_scores.mean()),
                "reward_std": float(raw_scores.std()) if len(raw_scores) > 1 else 0.0,
                "score": float(scores.mean()),
                **stats,
                "response_length": float(rollout.lengths.float().mean()),
                "no_eos_frac": float((~rollout.has_eos).float().mean()),
                "rollout_tokens": int(rollout.lengths.sum()),
                "rollout_seconds": round(rollout_seconds, 3),
                "seconds": round(time.monotonic() - started, 3),
            }
            metrics.append(row)
            advance(1, f"reward {row['reward']:.3f}  kl {row['kl']:.3f}  len {row['response_length']:.1f}")
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.steps:
                checkpoint = save_checkpoint(
                    out, step, config=config, module=policy, optimizer=optimizer, state={},
                    keep=config.keep_checkpoints, generators=generators, export=export,
                )

    if checkpoint is None:
        raise RuntimeError(f"{out}: no checkpoint was written")  # steps <= resumed step and none on disk
    return checkpoint


def ppo_update(
    policy: PolicyWithValueHead,
    reference: Reference,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    scores: Tensor,
    config: PPOConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """Steps 3 to 5 of the loop on one scored rollout: log-probabilities, values and entropies under the
    training model, per-token rewards and advantages, then `ppo_epochs` of clipped minibatch updates.

    Returns the step's metrics (KL, entropy, losses, clip fractions). Whatever sampled the rollout, the
    numbers come from the training model alone, so the same rollout always gives the same update.
    """
    sequences, attention, responses, mask = rollout.sequences, rollout.attention, rollout.responses, rollout.mask
    width = rollout.width

    # --- 3. Rollout log-probabilities, values, entropies; reference log-probabilities
    policy.eval()
    logprobs, values, entropies, ref_logprobs = _evaluate_rollout(
        policy, reference, sequences, attention, responses, config.minibatch
    )  # (B, R) each
    entropy = ppo.masked_mean(entropies, mask)

    # --- 4. Per-token rewards (KL penalty + score at EOS) and advantages
    kl = ppo.kl_per_token(logprobs, ref_logprobs, config.kl_estimator) * mask  # (B, R)
    rewards = ppo.token_rewards(scores, kl, mask, config.kl_coef)  # (B, R)
    advantages, returns = ppo.gae(rewards, values, mask, config.gamma, config.lam)  # (B, R) each
    advantages = ppo.masked_whiten(advantages, mask)

    # --- 5. PPO update: several epochs of shuffled minibatches
    policy.train()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "vf_loss", "clip", "vclip", "approx_kl")}
    for _epoch in range(config.ppo_epochs):
        order = torch.randperm(config.rollout_batch, generator=generator)
        for start in range(0, config.rollout_batch, config.minibatch):
            mb = order[start : start + config.minibatch].to(sequences.device)
            mb_mask = mask[mb]  # (M, R)
            new_logits, new_values = policy(sequences[mb], attention[mb], width)  # (M, R, V), (M, R)
            new_logprobs = ppo.token_logprobs(new_logits, responses[mb])  # (M, R)
            pg_loss, clip_frac = ppo.clipped_policy_loss(
                new_logprobs, logprobs[mb], advantages[mb], mb_mask, config.clip_range
            )
            vf_loss, vclip_frac = ppo.clipped_value_loss(
                new_values, values[mb], returns[mb], mb_mask, config.clip_range_value
            )
            loss = pg_loss + config.vf_coef * vf_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                approx_kl = ppo.masked_mean(0.5 * (new_logprobs - logprobs[mb]) ** 2, mb_mask)
            for key, value in zip(stats, (pg_loss, vf_loss, clip_frac, vclip_frac, approx_kl)):
                stats[key].append(float(value.detach()))
    return {
        "kl": float(kl.sum(dim=1).mean()),
        "non_score_reward": float((-config.kl_coef * kl).sum(dim=1).mean()),
        "entropy": float(entropy),
        "clip_frac": statistics.fmean(stats["clip"]),
        "value_clip_frac": statistics.fmean(stats["vclip"]),
        "policy_loss": statistics.fmean(stats["pg_loss"]),
        "value_loss": statistics.fmean(stats["vf_loss"]),
        "approx_kl": statistics.fmean(stats["approx_kl"]),
    }


def rollout_sampler(
    config: PPOConfig, checked: CheckedPPO, pad_id: int, eos_ids: list[int], device: torch.device
) -> RolloutSampler:
    """The sampler `check_ppo` chose: the training model's `generate`, or vLLM."""
    plan = checked.rollout
    if plan.engine == "hf" or plan.weights is None:
        return HFRollouts(pad_id, eos_ids, config.max_new_tokens, device)
    from labeler.engine.vllm_engine import adapter_rank

    start = checked.policy
    rank = adapter_rank(start.folder()) if start.is_adapter else config.lora_rank
    return VLLMRollouts(config, base_folder(start), plan.weights, rank, pad_id, eos_ids, device)


# ---------------------------------------------------------------------------------------------------
# Helpers of the loop
# ---------------------------------------------------------------------------------------------------


def load_prompts(path: Path) -> list[tuple[Message, ...]]:
    """The conversation of every prompt row (JSONL, Parquet or Arrow), read as every stage reads prompts:
    a bad row, or an id given twice, names file and line."""
    prompts = [prompt.messages for prompt in read_prompts(path)]
    if not prompts:
        raise InputError("no prompts in the file", file=path)
    return prompts


@torch.no_grad()
def _evaluate_rollout(
    policy: PolicyWithValueHead,
    reference: Reference,
    sequences: Tensor,
    attention: Tensor,
    responses: Tensor,
    chunk: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-token log-probabilities, values and entropies under the policy, and log-probabilities under the
    reference: (B, R) each. `chunk` sequences at a time, since a whole batch's (B, R, V) logits can be large."""
    width = responses.shape[1]
    parts = []
    for start in range(0, sequences.shape[0], chunk):
        rows = slice(start, start + chunk)
        logits, values = policy(sequences[rows], attention[rows], width)  # (C, R, V), (C, R)
        ref_logits = reference(sequences[rows], attention[rows], width)  # (C, R, V)
        parts.append(
            (
                ppo.token_logprobs(logits, responses[rows]),
                values,
                ppo.entropy_from_logits(logits),
                ppo.token_logprobs(ref_logits, responses[rows]),
            )
        )
    logprobs, values, entropies, ref_logprobs = (torch.cat(column) for column in zip(*parts))
    return logprobs, values, entropies, ref_logprobs


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _encode_prompts(
    tokenizer: Any, prompts: list[tuple[Message, ...]], config: PPOConfig
) -> tuple[list[tuple[Message, ...]], list[list[int]]]:
    """Token ids of each prompt through the chat template (assistant turn opened); too-long ones dropped."""
    texts = [chat_text(tokenizer, messages) for messages in prompts]
    ids = encode_texts(tokenizer, texts)
    kept = [i for i, tokens in enumerate(ids) if len(tokens) <= config.max_prompt_tokens]
    if not kept:
        raise InputError(
            f"every prompt is longer than max_prompt_tokens={config.max_prompt_tokens} tokens", file=config.prompts
        )
    if len(kept) < len(ids):
        print(
            f"skipping {len(ids) - len(kept)} of {len(ids)} prompts longer than "
            f"max_prompt_tokens={config.max_prompt_tokens}",
            file=sys.stderr,
        )
    return [prompts[i] for i in kept], [ids[i] for i in kept]


def _eos_token_ids(tokenizer: Any, policy: ModelRef) -> list[int]:
    """Every token id that ends a completion: the tokenizer's EOS and the model's generation EOS ids."""
    from transformers import GenerationConfig

    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    base = base_folder(policy)
    if (base / "generation_config.json").is_file():
        extra = GenerationConfig.from_pretrained(str(base)).eos_token_id
        if extra is not None:
            ids.update(int(i) for i in (extra if isinstance(extra, list) else [extra]))
    if not ids:
        raise InputError("the policy's tokenizer defines no EOS token", file=policy.path, field="policy")
    return sorted(ids)


def _sample_indices(count: int, size: int, generator: torch.Generator) -> Tensor:
    """`size` distinct prompt indices when there are enough prompts, else drawn with replacement."""
    if count >= size:
        return torch.randperm(count, generator=generator)[:size]
    return torch.randint(count, (size,), generator=generator)


def _score(reward: RewardFn, prompts: list[tuple[Message, ...]], completions: list[str]) -> Tensor:
    scores = reward(prompts, completions)
    if len(scores) != len(completions):
        raise RuntimeError(f"the reward returned {len(scores)} scores for {len(completions)} completions")
    tensor = torch.tensor([float(s) for s in scores], dtype=torch.float32)
    if not torch.isfinite(tensor).all():
        raise RuntimeError(f"the reward returned a non-finite score: {scores}")
    return tensor
