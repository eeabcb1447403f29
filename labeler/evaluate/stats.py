"""The statistics every evaluation shares, each written once: small pure functions over per-item numbers.

- the **half credit for ties**: a probability above 0.5 is a win (1), below a loss (0), exactly 0.5 a
  tie (0.5), for win rates and for agreement with humans alike;
- the **Wilson score interval** for a proportion (wins, or agreements, out of n);
- the **percentile bootstrap** of a mean, resampling items (prompts or pairs) with replacement,
  seeded so the same numbers always give the same interval; a paired difference is the bootstrap of
  the per-pair differences, both sides moving together;
- the **first-position rate**: the mean probability a judge gave whichever response it was shown first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile
BOOTSTRAP_RESAMPLES = 2000


def tie_credit(p: np.ndarray) -> np.ndarray:
    """Per item: 1 where p > 0.5, 0 where p < 0.5, 0.5 for a tie (p = 0.5).

    >>> tie_credit(np.array([0.9, 0.2, 0.5])).tolist()
    [1.0, 0.0, 0.5]
    """
    return np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a proportion: every p the score test at level z does not reject,
    i.e. the p with (successes/n - p)^2 <= z^2 p (1 - p) / n. Ties count half a success.

    >>> [round(x, 4) for x in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    >>> wilson_interval(0, 5)[0], round(wilson_interval(5, 5)[1], 12)
    (0.0, 1.0)
    >>> [round(x, 4) for x in wilson_interval(200, 400)], [round(x, 4) for x in wilson_interval(10, 10)]
    ([0.4512, 0.5488], [0.7225, 1.0])
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
    """Percentile bootstrap interval of the mean of `values` (one value per item), resampling items.

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


def first_position_rate(p_a_ab: np.ndarray, p_a_ba: np.ndarray) -> float:
    """Mean probability given to whichever response was shown first (0.5: no position bias).

    In the ab order response_a is first (p_a_ab); in the ba order response_b is (1 − p_a_ba).

    >>> round(first_position_rate(np.array([0.9]), np.array([0.2])), 6)
    0.85
    """
    return float(((p_a_ab + (1.0 - p_a_ba)) / 2.0).mean())
