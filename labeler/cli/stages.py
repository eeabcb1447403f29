"""`labeler generate`, `labeler revise` and `labeler label`: the commands that run a model over inputs."""

from __future__ import annotations

from typing import Any

import typer

from labeler.cli.options import ConfigCommand, Opt, engine_options, output_file, parse_pair, work_options
from labeler.stages.generate import GenerateConfig
from labeler.stages.label import LabelConfig
from labeler.stages.revise import ReviseConfig


def run_generate(config: GenerateConfig) -> None:
    """Answer each prompt once (a quick check that a model and engine work)."""
    from labeler.stages.generate import answer_prompts

    for answer in answer_prompts(config):
        typer.echo(f"[{answer.prompt.id}] {answer.prompt.messages[-1].content}\n  -> {answer.text.strip()}\n")


def run_revise(config: ReviseConfig) -> None:
    """Critique and revise responses against sampled principles; write the SFT split (SL-CAI data)."""
    from labeler.stages.runner import run_stage

    result = run_stage(config)
    typer.echo(
        f"wrote {result.written} rows ({result.already_done} already done, "
        f"{len(result.skipped_too_long)} skipped as too long) to {result.out / 'sft'}"
    )


def run_label(config: LabelConfig) -> None:
    """Judge pairs in both orders; write soft labels, per-principle scores and flags."""
    from labeler.stages.runner import run_stage

    result = run_stage(config)
    if result.ranked:
        typer.echo(
            f"ranked {result.rankings_written} prompts ({result.already_done} already done, "
            f"{result.counts.identical_dropped} identical responses dropped, {result.counts.too_few_responses} "
            f"prompts left with fewer than 2 responses, {len(result.skipped_too_long)} skipped as longer than the "
            f"judge's context) to {result.out / 'rankings'}; wrote {result.written} pairs to "
            f"{result.out / 'preferences'}"
        )
        return
    typer.echo(
        f"wrote {result.written} pairs ({result.already_done} already done, "
        f"{result.counts.identical_dropped} identical pairs dropped, {len(result.skipped_too_long)} skipped as "
        f"longer than the judge's context) to {result.out / 'preferences'}"
    )


def _policy_like_judge(data: dict[str, Any]) -> dict[str, Any]:
    """--policy-model names another model; every other engine option is the judge's."""
    if "policy" in data:
        data["policy"] = {**data.get("judge", {}), **data["policy"]}
    return data


COMMANDS = (
    ConfigCommand(
        "generate",
        GenerateConfig,
        (
            Opt("prompts"),
            *engine_options("engine"),
            Opt("sampling.temperature"),
            Opt("sampling.max_tokens"),
            Opt("sampling.seed", "--seed"),
            Opt("limit"),
            Opt("out", parse=output_file, cli_type=str, metavar="FILE"),
        ),
        run_generate,
    ),
    ConfigCommand(
        "revise",
        ReviseConfig,
        (
            Opt("constitution"),
            Opt("prompts"),
            Opt("out"),
            Opt("rounds"),
            Opt("sampling.temperature"),
            Opt("sampling.top_p"),
            Opt("sampling.max_tokens"),
            Opt("seed"),
            Opt("templates"),
            *engine_options("engine"),
            *work_options(),
        ),
        run_revise,
    ),
    ConfigCommand(
        "label",
        LabelConfig,
        (
            Opt("constitution"),
            Opt("out"),
            Opt("prompts"),
            Opt("pairs"),
            Opt("pairs_from"),
            Opt("responses"),
            Opt("comparisons"),
            Opt("binarize"),
            Opt("options.principles"),
            Opt("options.cot"),
            Opt("options.cot_max_tokens"),
            Opt("options.cot_clamp", parse=parse_pair, cli_type=str, metavar="LOW,HIGH"),
            Opt("options.salmon"),
            Opt("options.aggregate"),
            Opt("options.calibrate"),
            Opt("options.few_shot"),
            Opt("options.few_shot_file"),
            Opt("options.decide"),
            Opt("options.low_mass"),
            Opt("options.seed", "--seed"),
            Opt("pair_sampling.max_tokens"),
            Opt("templates"),
            *engine_options("judge", model_flag="--judge-model"),
            Opt("policy.model", "--policy-model", panel="Engine",
                extra_help="Another model samples the pairs of --prompts (default: the judge model)."),
            *work_options(),
        ),
        run_label,
        prepare=_policy_like_judge,
    ),
)
