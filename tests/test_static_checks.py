"""What the code says of itself holds: mypy finds no type error in `labeler/` (strict about untyped
functions and stale ignores, settings in pyproject.toml), ruff finds nothing (settings in ruff.toml), and
every import keeps the layering of `.importlinter`. The `>>>` examples run as tests through pytest's
--doctest-modules (pyproject.toml)."""

from __future__ import annotations

import os
import shutil
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


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the package under `root`, with `root`'s contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}  # the package of this checkout, not an installed one
    command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_every_import_keeps_the_layers_and_the_engine_boundary() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_an_import_up_a_layer_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(REPO / "labeler", tmp_path / "labeler", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path)
    errors = tmp_path / "labeler" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport labeler.cli.app  # noqa\nimport typer  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "labeler.core is not allowed to import labeler.cli" in result.stdout
    assert "labeler.core.errors -> typer" in result.stdout
