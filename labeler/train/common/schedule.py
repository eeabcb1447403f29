"""What the trainers on judged pairs (`train-rm`, `dpo`) share in their loop: the learning rate of each
step, and what a finished run reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def learning_rate_at(step: int, *, peak: float, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Learning rate of optimizer step `step` (from 0): linear warmup, then linear decay or constant.

    A pure function of the step, so a resumed run needs no scheduler state.

    >>> [round(learning_rate_at(s, peak=1.0, warmup_steps=2, total_steps=6, schedule="linear"), 2) for s in range(6)]
    [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    >>> learning_rate_at(5, peak=1.0, warmup_steps=0, total_steps=6, schedule="constant")
    1.0
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    return peak * (total_steps - step) / max(1, total_steps - warmup_steps)


@dataclass(frozen=True)
class PairTrainingResult:
    """What a finished training run on judged pairs produced."""

    out: Path
    steps: int
    train_pairs: int
    eval_pairs: int
    train_metrics: dict[str, float]  # averages over the last logging window
    eval_metrics: dict[str, float]  # final evaluation (empty without an eval split)
    tokens: int  # non-padding tokens through the training forward passes, all processes
    train_seconds: float  # time in the loop (this process's share since start or resume)
