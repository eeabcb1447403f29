"""`labeler revise`: critique-and-revise loop → SFT dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labeler.cli import app
from labeler.cli_options import (
    ApiKeyEnvOpt,
    BaseUrlOpt,
    DtypeOpt,
    EngineOpt,
    LimitOpt,
    ModelOpt,
    NumShardsOpt,
    OverwriteOpt,
    QuietOpt,
    RayOpt,
    SeedOpt,
    ShardIndexOpt,
    TemplatesOpt,
    engine_config,
)


@app.command("revise")
def revise_command(
    constitution: Annotated[Path, typer.Option("--constitution", help="Constitution file (YAML/JSON).")],
    prompts: Annotated[Path, typer.Option("--prompts", help="JSONL/Parquet/Arrow of prompts.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (the SFT split goes to OUT/sft).")],
    rounds: Annotated[int, typer.Option(help="Critique-and-revise rounds per prompt.")] = 2,
    model: ModelOpt = "default",
    engine: EngineOpt = "vllm",
    dtype: DtypeOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per engine call and per shard.")] = 64,
    max_tokens: Annotated[int, typer.Option(help="Most new tokens per response, critique and revision.")] = 160,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 for greedy).")] = 0.7,
    templates: TemplatesOpt = None,
    shard_index: ShardIndexOpt = None,
    num_shards: NumShardsOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    ray: RayOpt = None,
) -> None:
    """Critique and revise responses against sampled principles; write the SFT split (SL-CAI data)."""
    from labeler.engine import GenerationParams
    from labeler.stages.common import WorkSelection
    from labeler.ray_runner import run_stage
    from labeler.stages.revise import ReviseConfig

    config = ReviseConfig(
        constitution=constitution,
        prompts=prompts,
        out=out,
        rounds=rounds,
        engine=engine_config(engine, model, dtype, base_url, api_key_env),
        sampling=GenerationParams(temperature=temperature, top_p=0.95, max_tokens=max_tokens),
        seed=seed,
        templates=templates,
        work=WorkSelection(limit=limit, shard_index=shard_index, num_shards=num_shards, batch_size=batch_size,
                           overwrite=overwrite, quiet=quiet, ray=ray),
    )
    result = run_stage(config)
    typer.echo(
        f"wrote {result.written} rows ({result.already_done} already done, "
        f"{len(result.skipped_too_long)} skipped as too long) to {result.out / 'sft'}"
    )
