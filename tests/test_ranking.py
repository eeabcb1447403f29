"""Ranking math: comparison designs, the Bradley-Terry fit against a slow reference, intransitive triples."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from labeler.core.ranking import bradley_terry, comparison_design, intransitive_triples


def _log_posterior(k: int, comparisons: list[tuple[int, int, float]], scores: list[float], sd: float) -> float:
    """The objective written out the obvious way."""
    total = sum(-(s**2) / (2 * sd**2) for s in scores)
    for a, b, p in comparisons:
        won = 1 / (1 + math.exp(-(scores[a] - scores[b])))
        total += p * math.log(won) + (1 - p) * math.log(1 - won)
    return total


def _reference_fit(k: int, comparisons: list[tuple[int, int, float]], sd: float) -> tuple[list[float], list[float]]:
    """Slow reference: plain gradient ascent with numerical gradients, then the errors from a
    finite-difference Hessian inverted by numpy."""
    scores = [0.0] * k
    h = 1e-5
    for _ in range(4000):
        gradient = []
        for i in range(k):
            up = [s + (h if j == i else 0.0) for j, s in enumerate(scores)]
            down = [s - (h if j == i else 0.0) for j, s in enumerate(scores)]
            rise = _log_posterior(k, comparisons, up, sd) - _log_posterior(k, comparisons, down, sd)
            gradient.append(rise / (2 * h))
        scores = [s + 0.2 * g for s, g in zip(scores, gradient)]
    e = 1e-4
    hessian = np.zeros((k, k))

    def at(i: int, j: int, di: float, dj: float) -> float:
        shifted = list(scores)
        shifted[i] += di
        shifted[j] += dj
        return _log_posterior(k, comparisons, shifted, sd)

    for i in range(k):
        for j in range(k):
            hessian[i, j] = (at(i, j, e, e) - at(i, j, e, -e) - at(i, j, -e, e) + at(i, j, -e, -e)) / (4 * e * e)
    errors = np.sqrt(np.diag(np.linalg.inv(-hessian)))
    return scores, [float(x) for x in errors]


def _random_comparisons(rng: random.Random, k: int, budget: int | None) -> list[tuple[int, int, float]]:
    return [(a, b, rng.choice([0.0, 1.0, rng.random()])) for a, b in comparison_design(k, budget)]


@pytest.mark.parametrize("k,budget,seed", [(2, None, 0), (3, None, 1), (4, None, 2), (5, 4, 3), (6, 7, 4)])
def test_fit_matches_slow_reference(k: int, budget: int | None, seed: int) -> None:
    comparisons = _random_comparisons(random.Random(seed), k, budget)
    fit = bradley_terry(k, comparisons)
    scores, errors = _reference_fit(k, comparisons, 3.0)
    assert fit.scores == pytest.approx(scores, abs=1e-4)
    assert fit.errors == pytest.approx(errors, abs=1e-3)
    assert sum(fit.scores) == pytest.approx(0.0, abs=1e-9)


def test_unanimous_prompt_stays_finite() -> None:
    # Response 0 beats everything with certainty, 1 beats 2 and 3, and so on: no maximum likelihood exists.
    comparisons = [(a, b, 1.0) for a, b in comparison_design(4, None)]
    fit = bradley_terry(4, comparisons)
    assert all(math.isfinite(s) and abs(s) < 10 for s in fit.scores)
    assert list(fit.scores) == sorted(fit.scores, reverse=True)
    assert all(math.isfinite(e) and e > 0 for e in fit.errors)


def test_known_strengths_are_recovered() -> None:
    strengths = [1.5, -0.5, 0.7, -1.2, 0.0]
    mean = sum(strengths) / len(strengths)
    comparisons = [(a, b, 1 / (1 + math.exp(-(strengths[a] - strengths[b])))) for a, b in comparison_design(5, None)]
    # With a negligible prior the fit is the maximum likelihood: the true strengths, centred.
    wide = bradley_terry(5, comparisons, prior_sd=1e4)
    assert wide.scores == pytest.approx([s - mean for s in strengths], abs=1e-4)
    # With the default prior, shrunk towards zero, in the same order.
    fit = bradley_terry(5, comparisons)
    assert sorted(range(5), key=lambda i: fit.scores[i]) == sorted(range(5), key=lambda i: strengths[i])
    assert all(abs(f) < abs(s - mean) + 1e-9 for f, s in zip(fit.scores, strengths))


def test_swap_and_row_order_invariance() -> None:
    rng = random.Random(7)
    comparisons = _random_comparisons(rng, 5, None)
    fit = bradley_terry(5, comparisons)
    swapped = [(b, a, 1 - p) if rng.random() < 0.5 else (a, b, p) for a, b, p in comparisons]
    shuffled = list(swapped)
    rng.shuffle(shuffled)
    other = bradley_terry(5, shuffled)
    assert other.scores == pytest.approx(fit.scores, abs=1e-9)
    assert other.errors == pytest.approx(fit.errors, abs=1e-9)
    # Renumbering the responses renumbers the scores.
    perm = [3, 0, 4, 1, 2]
    renumbered = bradley_terry(5, [(perm[a], perm[b], p) for a, b, p in comparisons])
    assert [renumbered.scores[perm[i]] for i in range(5)] == pytest.approx(fit.scores, abs=1e-9)


def test_bad_comparisons_are_refused() -> None:
    with pytest.raises(ValueError, match="does not name"):
        bradley_terry(3, [(0, 3, 0.5)])
    with pytest.raises(ValueError, match="p_a"):
        bradley_terry(3, [(0, 1, 1.5)])


def _connected(k: int, pairs: list[tuple[int, int]]) -> bool:
    reached, frontier = {0}, [0]
    while frontier:
        node = frontier.pop()
        for a, b in pairs:
            for x, y in ((a, b), (b, a)):
                if x == node and y not in reached:
                    reached.add(y)
                    frontier.append(y)
    return len(reached) == k


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 7])
def test_designs_are_connected_and_distinct(k: int) -> None:
    every = comparison_design(k, None)
    assert sorted(every) == list(itertools.combinations(range(k), 2))
    for budget in range(k - 1, len(every) + 2):
        pairs = comparison_design(k, budget)
        assert len(pairs) == min(budget, len(every))
        assert len(set(pairs)) == len(pairs) and all(0 <= a < b < k for a, b in pairs)
        assert _connected(k, pairs)
        degrees = [sum(i in pair for pair in pairs) for i in range(k)]
        assert max(degrees) - min(degrees) <= 2
    if k > 2:
        with pytest.raises(ValueError, match="cannot connect"):
            comparison_design(k, k - 2)


def _reference_triples(comparisons: list[tuple[int, int, float]]) -> int:
    """Every triple, tried in each of its six orders for a strict cycle."""
    beats = {}
    for a, b, p in comparisons:
        beats[(a, b)], beats[(b, a)] = p, 1 - p
    items = sorted({i for a, b, _ in comparisons for i in (a, b)})
    count = 0
    for triple in itertools.combinations(items, 3):
        cyclic = any(
            all(beats.get((x, y), 0.5) > 0.5 for x, y in ((o[0], o[1]), (o[1], o[2]), (o[2], o[0])))
            for o in itertools.permutations(triple)
        )
        count += cyclic
    return count


def test_intransitive_triples_match_reference() -> None:
    rng = random.Random(3)
    for trial in range(200):
        k = rng.randint(2, 6)
        comparisons = [(a, b, rng.choice([0.1, 0.5, 0.9, rng.random()])) for a, b in comparison_design(k, None)
                       if rng.random() < 0.9]
        comparisons = [(b, a, 1 - p) if rng.random() < 0.5 else (a, b, p) for a, b, p in comparisons]
        assert intransitive_triples(comparisons) == _reference_triples(comparisons), trial
