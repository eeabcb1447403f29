"""The settings every trainer shares, declared once; `RMTrainConfig` and `PPOConfig` extend them (their
settings, `RMSettings` and `PPOSettings`, extend `TrainingSettings`)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# numpy's legacy seeding (which vLLM's rollout engine and accelerate's `set_seed` use) takes 0 <= seed < 2**32;
# torch's takes less than 2**64: the narrower bound holds for every trainer.
SEED_BOUND = 2**32

# Names older configs used, and what they are called now: refused with a message naming the new one.
RENAMED = {
    "lr": "learning_rate",
    "lora_r": "lora_rank",
    "checkpoint_steps": "checkpoint_every",
    "progress": "quiet",
}


class TrainingSettings(BaseModel):
    """How every trainer trains: its LoRA shape and how many checkpoints it keeps. Each trainer's settings
    extend these; they are also what a run config's stage section holds (`labeler.pipeline.run`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lora_rank: int = Field(16, ge=1, description="LoRA rank of a fresh adapter.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (the update is scaled by alpha/rank).")
    keep_checkpoints: int = Field(2, ge=1, description="Keep only the newest this many checkpoints.")



class PairTrainingSettings(TrainingSettings):
    """How the trainers on judged pairs (`train-rm`, `dpo`) hold out pairs, step, and log: one declaration
    for both."""

    eval_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="Fraction of pairs held out for evaluation (seeded, by pair id)."
    )
    epochs: int = Field(1, ge=1, description="Passes over the training pairs.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (before the epochs end)."
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
    logging_steps: int = Field(10, ge=1, description="Write averaged training metrics every this many steps.")
    eval_steps: int = Field(0, ge=0, description="Evaluate every this many steps (0: only at the end).")
    checkpoint_every: int = Field(0, ge=0, description="Write checkpoint-<step>/ every this many steps (0: never).")


class TrainingConfig(TrainingSettings):
    """Fields of every training run beside its settings: where it writes, its seed, resuming, its output."""

    # Fields a resumed run may change: the rest must match the run it continues, or it would mix two setups.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"out", "resume", "quiet", "checkpoint_every", "keep_checkpoints"})
    # Fields that name what the run reads (files, run folders, models): `out` may be none of them.
    INPUTS: ClassVar[tuple[str, ...]] = ()

    out: Path = Field(description="Output folder: metrics.jsonl, checkpoint-<step>/ folders and the trained model.")
    seed: int = Field(
        0, ge=0, lt=SEED_BOUND,
        description="Seeds every random choice of the run: initialisation, data order, sampling (0 to 2**32 - 1).",
    )
    resume: bool = Field(
        False, description="Continue from the newest checkpoint in `out` (start afresh if it has none)."
    )
    quiet: bool = Field(False, description="Plain log lines instead of a progress bar.")

    @model_validator(mode="before")
    @classmethod
    def _refuse_old_names(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            old = [name for name in RENAMED if name in data]
            if old:
                renamed = ", ".join(f"{name!r} is now {RENAMED[name]!r}" for name in old)
                raise ValueError(f"renamed settings: {renamed}")
        return data

    def input_paths(self) -> dict[str, Any]:
        """The paths this run reads, by option (`INPUTS`): the output check refuses an --out over any of them
        (a model argument that is a Hub id or "default" names no local path and is passed over).

        >>> class Demo(TrainingConfig):
        ...     INPUTS: ClassVar[tuple[str, ...]] = ("data", "base_model")
        ...     data: tuple[Path, ...] = ()
        ...     base_model: str = "default"
        >>> Demo(out=Path("o"), data=(Path("r"),)).input_paths()
        {'--data': (PosixPath('r'),), '--base-model': 'default'}
        """
        return {"--" + name.replace("_", "-"): getattr(self, name) for name in self.INPUTS}

    def differences(self, saved: Mapping[str, Any], *, by_content: Collection[str] = ()) -> list[str]:
        """What differs from a saved config of the run being continued, apart from `RESUMABLE` fields and
        the inputs in `by_content` (compared by what they hold, so another spelling of their path is no change).

        >>> class Demo(TrainingConfig):
        ...     steps: int = 1
        >>> Demo(out=Path("x"), steps=2).differences({"out": "y", "seed": 0, "steps": 1})
        ['steps: 1 then, 2 now']
        """
        mine = self.model_dump(mode="json")
        return [
            f"{name}: {saved.get(name)!r} then, {value!r} now"
            for name, value in mine.items()
            if name not in self.RESUMABLE and name not in by_content and name in saved and saved[name] != value
        ]

