"""`labeler label`: judge response pairs A/B in both orders → preference dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labeler.cli import app
from labeler.cli_options import (
    ApiKeyEnvOpt,
    BaseUrlOpt,
    ChoiceMethodOpt,
    DtypeOpt,
    EngineOpt,
    LimitOpt,
    NumShardsOpt,
    OverwriteOpt,
    QuietOpt,
    RayOpt,
    SeedOpt,
    ShardIndexOpt,
    TemplatesOpt,
    engine_config,
)


@app.command("label")
def label_command(
    constitution: Annotated[Path, typer.Option("--constitution", help="Constitution file (YAML/JSON).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (the preference split goes to OUT/preferences).")],
    prompts: Annotated[Path | None, typer.Option(help="Prompts: two policy samples per prompt form a pair.")] = None,
    pairs: Annotated[Path | None, typer.Option(help="File of prompt, response_a, response_b.")] = None,
    pairs_from: Annotated[Path | None, typer.Option(help="A revise run: initial response vs final revision.")] = None,
    judge_model: Annotated[
        str, typer.Option(help="Judge model folder, or 'default' (embedded model); with --engine openai, its served name.")
    ] = "default",
    policy_model: Annotated[
        str | None, typer.Option(help="Policy model for --prompts (default: the judge model).")
    ] = None,
    engine: EngineOpt = "vllm",
    dtype: DtypeOpt = "auto",
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    choice_method: ChoiceMethodOpt = None,
    principles: Annotated[str, typer.Option(help="'sample:K' principles per pair (seeded) or 'all'.")] = "sample:1",
    cot: Annotated[bool, typer.Option(help="Generate a rationale before the choice.")] = False,
    cot_max_tokens: Annotated[int, typer.Option(help="Longest rationale in tokens.")] = 128,
    cot_clamp: Annotated[
        str | None, typer.Option(help="Clamp CoT soft labels to LOW,HIGH (e.g. 0.4,0.6).")
    ] = None,
    salmon: Annotated[bool, typer.Option(help="Score every principle's definition (SALMON principle_scores).")] = False,
    low_mass: Annotated[float, typer.Option(help="Flag pairs whose choice-token mass is below this.")] = 0.5,
    max_tokens: Annotated[int, typer.Option(help="--prompts: most tokens per policy sample.")] = 160,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    batch_size: Annotated[int, typer.Option(help="Pairs per engine call and per shard.")] = 64,
    templates: TemplatesOpt = None,
    shard_index: ShardIndexOpt = None,
    num_shards: NumShardsOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    ray: RayOpt = None,
) -> None:
    """Judge pairs in both orders; write soft labels, per-principle scores and flags."""
    from labeler.engine import GenerationParams
    from labeler.errors import InputError
    from labeler.stages.common import WorkSelection
    from labeler.stages.judge import JudgeOptions
    from labeler.ray_runner import run_stage
    from labeler.stages.label import LabelConfig

    clamp = None
    if cot_clamp is not None:
        try:
            low, high = (float(x) for x in cot_clamp.split(","))
        except ValueError:
            raise InputError(f"expected LOW,HIGH such as 0.4,0.6, got {cot_clamp!r}", where="--cot-clamp") from None
        clamp = (low, high)
    judge = engine_config(engine, judge_model, dtype, base_url, api_key_env, choice_method)
    config = LabelConfig(
        constitution=constitution,
        out=out,
        prompts=prompts,
        pairs=pairs,
        pairs_from=pairs_from,
        judge=judge,
        policy=None if policy_model is None else judge.model_copy(update={"model": policy_model}),
        pair_sampling=GenerationParams(n=2, temperature=1.0, top_p=0.95, max_tokens=max_tokens),
        options=JudgeOptions(principles=principles, cot=cot, cot_max_tokens=cot_max_tokens, cot_clamp=clamp,
                             salmon=salmon, low_mass=low_mass, seed=seed),
        templates=templates,
        work=WorkSelection(limit=limit, shard_index=shard_index, num_shards=num_shards, batch_size=batch_size,
                           overwrite=overwrite, quiet=quiet, ray=ray),
    )
    result = run_stage(config)
    typer.echo(
        f"wrote {result.written} pairs ({result.already_done} already done, "
        f"{result.counts.identical_dropped} identical pairs dropped) to {result.out / 'preferences'}"
    )
