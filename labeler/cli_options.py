"""Options shared by several commands, declared once so their help text cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labeler.stages.common import RAY_ADDRESS_HELP

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
TemplatesOpt = Annotated[Path | None, typer.Option("--templates", help="Folder of templates overriding the shipped ones.")]
ShardIndexOpt = Annotated[int | None, typer.Option("--shard-index", help="Job arrays: this task's index (0-based).")]
NumShardsOpt = Annotated[int | None, typer.Option("--num-shards", help="Job arrays: number of tasks.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a run made with another configuration.")]
RayOpt = Annotated[str | None, typer.Option("--ray", metavar="ADDRESS", help=RAY_ADDRESS_HELP)]
