"""`write_report`: the statistics and plots of a run, as `RUN/report/index.md` and `index.html`.

```
RUN/report/
  index.md, index.html     # the same page twice; the HTML is self-contained (inline style, local images)
  statistics.json          # every number on the page, for scripts
  *.png                    # the figures (the page lists them, and says which were skipped and why)
  eval_judge.json          # kept from the previous report, or copied from the file given
```

A run with `stages.iterations` keeps its labels in `RUN/iter-<k>/`: its report shows the labels of the
latest iteration, every iteration's reward-model curves, and every iteration's policy evaluation.

The report is built in a temporary folder next to the old one and renamed into place only when
every file is written, so a crash never leaves half a report; a lock keeps two writers apart.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labeler.core.errors import InputError
from labeler.core.layout import METRICS_FILE, SAVED_CONFIG
from labeler.core.outputs import check_output_folder
from labeler.report.collect import RunData, collect_run
from labeler.report.config import ReportConfig
from labeler.report.human_agreement import match_human_pairs, read_eval_judge
from labeler.report.metrics import TrainingLog, read_training_log
from labeler.report.page import Page, render_html, render_markdown
from labeler.report.policy import find_evaluations, iteration_dirs
from labeler.report.sections import (
    EVAL_JUDGE_JSON,
    REPORT_DIR,
    RUN_RM_DIR,
    CalibrationSource,
    Figures,
    calibration_section,
    calibrations,
    figures_section,
    policy_section,
    preference_section,
    principle_section,
    ranking_section,
    rm_section,
    run_section,
    sft_section,
)
from labeler.store.atomic import TEMP_SUFFIX, atomic_write_bytes, atomic_write_text, exclusive_lock, fsync_dir
from labeler.store.card import P_A_BINS, statistics_dict
from labeler.store.manifest import manifest_path

INDEX_MD = "index.md"
INDEX_HTML = "index.html"
STATISTICS_JSON = "statistics.json"
LOCK_NAME = ".report.lock"


def write_report(
    run_dir: Path,
    *,
    human_pairs: Path | None = None,
    rm_dirs: Sequence[Path] = (),
    judge: Path | None = None,
    eval_policy: Sequence[Path] = (),
) -> Path:
    """Write `run_dir/report/` (see the module doc) and return the path of its `index.html`.

    `judge` is an eval-judge JSON; without it, `run_dir/report/eval_judge.json` is used when present.
    `eval_policy`: eval-policy JSON files shown with the run's own (see `labeler.report.policy`).
    `InputError` when `run_dir` is not a run, has no split, or a file given cannot be read.
    """
    run_dir = Path(run_dir)
    iterations = [folder for folder in iteration_dirs(run_dir) if manifest_path(folder).is_file()]
    # An iterated run without a dataset of its own (no revise stage): the latest iteration's labels.
    data_dir = iterations[-1] if iterations and not manifest_path(run_dir).is_file() else run_dir
    run = collect_run(data_dir)
    evaluations = find_evaluations(run_dir, eval_policy)
    check_output_folder(run_dir / REPORT_DIR, where="RUN")  # before any work: a read-only run is refused
    _check_rm_dirs(rm_dirs)
    given = {Path(path).resolve() for path in rm_dirs}
    rm_dirs = [*rm_dirs, *(folder / RUN_RM_DIR for folder in iterations
                           if (folder / RUN_RM_DIR).is_dir() and (folder / RUN_RM_DIR).resolve() not in given)]
    logs, missing_logs = _training_logs(run_dir, rm_dirs)
    judge_file = Path(judge) if judge is not None else run_dir / REPORT_DIR / EVAL_JUDGE_JSON
    eval_judge = read_eval_judge(judge_file) if judge is not None or judge_file.is_file() else None
    human = None
    if human_pairs is not None and not Path(human_pairs).is_file():
        raise InputError("file not found", file=human_pairs, field="human_pairs")
    if human_pairs is not None and run.preferences is not None:
        human = match_human_pairs(run.tables["preferences"], Path(human_pairs))
    sources = calibrations(human, eval_judge)

    with exclusive_lock(run_dir / LOCK_NAME):
        _remove_leftovers(run_dir)
        temp = run_dir / f".{REPORT_DIR}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"
        temp.mkdir()
        try:
            figures = Figures(temp)
            page = Page(
                title=f"Report: {run_dir.resolve().name}",
                sections=(
                    run_section(run, iterations),
                    policy_section(evaluations, figures),
                    preference_section(run.preferences, figures),
                    principle_section(run.preferences, figures),
                    *((ranking_section(run.rankings),) if run.rankings is not None else ()),
                    sft_section(run.sft, figures),
                    rm_section(logs, missing_logs, figures),
                    calibration_section(human_pairs, human, eval_judge, sources, figures),
                ),
            )
            page = Page(page.title, (*page.sections, figures_section(page, figures)))
            if eval_judge is not None:
                atomic_write_bytes(temp / EVAL_JUDGE_JSON, eval_judge.file.read_bytes())
            statistics = _statistics(run, logs, sources, page, figures)
            statistics["policy_evaluations"] = [
                {"name": e.name, "file": str(e.file), **e.report.model_dump(exclude={"prompts", "settings"})}
                for e in evaluations
            ]
            atomic_write_text(temp / STATISTICS_JSON, json.dumps(statistics, indent=2, allow_nan=False) + "\n")
            atomic_write_text(temp / INDEX_MD, render_markdown(page))
            atomic_write_text(temp / INDEX_HTML, render_html(page))
            _replace_folder(temp, run_dir / REPORT_DIR)
        finally:
            if temp.exists():
                shutil.rmtree(temp)
    return run_dir / REPORT_DIR / INDEX_HTML


def write_report_from_config(config: ReportConfig) -> Path:
    """`write_report` with the options of a `ReportConfig`."""
    return write_report(
        config.run, human_pairs=config.human_pairs, rm_dirs=config.rm_dirs, judge=config.eval_judge,
        eval_policy=config.eval_policy,
    )


# --- files ------------------------------------------------------------------------------------


def _remove_leftovers(run_dir: Path) -> None:
    """Folders a crashed writer left behind (safe: the caller holds the report lock)."""
    for leftover in [*run_dir.glob(f".{REPORT_DIR}.*{TEMP_SUFFIX}"), *run_dir.glob(f".{REPORT_DIR}.*.old")]:
        shutil.rmtree(leftover)


def _replace_folder(new: Path, target: Path) -> None:
    """Put the finished folder `new` at `target`: the old report is renamed aside, then deleted.

    A directory cannot be renamed over a non-empty one, so there are two renames; between them there
    is briefly no report, never a partial one.
    """
    old = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.old")
    had_old = target.exists() or target.is_symlink()
    if had_old:
        os.replace(target, old)
    os.replace(new, target)
    fsync_dir(target.parent)
    if had_old:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()


def _check_rm_dirs(rm_dirs: Sequence[Path]) -> None:
    """`InputError` for a folder given as a reward model that holds none of what `labeler train-rm` writes
    (a training log, its saved config, or a model): an empty or unrelated folder is a mistake, not a
    reward model whose log is yet to come."""
    for path in map(Path, rm_dirs):
        if not path.exists():
            raise InputError("no such reward-model folder or metrics file", file=path, field="rm_dirs")
        if path.is_dir() and not any((path / name).is_file() for name in (METRICS_FILE, SAVED_CONFIG, "config.json")):
            raise InputError(
                f"not a reward-model output folder: no {METRICS_FILE}, {SAVED_CONFIG} or config.json", file=path,
                field="rm_dirs",
            )


def _training_logs(run_dir: Path, rm_dirs: Sequence[Path]) -> tuple[list[TrainingLog], list[Path]]:
    """Readable logs of the reward models given (and RUN/rm), and the folders that have no log yet."""
    for path in map(Path, rm_dirs):
        if not path.exists():
            raise InputError("no such reward-model folder or metrics file", file=path, field="rm_dirs")
    files = [path if path.is_file() else path / METRICS_FILE for path in map(Path, rm_dirs)]
    default = run_dir / RUN_RM_DIR / METRICS_FILE
    if default.is_file() and default.resolve() not in {file.resolve() for file in files}:
        files.append(default)
    names = [file.parent.name or str(file.parent) for file in files]
    if len(set(names)) < len(names):  # two folders of the same name (each iteration's rm/): add their parent
        names = [f"{file.parent.parent.name}/{file.parent.name}" for file in files]
    if len(set(names)) < len(names):  # still the same: tell them apart by path
        names = [str(file.parent) for file in files]
    logs = [read_training_log(file, name) for file, name in zip(files, names, strict=True) if file.is_file()]
    missing = [file for file in files if not file.is_file()]
    return logs, missing


# --- statistics.json --------------------------------------------------------------------------


def _statistics(
    run: RunData,
    logs: list[TrainingLog],
    sources: list[CalibrationSource],
    page: Page,
    figures: Figures,
) -> dict[str, Any]:
    """Every number on the page as JSON."""
    result: dict[str, Any] = {"run": str(run.run_dir.resolve())}
    if run.preferences is not None:
        data = run.preferences
        principles = {
            p.principle_id: {"pairs": len(p.scores), "mean": p.mean, "std": p.std, "favours_a_rate": p.favours_a_rate}
            for p in data.principles
        }
        result["preferences"] = {
            **statistics_dict(data.stats),
            "p_a_bins": P_A_BINS,
            "mean_p_a": data.mean_p_a,
            "first_shown_rate": data.first_shown_rate,
            "principles": principles,
        }
    if run.rankings is not None:
        result["rankings"] = dataclasses.asdict(run.rankings)
    if run.sft is not None:
        result["sft"] = {**statistics_dict(run.sft.stats), "principle_usage": dict(run.sft.principle_usage)}
    result["reward_models"] = {
        log.name: {
            "file": str(log.file),
            "unreadable_lines": len(log.skipped_lines),
            "last": {split: _last_values(log, split) for split in ("train", "eval")},
        }
        for log in logs
    }
    result["calibration"] = {
        source.key: {
            "file": str(source.file),
            "pairs": source.result.pairs,
            "agreement": source.result.agreement,
            "mean_p_chosen": source.result.mean_p_chosen,
            "brier": source.result.brier,
            "ece": source.result.ece,
        }
        for source in sources
    }
    result["figures"] = [image.file for image in page.images()]
    result["skipped"] = [{"plot": plot, "reason": reason} for plot, reason in figures.skipped]
    return result


def _last_values(log: TrainingLog, split: str) -> dict[str, float]:
    last = {metric: log.last(split, metric) for metric in sorted(log.metrics())}
    return {metric: value for metric, value in last.items() if value is not None}
