"""`labeler run CONFIG.yaml`: the whole pipeline from one config file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run_command(
    config: Annotated[
        Path,
        typer.Argument(metavar="CONFIG", help="Run config (YAML); `labeler init` writes one to start from."),
    ],
) -> None:
    """Run revise → label → train-rm → ppo → report as the config says; re-run to resume after a crash."""
    from labeler.pipeline.run import load_run_config, run_pipeline

    result = run_pipeline(load_run_config(config))
    out = result.out
    typer.echo(f"stages: {', '.join(result.stages_run)}")
    typer.echo(f"dataset:  {out / 'preferences'} and {out / 'sft'}")
    typer.echo(f"card:     {out / 'README.md'}")
    if result.rm_dir is not None:
        typer.echo(f"reward model: {result.rm_dir}")
    if result.ppo_dir is not None:
        typer.echo(f"policy: {result.ppo_dir}")
    if result.report is not None:
        typer.echo(f"report:   {result.report}")
