"""The `labeler` command line: each command parses options, builds one config, calls one library function.

Exit codes: 0 on success, 2 on bad input (the message names the file and line/principle/field, or the
option), 1 on other failures (an engine whose servers keep failing says so in one message).
"""

from __future__ import annotations

import errno
import sys

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from labeler.cli import datasets, judge, review, stages, training
from labeler.cli.init import init
from labeler.cli.merge import merge
from labeler.cli.model import model_prepare
from labeler.cli.options import Command
from labeler.cli.run import run_command
from labeler.cli.validate import validate
from labeler.core.errors import EngineError, InputError, PartsFailed, show_fields
from labeler.engine.logs import engine_logs

app = typer.Typer(
    name="labeler",
    help="Turn a written constitution into preference data and reward models (Constitutional AI / RLAIF).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help texts are plain text: "[low, high]" is not markup
)
model_app = typer.Typer(help="The embedded default model.", no_args_is_help=True)
app.add_typer(model_app, name="model")
model_app.command("prepare", cls=Command)(model_prepare)
app.command("init", cls=Command)(init)
app.command("validate", cls=Command)(validate)
for command in (*stages.COMMANDS, *judge.COMMANDS, *training.COMMANDS, *datasets.COMMANDS, *review.COMMANDS):
    command.register(app)
app.command("merge", cls=Command)(merge)
app.command("run", cls=Command)(run_command)

err = Console(stderr=True)


@app.callback()
def _global_options(
    verbose: bool = typer.Option(
        False, "--verbose", envvar="LABELER_VERBOSE",
        help="Show the engines' own info and warnings (vLLM, torch, transformers), on stderr; without it only "
        "their errors. Give it before the command: labeler --verbose label ...",
    ),
) -> None:
    engine_logs(verbose)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and maps `InputError` to exit code 2."""
    try:
        app(args=argv, prog_name="labeler")
    except InputError as exc:
        err.print(f"[bold red]error:[/] {exc.render()}", highlight=False, soft_wrap=True, markup=True)
        sys.exit(2)
    except ValidationError as exc:  # a config built outside the options' own validation
        for problem in exc.errors():
            where = ".".join(str(p) for p in problem["loc"]) or exc.title
            message = show_fields(str(problem["msg"]))
            err.print(f"[bold red]error:[/] {where}: {message} (got {problem.get('input')!r})", highlight=False)
        sys.exit(2)
    except EngineError as exc:  # servers failing past the retry budget: records written so far are kept
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        err.print("The records written so far are kept: run the same command again to resume.", highlight=False)
        sys.exit(1)
    except PartsFailed as exc:  # its message names each failed part and says that a rerun resumes
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True, markup=True)
        sys.exit(1)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # A full disk: every write is atomic, so nothing committed is lost; say which file and what to do.
        where = escape(str(exc.filename or "a file"))
        err.print(f"[bold red]error:[/] {where}: no space left on the device. The records written so far are "
                  "kept: free some space and run the same command again to resume.",
                  highlight=False, soft_wrap=True, markup=True)
        sys.exit(1)
