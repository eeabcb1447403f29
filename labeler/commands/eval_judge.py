"""`labeler eval-judge`: agreement of the judge with human-labelled pairs, position bias, calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labeler.cli import app
from labeler.cli_options import (
    ApiKeyEnvOpt,
    BaseUrlOpt,
    ChoiceMethodOpt,
    DtypeOpt,
    EngineOpt,
    QuietOpt,
    SeedOpt,
    engine_config,
)


@app.command("eval-judge")
def eval_judge_command(
    pairs: Annotated[
        Path, typer.Option("--pairs", help="JSONL/Parquet/Arrow of `prompt` (text or messages), `chosen`, `rejected`.")
    ],
    group_by: Annotated[
        str | None, typer.Option("--group-by", help="Column to report agreement per value of (e.g. category).")
    ] = None,
    judge_model: Annotated[
        str, typer.Option(help="Judge model folder, or 'default' (embedded model); with --engine openai, its served name.")
    ] = "default",
    engine: EngineOpt = "vllm",
    dtype: DtypeOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    choice_method: ChoiceMethodOpt = None,
    constitution: Annotated[
        Path | None,
        typer.Option(help="Constitution whose judge questions are asked (default: constitutions/helpful-honest.yaml)."),
    ] = None,
    principles: Annotated[str, typer.Option(help="'sample:K' principles per pair (seeded) or 'all'.")] = "sample:1",
    cot: Annotated[bool, typer.Option(help="Generate a rationale before the choice.")] = False,
    cot_max_tokens: Annotated[int, typer.Option(help="Longest rationale in tokens.")] = 128,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option(help="Pairs per engine call.")] = 64,
    templates: Annotated[Path | None, typer.Option(help="Folder of templates overriding the shipped ones.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the report as JSON here (default: print only).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Judge human-labelled pairs in both orders; print agreement, position bias and calibration."""
    from rich.console import Console

    from labeler.eval_judge import DEFAULT_CONSTITUTION, EvalJudgeConfig, eval_judge, report_tables
    from labeler.stages.judge import JudgeOptions

    config = EvalJudgeConfig(
        pairs=pairs,
        group_by=group_by,
        constitution=constitution or DEFAULT_CONSTITUTION,
        judge=engine_config(engine, judge_model, dtype, base_url, api_key_env, choice_method),
        options=JudgeOptions(principles=principles, cot=cot, cot_max_tokens=cot_max_tokens, seed=seed),
        templates=templates,
        batch_size=batch_size,
        out=out,
        quiet=quiet,
    )
    report = eval_judge(config)
    Console().print(*report_tables(report))
    if out is not None:
        typer.echo(f"wrote the report to {out}")
