"""Options shared by several commands, declared once so their help text cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labeler.engine import EngineConfig
from labeler.stages.common import RAY_ADDRESS_HELP

_ENGINE_HELP = {key: field.description for key, field in EngineConfig.model_fields.items()}

EngineOpt = Annotated[str, typer.Option("--engine", help=_ENGINE_HELP["name"])]
BaseUrlOpt = Annotated[
    list[str] | None,
    typer.Option("--base-url", metavar="URL", help=f"{_ENGINE_HELP['base_urls']} Repeat it, or give a comma list."),
]
ApiKeyEnvOpt = Annotated[str | None, typer.Option("--api-key-env", metavar="NAME", help=_ENGINE_HELP["api_key_env"])]
ChoiceMethodOpt = Annotated[
    str | None,
    typer.Option("--choice-method", metavar="auto|continue_prefix|first_token_topk", help=_ENGINE_HELP["choice_method"]),
]
ModelOpt = Annotated[str, typer.Option("--model", help=_ENGINE_HELP["model"])]
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


def engine_config(
    name: str,
    model: str,
    dtype: str,
    base_url: list[str] | None,
    api_key_env: str | None,
    choice_method: str | None = None,
) -> EngineConfig:
    """A command's engine options as one validated config; options not given keep their defaults, so an
    option of the other kind of engine is refused by name (`EngineConfig` checks the combination)."""
    given = {"base_urls": base_url, "api_key_env": api_key_env, "choice_method": choice_method}
    options = {key: value for key, value in given.items() if value is not None}
    return EngineConfig.model_validate({"name": name, "model": model, "dtype": dtype, **options})
