"""An installed labeler (a wheel, or the sdist built and installed into a fresh environment, not the
source tree) carries its prompt templates, constitutions and license, and declares what it imports."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from labeler.core.shipped import shipped_folder
from labeler.inputs.templates import VARIABLES

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
    assert "labeler/pipeline/starter.yaml" in names  # what `labeler init` writes
    pages = {f"labeler/review/{p.relative_to(REPO / 'labeler' / 'review')}" for folder in ("templates", "static")
             for p in (REPO / "labeler" / "review" / folder).iterdir()}  # fmt: skip
    assert len(pages) >= 8 and pages <= names  # what `labeler review` serves

    # Unpacked somewhere else, the package finds the copies, not a repository.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    found = subprocess.run(
        [sys.executable, "-c", "from labeler.inputs.templates import DEFAULT_FOLDER; print(DEFAULT_FOLDER)"],
        cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-3000:]
    assert Path(found.stdout.strip()) == site / "labeler" / "_shipped" / "prompts"


# Imported only where the optional feature runs, each behind an actionable error: declared as extras.
EXTRAS = {"vllm": {"cpu", "gpu"}, "ray": {"ray"}}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_package_labeler_imports_is_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    extras = {name: {_requirement_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    imported: set[str] = set()
    for path in (REPO / "labeler").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = sorted(imported - set(sys.stdlib_module_names) - {"labeler", "__future__"})
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module in third_party:
        if module in EXTRAS:
            assert all(module in extras[extra] or f"{module}-cpu" in extras[extra] for extra in EXTRAS[module])
            continue
        names = {_requirement_name(d) for d in distributions.get(module, [module])}
        if not names & declared:
            missing.append(f"{module} (from {', '.join(sorted(names))})")
    assert not missing, f"imported but not in [project] dependencies: {missing}"
    assert "psutil" in declared and "huggingface-hub" in declared


def test_the_gpu_extra_pins_the_vllm_releases_with_exact_choice_logprobs() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["gpu"] == ["vllm>=0.20.0,<0.33"]  # SamplingParams.logprob_token_ids came with 0.20.0


@pytest.mark.slow
def test_the_sdist_installs_into_a_fresh_environment_with_templates_and_constitutions(tmp_path: Path) -> None:
    """`python -m build --sdist`, then `pip install dist/labeler-*.tar.gz` into a new venv: the sdist holds the
    top-level prompts/ and constitutions/ and the LICENSE, and the installed package finds its copies.
    The new venv borrows this environment's packages through a .pth file (nothing is downloaded) and
    gets labeler itself only from the sdist."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(REPO / name, source / name)
    for name in ("labeler", "prompts", "constitutions"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "_shipped"))
    build = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    built = subprocess.run([sys.executable, "-c", build, str(tmp_path / "dist")], cwd=source, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (sdist,) = (tmp_path / "dist").glob("labeler-*.tar.gz")
    names = {name.split("/", 1)[1] for name in tarfile.open(sdist).getnames() if "/" in name}
    templates = {f"prompts/{p.name}" for p in (REPO / "prompts").glob("*.jinja")}
    constitutions = {f"constitutions/{p.name}" for p in (REPO / "constitutions").iterdir()}
    assert templates and templates | constitutions | {"LICENSE", "MANIFEST.in"} <= names, sorted(names)

    env = tmp_path / "env"
    clean = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.run([str(env / "bin/python"), "-c", purelib], capture_output=True, text=True, check=True,
                               env=clean).stdout.strip())  # fmt: skip
    (site / "_borrowed.pth").write_text(sysconfig.get_path("purelib") + "\n")
    installed = subprocess.run(
        [str(env / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         str(sdist)], capture_output=True, text=True, timeout=300, env=clean,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-3000:]

    check = (
        "import labeler, labeler.core.shipped as s\n"
        "from labeler.inputs.constitution import load_constitution\n"
        "from labeler.inputs.templates import Templates\n"
        "Templates.load()\n"
        "print(labeler.__file__)\n"
        "print(s.shipped_folder('prompts'))\n"
        "print(load_constitution(s.shipped_folder('constitutions') / 'harmless.yaml').license)\n"
    )
    ran = subprocess.run([str(env / "bin/python"), "-c", check], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env=clean)  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    package, prompts, license_ = ran.stdout.split()
    assert Path(package).parent == site / "labeler"  # the installed copy, not the repository
    assert Path(prompts) == site / "labeler" / "_shipped" / "prompts"
    assert license_ == "apache-2.0"
    shipped = site / "labeler" / "_shipped" / "constitutions" / "harmless.yaml"
    validated = subprocess.run([str(env / "bin/labeler"), "validate", str(shipped)], capture_output=True, text=True,
                               timeout=120, env=clean)  # fmt: skip
    assert validated.returncode == 0, validated.stderr[-2000:]
    assert any(p.name == "LICENSE" for p in site.glob("labeler-*.dist-info/**/*"))
