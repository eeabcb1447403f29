"""Agreement of a judge with human choices: agreement, reliability table, expected calibration error.

One definition, used by `labeler eval-judge` and by `labeler report`. Per pair, `p_a` is the judge's
probability that response A is better and `human_a` says whether the human preferred A. The judge's
confidence in its own side is max(p_a, 1 − p_a) ∈ [0.5, 1]; ten equal bins on [0.5, 1] give the
reliability table (count, mean confidence, accuracy per bin) and its expected calibration error. A
pair with p_a exactly 0.5 agrees with the human half the time (`labeler.evaluate.stats.tie_credit`).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from labeler.evaluate.stats import tie_credit

CALIBRATION_BINS = 10


def agreement_credit(p_a: np.ndarray, human_a: np.ndarray) -> np.ndarray:
    """Per pair: 1 when p_a favours the human's response, 0 when the other one, 0.5 for a coin flip.

    >>> agreement_credit(np.array([0.9, 0.2, 0.5]), np.array([True, True, False])).tolist()
    [1.0, 0.0, 0.5]
    """
    favours_a = tie_credit(p_a)
    return np.where(human_a, favours_a, 1.0 - favours_a)

def agreement(p_a: np.ndarray, human_a: np.ndarray) -> float:
    """Share of pairs where the judge's side is the human's side.

    >>> agreement(np.array([0.9, 0.2, 0.6, 0.4]), np.array([True, True, False, False]))
    0.5
    """
    return float(agreement_credit(p_a, human_a).mean())

def confidence(p_a: np.ndarray) -> np.ndarray:
    """The judge's confidence in its own side: max(p_a, 1 − p_a), in [0.5, 1].

    >>> confidence(np.array([0.2, 0.7])).tolist()
    [0.8, 0.7]
    """
    return np.maximum(p_a, 1.0 - p_a)

def calibration_bin(conf: np.ndarray, bins: int = CALIBRATION_BINS) -> np.ndarray:
    """Bin index of each confidence: bin i covers [0.5 + i·w, 0.5 + (i+1)·w) with w = 0.5 / bins;
    the last bin also holds 1.0.

    >>> calibration_bin(np.array([0.5, 0.56, 0.97, 1.0])).tolist()
    [0, 1, 9, 9]
    """
    index = np.floor((conf - 0.5) * 2 * bins).astype(int)
    return np.clip(index, 0, bins - 1)

class ReliabilityBin(BaseModel):
    """One row of a reliability table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low: float = Field(description="Lowest confidence in the bin (inclusive).")
    high: float = Field(description="Highest confidence in the bin (exclusive, except 1.0).")
    count: int = Field(description="Pairs whose confidence falls in the bin.")
    mean_confidence: float | None = Field(description="Mean confidence of those pairs (None when empty).")
    accuracy: float | None = Field(description="Share of those pairs the judge got right (None when empty).")

def reliability_table(p_a: np.ndarray, human_a: np.ndarray, bins: int = CALIBRATION_BINS) -> list[ReliabilityBin]:
    """Count, mean confidence and accuracy per confidence bin (empty bins included).

    >>> rows = reliability_table(np.array([0.9, 0.1, 0.52]), np.array([True, True, True]))
    >>> [(r.count, r.accuracy) for r in rows if r.count]
    [(1, 1.0), (2, 0.5)]
    """
    conf = confidence(p_a)
    credit = agreement_credit(p_a, human_a)
    index = calibration_bin(conf, bins)
    counts = np.bincount(index, minlength=bins)
    conf_sums = np.bincount(index, weights=conf, minlength=bins)
    credit_sums = np.bincount(index, weights=credit, minlength=bins)
    width = 0.5 / bins
    table = []
    for i in range(bins):
        n = int(counts[i])
        table.append(
            ReliabilityBin(
                low=0.5 + i * width,
                high=0.5 + (i + 1) * width,
                count=n,
                mean_confidence=float(conf_sums[i] / n) if n else None,
                accuracy=float(credit_sums[i] / n) if n else None,
            )
        )
    return table

def expected_calibration_error(p_a: np.ndarray, human_a: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE: over the confidence bins, |accuracy − mean confidence| weighted by the bin's share of pairs.

    >>> round(expected_calibration_error(np.array([0.9, 0.1]), np.array([True, False])), 6)
    0.1
    """
    n = len(p_a)
    return float(
        sum(row.count / n * abs(row.accuracy - row.mean_confidence)
            for row in reliability_table(p_a, human_a, bins)
            if row.accuracy is not None and row.mean_confidence is not None)
    )
