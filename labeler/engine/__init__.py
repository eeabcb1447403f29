"""Engines behind one narrow contract (`Engine`), chosen by name: "vllm" (default) or "hf".

Only this package imports vllm or transformers for inference, and only when an engine is opened.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from labeler.engine.base import (
    ChoiceRequest,
    ChoiceScores,
    Conversation,
    Engine,
    Generation,
    GenerationParams,
    Message,
)
from labeler.engine.dtype import resolve_dtype
from labeler.errors import InputError
from labeler.models import ModelRef, guard_model_load, resolve_model

__all__ = [
    "ChoiceRequest",
    "ChoiceScores",
    "Conversation",
    "Engine",
    "EngineConfig",
    "Generation",
    "GenerationParams",
    "Message",
    "load_engine",
    "open_engine",
]

EngineName = Literal["vllm", "hf"]


class EngineConfig(BaseModel):
    """How to run a model. Defaults suit a CPU machine; GPU nodes raise batch and parallelism."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: EngineName = Field("vllm", description="vllm (falls back to hf when vllm is not installed) or hf.")
    model: str = Field(
        "default",
        description="A Hugging Face model folder, a Hub id org/name[@revision] (from the local Hugging Face cache), "
        "or 'default' (the embedded SmolLM2-135M-Instruct).",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Weights and compute dtype; auto: bfloat16 on GPUs and CPUs with native bfloat16 "
        "(AVX512-BF16, AMX), float32 on other CPUs (where bfloat16 is emulated and slower).",
    )
    max_model_len: int | None = Field(None, ge=16, description="Context length cap (default: the model's).")
    batch_size: int = Field(16, ge=1, description="hf engine: sequences per forward pass.")
    kv_cache_gib: float | None = Field(
        None, gt=0, description="vllm on CPU: KV-cache size in GiB (default 2, or $VLLM_CPU_KVCACHE_SPACE)."
    )
    threads_bind: str | None = Field(
        None, description="vllm on CPU: cores to bind OpenMP threads to, e.g. '0-7' (default: all usable cores)."
    )
    enforce_eager: bool | None = Field(
        None,
        description="vllm: skip graph compilation and CUDA graphs (default: on CPU, where compiling costs minutes at "
        "every start; off on GPU, where CUDA graphs make generation much faster).",
    )
    enable_prefix_caching: bool = Field(True, description="vllm: reuse KV cache of shared prompt prefixes.")
    kv_block_size: int | None = Field(
        None,
        ge=1,
        description="vllm: tokens per KV-cache block, the unit in which a shared prefix is reused "
        "(default: 32 on CPU, where vLLM's own 128 wastes most of a judge prompt's shared prefix; vLLM's on GPU).",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="vllm: GPUs per engine (one model replica).")
    data_parallel_size: int = Field(
        1,
        ge=1,
        description="Model replicas on this node, each in its own process on its own tensor_parallel_size GPUs "
        "(or share of the CPU cores), each taking a part of the input; the parts merge into one run.",
    )
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vllm on GPU: memory share to use.")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint (off by default).")
    seed: int = Field(0, description="Engine-level seed; requests carry their own seeds too.")
    choice_logits: Literal["float32", "model"] = Field(
        "float32",
        description="Precision of the logits choices are scored from. float32: the output projection runs in "
        "float32 on the final hidden state whatever the model's dtype (in bfloat16 this model's logits, 30-60 in "
        "size, are otherwise rounded to steps of 0.25, so p_a ties at exactly 0.5 and SALMON scores fall on a "
        "0.125 grid). model: the model's dtype.",
    )
    deterministic: bool = Field(
        False,
        description="Labels that do not depend on batch size or row order: the model computes in float32 "
        "(see README, 'Reproducible labels', for the measured tolerance of each mode). Refuses a bfloat16 or "
        "float16 dtype.",
    )

    @model_validator(mode="after")
    def _deterministic_dtype(self) -> EngineConfig:
        if self.deterministic and self.dtype not in ("auto", "float32"):
            raise ValueError(f"deterministic needs dtype float32 (or auto), got dtype={self.dtype!r}")
        return self

    def compute_dtype(self) -> str:
        """The dtype the model runs in here: float32 when deterministic, else what `dtype` resolves to."""
        return "float32" if self.deterministic else resolve_dtype(self.dtype)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def open_engine(config: EngineConfig, model: ModelRef | None = None) -> Engine:
    """Open the engine a config names (a context manager: use it in a `with` block).

    `model`: the config's model argument already resolved (by a command's checks), else resolved here.
    """
    model = model or resolve_model(config.model, where="model")
    guard_model_load(f"the {config.name} engine on {model.label}")
    path = model.folder()
    name = config.name
    dtype = config.compute_dtype()
    if name == "vllm" and not vllm_available():
        print(
            "warning: vllm is not installed (pip install 'labeler[cpu]' or 'labeler[gpu]'); using the hf engine",
            file=sys.stderr,
        )
        name = "hf"
    try:
        if name == "vllm":
            from labeler.engine.vllm_engine import VLLMEngine

            return VLLMEngine(
                path,
                dtype=dtype,
                max_model_len=config.max_model_len,
                kv_cache_gib=config.kv_cache_gib,
                threads_bind=config.threads_bind,
                enforce_eager=config.enforce_eager,
                enable_prefix_caching=config.enable_prefix_caching,
                kv_block_size=config.kv_block_size,
                tensor_parallel_size=config.tensor_parallel_size,
                gpu_memory_utilization=config.gpu_memory_utilization,
                trust_remote_code=config.trust_remote_code,
                model_id=model.label,
                seed=config.seed,
                choice_logits=config.choice_logits,
            )
        from labeler.engine.hf import HFEngine

        return HFEngine(
            path,
            dtype=dtype,
            batch_size=config.batch_size,
            trust_remote_code=config.trust_remote_code,
            model_id=model.label,
            max_model_len=config.max_model_len,
            choice_logits=config.choice_logits,
        )
    except OSError as exc:  # unreadable or incomplete model files
        raise InputError(f"cannot load the model: {exc}", file=path, where="--model") from exc


def load_engine(name: str, model: str | Path | None = None, **options: object) -> Engine:
    """Shorthand: `load_engine("hf", path, dtype="float32")` validates the options as an `EngineConfig`."""
    config = EngineConfig.model_validate({"name": name, "model": str(model or "default"), **options})
    return open_engine(config)
