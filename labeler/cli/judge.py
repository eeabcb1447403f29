"""`labeler eval-judge`, `labeler eval-policy` and `labeler report`: how far the judge can be trusted, whether a
policy beats another, and what a run holds."""

from __future__ import annotations

import typer

from labeler.cli.options import ConfigCommand, Opt, engine_options, output_file
from labeler.evaluate.judge_run import EvalJudgeConfig
from labeler.evaluate.policy_run import EvalPolicyConfig
from labeler.report.config import ReportConfig


def run_eval_judge(config: EvalJudgeConfig) -> None:
    """Judge human-labelled pairs in both orders; print agreement, position bias and calibration. With
    --compare, judge them under each configuration and print agreement, the paired difference to the first,
    position consistency, ECE and cost side by side. With --human RUN (or --pairs RUN/human), measure the
    run's own judge on the pairs people labelled with `labeler review`, and their inter-annotator agreement."""
    from rich.console import Console

    from labeler.evaluate.judge_report import CompareReport, compare_table, report_tables
    from labeler.evaluate.judge_run import eval_judge, human_run_of

    run = human_run_of(config)
    if run is not None:
        from labeler.evaluate.human_run import human_run_report, human_run_tables
        from labeler.store.atomic import atomic_write_text

        measured = human_run_report(run)
        Console().print(*human_run_tables(measured))
        if config.out is not None:
            config.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(config.out, measured.model_dump_json(indent=2) + "\n")
            typer.echo(f"wrote the report to {config.out}")
        return
    report = eval_judge(config)
    if isinstance(report, CompareReport):
        Console().print(compare_table(report))
    else:
        Console().print(*report_tables(report))
    if config.out is not None:
        typer.echo(f"wrote the report to {config.out}")


def run_eval_policy(config: EvalPolicyConfig) -> None:
    """Sample a candidate and a baseline policy on held-out prompts, judge every pair in both orders, and
    print the candidate's win rate with its 95% interval (overall, per principle, per group), the answer
    lengths of both, their mean reward (with --reward-model) and the KL of the candidate to the baseline."""
    from rich.console import Console

    from labeler.evaluate.policy_report import report_tables
    from labeler.evaluate.policy_run import eval_policy

    report = eval_policy(config)
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
            Opt("human", metavar="RUN"),
            Opt("group_by"),
            Opt("constitution"),
            Opt("options.principles"),
            Opt("options.cot"),
            Opt("options.cot_max_tokens"),
            Opt("options.aggregate"),
            Opt("options.calibrate"),
            Opt("options.few_shot"),
            Opt("options.few_shot_file"),
            Opt("options.decide"),
            Opt("options.salmon"),
            Opt("options.seed", "--seed"),
            Opt("templates"),
            Opt("batch_size"),
            Opt("compare", metavar="FILE", extra_help="Repeat for several; the first is the reference."),
            Opt("out", parse=output_file, cli_type=str, metavar="FILE"),
            Opt("quiet"),
            *engine_options("judge", model_flag="--judge-model"),
        ),
        run_eval_judge,
    ),
    ConfigCommand(
        "eval-policy",
        EvalPolicyConfig,
        (
            Opt("baseline", metavar="MODEL"),
            Opt("candidate", metavar="MODEL"),
            Opt("prompts"),
            Opt("constitution"),
            Opt("group_by"),
            Opt("principles", "--principle", metavar="ID", extra_help="Repeat for several."),
            Opt("reward_model", metavar="DIR"),
            Opt("sampling.temperature"),
            Opt("sampling.top_p"),
            Opt("sampling.max_tokens"),
            Opt("kl"),
            Opt("kl_dtype"),
            Opt("cot"),
            Opt("cot_max_tokens"),
            Opt("templates"),
            Opt("seed"),
            Opt("limit"),
            Opt("batch_size"),
            Opt("out", parse=output_file, cli_type=str, metavar="FILE"),
            Opt("quiet"),
            *engine_options("judge", model_flag="--judge-model"),
        ),
        run_eval_policy,
    ),
    ConfigCommand(
        "report",
        ReportConfig,
        (
            Opt("run", argument=True, metavar="RUN"),
            Opt("human_pairs", metavar="FILE"),
            Opt("rm_dirs", "--rm", metavar="DIR", extra_help="Repeat for several models."),
            Opt("eval_judge", metavar="FILE"),
            Opt("eval_policy", metavar="FILE", extra_help="Repeat for several."),
        ),
        run_report,
    ),
)
