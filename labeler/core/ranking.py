"""Ranking K responses to one prompt from judged pairs: which pairs to judge, Bradley-Terry scores, cycles.

A comparison is `(a, b, p_a)`: responses `a` and `b` (indices into the prompt's responses) and the soft
label P(a is better than b). The scores are the Bradley-Terry model's: P(a beats b) = σ(s_a − s_b).

    pairs = comparison_design(4, None)                      # every unordered pair: [(0, 1), (0, 2), ...]
    fit = bradley_terry(4, [(a, b, judged[(a, b)]) for a, b in pairs])
    fit.scores, fit.errors
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PRIOR_SD = 3.0
"""Standard deviation of the Gaussian prior on each score (logits). Weak against a few judged pairs, yet it
keeps the scores of a prompt whose every comparison is unanimous (p_a = 1) finite."""

Comparison = tuple[int, int, float]


@dataclass(frozen=True)
class BradleyTerryFit:
    """Scores (mean zero, in logits) and their standard errors, one per response."""

    scores: tuple[float, ...]
    errors: tuple[float, ...]


def comparison_design(k: int, budget: int | None) -> list[tuple[int, int]]:
    """The unordered pairs `(a, b)`, `a < b`, to judge among `k` responses: every pair when `budget` is
    None; else `budget` pairs of a cyclic round robin: first the ring of neighbours (0-1, 1-2, ...,
    (k-1)-0), then the responses two apart, and so on, so that any budget of at least k − 1 gives a
    connected comparison graph and each response takes part in about as many pairs as any other. A budget
    above the number of pairs is every pair.

    >>> comparison_design(3, None)
    [(0, 1), (0, 2), (1, 2)]
    >>> comparison_design(4, 3), comparison_design(4, 4), comparison_design(4, 5)
    ([(0, 1), (1, 2), (2, 3)], [(0, 1), (1, 2), (2, 3), (0, 3)], [(0, 1), (1, 2), (2, 3), (0, 3), (0, 2)])
    """
    if k < 2:
        raise ValueError(f"need at least 2 responses, got {k}")
    every = [(a, b) for a in range(k) for b in range(a + 1, k)]
    if budget is None or budget >= len(every):
        return every
    if budget < k - 1:
        raise ValueError(f"{budget} comparisons cannot connect {k} responses: need at least {k - 1}")
    chosen: list[tuple[int, int]] = []
    for distance in range(1, k // 2 + 1):
        for start in range(k):
            pair = tuple(sorted((start, (start + distance) % k)))
            if pair not in chosen:
                chosen.append((pair[0], pair[1]))
    return chosen[:budget]


def bradley_terry(k: int, comparisons: Sequence[Comparison], prior_sd: float = PRIOR_SD) -> BradleyTerryFit:
    """The maximum a posteriori Bradley-Terry scores of `k` responses from soft-labelled comparisons, with
    an independent Gaussian prior N(0, prior_sd²) on each score, and standard errors from the curvature of
    the log posterior at its peak (the Laplace approximation).

    It maximises Σ p·log σ(s_a − s_b) + (1 − p)·log σ(s_b − s_a) − Σ s²/(2·prior_sd²) by Newton's method
    (the objective is strictly concave). A comparison (a, b, p) says the same as (b, a, 1 − p), so the
    fit does not depend on how each pair was oriented, nor on the order of the comparisons; the scores
    sum to zero (the likelihood sees only differences; the prior centres them).

    >>> fit = bradley_terry(2, [(0, 1, 1.0)])
    >>> [round(s, 3) for s in fit.scores], [round(e, 3) for e in fit.errors]
    ([1.026, -1.026], [2.469, 2.469])
    >>> bradley_terry(3, [(0, 1, 0.5), (1, 2, 0.5)]).scores
    (0.0, 0.0, 0.0)
    """
    for a, b, p in comparisons:
        if not (0 <= a < k and 0 <= b < k and a != b):
            raise ValueError(f"comparison ({a}, {b}) does not name two of the {k} responses")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p_a must be in [0, 1], got {p}")
    precision = 1.0 / prior_sd**2
    scores = [0.0] * k
    for _ in range(100):
        gradient, hessian = _derivatives(k, comparisons, scores, precision)
        step = _solve(hessian, gradient)
        # Newton's step, halved until the posterior does not fall (a full step can overshoot far from the peak).
        current, size = _log_posterior(comparisons, scores, precision), 1.0
        while size > 1e-6:
            trial = [s + size * d for s, d in zip(scores, step)]
            if _log_posterior(comparisons, trial, precision) >= current:
                break
            size /= 2
        scores = trial
        if max(abs(d) for d in step) * size < 1e-12:
            break
    _, hessian = _derivatives(k, comparisons, scores, precision)
    covariance = _inverse(hessian)
    return BradleyTerryFit(tuple(scores), tuple(math.sqrt(covariance[i][i]) for i in range(k)))


def _log_posterior(comparisons: Sequence[Comparison], scores: Sequence[float], precision: float) -> float:
    total = -0.5 * precision * sum(s * s for s in scores)
    for a, b, p in comparisons:
        d = scores[a] - scores[b]
        total -= p * _softplus(-d) + (1.0 - p) * _softplus(d)  # log σ(x) = −softplus(−x)
    return total


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _derivatives(
    k: int, comparisons: Sequence[Comparison], scores: Sequence[float], precision: float
) -> tuple[list[float], list[list[float]]]:
    """The gradient of the log posterior, and its negated Hessian (positive definite)."""
    gradient = [-precision * s for s in scores]
    hessian = [[precision if i == j else 0.0 for j in range(k)] for i in range(k)]
    for a, b, p in comparisons:
        won = _sigmoid(scores[a] - scores[b])
        gradient[a] += p - won
        gradient[b] -= p - won
        weight = won * (1.0 - won)
        hessian[a][a] += weight
        hessian[b][b] += weight
        hessian[a][b] -= weight
        hessian[b][a] -= weight
    return gradient, hessian


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _solve(matrix: Sequence[Sequence[float]], vector: Sequence[float]) -> list[float]:
    """x with matrix · x = vector, by Gaussian elimination with partial pivoting (matrix: positive definite)."""
    n = len(vector)
    rows = [[*matrix[i], vector[i]] for i in range(n)]
    for column in range(n):
        pivot = max(range(column, n), key=lambda r: abs(rows[r][column]))
        rows[column], rows[pivot] = rows[pivot], rows[column]
        for r in range(n):
            if r != column:
                factor = rows[r][column] / rows[column][column]
                rows[r] = [x - factor * y for x, y in zip(rows[r], rows[column])]
    return [rows[i][n] / rows[i][i] for i in range(n)]


def _inverse(matrix: Sequence[Sequence[float]]) -> list[list[float]]:
    n = len(matrix)
    columns = [_solve(matrix, [1.0 if i == j else 0.0 for i in range(n)]) for j in range(n)]
    return [[columns[j][i] for j in range(n)] for i in range(n)]


def intransitive_triples(comparisons: Sequence[Comparison]) -> int:
    """How many triples of responses the judged pairs order in a cycle (a beats b, b beats c, c beats a).

    A pair's direction is its mean p_a over its comparisons (either orientation); a pair at exactly 0.5,
    or not judged, orders nothing, so a triple needs all three of its pairs judged and decided.

    >>> intransitive_triples([(0, 1, 0.9), (1, 2, 0.8), (2, 0, 0.7)])
    1
    >>> intransitive_triples([(0, 1, 0.9), (1, 2, 0.8), (0, 2, 0.7)])
    0
    """
    sums: dict[tuple[int, int], list[float]] = {}
    for a, b, p in comparisons:
        key, p_low = ((a, b), p) if a < b else ((b, a), 1.0 - p)
        sums.setdefault(key, []).append(p_low)
    beats: set[tuple[int, int]] = set()
    for (a, b), ps in sums.items():
        mean = sum(ps) / len(ps)
        if mean > 0.5:
            beats.add((a, b))
        elif mean < 0.5:
            beats.add((b, a))
    items = sorted({i for pair in sums for i in pair})
    count = 0
    for x_index, x in enumerate(items):
        for y_index in range(x_index + 1, len(items)):
            y = items[y_index]
            for z in items[y_index + 1 :]:
                forward = (x, y) in beats and (y, z) in beats and (z, x) in beats
                backward = (y, x) in beats and (z, y) in beats and (x, z) in beats
                count += forward or backward
    return count
