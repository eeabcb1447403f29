"""`labeler merge`: combine the run folders of a job array's parts into one run."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from labeler.cli.options import named
from labeler.core.errors import InputError


def merge(
    parts: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_PART",
            help="Run folders of every part of the job array (each written as one part).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", metavar="RUN", help="New folder for the merged run.", show_default=False)
    ],
) -> None:
    """Merge the parts of a job array into one run: checks that they share one fingerprint, cover every
    part once, pass their checksums and never repeat a record; then writes one manifest and the card."""
    from labeler.stages.runner import merge_parts

    command = shlex.join(["labeler", "merge", *map(str, parts), "--out", str(out)])
    try:
        print(merge_parts(parts, out, command=command))
    except InputError as exc:
        raise named(exc, {"out": "--out"}.get) from None
