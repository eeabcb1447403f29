"""Options shared by several commands, declared once so their help text cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EngineOpt = Annotated[str, typer.Option("--engine", help="Inference engine: vllm (default; falls back to hf) or hf.")]
ModelOpt = Annotated[
    str, typer.Option("--model", help="Hugging Face model folder, or 'default' for the embedded SmolLM2-135M-Instruct.")
]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="auto (bfloat16 on GPUs and CPUs with native bfloat16, else float32), bfloat16, float16 or float32.",
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Run seed: sampling and principle choices derive from it.")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="Use only the first N input rows.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="Plain log lines instead of progress bars.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output run folder.")]
