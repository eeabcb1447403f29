"""Win-rate intervals against slow, obvious references: a scan of the score test for Wilson, the exact
bootstrap distribution (every resample enumerated) for the percentile bootstrap."""

from __future__ import annotations

import itertools
import statistics

import numpy as np
import pytest

from labeler.evaluate.stats import Z_95, bootstrap_indices, bootstrap_interval, tie_credit, wilson_interval
from labeler.evaluate.win_rate import mean_with_interval, win_rate


def wilson_by_scan(successes: float, n: int, z: float = Z_95, steps: int = 200_000) -> tuple[float, float]:
    """The Wilson interval by its definition: every p on a fine grid that the score test keeps."""
    share = successes / n
    grid = [i / steps for i in range(steps + 1)]
    kept = [p for p in grid if (share - p) ** 2 <= z * z * p * (1 - p) / n]
    return min(kept), max(kept)


@pytest.mark.parametrize(("successes", "n"), [(0, 4), (3, 10), (7.5, 20), (20, 20), (1, 1), (37, 50)])
def test_wilson_matches_the_score_test_it_inverts(successes: float, n: int) -> None:
    low, high = wilson_interval(successes, n)
    slow_low, slow_high = wilson_by_scan(successes, n)
    assert low == pytest.approx(slow_low, abs=2e-5) and high == pytest.approx(slow_high, abs=2e-5)


def test_wilson_covers_the_true_rate_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    for true_rate, n in ((0.5, 20), (0.2, 50)):
        draws = rng.binomial(n, true_rate, size=4000)
        covered = [low <= true_rate <= high for low, high in (wilson_interval(k, n) for k in draws)]
        assert 0.93 <= statistics.fmean(covered) <= 0.975


def test_wilson_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(1, 0)
    with pytest.raises(ValueError):
        wilson_interval(6, 5)


def exact_bootstrap_quantiles(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Quantiles of the mean over every one of the n^n equally likely resamples (the exact bootstrap)."""
    n = len(values)
    means = sorted(sum(values[i] for i in draw) / n for draw in itertools.product(range(n), repeat=n))
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


@pytest.mark.parametrize("values", [[0.1, 0.9, 0.5, 0.7, 0.2], [0.0, 0.0, 1.0, 1.0, 1.0, 0.5]])
def test_bootstrap_interval_approaches_the_exact_bootstrap(values: list[float]) -> None:
    exact = exact_bootstrap_quantiles(values)
    sampled = bootstrap_interval(values, seed=3, resamples=40_000)
    assert sampled == pytest.approx(exact, abs=0.02)


def test_bootstrap_interval_is_the_percentiles_of_the_resampled_means() -> None:
    values = np.array([0.3, 0.9, 0.6, 0.1, 0.8, 0.4, 0.5])
    indices = bootstrap_indices(len(values), seed=7, resamples=999)
    means = sorted(statistics.fmean(values[i] for i in row) for row in indices)
    # numpy's default quantile: linear interpolation between order statistics at (m - 1) q.
    def quantile(q: float) -> float:
        position = (len(means) - 1) * q
        below = int(position)
        return means[below] + (means[min(below + 1, len(means) - 1)] - means[below]) * (position - below)

    low, high = bootstrap_interval(values, seed=7, resamples=999)
    assert low == pytest.approx(quantile(0.025), abs=1e-12) and high == pytest.approx(quantile(0.975), abs=1e-12)
    assert bootstrap_interval(values, seed=7) == bootstrap_interval(values, seed=7)  # seeded: repeatable


def test_win_rate_counts_and_intervals() -> None:
    p = [0.9, 0.7, 0.5, 0.2, 0.65, 0.5, 0.1, 0.95]
    result = win_rate(p, seed=0)
    assert (result.n, result.wins, result.losses, result.ties) == (8, 4, 2, 2)
    assert result.win_rate == pytest.approx(statistics.fmean(p))
    assert result.hard_win_rate == pytest.approx(statistics.fmean(tie_credit(np.array(p)).tolist())) == 5 / 8
    assert (result.hard_low, result.hard_high) == wilson_interval(5.0, 8)
    assert result.low <= result.win_rate <= result.high
    # The same answer twice is a tie the judge cannot break: a policy against itself sits at exactly 0.5.
    self_play = win_rate([0.5] * 10, seed=0)
    assert (self_play.win_rate, self_play.low, self_play.high, self_play.ties) == (0.5, 0.5, 0.5, 10)


def test_mean_with_interval() -> None:
    result = mean_with_interval([1.0, 3.0, 2.0, 6.0], seed=1)
    assert result.mean == 3.0 and result.low < 3.0 < result.high and result.n == 4
