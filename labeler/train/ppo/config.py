"""`PPOConfig`: every knob of a PPO run, validated once, saved in each checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from labeler.train.common.config import TrainingConfig, TrainingSettings

KLEstimator = Literal["k1", "k3"]


class PPOSettings(TrainingSettings):
    """How PPO trains a policy: everything but its prompts, its reward and where it writes (what a run
    config's `stages.ppo` holds)."""

    # --- the policy
    policy: str = Field(
        "default",
        description="The starting policy: a Hugging Face model folder, a Hub id org/name[@revision], a PEFT "
        "adapter folder (adapter_config.json + adapter_model.safetensors) on top of its base model, or "
        "'default' (the embedded SmolLM2-135M-Instruct).",
    )
    # --- model
    lora: bool = Field(True, description="Train a LoRA adapter (the base stays frozen) instead of all weights.")
    lora_target_modules: str | tuple[str, ...] = Field(
        "all-linear", description="Modules that get a LoRA adapter (PEFT's `target_modules`)."
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Weights' dtype. float32 on CPU; bfloat16 halves GPU memory."
    )
    device: str = Field("auto", description="torch device: `auto` (cuda when available, else cpu), cpu, cuda:0, ...")

    # --- rollouts
    steps: int = Field(100, ge=1, description="PPO steps: each samples one rollout batch and updates on it.")
    rollout_batch: int = Field(16, ge=2, description="Prompts sampled (one completion each) per step.")
    max_new_tokens: int = Field(64, ge=1, description="Most tokens per completion.")
    max_prompt_tokens: int = Field(
        512, ge=1, description="Prompts longer than this (after the chat template) are skipped, and counted."
    )
    rollout_engine: Literal["hf", "vllm", "auto"] = Field(
        "auto",
        description="What samples the rollouts: hf (the training model's own generate), vllm (a vLLM engine "
        "given the policy as it is now at each step, see rollout_weights), or auto (vllm when it is installed "
        "and can take the policy, else hf). Log-probabilities for the loss always come from the training model.",
    )
    rollout_weights: Literal["merged", "adapter", "auto"] = Field(
        "auto",
        description="How vllm rollouts get the policy each step: merged (its weights, the adapter merged in, "
        "loaded in place into the engine's model: LoRA or full fine-tuning), adapter (the LoRA adapter loaded "
        "per request through vLLM's LoRA support), or auto (adapter for LoRA on a GPU, merged elsewhere: on "
        "CPU vLLM's LoRA generation measured 1.88x slower than the plain model's).",
    )
    rollout_kv_cache_gib: float = Field(
        1.0, gt=0, description="vllm rollouts on CPU: KV-cache size in GiB (1 GiB holds about 46,000 tokens of "
        "SmolLM2-135M)."
    )
    rollout_gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="vllm rollouts on GPU: the share of GPU memory vLLM may take (training needs "
        "the rest)."
    )
    missing_eos_reward: float = Field(
        -1.0,
        description="Added to the reward of a completion that hits max_new_tokens without EOS (a penalty when "
        "negative).",
    )

    # --- reward shaping and advantages
    kl_coef: float = Field(0.05, ge=0.0, description="Weight of the per-token KL penalty to the reference.")
    kl_estimator: KLEstimator = Field(
        "k1", description="Per-token KL estimator: k1 = log p − log p_ref; k3 = (r − 1) − log r, r = p_ref/p."
    )
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="Discount factor.")
    lam: float = Field(0.95, ge=0.0, le=1.0, description="GAE lambda.")

    # --- optimisation
    ppo_epochs: int = Field(4, ge=1, description="Passes over each rollout batch.")
    minibatch: int = Field(4, ge=1, description="Sequences per gradient step; must divide rollout_batch.")
    learning_rate: float = Field(
        1e-4, gt=0.0, description="AdamW learning rate (try 1e-5 for full fine-tuning, ‹lora› off)."
    )
    clip_range: float = Field(0.2, gt=0.0, description="PPO ratio clip ε.")
    clip_range_value: float = Field(0.2, gt=0.0, description="Value clip: how far a value may move per rollout.")
    vf_coef: float = Field(0.1, ge=0.0, description="Weight of the value loss.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")

    # --- reward
    reward_weights: dict[str, float] | None = Field(
        None,
        description="With a reward model that has one head per principle (`train-rm --heads principles`): the "
        "reward is the weighted sum of its heads, NAME=W,... (a head not named weighs 0; default: the model's own "
        "weighting, its constitution's weights).",
    )

    # --- bookkeeping
    checkpoint_every: int = Field(
        10, ge=0, description="Steps between checkpoints (0: none in between; the last step always saves)."
    )


class PPOConfig(PPOSettings, TrainingConfig):
    """One PPO run: a policy (LoRA by default) trained against a reward, with a KL penalty to its start."""

    # More steps continue the run; the rollout engine is how samples are drawn, not what is trained.
    RESUMABLE: ClassVar[frozenset[str]] = TrainingConfig.RESUMABLE | {
        "steps", "rollout_engine", "rollout_weights", "rollout_kv_cache_gib", "rollout_gpu_memory_utilization"
    }

    INPUTS: ClassVar[tuple[str, ...]] = ("policy", "prompts", "reward_model")

    # --- inputs
    prompts: Path = Field(
        description="Prompts to complete (JSONL, Parquet or Arrow): each row has `prompt` (text) or "
        "`messages`/`prompt_messages` (a list of {role, content} ending before the assistant's turn)."
    )
    reward_model: str | None = Field(
        None,
        description="Reward model written by `labeler train-rm` (a folder or a Hub id), or give a reward rule instead.",
    )
    reward_rule: str | None = Field(
        None,
        description="A rule-based reward instead of a reward model: `word:WORD` scores each completion "
        "by how often it contains WORD (whole word, any case); `length:CHARS` by its length in characters over "
        "CHARS (a length-only control: does a judge prefer answers for their length alone?).",
    )

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        if self.reward_model is not None and self.reward_rule is not None:
            raise ValueError("give reward_model or reward_rule, not both")
        if self.reward_weights is not None and self.reward_rule is not None:
            raise ValueError("reward_weights weighs a reward model's heads; a reward rule has none")
        if self.rollout_batch % self.minibatch != 0:
            raise ValueError(
                f"minibatch={self.minibatch} must divide rollout_batch={self.rollout_batch}"
            )
        return self

    # Derived values (cleanrl style): computed from the fields, never set by hand.
    @property
    def num_minibatches(self) -> int:
        """Gradient steps per PPO epoch."""
        return self.rollout_batch // self.minibatch

    @property
    def gradient_steps_per_step(self) -> int:
        """Optimizer steps per PPO step."""
        return self.ppo_epochs * self.num_minibatches
