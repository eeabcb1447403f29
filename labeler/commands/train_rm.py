"""`labeler train-rm` (train a reward model on preference shards) and `labeler score-rm` (its accuracy on
human-labelled pairs). Help texts come from the config fields, so they are written once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError

from labeler.cli import app
from labeler.errors import InputError, InputErrors
from labeler.rm.config import RMTrainConfig, ScoreRMConfig


def _help(config: type[BaseModel], field: str) -> str:
    return config.model_fields[field].description or ""


def _build(config: type[BaseModel], **values: Any) -> Any:
    """The config, or InputError naming the option for each bad value."""
    try:
        return config(**values)
    except ValidationError as exc:
        errors = []
        for error in exc.errors():
            option = f"--{str(error['loc'][0]).replace('_', '-')}" if error["loc"] else None
            errors.append(InputError(f"{error['msg']} (got {error.get('input')!r:.80})", where=option))
        raise InputErrors(errors) from None


def _t(field: str) -> str:
    return _help(RMTrainConfig, field)


@app.command("train-rm")
def train_rm(
    out: Annotated[Path, typer.Option(help=_t("out"))],
    data: Annotated[
        list[Path], typer.Option("--data", help=_t("data") + " Repeat for several runs.")
    ] = [],  # noqa: B006 (typer reads the default, never mutates it)
    base_model: Annotated[
        str | None, typer.Option(help=_t("base_model") + " Default: the embedded SmolLM2-135M-Instruct.")
    ] = None,
    loss: Annotated[str, typer.Option(help=_t("loss"))] = "soft",
    margin: Annotated[bool, typer.Option("--margin", help=_t("margin"))] = False,
    principle_conditioned: Annotated[
        bool, typer.Option("--principle-conditioned", help=_t("principle_conditioned"))
    ] = False,
    constitution: Annotated[Path | None, typer.Option(help=_t("constitution"))] = None,
    principles_per_example: Annotated[int, typer.Option(help=_t("principles_per_example"))] = 3,
    share_prefix: Annotated[bool, typer.Option("--share-prefix/--no-share-prefix", help=_t("share_prefix"))] = True,
    lora: Annotated[bool, typer.Option("--lora", help=_t("lora"))] = False,
    lora_rank: Annotated[int, typer.Option(help=_t("lora_rank"))] = 16,
    epochs: Annotated[int, typer.Option(help=_t("epochs"))] = 1,
    max_steps: Annotated[int | None, typer.Option(help=_t("max_steps"))] = None,
    lr: Annotated[float, typer.Option(help=_t("lr"))] = 1e-5,
    warmup_steps: Annotated[int, typer.Option(help=_t("warmup_steps"))] = 0,
    batch_size: Annotated[int, typer.Option(help=_t("batch_size"))] = 8,
    max_length: Annotated[int, typer.Option(help=_t("max_length"))] = 512,
    eval_fraction: Annotated[float, typer.Option(help=_t("eval_fraction"))] = 0.05,
    mixed_precision: Annotated[str, typer.Option(help=_t("mixed_precision"))] = "no",
    seed: Annotated[int, typer.Option(help=_t("seed"))] = 0,
    logging_steps: Annotated[int, typer.Option(help=_t("logging_steps"))] = 10,
    eval_steps: Annotated[int, typer.Option(help=_t("eval_steps"))] = 0,
    checkpoint_steps: Annotated[int, typer.Option(help=_t("checkpoint_steps"))] = 0,
    resume: Annotated[bool, typer.Option("--resume", help=_t("resume"))] = False,
) -> None:
    """Train a reward model (scalar head on a causal LM) on the preference split of one or more runs."""
    if not data:
        raise InputError("no run given: pass at least one run folder with --data RUN", where="--data")
    if base_model is None:
        from labeler.model_prep import prepare_default_model

        base_model = str(prepare_default_model())
    config = _build(
        RMTrainConfig,
        data=tuple(data),
        base_model=base_model,
        out=out,
        loss=loss,
        margin=margin,
        principle_conditioned=principle_conditioned,
        constitution=constitution,
        principles_per_example=principles_per_example,
        share_prefix=share_prefix,
        lora=lora,
        lora_rank=lora_rank,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        warmup_steps=warmup_steps,
        batch_size=batch_size,
        max_length=max_length,
        eval_fraction=eval_fraction,
        mixed_precision=mixed_precision,
        seed=seed,
        logging_steps=logging_steps,
        eval_steps=eval_steps,
        checkpoint_steps=checkpoint_steps,
        resume=resume,
    )
    from labeler.rm.train import train_reward_model

    result = train_reward_model(config)
    summary = f"{result.steps} steps on {result.train_pairs} pairs"
    if result.eval_metrics:
        summary += f"; eval accuracy {result.eval_metrics['accuracy']:.3f} on {result.eval_pairs} pairs"
    print(f"reward model: {result.out} ({summary})")


def _s(field: str) -> str:
    return _help(ScoreRMConfig, field)


@app.command("score-rm")
def score_rm(
    model: Annotated[Path, typer.Option(help=_s("model"))],
    pairs: Annotated[Path, typer.Option(help=_s("pairs"))],
    group_by: Annotated[str | None, typer.Option(help=_s("group_by"))] = None,
    out: Annotated[Path | None, typer.Option(help=_s("out"))] = None,
    batch_size: Annotated[int, typer.Option(help=_s("batch_size"))] = 16,
    max_length: Annotated[int | None, typer.Option(help=_s("max_length"))] = None,
) -> None:
    """Accuracy of a reward model on human-labelled pairs (r_chosen > r_rejected), per group if asked."""
    from rich.console import Console

    from labeler.rm.score import report_table, score_reward_model

    config = _build(
        ScoreRMConfig,
        model=model,
        pairs=pairs,
        group_by=group_by,
        out=out,
        batch_size=batch_size,
        max_length=max_length,
    )
    report = score_reward_model(config)
    console = Console()
    console.print(report_table(report))
    if out is not None:
        console.print(f"report: {out}")
