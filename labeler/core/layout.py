"""The names of what labeler writes into its folders: plain paths, nothing loaded (no torch needed).

A run folder holds `manifest.json`, its locks and, while it runs in parts, `.parts/`. A trainer's folder
holds `training-config.json`, `metrics.jsonl` and `checkpoint-<step>/` folders; a checkpoint counts once
its `state.json` is there (it is written last).
"""

from __future__ import annotations

import re
from pathlib import Path

MANIFEST_NAME = "manifest.json"
MANIFEST_LOCK = ".manifest.lock"  # held while the manifest is read, changed and written
WRITER_LOCK = ".lock"  # held by the one process writing a run (labeler.store.lock)
# Where a run in parts (--data-parallel-size, --ray) keeps its parts: inputs of the merge into that run.
RUN_PARTS_FOLDER = ".parts"

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "state.json"
SAVED_CONFIG = "training-config.json"  # the config of the run an output folder holds
METRICS_FILE = "metrics.jsonl"  # one JSON object per logged step


def checkpoint_steps(out: Path) -> list[int]:
    """Steps of the finished checkpoints in `out`, oldest first.

    >>> checkpoint_steps(Path("/nonexistent"))
    []
    """
    if not out.is_dir():
        return []
    steps = []
    for child in out.iterdir():
        match = CHECKPOINT_PATTERN.match(child.name)
        if match and (child / STATE_FILE).is_file():
            steps.append(int(match.group(1)))
    return sorted(steps)


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / f"checkpoint-{step}"


def latest_checkpoint(out: Path) -> Path | None:
    """The newest finished checkpoint folder in `out`, or None."""
    steps = checkpoint_steps(out)
    return checkpoint_dir(out, steps[-1]) if steps else None


def holds_training_run(out: Path) -> bool:
    """Whether `out` holds a trainer's output: its saved config, a finished checkpoint or its metrics."""
    return (out / SAVED_CONFIG).is_file() or bool(checkpoint_steps(out)) or (out / METRICS_FILE).is_file()
