"""Reward-model training: one loop, read top to bottom.

    config = RMTrainConfig(data=[Path("data/runs/demo")], out=Path("rm"))
    result = train_reward_model(config)

Single process on CPU or one GPU; several GPUs with `accelerate launch -m labeler train-rm ...`.
Each optimizer step runs the 2B conversations of B pairs (all the A sides, then all the B sides)
through the model in one call, the prompt tokens a pair's two conversations share only once, reads
one reward per conversation at its last real token, and takes the Bradley-Terry loss of r_a − r_b
against the label (see `labeler.train.rm.losses`). With `heads=principles` each conversation gets one
reward per head, and each head's loss is taken against its own label on the pairs that have one.

Writes to `config.out`:
- `metrics.jsonl`: one JSON object per logging step (split "train") and per evaluation (split "eval");
- `checkpoint-<step>/` every `checkpoint_every` steps (see `labeler.train.common.checkpoint`);
- the final model (`save_pretrained`, safetensors), its tokenizer, and `labeler-rm.json`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from labeler import __version__
from labeler.core.errors import InputError
from labeler.core.progress import progress_bar
from labeler.core.records import PreferenceRecord
from labeler.engine.model_ref import ModelRef, resolve_model
from labeler.train.common.checkpoint import load_checkpoint, save_checkpoint
from labeler.train.common.metrics import METRICS_FILE, MetricsLog, MetricWindow
from labeler.train.common.precision import weights_dtype
from labeler.train.common.resume import resume_point, start_run
from labeler.train.common.schedule import PairTrainingResult, learning_rate_at
from labeler.train.common.tokenizer import load_tokenizer
from labeler.train.rm.batch import collate_pairs, count_truncated
from labeler.train.rm.config import RMTrainConfig
from labeler.train.rm.heads import REWARD_CARD, head_names
from labeler.train.rm.labels import (
    OVERALL_HEAD,
    HardLabels,
    LabelKind,
    PrincipleHeadLabels,
    PrincipleLabels,
    SoftLabels,
)
from labeler.train.rm.losses import (
    head_accuracy,
    mean_chosen_margin,
    multi_head_bradley_terry_loss,
    oriented_margin,
    pairwise_accuracy,
)
from labeler.train.rm.model import LastTokenReward, disable_dropout, load_classifier
from labeler.train.rm.pairs import (
    SourceRun,
    check_runs,
    epoch_batches,
    load_pairs,
    scored_principles,
    split_train_eval,
)

if TYPE_CHECKING:
    from labeler.inputs.constitution import Principle

logger = logging.getLogger(__name__)

LORA_TARGET_MODULES = ("q_proj", "v_proj")
RMTrainResult = PairTrainingResult  # what a finished reward-model training produced
__all__ = ["METRICS_FILE", "RMTrainResult", "check_rm_training", "learning_rate_at", "train_reward_model"]


@dataclass(frozen=True)
class CheckedRMTraining:
    """What the checks found: the base model, the runs' data, the label kind, where to resume from, and
    the heads with their weights in the loss and at use time (one unnamed head without heads=principles)."""

    base: ModelRef
    runs: list[SourceRun]
    label_kind: LabelKind
    resume_from: Path | None
    heads: tuple[str, ...] | None = None  # output names (None: one head, as a plain reward model)
    loss_weights: tuple[float, ...] = (1.0,)  # one per head, for the loss
    use_weights: dict[str, float] | None = None  # the weighting saved for scoring and PPO


def check_rm_training(config: RMTrainConfig) -> CheckedRMTraining:
    """Every check `train_reward_model` makes before it loads a model or writes a file."""
    base = resolve_model(config.base_model, field="base_model", kind="backbone")
    runs = check_runs(config.data)
    if config.heads == "one":
        return CheckedRMTraining(base, runs, label_kind_for(config), resume_point(config))
    principles = principle_heads(config)
    heads = (OVERALL_HEAD, *(p.id for p in principles))
    if base.path is not None and (base.path / REWARD_CARD).is_file() and head_names(base.path) != heads:
        raise InputError(
            f"is a reward model with heads {', '.join(head_names(base.path))}; this run trains "
            f"{', '.join(heads)}: continue from a model with the same heads, or from a causal LM",
            file=base.path,
            field="base_model",
        )
    constitution_weights = config.head_loss_weights == "constitution"
    return CheckedRMTraining(
        base,
        runs,
        PrincipleHeadLabels(principle_ids=tuple(p.id for p in principles), hard=config.loss == "hard"),
        resume_point(config),
        heads=heads,
        loss_weights=(1.0, *(float(p.weight) if constitution_weights else 1.0 for p in principles)),
        use_weights={p.id: float(p.weight) for p in principles},
    )


def principle_heads(config: RMTrainConfig) -> list[Principle]:
    """The constitution's principles that get a head: those some pair of the runs has a score for.

    `InputError` when no pair has a score for any of them (the run was labelled without --salmon, or with
    another constitution), or when a principle is called like the overall head.
    """
    from labeler.inputs.constitution import load_constitution

    assert config.constitution is not None  # checked by RMTrainConfig
    constitution = load_constitution(config.constitution)
    if any(p.id == OVERALL_HEAD for p in constitution.principles):
        raise InputError(
            f"has a principle called {OVERALL_HEAD!r}, the name of the head trained on p_a: rename it "
            "for heads=principles",
            file=config.constitution,
            field="heads",
        )
    scored = scored_principles(config.data)
    principles = [p for p in constitution.principles if p.id in scored]
    if not principles:
        raise InputError(
            "no pair has a principle_scores entry for any principle of the constitution "
            f"({', '.join(p.id for p in constitution.principles)}): heads=principles needs runs labelled with "
            "per-principle scores (label --salmon) under this constitution",
            file=config.constitution,
            field="heads",
        )
    unscored = [p.id for p in constitution.principles if p.id not in scored]
    if unscored:
        logger.warning("no pair has a score for principle(s) %s: they get no head", ", ".join(unscored))
    return principles


def train_reward_model(config: RMTrainConfig) -> RMTrainResult:
    """Train a reward model on the preference split of `config.data`; save it to `config.out`."""
    from accelerate import Accelerator

    # ---- checks: bad input fails here, before any model loads or any file is written -------------
    checked = check_rm_training(config)
    base, runs, label_kind, resume_from = checked.base, checked.runs, checked.label_kind, checked.resume_from
    heads, loss_weights = checked.heads, checked.loss_weights

    # ---- setup: processes, output folder --------------------------------------------------------
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    out = config.out
    if accelerator.is_main_process:
        start_run(config)
    accelerator.wait_for_everyone()  # the folder exists before any process writes to it
    metrics = MetricsLog(out, enabled=accelerator.is_main_process)

    # ---- data: every run's pairs, an eval split held out by id ------------------------------------
    pairs = load_pairs(config.data)
    usable = [pair for pair in pairs if label_kind.usable(pair)]
    skipped = len(pairs) - len(usable)
    if not usable:
        raise InputError(
            "no pair has a principle_scores entry for the constitution's salmon principles",
            file=config.constitution,
            field="principle_conditioned",
        )
    if skipped and accelerator.is_main_process:
        logger.warning("%d pairs have no principle score for the constitution's salmon principles: skipped", skipped)
    train_rows, eval_rows = split_train_eval([p.id for p in usable], config.eval_fraction, config.seed)
    train_pairs = [usable[i] for i in train_rows]
    eval_pairs = [usable[i] for i in eval_rows]
    if len(train_pairs) < accelerator.num_processes:
        raise InputError(
            f"only {len(train_pairs)} training pairs for {accelerator.num_processes} processes", field="data"
        )
    steps_per_epoch = len(
        epoch_batches(
            len(train_pairs), config.batch_size, seed=config.seed, epoch=0,
            rank=accelerator.process_index, world_size=accelerator.num_processes,
        )
    )
    total_steps = int(min(config.epochs * steps_per_epoch, config.max_steps or math.inf))

    # ---- model: causal LM + scalar head (seeded), optional LoRA, rewards read at the last token ---
    torch.manual_seed(config.seed)  # the new `score` head is initialised from the global generator
    folder = base.folder()
    tokenizer = load_tokenizer(folder)
    tokenizer.padding_side = "right"  # batches are right-padded; the saved tokenizer says so too
    truncated = count_truncated(tokenizer, [label_kind.example(p, epoch=0) for p in train_pairs], config.max_length)
    if truncated and accelerator.is_main_process:
        logger.warning(
            "%d of %d training conversations are longer than max_length=%d and lose their first tokens",
            truncated, 2 * len(train_pairs), config.max_length,
        )
    classifier = load_classifier(folder, dtype=weights_dtype(config), pad_token_id=tokenizer.pad_token_id, heads=heads)
    disable_dropout(classifier)
    if config.gradient_checkpointing:
        # Non-reentrant: works with LoRA's frozen inputs, and with the prefix pass off (it keeps a cache).
        classifier.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    share_prefix = config.share_prefix and not config.gradient_checkpointing
    peft_model = None
    if config.lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            target_modules=list(LORA_TARGET_MODULES),
            modules_to_save=["score"],  # the head is new: train all of it
            lora_dropout=0.0,
        )
        peft_model = get_peft_model(classifier, lora)  # injects adapters into `classifier` in place
    reward = LastTokenReward(classifier).to(accelerator.device)
    optimizer = torch.optim.AdamW(
        [p for p in reward.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        fused=accelerator.device.type in ("cpu", "cuda"),  # one kernel per step instead of one per tensor
    )
    reward, optimizer = accelerator.prepare(reward, optimizer)
    reward.train()
    head_weights = torch.tensor(loss_weights, device=accelerator.device)  # (K,)

    # ---- resume: parameters, optimizer moments, RNG, step and unlogged metric sums ---------------
    step, tokens = 0, 0
    window = MetricWindow()
    if resume_from is not None:
        state = load_checkpoint(resume_from, module=accelerator.unwrap_model(reward), optimizer=optimizer.optimizer)
        step, tokens = state["step"], state["tokens"]
        window = MetricWindow(**state["window"])
        accelerator.print(f"resumed from {resume_from} at step {step}")
    metrics.truncate_after(step)  # rows of steps after the checkpoint are written again
    accelerator.wait_for_everyone()

    # ---- training loop ---------------------------------------------------------------------------
    started = time.monotonic()
    window_started, window_tokens = started, 0
    epoch_batch_cache: tuple[int, list[list[int]]] = (-1, [])
    last_train: dict[str, float] = {}
    quiet = config.quiet or None  # None: a bar on a terminal, log lines elsewhere
    with progress_bar(total_steps, "train-rm", unit="steps", completed=step, quiet=quiet,
                      enabled=accelerator.is_main_process) as advance:
        while step < total_steps:
            epoch, index_in_epoch = divmod(step, steps_per_epoch)
            if epoch_batch_cache[0] != epoch:
                epoch_batch_cache = (epoch, epoch_batches(
                    len(train_pairs), config.batch_size, seed=config.seed, epoch=epoch,
                    rank=accelerator.process_index, world_size=accelerator.num_processes,
                ))
            examples = [label_kind.example(train_pairs[i], epoch=epoch) for i in epoch_batch_cache[1][index_in_epoch]]
            batch = collate_pairs(examples, tokenizer, config.max_length, share_prefix=share_prefix)
            batch = {name: tensor.to(accelerator.device) for name, tensor in batch.items()}
            lr = learning_rate_at(
                step, peak=config.learning_rate, warmup_steps=config.warmup_steps, total_steps=total_steps,
                schedule=config.lr_schedule,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr

            # forward: all A sides then all B sides in one call (the shared prompt once), split into pairs
            with accelerator.autocast():
                rewards = reward(
                    batch["input_ids"], batch["attention_mask"], batch.get("prefix_ids"), batch.get("prefix_mask")
                ).reshape(2 * len(examples), -1)  # (2B, K): one column per head
            heads_a, heads_b = rewards.chunk(2)  # (B, K), (B, K)
            reward_a, reward_b = heads_a[:, 0], heads_b[:, 0]  # (B,): the overall head (the only one by default)
            target_a = batch["target_a"]  # (B,)
            if config.margin:  # TRL-style: the chosen side must win by the margin (one head only, see config)
                heads_a = heads_a - oriented_margin(batch["margin"], target_a)[:, None]
            loss = multi_head_bradley_terry_loss(heads_a, heads_b, batch["targets"], batch["mask"], head_weights)

            # backward and update
            accelerator.backward(loss)
            if config.max_grad_norm is not None:
                accelerator.clip_grad_norm_(reward.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            # metrics: averaged over processes, summed over the logging window
            with torch.no_grad():
                step_metrics = torch.stack([
                    loss.detach(),
                    pairwise_accuracy(reward_a, reward_b, target_a),
                    mean_chosen_margin(reward_a, reward_b, target_a),
                ])
                step_metrics = accelerator.reduce(step_metrics, reduction="mean")
                step_tokens = int(accelerator.reduce(batch["tokens"], reduction="sum").item())
            tokens += step_tokens
            window_tokens += step_tokens
            step_loss, step_accuracy, step_margin = step_metrics.tolist()
            window.add(loss=step_loss, accuracy=step_accuracy, margin=step_margin)
            advance(1, f"loss {step_metrics[0].item():.4f}")
            if step % config.logging_steps == 0 or step == total_steps:
                now = time.monotonic()
                last_train = {
                    **window.averages(),
                    "lr": lr,
                    "tokens": tokens,
                    "tokens_per_s": window_tokens / max(now - window_started, 1e-9),
                }
                metrics.append({"step": step, "epoch": step / steps_per_epoch, "split": "train", **last_train})
                window, window_started, window_tokens = MetricWindow(), now, 0

            # periodic evaluation and checkpoints (the final ones come after the loop)
            if config.eval_steps and step % config.eval_steps == 0 and step < total_steps and eval_pairs:
                result = evaluate(
                    accelerator.unwrap_model(reward), eval_pairs, label_kind, tokenizer, config, heads, head_weights
                )
                metrics.append({"step": step, "split": "eval", **result})
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total_steps:
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    save_checkpoint(
                        out,
                        step,
                        config=config,
                        module=accelerator.unwrap_model(reward),
                        optimizer=optimizer.optimizer,
                        state={"tokens": tokens, "window": asdict(window)},
                        keep=config.keep_checkpoints,
                    )
    train_seconds = time.monotonic() - started

    # ---- final evaluation and save ------------------------------------------------------------
    eval_metrics = {}
    if eval_pairs:
        eval_metrics = evaluate(
            accelerator.unwrap_model(reward), eval_pairs, label_kind, tokenizer, config, heads, head_weights
        )
        metrics.append({"step": step, "split": "eval", **eval_metrics})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final: Any = peft_model.merge_and_unload() if peft_model is not None else classifier
        final.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        card = {
            "format": 1,
            "labeler_version": __version__,
            "config": json.loads(config.model_dump_json()),
            "base_model": base.label,
            "runs": [asdict(run) for run in runs],
            "steps": step,
            "pairs": {"train": len(train_pairs), "eval": len(eval_pairs), "skipped": skipped},
            "truncated_conversations": truncated,
            "metrics": {"train": last_train, "eval": eval_metrics},
            "reward": "score head at the last attended token of the chat-template rendering",
        }
        if heads is not None:
            # Output k of the saved classifier is head k (its config's id2label); the weights are the
            # constitution's, the weighting score-rm and ppo use when none is given.
            card["heads"] = list(heads)
            card["head_weights"] = checked.use_weights
        if isinstance(label_kind, PrincipleLabels):
            # A principle-conditioned model expects these principles in a system message (salmon.py).
            card["salmon_principles"] = [p.id for p in label_kind.principles]
        (out / REWARD_CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()
    return RMTrainResult(
        out=out,
        steps=step,
        train_pairs=len(train_pairs),
        eval_pairs=len(eval_pairs),
        train_metrics=last_train,
        eval_metrics=eval_metrics,
        tokens=tokens,
        train_seconds=train_seconds,
    )


@torch.no_grad()
def evaluate(
    reward: LastTokenReward,
    pairs: Sequence[PreferenceRecord],
    label_kind: LabelKind,
    tokenizer: Any,
    config: RMTrainConfig,
    heads: Sequence[str] | None = None,
    head_weights: torch.Tensor | None = None,
) -> dict[str, float]:
    """Loss, accuracy and mean chosen margin over `pairs`, weighted by pair (not by batch); with several
    heads also `accuracy/<head>`, each head's accuracy on its own labelled pairs. Accuracy and margin are
    those of the first head (the overall one).

    Takes the unwrapped module: every process evaluates all pairs, so no collective call can hang on
    processes doing different numbers of forward passes. Principle draws use epoch 0, so every
    evaluation of a run sees the same examples.
    """
    device = next(reward.parameters()).device
    was_training = reward.training
    reward.eval()
    sums = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0}
    correct, labelled = torch.zeros(len(heads or [1])), torch.zeros(len(heads or [1]))  # (K,) per head
    for start in range(0, len(pairs), config.batch_size):
        examples = [label_kind.example(pair, epoch=0) for pair in pairs[start : start + config.batch_size]]
        batch = collate_pairs(examples, tokenizer, config.max_length, share_prefix=config.share_prefix)
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        rewards = reward(batch["input_ids"], batch["attention_mask"], batch.get("prefix_ids"), batch.get("prefix_mask"))
        heads_a, heads_b = rewards.reshape(2 * len(examples), -1).chunk(2)  # (B, K), (B, K)
        reward_a, reward_b = heads_a[:, 0], heads_b[:, 0]  # (B,)
        target_a = batch["target_a"]
        if config.margin:
            heads_a = heads_a - oriented_margin(batch["margin"], target_a)[:, None]
        n = len(examples)
        loss = multi_head_bradley_terry_loss(heads_a, heads_b, batch["targets"], batch["mask"], head_weights)
        sums["loss"] += loss.item() * n
        sums["accuracy"] += pairwise_accuracy(reward_a, reward_b, target_a).item() * n
        sums["margin"] += mean_chosen_margin(reward_a, reward_b, target_a).item() * n
        right, count = head_accuracy(heads_a, heads_b, batch["targets"], batch["mask"])
        correct, labelled = correct + right.cpu(), labelled + count.cpu()
    reward.train(was_training)
    result = {name: total / len(pairs) for name, total in sums.items()} | {"pairs": len(pairs)}
    for name, right, count in zip(heads or (), correct.tolist(), labelled.tolist()):  # none for one head
        if count:
            result[f"accuracy/{name}"] = right / count
    return result






def label_kind_for(config: RMTrainConfig) -> LabelKind:
    """The label kind the config asks for; `InputError` if its constitution has no salmon principles."""
    if not config.principle_conditioned:
        return HardLabels() if config.loss == "hard" else SoftLabels()
    from labeler.inputs.constitution import load_constitution

    assert config.constitution is not None  # checked by RMTrainConfig
    principles = load_constitution(config.constitution).for_stage("salmon")
    if not principles:
        raise InputError(
            "has no salmon principles (a principle needs a `definition`) for ‹principle_conditioned›",
            file=config.constitution,
        )
    return PrincipleLabels(
        principles=principles,
        count=config.principles_per_example,
        negate_probability=config.negate_probability,
        seed=config.seed,
        hard=config.loss == "hard",
    )
