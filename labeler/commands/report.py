"""`labeler report RUN`: statistics and plots of a run as a Markdown and a self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labeler.cli import app
from labeler.report.config import ReportConfig


def _help(field: str) -> str:
    return ReportConfig.model_fields[field].description or ""


@app.command("report")
def report(
    run: Annotated[Path, typer.Argument(metavar="RUN", help=_help("run"), show_default=False)],
    human_pairs: Annotated[
        Path | None, typer.Option("--human-pairs", metavar="FILE", help=_help("human_pairs"))
    ] = None,
    rm: Annotated[
        list[Path], typer.Option("--rm", metavar="DIR", help=_help("rm_dirs") + " Repeat for several models.")
    ] = [],  # noqa: B006 (typer reads the default, never mutates it)
    eval_judge: Annotated[
        Path | None, typer.Option("--eval-judge", metavar="FILE", help=_help("eval_judge"))
    ] = None,
) -> None:
    """Write RUN/report/ (index.md, a self-contained index.html, statistics.json, PNG plots) and print the
    path of index.html: label statistics (p_a, consistency, low mass, order flips, per-principle scores),
    SFT rounds and lengths, reward-model training curves and the judge's calibration against human labels,
    as far as the run and the files given have them; the page says which plots were skipped and why."""
    from labeler.report import write_report_from_config

    config = ReportConfig(run=run, human_pairs=human_pairs, rm_dirs=tuple(rm), eval_judge=eval_judge)
    print(write_report_from_config(config))
