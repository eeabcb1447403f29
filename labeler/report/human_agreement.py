"""The judge against human choices in a report: matching human-labelled pairs, reading eval-judge results.

Every measure here starts from `p_chosen`: per human-labelled pair, the judge's probability that the
response the human preferred is the better one. The calibration itself (confidence bins on [0.5, 1],
ECE) is `labeler.evaluate.human_agreement`'s, the same as `labeler eval-judge` reports.

Two sources give `p_chosen`:
- a human-labelled file (JSONL, Parquet or Arrow rows with `prompt`, `chosen`, `rejected`, read by
  `labeler.inputs.human_pairs` as `eval-judge` reads it): rows of the run's preference split whose
  (prompt, response_a, response_b) equal (prompt, chosen, rejected) in either order; `p_chosen` is
  `p_a` or `1 - p_a`;
- an `eval-judge` JSON: an object whose `pairs` list holds one object per pair with `p_chosen`; its
  numbers (those of nested objects as `outer.inner`) are shown as a summary. Entries without
  `p_chosen` are left out, so a file of another layout still gives its summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from labeler.core.errors import InputError
from labeler.core.input_files import MAX_REPORT_BYTES, read_json
from labeler.core.records import prompt_text
from labeler.evaluate.human_agreement import ReliabilityBin, agreement, expected_calibration_error, reliability_table
from labeler.inputs.human_pairs import read_human_labelled_pairs


@dataclass(frozen=True)
class Calibration:
    """Agreement and calibration of the judge against one set of human choices."""

    source: str  # what the human choices came from, for titles
    p_chosen: np.ndarray  # (N,) the judge's probability for the human's choice
    agreement: float  # fraction of pairs where the judge favours the human's choice (ties count half)
    mean_p_chosen: float
    brier: float  # mean squared error of the judge's probability against the human's choice
    ece: float  # expected calibration error (labeler.evaluate.human_agreement)
    bins: list[ReliabilityBin]

    @property
    def pairs(self) -> int:
        return len(self.p_chosen)


def calibration(p_chosen: np.ndarray, source: str) -> Calibration:
    """Agreement, Brier score, ECE and reliability bins of `p_chosen` (needs at least one pair).

    >>> c = calibration(np.array([0.8, 0.5, 0.3]), "test")
    >>> c.agreement, round(c.brier, 4)
    (0.5, 0.26)
    """
    if len(p_chosen) == 0:
        raise ValueError("calibration needs at least one pair")
    p_chosen = np.asarray(p_chosen, dtype=np.float64)
    human = np.ones(len(p_chosen), dtype=bool)  # seen from the human's side, the chosen response is "A"
    return Calibration(
        source=source,
        p_chosen=p_chosen,
        agreement=agreement(p_chosen, human),
        mean_p_chosen=float(p_chosen.mean()),
        brier=float(np.mean((1.0 - p_chosen) ** 2)),
        ece=expected_calibration_error(p_chosen, human),
        bins=reliability_table(p_chosen, human),
    )


# --- human-labelled pairs ---------------------------------------------------------------------


@dataclass(frozen=True)
class HumanMatch:
    """Human-labelled pairs found in the preference split."""

    file: Path
    file_pairs: int  # rows in the human-labelled file
    p_chosen: np.ndarray  # (matched,) one entry per matched file row


def match_human_pairs(preferences: pa.Table, path: Path) -> HumanMatch:
    """The judge's probability for the human's choice, for each file row that is a pair of the split.

    A row matches a preference row when the prompt texts (the last user turns) are equal and
    (chosen, rejected) equals (response_a, response_b) in either order.
    """
    p_a_by_pair: dict[tuple[str, str, str], float] = {}
    columns = preferences.select(["prompt_text", "response_a", "response_b", "p_a"]).to_pydict()
    for prompt, response_a, response_b, p_a in zip(
        columns["prompt_text"], columns["response_a"], columns["response_b"], columns["p_a"], strict=True
    ):
        p_a_by_pair[(prompt, response_a, response_b)] = p_a
    rows = read_human_labelled_pairs(path)
    p_chosen: list[float] = []
    for row in rows:
        prompt, chosen, rejected = prompt_text(row.prompt), row.chosen, row.rejected
        if (prompt, chosen, rejected) in p_a_by_pair:
            p_chosen.append(p_a_by_pair[(prompt, chosen, rejected)])
        elif (prompt, rejected, chosen) in p_a_by_pair:
            p_chosen.append(1.0 - p_a_by_pair[(prompt, rejected, chosen)])
    return HumanMatch(file=path, file_pairs=len(rows), p_chosen=np.array(p_chosen, dtype=np.float64))


# --- eval-judge results -----------------------------------------------------------------------


@dataclass(frozen=True)
class EvalJudgeResult:
    """What the report uses of an `eval-judge` JSON."""

    file: Path
    summary: tuple[tuple[str, int | float], ...]  # numbers, flattened as ("outer.inner", value)
    p_chosen: np.ndarray  # (pairs,) empty when the file lists no pairs


def scalar_summary(data: dict[str, Any], prefix: str = "") -> list[tuple[str, int | float]]:
    """The numbers of a JSON object, nested objects flattened with dots; lists and text are left out.

    >>> scalar_summary({"agreement": 0.7, "n": 10, "by": {"x": 1.5}, "pairs": [1], "model": "m", "ok": True})
    [('agreement', 0.7), ('n', 10), ('by.x', 1.5)]
    """
    numbers: list[tuple[str, int | float]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            numbers += scalar_summary(value, prefix=f"{name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers.append((name, value))
    return numbers


def read_eval_judge(path: Path) -> EvalJudgeResult:
    """An `eval-judge` JSON; `InputError` naming the file and the entry when it is malformed."""
    data = read_json(path, what="an eval-judge report", limit=MAX_REPORT_BYTES, invalid="not valid JSON")
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object, got {type(data).__name__}", file=path)
    # Only entries that carry `p_chosen` are used: a file with another layout (say, `pairs` as a count)
    # gives a summary without a reliability diagram. A `p_chosen` that is not a probability is an error.
    pairs = data.get("pairs")
    p_chosen = []
    for index, pair in enumerate(pairs if isinstance(pairs, list) else []):
        if not isinstance(pair, dict) or "p_chosen" not in pair:
            continue
        value = pair["p_chosen"]
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
            raise InputError(
                f"`p_chosen` must be a probability in [0, 1], got {value!r}", file=path, where=f"pairs[{index}]"
            )
        p_chosen.append(float(value))
    return EvalJudgeResult(
        file=path, summary=tuple(scalar_summary(data)), p_chosen=np.array(p_chosen, dtype=np.float64)
    )
