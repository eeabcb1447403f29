"""DPO on judged pairs: one loop, read top to bottom.

    config = DPOConfig(data=(Path("data/runs/demo"),), out=Path("dpo"))
    result = train_dpo(config)

Single process on CPU or one GPU; several GPUs with `accelerate launch -m labeler dpo ...`. Before the
first step, the reference's log-probability of every response (train and held-out) is computed once and
cached in `OUT/reference-logprobs.safetensors` (a resumed run reads it back); each step then runs only
the policy: the 2B rows of B pairs (all A sides, then all B sides) in one call, summed over response
tokens, and the loss of the margin h against each pair's label (see `labeler.train.dpo.losses`).

Writes to `config.out`:
- `metrics.jsonl`: one JSON object per logging step (split "train") and per evaluation (split "eval":
  loss, implicit-reward accuracy and margin on held-out pairs, KL to the reference);
- `checkpoint-<step>/` every `checkpoint_every` steps (see `labeler.train.common.checkpoint`);
- the trained policy: a PEFT adapter (LoRA) or a whole model, loadable with plain transformers/PEFT,
  its tokenizer, and `labeler-dpo.json` (config, data runs, final metrics).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from labeler import __version__
from labeler.core.errors import InputError
from labeler.core.progress import progress_bar
from labeler.core.records import PreferenceRecord
from labeler.engine.model_ref import ModelRef, resolve_model
from labeler.train.common.checkpoint import load_checkpoint, save_checkpoint
from labeler.train.common.metrics import MetricsLog, MetricWindow
from labeler.train.common.precision import weights_dtype
from labeler.train.common.resume import resume_point, start_run
from labeler.train.common.schedule import PairTrainingResult, learning_rate_at
from labeler.train.dpo.batch import TokenizedPair, collate, tokenize_pair
from labeler.train.dpo.config import DPOConfig
from labeler.train.dpo.losses import (
    LOSSES,
    chosen_reward_margin,
    implicit_accuracy,
    log_ratio_margin,
    response_logprobs,
    sequence_kl,
)
from labeler.train.dpo.model import POLICY_ADAPTER, Policy, load_policy, logits_of, sequence_logprobs
from labeler.train.ppo.model import policy_tokenizer
from labeler.train.rm.pairs import SourceRun, check_runs, epoch_batches, load_pairs, split_train_eval

logger = logging.getLogger(__name__)

REFERENCE_CACHE = "reference-logprobs.safetensors"
DPO_CARD = "labeler-dpo.json"
DPOResult = PairTrainingResult  # what a finished DPO run produced
__all__ = ["DPO_CARD", "REFERENCE_CACHE", "DPOResult", "check_dpo", "train_dpo"]


@dataclass(frozen=True)
class CheckedDPO:
    """What the checks found: the starting policy, the runs and their usable pairs, where to resume from."""

    policy: ModelRef
    runs: list[SourceRun]
    pairs: list[PreferenceRecord]
    dropped: int
    resume_from: Path | None


def check_dpo(config: DPOConfig) -> CheckedDPO:
    """Every check `train_dpo` makes before it loads a model or writes a file."""
    policy = resolve_model(config.policy, field="policy", kind="policy")
    runs = check_runs(config.data)
    pairs = load_pairs(config.data)
    dropped = set(config.drop_flags)
    kept = [pair for pair in pairs if not dropped.intersection(pair.flags)]
    if not kept:
        raise InputError(
            f"every one of the {len(pairs)} pairs carries a dropped flag ({', '.join(config.drop_flags)})",
            file=config.data[0],
            field="drop_flags",
        )
    return CheckedDPO(policy, runs, kept, len(pairs) - len(kept), resume_point(config))


def train_dpo(config: DPOConfig) -> DPOResult:
    """Train a policy with DPO on the preference split of `config.data`; save it to `config.out`."""
    from accelerate import Accelerator

    # ---- checks: bad input fails here, before any model loads or any file is written -------------
    checked = check_dpo(config)
    pairs, resume_from = checked.pairs, checked.resume_from

    # ---- setup: processes, output folder --------------------------------------------------------
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    out = config.out
    if accelerator.is_main_process:
        start_run(config)
    accelerator.wait_for_everyone()
    metrics = MetricsLog(out, enabled=accelerator.is_main_process)

    # ---- data: tokenized pairs, an eval split held out by id ------------------------------------
    tokenizer = policy_tokenizer(checked.policy)
    tokenizer.padding_side = "right"
    tokenized = [tokenize_pair(tokenizer, pair, config.max_length) for pair in pairs]
    truncated = sum(t.truncated for t in tokenized)
    if truncated and accelerator.is_main_process:
        logger.warning("%d of %d pairs are longer than max_length=%d and lose tokens", truncated, len(pairs),
                       config.max_length)
    train_rows, eval_rows = split_train_eval([p.id for p in pairs], config.eval_fraction, config.seed)
    if len(train_rows) < accelerator.num_processes:
        raise InputError(f"only {len(train_rows)} training pairs for {accelerator.num_processes} processes",
                         field="data")
    p_a = torch.tensor([pair.p_a for pair in pairs], dtype=torch.float32)  # (N,)
    steps_per_epoch = len(epoch_batches(len(train_rows), config.batch_size, seed=config.seed, epoch=0,
                                        rank=accelerator.process_index, world_size=accelerator.num_processes))
    total_steps = int(min(config.epochs * steps_per_epoch, config.max_steps or math.inf))

    # ---- model: the policy (LoRA or all weights) and its reference -------------------------------
    torch.manual_seed(config.seed)  # LoRA's B matrices start at zero, its A matrices from this generator
    policy = load_policy(config, checked.policy, weights_dtype(config), accelerator.device)
    if config.gradient_checkpointing:
        policy.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    pad_id = int(tokenizer.pad_token_id)

    # ---- reference log-probabilities: once for every pair, cached in OUT (a resumed run reads them) -
    reference = reference_logprobs(policy, tokenized, [p.id for p in pairs], pad_id, config, accelerator)  # (N, 2)

    trainable = [p for p in policy.lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(policy.lm, optimizer)
    model.train()

    # ---- resume: parameters, optimizer moments, RNG, step and unlogged metric sums ---------------
    step, tokens = 0, 0
    window = MetricWindow()
    if resume_from is not None:
        state = load_checkpoint(resume_from, module=accelerator.unwrap_model(model), optimizer=optimizer.optimizer)
        step, tokens = state["step"], state["tokens"]
        window = MetricWindow(**state["window"])
        accelerator.print(f"resumed from {resume_from} at step {step}")
    metrics.truncate_after(step)  # rows of steps after the checkpoint are written again
    accelerator.wait_for_everyone()

    # ---- training loop ---------------------------------------------------------------------------
    loss_fn = LOSSES[config.loss]
    started = time.monotonic()
    window_started, window_tokens = started, 0
    batches: tuple[int, list[list[int]]] = (-1, [])
    last_train: dict[str, float] = {}
    quiet = config.quiet or None  # None: a bar on a terminal, log lines elsewhere
    with progress_bar(total_steps, "dpo", unit="steps", completed=step, quiet=quiet,
                      enabled=accelerator.is_main_process) as advance:
        while step < total_steps:
            epoch, index_in_epoch = divmod(step, steps_per_epoch)
            if batches[0] != epoch:
                batches = (epoch, epoch_batches(len(train_rows), config.batch_size, seed=config.seed, epoch=epoch,
                                                rank=accelerator.process_index,
                                                world_size=accelerator.num_processes))
            rows = [train_rows[i] for i in batches[1][index_in_epoch]]
            batch = collate([tokenized[i] for i in rows], pad_id)
            batch = {name: tensor.to(accelerator.device) for name, tensor in batch.items()}
            lr = learning_rate_at(step, peak=config.learning_rate, warmup_steps=config.warmup_steps,
                                  total_steps=total_steps, schedule=config.lr_schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr

            # forward: the A sides and the B sides of the batch in one call, summed over response tokens
            with accelerator.autocast():
                logps = sequence_logprobs(model, batch)  # (2B,)
            target = p_a[rows].to(accelerator.device)  # (B,)
            h = pair_margin(logps, reference[rows].to(accelerator.device), batch["response_tokens"], config)  # (B,)
            loss = loss_fn(h, target, config.beta)

            # backward and update
            accelerator.backward(loss)
            if config.max_grad_norm is not None:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            # metrics: averaged over processes, summed over the logging window
            with torch.no_grad():
                step_metrics = accelerator.reduce(torch.stack([
                    loss.detach(),
                    chosen_reward_margin(h, target, config.beta),
                    torch.nan_to_num(implicit_accuracy(h, target), nan=0.5),
                ]), reduction="mean")
                step_tokens = int(accelerator.reduce(batch["attention_mask"].sum(), reduction="sum").item())
            tokens += step_tokens
            window_tokens += step_tokens
            step_loss, step_margin, step_accuracy = step_metrics.tolist()
            window.add(loss=step_loss, accuracy=step_accuracy, margin=step_margin)
            advance(1, f"loss {step_metrics[0].item():.4f}")
            if step % config.logging_steps == 0 or step == total_steps:
                now = time.monotonic()
                last_train = {**window.averages(), "lr": lr, "tokens": tokens,
                              "tokens_per_s": window_tokens / max(now - window_started, 1e-9)}
                metrics.append({"step": step, "epoch": step / steps_per_epoch, "split": "train", **last_train})
                window, window_started, window_tokens = MetricWindow(), now, 0

            # periodic evaluation and checkpoints (the final evaluation comes after the loop)
            if config.eval_steps and step % config.eval_steps == 0 and step < total_steps and eval_rows:
                result = evaluate(policy, tokenized, eval_rows, p_a, reference, pad_id, config)
                metrics.append({"step": step, "split": "eval", **result})
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total_steps:
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    save_checkpoint(out, step, config=config, module=accelerator.unwrap_model(model),
                                    optimizer=optimizer.optimizer,
                                    state={"tokens": tokens, "window": asdict(window)},
                                    keep=config.keep_checkpoints)
    train_seconds = time.monotonic() - started

    # ---- final evaluation and save ------------------------------------------------------------
    eval_metrics: dict[str, float] = {}
    if eval_rows:
        eval_metrics = evaluate(policy, tokenized, eval_rows, p_a, reference, pad_id, config)
        metrics.append({"step": step, "split": "eval", **eval_metrics})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_policy(policy, tokenizer, out)
        card = {
            "format": 1,
            "labeler_version": __version__,
            "config": json.loads(config.model_dump_json()),
            "policy": checked.policy.label,
            "runs": [asdict(run) for run in checked.runs],
            "steps": step,
            "pairs": {"train": len(train_rows), "eval": len(eval_rows), "dropped": checked.dropped},
            "truncated_pairs": truncated,
            "metrics": {"train": last_train, "eval": eval_metrics},
            "reference": "the starting policy; log-probabilities cached once in " + REFERENCE_CACHE,
        }
        (out / DPO_CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()
    return DPOResult(out=out, steps=step, train_pairs=len(train_rows), eval_pairs=len(eval_rows),
                     train_metrics=last_train, eval_metrics=eval_metrics, tokens=tokens, train_seconds=train_seconds)


def pair_margin(logps: torch.Tensor, reference: torch.Tensor, response_tokens: torch.Tensor,
                config: DPOConfig) -> torch.Tensor:
    """h of each pair from the (2B,) policy log-probabilities and the (B, 2) reference ones; for IPO, from
    per-token means (each log-ratio divided by its response's length), as TRL's IPO does."""
    policy_a, policy_b = logps.chunk(2)  # (B,), (B,)
    ratio_a, ratio_b = policy_a - reference[:, 0], policy_b - reference[:, 1]
    if config.loss == "ipo":
        length_a, length_b = response_tokens.clamp(min=1).chunk(2)
        ratio_a, ratio_b = ratio_a / length_a, ratio_b / length_b
    return log_ratio_margin(ratio_a, ratio_b, torch.zeros_like(ratio_a), torch.zeros_like(ratio_b))


def reference_logprobs(policy: Policy, tokenized: Sequence[TokenizedPair], ids: Sequence[str], pad_id: int,
                       config: DPOConfig, accelerator: Any) -> torch.Tensor:
    """log pi_ref of response A and B of every pair, (N, 2) float32: read from OUT's cache when it holds
    these pairs, else computed (in batches of `batch_size`, on every process) and cached by the main one."""
    cache = config.out / REFERENCE_CACHE
    digest = hashlib.sha256(json.dumps(list(ids)).encode("utf-8")).hexdigest()
    if cache.is_file():
        saved = load_file(cache)
        if bytes(saved["pairs_sha256"].tolist()).decode() == digest:
            return saved["logprobs"]
    parts = []
    with policy.reference() as reference, accelerator.autocast():
        for start in range(0, len(tokenized), config.batch_size):
            batch = collate(tokenized[start : start + config.batch_size], pad_id)
            batch = {name: tensor.to(accelerator.device) for name, tensor in batch.items()}
            parts.append(torch.stack(sequence_logprobs(reference, batch).float().chunk(2), dim=1).cpu())  # (B, 2)
    logprobs = torch.cat(parts)
    if accelerator.is_main_process:
        save_file({"logprobs": logprobs.contiguous(), "pairs_sha256": torch.tensor(list(digest.encode()),
                                                                                   dtype=torch.uint8)},
                  cache)
    return logprobs


@torch.no_grad()
def evaluate(policy: Policy, tokenized: Sequence[TokenizedPair], rows: Sequence[int], p_a: torch.Tensor,
             reference: torch.Tensor, pad_id: int, config: DPOConfig) -> dict[str, float]:
    """Loss, implicit-reward accuracy and chosen margin over held-out pairs, and the KL of the policy to the
    reference on their responses (summed over response tokens, averaged over responses); weighted by pair.

    Takes the unwrapped model: every process evaluates all pairs, so no collective call can hang."""
    lm = policy.lm
    device = next(lm.parameters()).device
    was_training = lm.training
    lm.eval()
    hs, kls, lengths = [], [], []
    for start in range(0, len(rows), config.batch_size):
        chunk = list(rows[start : start + config.batch_size])
        batch = {name: t.to(device) for name, t in collate([tokenized[i] for i in chunk], pad_id).items()}
        logits = logits_of(lm, batch["input_ids"], batch["attention_mask"])  # (2B, T, V)
        with policy.reference() as ref_model:
            ref_logits = logits_of(ref_model, batch["input_ids"], batch["attention_mask"])  # (2B, T, V)
        logps = response_logprobs(logits, batch["input_ids"], batch["response_mask"])  # (2B,)
        hs.append(pair_margin(logps, reference[chunk].to(device), batch["response_tokens"], config))
        kls.append(sequence_kl(logits[:, :-1], ref_logits[:, :-1], batch["response_mask"][:, 1:]))  # (2B,)
        lengths.append(batch["response_tokens"])
    lm.train(was_training)
    h, target = torch.cat(hs), p_a[list(rows)].to(device)
    return {
        "loss": LOSSES[config.loss](h, target, config.beta).item(),
        "accuracy": torch.nan_to_num(implicit_accuracy(h, target), nan=0.5).item(),
        "margin": chosen_reward_margin(h, target, config.beta).item(),
        "kl": torch.cat(kls).mean().item(),
        "response_tokens": torch.cat(lengths).mean().item(),
        "pairs": len(rows),
    }


def save_policy(policy: Policy, tokenizer: Any, out: Path) -> None:
    """The trained policy where plain transformers/PEFT load it: the adapter (LoRA) or the whole model."""
    if policy.peft:
        policy.lm.save_pretrained(out, selected_adapters=[POLICY_ADAPTER], safe_serialization=True)
    else:
        policy.lm.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
