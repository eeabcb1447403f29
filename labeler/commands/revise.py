"""`labeler revise`: critique-and-revise loop → SFT dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labeler.cli import app
from labeler.cli_options import DtypeOpt, EngineOpt, LimitOpt, ModelOpt, QuietOpt, SeedOpt
from labeler.stages.common import RAY_ADDRESS_HELP


@app.command("revise")
def revise_command(
    constitution: Annotated[Path, typer.Option("--constitution", help="Constitution file (YAML/JSON).")],
    prompts: Annotated[Path, typer.Option("--prompts", help="JSONL/Parquet/Arrow of prompts.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (the SFT split goes to OUT/sft).")],
    rounds: Annotated[int, typer.Option(help="Critique-and-revise rounds per prompt.")] = 2,
    model: ModelOpt = "default",
    engine: EngineOpt = "vllm",
    dtype: DtypeOpt = "auto",
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per engine call and per shard.")] = 64,
    max_tokens: Annotated[int, typer.Option(help="Most new tokens per response, critique and revision.")] = 160,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 for greedy).")] = 0.7,
    templates: Annotated[Path | None, typer.Option(help="Folder of templates overriding the shipped ones.")] = None,
    shard_index: Annotated[int | None, typer.Option(help="Job arrays: this task's index.")] = None,
    num_shards: Annotated[int | None, typer.Option(help="Job arrays: number of tasks.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a run made with another configuration.")] = False,
    quiet: QuietOpt = False,
    ray: Annotated[str | None, typer.Option("--ray", metavar="ADDRESS", help=RAY_ADDRESS_HELP)] = None,
) -> None:
    """Critique and revise responses against sampled principles; write the SFT split (SL-CAI data)."""
    from labeler.engine import EngineConfig, GenerationParams
    from labeler.stages.common import WorkSelection
    from labeler.stages.revise import ReviseConfig, revise

    config = ReviseConfig(
        constitution=constitution,
        prompts=prompts,
        out=out,
        rounds=rounds,
        engine=EngineConfig(name=engine, model=model, dtype=dtype),  # type: ignore[arg-type]
        sampling=GenerationParams(temperature=temperature, top_p=0.95, max_tokens=max_tokens),
        seed=seed,
        templates=templates,
        work=WorkSelection(limit=limit, shard_index=shard_index, num_shards=num_shards, batch_size=batch_size,
                           overwrite=overwrite, quiet=quiet, ray=ray),
    )
    if ray is None:
        result = revise(config)
    else:
        from labeler.ray_runner import run_on_ray

        result = run_on_ray(config)
    typer.echo(
        f"wrote {result.written} rows ({result.already_done} already done, "
        f"{len(result.skipped_too_long)} skipped as too long) to {result.out / 'sft'}"
    )
