"""Win rates with 95 % intervals, as small pure functions over per-prompt numbers.

A candidate policy and a baseline each answer the same prompts once; the judge gives, per prompt, the
probability `p` that the candidate's answer is the better one (both orders averaged, as `labeler label`
does). Two figures come from the same judgments:

- the **win rate**: the mean of `p` over prompts, with a percentile bootstrap interval that resamples
  prompts (seeded, so the same judgments always give the same interval);
- the **hard win rate**: each prompt a win (p > 0.5), a loss (p < 0.5) or a tie (p = 0.5, half a win),
  with the Wilson score interval for a proportion.

The bootstrap also gives intervals for the other per-prompt means `labeler eval-policy` reports (reward
differences, KL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile
BOOTSTRAP_RESAMPLES = 2000


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a proportion: every p the score test at level z does not reject,
    i.e. the p with (successes/n - p)^2 <= z^2 p (1 - p) / n.

    >>> [round(x, 4) for x in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    >>> wilson_interval(0, 5)[0], round(wilson_interval(5, 5)[1], 12)
    (0.0, 1.0)
    """
    if n <= 0:
        raise ValueError("a proportion of no trials has no interval")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} is not within 0..n={n}")
    share = successes / n
    z2 = z * z
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_indices(n: int, *, seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> np.ndarray:
    """(resamples, n) row indices, each row n draws with replacement from range(n), seeded.

    >>> bootstrap_indices(3, seed=0, resamples=2).shape
    (2, 3)
    """
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_interval(
    values: Sequence[float] | np.ndarray, *, seed: int, resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (one value per prompt), resampling prompts.

    >>> bootstrap_interval([0.5, 0.5, 0.5], seed=0)
    (0.5, 0.5)
    >>> low, high = bootstrap_interval([0.0, 1.0] * 50, seed=0)
    >>> 0.39 < low < 0.45 and 0.55 < high < 0.61
    True
    """
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("no values to bootstrap")
    means = array[bootstrap_indices(array.size, seed=seed, resamples=resamples)].mean(axis=1)  # (resamples,)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def win_credit(p: np.ndarray) -> np.ndarray:
    """Per prompt: 1 for a win (p > 0.5), 0 for a loss, 0.5 for a tie.

    >>> win_credit(np.array([0.9, 0.2, 0.5])).tolist()
    [1.0, 0.0, 0.5]
    """
    return np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))


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
    credit = win_credit(array)
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
