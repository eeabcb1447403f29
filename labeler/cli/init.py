"""`labeler init [PATH]`: write a run config to start from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def init(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="The file to write; an existing file is never replaced.")
    ] = Path("run.yaml"),
) -> None:
    """Write a starter run config (constitution, prompts, engine, stages) to edit, check with
    `labeler validate PATH` and run with `labeler run PATH`."""
    from labeler.pipeline.starter import write_starter_config

    written = write_starter_config(path)
    typer.echo(f"wrote {written}: give it your constitution and prompts, then run `labeler validate {written}`")
