"""Reading a reward model's `metrics.jsonl` into training curves, tolerating a log still being written.

Each line is one JSON object with a `step`. Evaluation rows say `"split": "eval"` or name their
metrics with an `eval_` prefix; every other number is a training metric. A line that is not a JSON
object with a numeric step (a line cut short by a crash or by a trainer still writing) is left out
and counted, so the report can say how many it skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeler.core.errors import InputError
from labeler.core.input_files import iter_input_lines, parse_json

PLOTTED_METRICS = ("loss", "accuracy", "margin")
"""Metrics drawn as curves, in this order, when the log has them."""
_NOT_METRICS = frozenset({"step", "epoch", "split"})


@dataclass(frozen=True)
class Point:
    """One logged value of one metric."""

    split: str  # "train" or "eval"
    metric: str
    step: float
    value: float


@dataclass(frozen=True)
class TrainingLog:
    """The readable points of one `metrics.jsonl`, in file order."""

    name: str  # short label for legends: the reward-model folder's name
    file: Path
    points: tuple[Point, ...]
    skipped_lines: tuple[int, ...]  # 1-based numbers of lines that could not be read

    def curve(self, split: str, metric: str) -> tuple[list[float], list[float]]:
        """(steps, values) of one metric in one split, in file order."""
        chosen = [p for p in self.points if p.split == split and p.metric == metric]
        return [p.step for p in chosen], [p.value for p in chosen]

    def last(self, split: str, metric: str) -> float | None:
        """The last logged value of a metric, or None if it was never logged."""
        _, values = self.curve(split, metric)
        return values[-1] if values else None

    def metrics(self) -> set[str]:
        return {p.metric for p in self.points}

    def rows(self, split: str) -> int:
        """How many distinct steps logged anything in `split`."""
        return len({p.step for p in self.points if p.split == split})


def _number(value: Any) -> float | None:
    """A finite JSON number as a float; None for anything else (text, null, booleans, NaN, infinities)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def row_points(row: dict[str, Any]) -> list[Point]:
    """The points of one metrics row; empty if it has no numeric `step`.

    >>> [(p.split, p.metric, p.value) for p in row_points({"step": 10, "split": "eval", "loss": 0.6})]
    [('eval', 'loss', 0.6)]
    >>> [(p.split, p.metric, p.value) for p in row_points({"step": 20, "loss": 0.5, "eval_loss": 0.7, "x": None})]
    [('train', 'loss', 0.5), ('eval', 'loss', 0.7)]
    >>> row_points({"loss": 0.5})
    []
    """
    step = _number(row.get("step"))
    if step is None:
        return []
    row_split = row.get("split")
    points = []
    for key, raw in row.items():
        value = _number(raw)
        if key in _NOT_METRICS or value is None:
            continue
        if row_split == "eval" or key.startswith("eval_"):
            points.append(Point("eval", key.removeprefix("eval_"), step, value))
        else:
            points.append(Point("train", key, step, value))
    return points


def read_training_log(path: Path, name: str) -> TrainingLog:
    """Every readable point of a `metrics.jsonl`; unreadable lines are counted, not fatal."""
    points: list[Point] = []
    skipped: list[int] = []
    for number, raw in iter_input_lines(path):  # a regular file only: a device or FIFO is bad input
        if not raw.strip():
            continue
        try:
            row = parse_json(raw.decode("utf-8"), file=path, line=number)
        except (InputError, UnicodeDecodeError):
            skipped.append(number)
            continue
        found = row_points(row) if isinstance(row, dict) else []
        if not found:
            skipped.append(number)
        points += found
    return TrainingLog(name=name, file=path, points=tuple(points), skipped_lines=tuple(skipped))
