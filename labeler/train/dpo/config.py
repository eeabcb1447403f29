"""`DPOConfig`: every setting of a DPO run, validated once, saved in each checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from labeler.core.records import FLAGS, known_flags
from labeler.train.common.config import PairTrainingSettings, TrainingConfig

DPOLoss = Literal["soft", "hard", "ipo"]


class DPOSettings(PairTrainingSettings):
    """How DPO trains a policy: everything but its data and where it writes (what a run config's
    `stages.dpo` holds)."""

    # --- data
    drop_flags: tuple[str, ...] = Field(
        (), description=f"Leave out pairs carrying any of these flags, comma-separated: {','.join(FLAGS)}."
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
    batch_size: int = Field(4, ge=1, description="Pairs per optimizer step and process.")
    learning_rate: float = Field(
        5e-5, gt=0.0, description="Peak learning rate (full fine-tuning usually wants about 5e-7)."
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them: less memory for long "
        "pairs and large models, about a third more compute.",
    )

    @field_validator("drop_flags")
    @classmethod
    def _known_flags(cls, flags: tuple[str, ...]) -> tuple[str, ...]:
        return known_flags(flags)


class DPOConfig(DPOSettings, TrainingConfig):
    """One DPO run: a policy (LoRA by default) trained on judged pairs against its own starting point."""

    INPUTS: ClassVar[tuple[str, ...]] = ("data", "policy")

    data: tuple[Path, ...] = Field(
        min_length=1, description="Run folders (or exports) whose preference split to train on."
    )
