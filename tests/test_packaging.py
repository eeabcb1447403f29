"""An installed labeler (a wheel, not the source tree) carries its prompt templates and constitutions."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from labeler.shipped import shipped_folder
from labeler.templates import VARIABLES

REPO = Path(__file__).resolve().parent.parent


def test_the_source_tree_uses_its_own_folders(tmp_path: Path) -> None:
    assert shipped_folder("prompts") == REPO / "prompts"
    package = tmp_path / "site" / "labeler"
    (package / "_shipped" / "prompts").mkdir(parents=True)
    assert shipped_folder("prompts", package) == package / "_shipped" / "prompts"
    assert shipped_folder("constitutions", package) == tmp_path / "site" / "constitutions"


@pytest.mark.slow
def test_the_wheel_ships_every_template_and_constitution(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("labeler", "prompts", "constitutions"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "_shipped"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=source, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("labeler-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"labeler/_shipped/prompts/{name}.jinja" for name in VARIABLES}
    constitutions = {f"labeler/_shipped/constitutions/{p.name}" for p in (REPO / "constitutions").iterdir()}
    assert templates <= names and constitutions <= names, sorted(names)[:40]

    # Unpacked somewhere else, the package finds the copies, not a repository.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    found = subprocess.run(
        [sys.executable, "-c", "from labeler.templates import DEFAULT_FOLDER; print(DEFAULT_FOLDER)"],
        cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-3000:]
    assert Path(found.stdout.strip()) == site / "labeler" / "_shipped" / "prompts"
