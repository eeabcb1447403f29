"""Where labeler keeps prepared models and caches: `$LABELER_HOME`, default `~/.cache/labeler`."""

from __future__ import annotations

import os
from pathlib import Path


def labeler_home() -> Path:
    return Path(os.environ.get("LABELER_HOME") or Path.home() / ".cache" / "labeler")
