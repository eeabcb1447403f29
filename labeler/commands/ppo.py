"""`labeler ppo`: PPO a policy against a reward model (or a rule), with a KL penalty to its start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from labeler.cli import app
from labeler.errors import InputError
from labeler.ppo.config import PPOConfig  # pydantic only: keeps `labeler --help` fast


def _field_help(name: str) -> str:
    """An option's help is the config field's description: written once, never twice."""
    return PPOConfig.model_fields[name].description or ""


def _default(name: str) -> Any:
    """An option's default is the config field's default."""
    return PPOConfig.model_fields[name].default


@app.command("ppo")
def ppo(
    prompts: Annotated[Path, typer.Option(help=_field_help("prompts"))],
    out: Annotated[Path, typer.Option(help=_field_help("out"))],
    policy: Annotated[str, typer.Option(help=_field_help("policy") + " 'default': the embedded model.")] = "default",
    reward_model: Annotated[Path | None, typer.Option(help=_field_help("reward_model"))] = None,
    reward_rule: Annotated[str | None, typer.Option(help=_field_help("reward_rule"))] = None,
    lora: Annotated[bool, typer.Option(help=_field_help("lora"))] = _default("lora"),
    kl_coef: Annotated[float, typer.Option(help=_field_help("kl_coef"))] = _default("kl_coef"),
    kl_estimator: Annotated[str, typer.Option(help=_field_help("kl_estimator"))] = _default("kl_estimator"),
    steps: Annotated[int, typer.Option(help=_field_help("steps"))] = _default("steps"),
    rollout_batch: Annotated[int, typer.Option(help=_field_help("rollout_batch"))] = _default("rollout_batch"),
    minibatch: Annotated[int, typer.Option(help=_field_help("minibatch"))] = _default("minibatch"),
    ppo_epochs: Annotated[int, typer.Option(help=_field_help("ppo_epochs"))] = _default("ppo_epochs"),
    max_new_tokens: Annotated[int, typer.Option(help=_field_help("max_new_tokens"))] = _default("max_new_tokens"),
    learning_rate: Annotated[float, typer.Option(help=_field_help("learning_rate"))] = _default("learning_rate"),
    missing_eos_reward: Annotated[
        float, typer.Option(help=_field_help("missing_eos_reward"))
    ] = _default("missing_eos_reward"),
    checkpoint_every: Annotated[int, typer.Option(help=_field_help("checkpoint_every"))] = _default("checkpoint_every"),
    dtype: Annotated[str, typer.Option(help=_field_help("dtype"))] = _default("dtype"),
    device: Annotated[str, typer.Option(help=_field_help("device"))] = _default("device"),
    seed: Annotated[int, typer.Option(help=_field_help("seed"))] = _default("seed"),
    resume: Annotated[bool, typer.Option(help=_field_help("resume"))] = _default("resume"),
) -> None:
    """PPO a policy (LoRA by default) against a reward model or a rule; prints the last checkpoint folder.

    Writes OUT/metrics.jsonl (one line per step) and OUT/checkpoint-<step>/ folders.
    """
    from labeler.ppo.train import train_ppo

    if (reward_model is None) == (reward_rule is None):
        raise InputError("give exactly one of --reward-model DIR and --reward-rule KIND:ARGUMENT", where="reward")
    if policy == "default":
        from labeler.model_prep import prepare_default_model

        policy_path = prepare_default_model()
    else:
        policy_path = Path(policy)
    options = dict(
        policy=policy_path,
        prompts=prompts,
        out=out,
        reward_model=reward_model,
        reward_rule=reward_rule,
        lora=lora,
        kl_coef=kl_coef,
        kl_estimator=kl_estimator,
        steps=steps,
        rollout_batch=rollout_batch,
        minibatch=minibatch,
        ppo_epochs=ppo_epochs,
        max_new_tokens=max_new_tokens,
        learning_rate=learning_rate,
        missing_eos_reward=missing_eos_reward,
        checkpoint_every=checkpoint_every,
        dtype=dtype,
        device=device,
        seed=seed,
        resume=resume,
    )
    try:
        config = PPOConfig.model_validate(options)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"])
        if not field:  # a check across options (e.g. minibatch must divide rollout_batch)
            raise InputError(problem["msg"], where="options") from exc
        raise InputError(
            f"{problem['msg']} (got {options.get(field)!r})", where=f"--{field.replace('_', '-')}"
        ) from exc
    print(train_ppo(config))
