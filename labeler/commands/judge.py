"""`labeler eval-judge` and `labeler report`: how far the judge can be trusted, and what a run holds."""

from __future__ import annotations

import typer

from labeler.commands.options import ConfigCommand, Opt, engine_options
from labeler.eval_judge import EvalJudgeConfig
from labeler.report.config import ReportConfig


def run_eval_judge(config: EvalJudgeConfig) -> None:
    """Judge human-labelled pairs in both orders; print agreement, position bias and calibration."""
    from rich.console import Console

    from labeler.eval_judge import eval_judge, report_tables

    report = eval_judge(config)
    Console().print(*report_tables(report))
    if config.out is not None:
        typer.echo(f"wrote the report to {config.out}")


def run_report(config: ReportConfig) -> None:
    """Write RUN/report/ (index.md, a self-contained index.html, statistics.json, PNG plots) and print the
    path of index.html: label statistics (p_a, consistency, low mass, order flips, per-principle scores),
    SFT rounds and lengths, reward-model training curves and the judge's calibration against human labels,
    as far as the run and the files given have them; the page says which plots were skipped and why."""
    from labeler.report import write_report_from_config

    print(write_report_from_config(config))


COMMANDS = (
    ConfigCommand(
        "eval-judge",
        EvalJudgeConfig,
        (
            Opt("pairs"),
            Opt("group_by"),
            Opt("constitution"),
            Opt("options.principles"),
            Opt("options.cot"),
            Opt("options.cot_max_tokens"),
            Opt("options.seed", "--seed"),
            Opt("templates"),
            Opt("batch_size"),
            Opt("out"),
            Opt("quiet"),
            *engine_options("judge", model_flag="--judge-model"),
        ),
        run_eval_judge,
    ),
    ConfigCommand(
        "report",
        ReportConfig,
        (
            Opt("run", argument=True, metavar="RUN"),
            Opt("human_pairs", metavar="FILE"),
            Opt("rm_dirs", "--rm", metavar="DIR", extra_help="Repeat for several models."),
            Opt("eval_judge", metavar="FILE"),
        ),
        run_report,
    ),
)
