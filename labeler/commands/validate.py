"""`labeler validate FILE...`: check files before a run, reporting every problem in each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from labeler.cli import app, err
from labeler.constitution import STAGES, read_constitution
from labeler.errors import InputError


def check_constitution(path: Path) -> str:
    """One line about a valid constitution file; raises `InputErrors` listing every problem otherwise."""
    loaded = read_constitution(path)
    constitution = loaded.constitution
    counts = ", ".join(f"{stage} {len(constitution.for_stage(stage))}" for stage in STAGES)
    few_shot = f", {len(constitution.few_shot)} few-shot conversations" if constitution.few_shot else ""
    return (
        f"constitution '{constitution.name}' version {constitution.version}, format {loaded.format}, "
        f"{len(constitution.principles)} principles (per stage: {counts}){few_shot}"
    )


def checker_for(path: Path) -> Callable[[Path], str]:
    """The check that applies to `path`: the one place that decides what kind of file it is.

    Every file is checked as a constitution; a run configuration (a YAML file with a top-level
    `stages:` key) is routed from here to its own check when labeler has one.
    """
    return check_constitution


@app.command("validate")
def validate(
    files: Annotated[
        list[Path],
        typer.Argument(help="Constitution files (YAML or JSON, labeler's own or a published format)."),
    ],
) -> None:
    """Check constitutions: print OK with the format and principles per stage, or every problem.

    Exit code 2 when any file has a problem; every file is checked either way.
    """
    bad = 0
    for path in files:
        try:
            summary = checker_for(path)(path)
        except InputError as exc:
            bad += 1
            err.print(f"[bold red]FAIL[/] {escape(str(path))}", highlight=False)
            err.print(exc.render(), highlight=False, markup=False, soft_wrap=True)
            continue
        typer.echo(f"OK {path}: {summary}")
    if bad:
        err.print(f"{bad} of {len(files)} files have problems", highlight=False)
        raise typer.Exit(code=2)
