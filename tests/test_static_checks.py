"""What the code says of itself holds: mypy finds no type error in `labeler/` (strict about untyped
functions and stale ignores, settings in pyproject.toml), and ruff finds nothing (settings in ruff.toml).
The `>>>` examples run as tests through pytest's --doctest-modules (pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_errors_in_the_package() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"],  # files and settings: [tool.mypy] in pyproject.toml
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout


def test_ruff_finds_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "labeler", "tests", "bench", "scripts"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
