"""PPO for a chat policy against a reward, with a per-token KL penalty to the starting policy.

One loop, read top to bottom: sample a rollout batch, score it, compute advantages, then several epochs
of clipped PPO updates on minibatches. Shapes: B = rollout batch, P = padded prompt length, R = padded
response length, V = vocabulary size.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from torch import Tensor

from labeler.engine.base import Message
from labeler.engine.chat import chat_text, encode_texts
from labeler.errors import InputError
from labeler.inputs import iter_rows, row_messages
from labeler.ppo import math as ppo
from labeler.ppo.checkpoint import checkpoint_dirs, latest_checkpoint, load_checkpoint, save_checkpoint
from labeler.ppo.config import PPOConfig
from labeler.ppo.model import PolicyWithValueHead, Reference, base_model_path, build_policy, load_tokenizer
from labeler.ppo.rewards import RewardFn, load_reward

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"

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


def train_ppo(config: PPOConfig, reward_fn: RewardFn | None = None) -> Path:
    """Run PPO as configured; return the last checkpoint folder.

    `reward_fn` overrides the reward the config names (a Python caller's own scoring function).
    """
    # --- Inputs first: a bad prompts file or reward fails before anything is written
    prompts = load_prompts(config.prompts)
    reward = reward_fn if reward_fn is not None else load_reward(config.reward_model, config.reward_rule)
    tokenizer = load_tokenizer(config.policy)
    prompts, prompt_ids = _encode_prompts(tokenizer, prompts, config)
    eos_ids = _eos_token_ids(tokenizer, config)
    pad_id = int(tokenizer.pad_token_id)

    # --- Output folder, resume point, seeds
    out = config.out
    resume_from = _check_out_folder(config)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(config.model_dump_json(indent=2) + "\n")
    torch.manual_seed(config.seed)
    data_generator = torch.Generator().manual_seed(config.seed)  # prompt order and minibatch order
    device = _device(config.device)
    console = Console(stderr=True)

    # --- Policy with value head, frozen reference, optimizer
    policy, reference = build_policy(config, device)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, eps=1e-5)
    start_step = 0
    if resume_from is not None:
        start_step = load_checkpoint(resume_from, config, policy, optimizer, data_generator)
        console.print(f"resuming from {resume_from} (step {start_step})")
    _truncate_metrics(out / METRICS_FILE, start_step)
    checkpoint = resume_from

    with _progress(console) as progress:
        task = progress.add_task("PPO", total=config.steps, completed=start_step, stats="")
        for step in range(start_step + 1, config.steps + 1):
            started = time.monotonic()

            # --- 1. Rollout: one sampled completion per prompt
            batch = _sample_indices(len(prompts), config.rollout_batch, data_generator).tolist()
            batch_prompts = [prompts[i] for i in batch]
            prompt_tokens, prompt_mask = _left_pad([prompt_ids[i] for i in batch], pad_id, device)  # (B, P)
            policy.eval()
            with torch.no_grad():
                sequences = policy.lm.generate(
                    input_ids=prompt_tokens,
                    attention_mask=prompt_mask,
                    max_new_tokens=config.max_new_tokens,
                    eos_token_id=eos_ids,
                    pad_token_id=pad_id,
                    **SAMPLING,
                )  # (B, P + R)
            width = sequences.shape[1] - prompt_tokens.shape[1]  # R: generate stops when all rows ended
            responses = sequences[:, -width:]  # (B, R)
            lengths, has_eos = ppo.response_lengths(responses, eos_ids)  # (B,), (B,)
            mask = ppo.length_mask(lengths, width)  # (B, R): generated tokens, EOS included
            attention = torch.cat([prompt_mask, mask.long()], dim=1)  # (B, P + R)
            completions = tokenizer.batch_decode(
                [row[: int(n) - int(eos)].tolist() for row, n, eos in zip(responses, lengths, has_eos)],
                skip_special_tokens=True,
            )

            # --- 2. Score each completion; the score is earned at its last token
            raw_scores = _score(reward, batch_prompts, completions).to(device)  # (B,)
            scores = raw_scores + config.missing_eos_reward * (~has_eos).float()  # (B,)

            # --- 3. Rollout log-probabilities, values, entropies; reference log-probabilities
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
            stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "vf_loss", "clip", "vclip", "approx_kl")}
            for _epoch in range(config.ppo_epochs):
                order = torch.randperm(config.rollout_batch, generator=data_generator)
                for start in range(0, config.rollout_batch, config.minibatch):
                    mb = order[start : start + config.minibatch].to(device)
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

            # --- 6. Metrics, progress, checkpoint
            row = {
                "step": step,
                "reward": float(raw_scores.mean()),
                "reward_std": float(raw_scores.std()) if len(raw_scores) > 1 else 0.0,
                "score": float(scores.mean()),
                "kl": float(kl.sum(dim=1).mean()),
                "non_score_reward": float((-config.kl_coef * kl).sum(dim=1).mean()),
                "entropy": float(entropy),
                "clip_frac": statistics.fmean(stats["clip"]),
                "value_clip_frac": statistics.fmean(stats["vclip"]),
                "policy_loss": statistics.fmean(stats["pg_loss"]),
                "value_loss": statistics.fmean(stats["vf_loss"]),
                "approx_kl": statistics.fmean(stats["approx_kl"]),
                "response_length": float(lengths.float().mean()),
                "no_eos_frac": float((~has_eos).float().mean()),
                "seconds": round(time.monotonic() - started, 3),
            }
            _append_metrics(out / METRICS_FILE, row)
            progress.update(
                task,
                advance=1,
                stats=f"reward {row['reward']:.3f}  kl {row['kl']:.3f}  len {row['response_length']:.1f}",
            )
            if step % config.checkpoint_every == 0 or step == config.steps:
                checkpoint = save_checkpoint(out, step, config, policy, optimizer, data_generator, tokenizer)

    if checkpoint is None:
        raise RuntimeError(f"{out}: no checkpoint was written")  # steps <= resumed step and none on disk
    return checkpoint


# ---------------------------------------------------------------------------------------------------
# Helpers of the loop
# ---------------------------------------------------------------------------------------------------


def load_prompts(path: Path) -> list[list[dict[str, str]]]:
    """The chat messages of every prompt row (JSONL, Parquet or Arrow); a bad row names file and line."""
    prompts = [[message.model_dump() for message in row_messages(row)] for row in iter_rows(path)]
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


def _check_out_folder(config: PPOConfig) -> Path | None:
    """The checkpoint to resume from (None: start afresh); refuses to mix two different runs."""
    saved_config = config.out / CONFIG_FILE
    has_run = saved_config.is_file() or bool(checkpoint_dirs(config.out))
    if not config.resume:
        if has_run:
            raise InputError(
                "the folder already holds a PPO run; pass --resume to continue it, or choose another --out",
                file=config.out,
            )
        return None
    if saved_config.is_file():
        previous = PPOConfig.model_validate_json(saved_config.read_text())
        differences = config.differences(previous)
        if differences:
            raise InputError(
                "cannot resume with a different configuration: " + "; ".join(differences), file=saved_config
            )
    return latest_checkpoint(config.out)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _encode_prompts(
    tokenizer: Any, prompts: list[list[dict[str, str]]], config: PPOConfig
) -> tuple[list[list[dict[str, str]]], list[list[int]]]:
    """Token ids of each prompt through the chat template (assistant turn opened); too-long ones dropped."""
    texts = [chat_text(tokenizer, [Message(**m) for m in messages]) for messages in prompts]
    ids = encode_texts(tokenizer, texts)
    kept = [i for i, tokens in enumerate(ids) if len(tokens) <= config.max_prompt_tokens]
    if not kept:
        raise InputError(
            f"every prompt is longer than max_prompt_tokens={config.max_prompt_tokens} tokens", file=config.prompts
        )
    if len(kept) < len(ids):
        Console(stderr=True).print(
            f"skipping {len(ids) - len(kept)} of {len(ids)} prompts longer than "
            f"max_prompt_tokens={config.max_prompt_tokens}"
        )
    return [prompts[i] for i in kept], [ids[i] for i in kept]


def _eos_token_ids(tokenizer: Any, config: PPOConfig) -> list[int]:
    """Every token id that ends a completion: the tokenizer's EOS and the model's generation EOS ids."""
    from transformers import GenerationConfig

    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    base = base_model_path(config.policy)
    if (base / "generation_config.json").is_file():
        extra = GenerationConfig.from_pretrained(str(base)).eos_token_id
        if extra is not None:
            ids.update(int(i) for i in (extra if isinstance(extra, list) else [extra]))
    if not ids:
        raise InputError("the policy's tokenizer defines no EOS token", file=config.policy, where="--policy")
    return sorted(ids)


def _sample_indices(count: int, size: int, generator: torch.Generator) -> Tensor:
    """`size` distinct prompt indices when there are enough prompts, else drawn with replacement."""
    if count >= size:
        return torch.randperm(count, generator=generator)[:size]
    return torch.randint(count, (size,), generator=generator)


def _left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(B, P) token ids and attention mask, padded on the left so that generation continues every row."""
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention[i, width - len(row) :] = 1
    return tokens.to(device), attention.to(device)


def _score(reward: RewardFn, prompts: list[list[dict[str, str]]], completions: list[str]) -> Tensor:
    scores = reward(prompts, completions)
    if len(scores) != len(completions):
        raise RuntimeError(f"the reward returned {len(scores)} scores for {len(completions)} completions")
    tensor = torch.tensor([float(s) for s in scores], dtype=torch.float32)
    if not torch.isfinite(tensor).all():
        raise RuntimeError(f"the reward returned a non-finite score: {scores}")
    return tensor


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics of steps after the checkpoint being resumed: those steps run again."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line)["step"] <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


class _RateColumn(ProgressColumn):
    """Steps per second, or seconds per step when slower than one a second."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        if not speed:
            return Text("-- s/step", style="progress.data.speed")
        text = f"{speed:.2f} steps/s" if speed >= 1 else f"{1 / speed:.1f} s/step"
        return Text(text, style="progress.data.speed")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[stats]}"),
        console=console,
        speed_estimate_period=3600.0,  # rich's default (30 s) is shorter than one step of a large model
    )
