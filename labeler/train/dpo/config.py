"""`DPOConfig`: every setting of a DPO run, validated once, saved in each checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from labeler.core.records import FLAGS
from labeler.train.common.config import TrainingConfig, TrainingSettings

DPOLoss = Literal["soft", "hard", "ipo"]


class DPOSettings(TrainingSettings):
    """How DPO trains a policy: everything but its data and where it writes (what a run config's
    `stages.dpo` holds)."""

    # --- data
    drop_flags: tuple[str, ...] = Field(
        (), description=f"Leave out pairs carrying any of these flags, comma-separated: {','.join(FLAGS)}."
    )
    eval_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="Fraction of pairs held out for evaluation (seeded, by pair id)."
    )
    max_length: int = Field(
        512, ge=8,
        description="Most tokens per prompt + response; longer ones lose prompt tokens from the left, then "
        "response tokens from the right.",
    )
    # --- model
    policy: str = Field(
        "default",
        description="The starting policy, which is also the reference: a Hugging Face model folder, a Hub id "
        "org/name[@revision], a PEFT adapter folder on its base model, or 'default' (the embedded "
        "SmolLM2-135M-Instruct).",
    )
    lora: bool = Field(
        True,
        description="Train a LoRA adapter (the reference is the policy with it disabled) instead of all weights "
        "(the reference is then a frozen copy).",
    )
    lora_target_modules: str | tuple[str, ...] = Field(
        "all-linear", description="Modules that get a LoRA adapter (PEFT's `target_modules`)."
    )
    # --- loss
    loss: DPOLoss = Field(
        "soft",
        description="soft: -(p log σ(βh) + (1-p) log σ(-βh)) with p = p_a; hard: DPO on chosen/rejected "
        "(p_a >= 0.5 is A); ipo: IPO against p_a, on per-token mean log-ratios.",
    )
    beta: float = Field(0.1, gt=0.0, description="DPO's β: how far the policy may move from the reference.")
    # --- optimisation
    epochs: int = Field(1, ge=1, description="Passes over the training pairs.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (before the epochs end)."
    )
    batch_size: int = Field(4, ge=1, description="Pairs per optimizer step and process.")
    learning_rate: float = Field(
        5e-5, gt=0.0, description="Peak learning rate (full fine-tuning usually wants about 5e-7)."
    )
    lr_schedule: Literal["linear", "constant"] = Field(
        "linear", description="After warmup: linear decay to zero, or constant."
    )
    warmup_steps: int = Field(0, ge=0, description="Steps of linear warmup from zero.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float | None = Field(1.0, gt=0.0, description="Clip the gradient norm to this (None: no clipping).")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="Autocast precision through accelerate.")
    weights_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Dtype the weights are loaded and trained in; auto: bfloat16 when training in bf16 on a GPU, "
        "else float32.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them: less memory for long "
        "pairs and large models, about a third more compute.",
    )
    # --- bookkeeping
    logging_steps: int = Field(10, ge=1, description="Write averaged training metrics every this many steps.")
    eval_steps: int = Field(0, ge=0, description="Evaluate every this many steps (0: only at the end).")
    checkpoint_every: int = Field(0, ge=0, description="Write checkpoint-<step>/ every this many steps (0: never).")

    @field_validator("drop_flags")
    @classmethod
    def _known_flags(cls, flags: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [flag for flag in flags if flag not in FLAGS]
        if unknown:
            raise ValueError(f"unknown flag {unknown[0]!r}; known: {', '.join(FLAGS)}")
        return tuple(dict.fromkeys(flags))


class DPOConfig(DPOSettings, TrainingConfig):
    """One DPO run: a policy (LoRA by default) trained on judged pairs against its own starting point."""

    INPUTS: ClassVar[tuple[str, ...]] = ("data", "policy")

    data: tuple[Path, ...] = Field(
        min_length=1, description="Run folders (or exports) whose preference split to train on."
    )
