"""`OUT/metrics.jsonl`: one JSON object per line, appended durably, cut back when a run resumes."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeler.core.layout import METRICS_FILE
from labeler.store.atomic import atomic_write_text


class MetricsLog:
    """The metrics file of one training run (a no-op where `enabled` is false, e.g. on worker processes)."""

    def __init__(self, out: Path, *, enabled: bool = True) -> None:
        self.path = out / METRICS_FILE
        self.enabled = enabled

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row and make it durable: a crash right after still has it."""
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def truncate_after(self, step: int) -> None:
        """Drop the rows of steps after `step` (a resumed run writes them again), atomically."""
        if not self.enabled or not self.path.is_file():
            return
        lines = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["step"] <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def rows(self) -> list[dict[str, Any]]:
        """Every row written so far."""
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class MetricWindow:
    """Sums of a pair trainer's per-step metrics since the last log line (saved in checkpoints, so resuming
    loses none)."""

    loss: float = 0.0
    accuracy: float = 0.0
    margin: float = 0.0
    steps: int = 0

    def add(self, *, loss: float, accuracy: float, margin: float) -> None:
        self.loss += loss
        self.accuracy += accuracy
        self.margin += margin
        self.steps += 1

    def averages(self) -> dict[str, float]:
        n = max(self.steps, 1)
        return {"loss": self.loss / n, "accuracy": self.accuracy / n, "margin": self.margin / n}
