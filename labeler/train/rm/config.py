"""The settings of reward-model training and scoring: one frozen object each, help text written once."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labeler.train.common.config import PairTrainingSettings, TrainingConfig


class RMSettings(PairTrainingSettings):
    """How a reward model is trained: everything but its data, its constitution and where it writes (what a
    run config's `stages.train_rm` holds)."""

    # --- data
    max_length: int = Field(
        512, ge=8, description="Most tokens per conversation; longer ones lose tokens from the left."
    )
    # --- model
    base_model: str = Field(
        "default",
        description="The causal LM to put a reward head on: a Hugging Face folder, a Hub id org/name[@revision], "
        "or 'default' (the embedded SmolLM2-135M-Instruct); or a reward model written by `labeler train-rm`, "
        "to continue training it (its head is kept).",
    )
    share_prefix: bool = Field(
        True,
        description="Run the tokens a pair's two conversations start with (the prompt) once for both: "
        "the same rewards for less compute.",
    )
    lora: bool = Field(False, description="Train LoRA adapters on q_proj and v_proj (merged on save) and the head.")
    # --- labels and loss
    loss: Literal["soft", "hard"] = Field(
        "soft", description="soft: Bradley-Terry against p_a; hard: against p_a >= 0.5 (chosen vs rejected)."
    )
    margin: bool = Field(False, description="Subtract the `margin` column (TRL-style) from r_chosen − r_rejected.")
    principle_conditioned: bool = Field(
        False, description="SALMON: show sampled principles in a system message; target from principle_scores."
    )
    heads: Literal["one", "principles"] = Field(
        "one",
        description="one: a single reward head; principles: an overall head trained on p_a plus one head per "
        "principle of the constitution, each trained on sigmoid of the pair's principle_scores entry for it "
        "(a run labelled with SALMON scores), to be weighted when the model is used.",
    )
    head_loss_weights: Literal["equal", "constitution"] = Field(
        "equal",
        description="How the heads' losses add up (heads=principles): equally, or each principle head's by its "
        "principle's `weight` in the constitution (the overall head weighs 1).",
    )
    principles_per_example: int = Field(3, ge=1, description="Principles shown per example (principle-conditioned).")
    negate_probability: float = Field(
        0.5, ge=0.0, le=1.0, description="Chance of showing a principle's negative definition instead (flips it)."
    )
    # --- optimisation
    batch_size: int = Field(8, ge=1, description="Pairs per optimizer step and process.")
    learning_rate: float = Field(1e-5, gt=0.0, description="Peak learning rate (LoRA usually wants about 1e-4).")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them: much less memory for long "
        "conversations and large models, about a third more compute (turns share_prefix off).",
    )


class RMTrainConfig(RMSettings, TrainingConfig):
    """Everything `train_reward_model` needs; checkpoints carry it so a resumed run is the same run."""

    INPUTS: ClassVar[tuple[str, ...]] = ("data", "base_model", "constitution")

    data: tuple[Path, ...] = Field(min_length=1, description="Run folders whose preference split to train on.")
    constitution: Path | None = Field(
        None,
        description="Constitution whose salmon principles are shown (principle_conditioned), or whose principles "
        "get a head each (heads=principles).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RMTrainConfig:
        per_principle = self.heads == "principles"
        if self.principle_conditioned and self.constitution is None:
            raise ValueError("principle_conditioned needs a constitution (‹constitution› FILE)")
        if per_principle and self.constitution is None:
            raise ValueError("heads=principles needs a constitution (‹constitution› FILE)")
        if self.constitution is not None and not (self.principle_conditioned or per_principle):
            raise ValueError(
                "constitution is only used with principle_conditioned (‹principle_conditioned›) "
                "or heads=principles (‹heads› principles)"
            )
        if per_principle and self.principle_conditioned:
            raise ValueError("heads=principles and principle_conditioned are two ways to use principles: pick one")
        if per_principle and self.margin:
            raise ValueError("margin applies to one overall preference; heads=principles cannot use it")
        if self.head_loss_weights != "equal" and not per_principle:
            raise ValueError("head_loss_weights only applies with heads=principles (‹heads› principles)")
        if self.principle_conditioned and self.margin:
            raise ValueError(
                "margin applies to the overall preference; principle_conditioned targets come from "
                "principle_scores, so the two cannot be combined"
            )
        return self


class ScoreRMConfig(BaseModel):
    """What `score_reward_model` needs: a reward model and a file of human-labelled pairs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(
        description="Reward model written by `labeler train-rm`: a folder, or a Hub id org/name[@revision]."
    )
    pairs: Path = Field(
        description="JSONL/Parquet/Arrow, one pair a row: prompt (text or list of messages), chosen, rejected, "
        "optional group."
    )
    group_by: str | None = Field(None, description="Column to report accuracy per value of (e.g. a category).")
    weights: dict[str, float] | None = Field(
        None,
        description="How to weight a reward model's heads (NAME=W,...): the reward is the weighted sum, a head "
        "not named weighs 0 (default: the model's own weighting, its constitution's weights). Each head's own "
        "accuracy is reported too.",
    )
    out: Path | None = Field(None, description="Write the report as JSON here.")
    batch_size: int = Field(16, ge=1, description="Conversations per forward pass.")
    max_length: int | None = Field(None, ge=8, description="Most tokens per conversation (default: as trained).")
