"""`labeler train-rm`, `score-rm`, `ppo` and `dpo`: every option is a field of the trainer's config."""

from __future__ import annotations

from pydantic import BaseModel

from labeler.cli.options import ConfigCommand, Opt, output_file, parse_list, parse_names
from labeler.train.dpo.config import DPOConfig
from labeler.train.ppo.config import PPOConfig
from labeler.train.rm.config import RMTrainConfig, ScoreRMConfig
from labeler.train.rm.heads import parse_head_weights

# Old spellings of options, refused with a message naming the new one.
RENAMED_FLAGS = {"learning_rate": ("--lr",), "lora_rank": ("--lora-r",), "checkpoint_every": ("--checkpoint-steps",)}


def every_field(model: type[BaseModel], **special: Opt) -> tuple[Opt, ...]:
    """One option per field of a flat config, in field order (`special` replaces a field's default Opt)."""
    return tuple(
        special.get(name) or Opt(name, renamed_from=RENAMED_FLAGS.get(name, ())) for name in model.model_fields
    )


def run_train_rm(config: RMTrainConfig) -> None:
    """Train a reward model (scalar head on a causal LM) on the preference split of one or more runs."""
    from labeler.train.rm.train import train_reward_model

    result = train_reward_model(config)
    summary = f"{result.steps} steps on {result.train_pairs} pairs"
    if result.eval_metrics:
        summary += f"; eval accuracy {result.eval_metrics['accuracy']:.3f} on {result.eval_pairs} pairs"
    print(f"reward model: {result.out} ({summary})")


def run_score_rm(config: ScoreRMConfig) -> None:
    """Accuracy of a reward model on human-labelled pairs (r_chosen > r_rejected), per group if asked."""
    from rich.console import Console

    from labeler.evaluate.reward_model import heads_table, report_table, score_reward_model

    report = score_reward_model(config)
    console = Console()
    console.print(report_table(report))
    if report.heads:
        console.print(heads_table(report))
    if config.out is not None:
        console.print(f"report: {config.out}")


def run_ppo(config: PPOConfig) -> None:
    """PPO a policy (LoRA by default) against a reward model or a rule; prints the last checkpoint folder.

    Writes OUT/metrics.jsonl (one line per step) and OUT/checkpoint-<step>/ folders.
    """
    from labeler.train.ppo.train import train_ppo

    print(train_ppo(config))


def run_dpo(config: DPOConfig) -> None:
    """DPO a policy (LoRA by default) on the preference split of runs, each pair's soft label its target.

    Writes OUT/metrics.jsonl, OUT/checkpoint-<step>/ folders and the trained policy (a PEFT adapter, or the
    whole model with --no-lora) with its tokenizer; prints where it went.
    """
    from labeler.train.dpo.train import train_dpo

    result = train_dpo(config)
    summary = f"{result.steps} steps on {result.train_pairs} pairs"
    if result.eval_metrics:
        summary += (f"; held-out implicit-reward accuracy {result.eval_metrics['accuracy']:.3f} on "
                    f"{result.eval_pairs} pairs, KL {result.eval_metrics['kl']:.3f}")
    print(f"policy: {result.out} ({summary})")


COMMANDS = (
    ConfigCommand("train-rm", RMTrainConfig, every_field(RMTrainConfig), run_train_rm),
    ConfigCommand(
        "score-rm",
        ScoreRMConfig,
        every_field(
            ScoreRMConfig,
            out=Opt("out", parse=output_file, cli_type=str, metavar="FILE"),
            weights=Opt("weights", parse=parse_head_weights, cli_type=str, metavar="NAME=W,..."),
        ),
        run_score_rm,
    ),
    ConfigCommand(
        "ppo",
        PPOConfig,
        every_field(
            PPOConfig,
            lora_target_modules=Opt("lora_target_modules", parse=parse_list, cli_type=str),
            reward_weights=Opt("reward_weights", parse=parse_head_weights, cli_type=str, metavar="NAME=W,..."),
        ),
        run_ppo,
    ),
    ConfigCommand(
        "dpo",
        DPOConfig,
        every_field(
            DPOConfig,
            drop_flags=Opt("drop_flags", parse=parse_names, cli_type=str, metavar="FLAG,..."),
            lora_target_modules=Opt("lora_target_modules", parse=parse_list, cli_type=str),
        ),
        run_dpo,
    ),
)
