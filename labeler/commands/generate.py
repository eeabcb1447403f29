"""`labeler generate`: answer prompts with a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labeler.cli import app
from labeler.cli_options import ApiKeyEnvOpt, BaseUrlOpt, DtypeOpt, EngineOpt, LimitOpt, ModelOpt, SeedOpt, engine_config


@app.command("generate")
def generate_command(
    prompts: Annotated[Path, typer.Option("--prompts", help="JSONL/Parquet/Arrow file of prompts.")],
    engine: EngineOpt = "vllm",
    model: ModelOpt = "default",
    dtype: DtypeOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    max_tokens: Annotated[int, typer.Option(help="Most new tokens per answer.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 for greedy decoding.")] = 0.0,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    out: Annotated[Path | None, typer.Option(help="Also write the answers as JSONL here.")] = None,
) -> None:
    """Answer each prompt once (a quick check that a model and engine work)."""
    from labeler.engine import GenerationParams
    from labeler.generate import GenerateConfig, answer_prompts

    config = GenerateConfig(
        prompts=prompts,
        engine=engine_config(engine, model, dtype, base_url, api_key_env),
        sampling=GenerationParams(temperature=temperature, max_tokens=max_tokens, seed=seed),
        limit=limit,
        out=out,
    )
    for answer in answer_prompts(config):
        typer.echo(f"[{answer.prompt.id}] {answer.prompt.messages[-1].content}\n  -> {answer.text.strip()}\n")
