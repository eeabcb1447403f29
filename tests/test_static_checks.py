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


# Strings below the CLI that spell a flag on purpose: values written into files (export filter names, the
# inputs of a training config), whole command lines shown to a reader (a card, a report), and the one
# flag of a module run as a script. Every message names config fields (`core.errors.option`) instead.
SPELLED_FLAGS = {
    "engine/embedded.py": {"--no-deps"},  # a pip command
    "engine/pool.py": {"--api-key-env"},  # a server failure found while running, past the CLI's checks
    "pipeline/config_reference.py": {"--write"},
    "publish/export.py": {"--drop-flags", "--min-margin", "--min-consistency"},  # the filters' names in manifests
    "core/records.py": {"--prefer-human"},  # a flag's description, written into cards
    "store/card.py": {"--allow-partial", "--help", "--prefer-human"},
    "store/manifest.py": {"--min-margin", "--allow-partial", "--prefer-human"},
    "store/shards.py": {"--out"},
    "report/config.py": {"--out"},
    "report/sections.py": {"--rm", "--human-pairs", "--eval-judge", "--out", "--eval-policy"},
    "train/common/inputs.py": {"--data"},  # the key of OUT/training-config.json's inputs
    "train/ppo/rollout.py": {"--rollout-engine", "--rollout-weights"},
    "train/ppo/rewards.py": {"--reward-rule"},
    "train/ppo/config.py": {"--heads"},  # another command's: `train-rm --heads principles`
    "train/rm/train.py": {"--salmon"},  # another command's: `label --salmon`
    "evaluate/policy_run.py": {"--no-kl"},  # a reason written into eval-policy.json
}


def _strings_with_flags(path: Path) -> set[str]:
    """The flags spelled in `path`'s string constants, docstrings left out."""
    import ast
    import re

    flag = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        found
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
        for found in flag.findall(node.value)
    }


def test_below_the_cli_messages_name_config_fields_not_flags() -> None:
    package = REPO / "labeler"
    spelled = {}
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith("cli/"):
            continue
        extra = _strings_with_flags(path) - SPELLED_FLAGS.get(relative, set())
        if extra:
            spelled[relative] = sorted(extra)
    assert spelled == {}, f"flag names in library strings (name the config field with option()): {spelled}"
