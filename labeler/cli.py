"""The `labeler` command line: each command parses options, loads one config, calls one library function.

Exit codes: 0 on success, 2 on bad input (the message names the file and line/principle/field),
1 on other failures (an engine whose servers keep failing says so in one message).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pydantic import ValidationError

from labeler.errors import EngineError, InputError

app = typer.Typer(
    name="labeler",
    help="Turn a written constitution into preference data and reward models (Constitutional AI / RLAIF).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
model_app = typer.Typer(help="The embedded default model.", no_args_is_help=True)
app.add_typer(model_app, name="model")

err = Console(stderr=True)


@model_app.command("prepare")
def model_prepare(
    out: Annotated[
        Path | None,
        typer.Option(help="Folder to write the model to (default: $LABELER_HOME/models/SmolLM2-135M-Instruct)."),
    ] = None,
) -> None:
    """Convert the embedded SmolLM2-135M-Instruct GGUF into a Hugging Face folder once; print its path."""
    from labeler.model_prep import prepare_default_model

    print(prepare_default_model(out))


# Commands defined in their own modules register themselves on `app` when imported.
from labeler import commands as _commands  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and maps `InputError` to exit code 2."""
    try:
        app(args=argv, prog_name="labeler")
    except InputError as exc:
        err.print(f"[bold red]error:[/] {exc.render()}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ValidationError as exc:  # a bad option value reached a config model
        for problem in exc.errors():
            where = ".".join(str(p) for p in problem["loc"]) or exc.title
            err.print(f"[bold red]error:[/] {where}: {problem['msg']} (got {problem.get('input')!r})", highlight=False)
        sys.exit(2)
    except EngineError as exc:  # servers failing past the retry budget: records written so far are kept
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        err.print("The records written so far are kept: run the same command again to resume.", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
