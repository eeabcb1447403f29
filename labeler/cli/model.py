"""`labeler model prepare`: the embedded default model as a Hugging Face folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def model_prepare(
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Folder to write the model to (default: $LABELER_HOME/models/SmolLM2-135M-Instruct)."
        ),
    ] = None,
) -> None:
    """Convert the embedded SmolLM2-135M-Instruct GGUF into a Hugging Face folder once; print its path."""
    from labeler.cli.options import named
    from labeler.core.errors import InputError
    from labeler.engine.embedded import prepare_default_model

    try:
        print(prepare_default_model(out))
    except InputError as exc:
        raise named(exc, {"out": "--out"}.get) from None
