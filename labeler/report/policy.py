"""The policy evaluations of a run: `labeler eval-policy` reports found in it, one per iteration.

A run with `stages.iterations` holds `RUN/iter-<k>/eval-policy.json`; any run may hold an
`RUN/eval-policy.json`, and `labeler report --eval-policy FILE` adds others. Each becomes a row of the
report's "Policy evaluation" table (win rate with its interval, reward, KL, answer lengths) and a point
of its figure, in iteration order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from labeler.evaluate.policy_report import EVAL_POLICY_JSON, EvalPolicyReport, read_eval_policy

ITERATION_DIR = re.compile(r"^iter-(\d+)$")


@dataclass(frozen=True)
class Evaluation:
    """One eval-policy report and what to call it on the page."""

    name: str  # "run", "iteration 2", or the name of a file given
    file: Path
    report: EvalPolicyReport


def iteration_dirs(run_dir: Path) -> list[Path]:
    """RUN/iter-<k>/ folders in order of k."""
    found = [(int(m[1]), path) for path in Path(run_dir).iterdir() if path.is_dir()
             and (m := ITERATION_DIR.match(path.name))] if Path(run_dir).is_dir() else []
    return [path for _, path in sorted(found)]


def find_evaluations(run_dir: Path, files: Sequence[Path] = ()) -> list[Evaluation]:
    """The run's own evaluation, each iteration's, then `files` (each read once; `InputError` names a
    file that is not an eval-policy report)."""
    found: list[tuple[str, Path]] = []
    own = Path(run_dir) / EVAL_POLICY_JSON
    if own.is_file():
        found.append(("run", own))
    for folder in iteration_dirs(run_dir):
        if (folder / EVAL_POLICY_JSON).is_file():
            found.append((f"iteration {folder.name.removeprefix('iter-')}", folder / EVAL_POLICY_JSON))
    seen = {file.resolve() for _, file in found}
    given = [Path(file) for file in files if Path(file).resolve() not in seen]
    names = [file.name for file in given]
    if len(set(names)) < len(names):  # two files of the same name: tell them apart by path
        names = [str(file) for file in given]
    found += list(zip(names, given, strict=True))
    return [Evaluation(name, file, read_eval_policy(file)) for name, file in found]
