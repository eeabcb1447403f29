"""Where a trainer's checkpoints are in its output folder: plain paths, nothing loaded (no torch needed).

`OUT/checkpoint-<step>/` counts as a checkpoint once its `state.json` is there (it is written last).
"""

from __future__ import annotations

import re
from pathlib import Path

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "state.json"
SAVED_CONFIG = "training-config.json"  # the config of the run an output folder holds


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
