"""Win rates with 95 % intervals, as small pure functions over per-prompt numbers.

A candidate policy and a baseline each answer the same prompts once; the judge gives, per prompt, the
probability `p` that the candidate's answer is the better one (both orders averaged, as `labeler label`
does). Two figures come from the same judgments:

- the **win rate**: the mean of `p` over prompts, with a percentile bootstrap interval that resamples
  prompts (seeded, so the same judgments always give the same interval);
- the **hard win rate**: each prompt a win (p > 0.5), a loss (p < 0.5) or a tie (p = 0.5, half a win),
  with the Wilson score interval for a proportion (both from `labeler.evaluate.stats`).

The bootstrap also gives intervals for the other per-prompt means `labeler eval-policy` reports (reward
differences, KL).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from labeler.evaluate.stats import bootstrap_interval, tie_credit, wilson_interval


class WinRate(BaseModel):
    """How often the candidate's answer was judged the better one, with 95 % intervals."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(description="Prompts judged.")
    win_rate: float = Field(description="Mean over prompts of P(candidate better), both orders averaged.")
    low: float = Field(description="Lower end of its 95 % interval (percentile bootstrap over prompts).")
    high: float = Field(description="Upper end of its 95 % interval.")
    wins: int = Field(description="Prompts where P(candidate better) > 0.5.")
    losses: int = Field(description="Prompts where P(candidate better) < 0.5.")
    ties: int = Field(description="Prompts where P(candidate better) = 0.5 (e.g. the same answer twice).")
    hard_win_rate: float = Field(description="(wins + ties / 2) / n.")
    hard_low: float = Field(description="Lower end of the hard win rate's 95 % Wilson interval.")
    hard_high: float = Field(description="Upper end of the hard win rate's 95 % Wilson interval.")


def win_rate(p: Sequence[float] | np.ndarray, *, seed: int) -> WinRate:
    """The win rate of a candidate from P(candidate better) per prompt.

    >>> w = win_rate([0.9, 0.8, 0.3, 0.5], seed=0)
    >>> w.win_rate, (w.wins, w.losses, w.ties), w.hard_win_rate
    (0.625, (2, 1, 1), 0.625)
    """
    array = np.asarray(p, dtype=float)
    credit = tie_credit(array)
    low, high = bootstrap_interval(array, seed=seed)
    hard_low, hard_high = wilson_interval(float(credit.sum()), array.size)
    return WinRate(
        n=int(array.size),
        win_rate=float(array.mean()),
        low=low,
        high=high,
        wins=int((array > 0.5).sum()),
        losses=int((array < 0.5).sum()),
        ties=int((array == 0.5).sum()),
        hard_win_rate=float(credit.mean()),
        hard_low=hard_low,
        hard_high=hard_high,
    )


class MeanWithInterval(BaseModel):
    """A mean over prompts with its 95 % percentile-bootstrap interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(description="Prompts.")
    mean: float
    low: float
    high: float


def mean_with_interval(values: Sequence[float] | np.ndarray, *, seed: int) -> MeanWithInterval:
    """The mean of per-prompt values and its bootstrap interval.

    >>> mean_with_interval([1.0, 2.0, 3.0], seed=0).mean
    2.0
    """
    array = np.asarray(values, dtype=float)
    low, high = bootstrap_interval(array, seed=seed)
    return MeanWithInterval(n=int(array.size), mean=float(array.mean()), low=low, high=high)
