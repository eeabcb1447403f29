"""Model arguments: one function resolves every one of them (policy, judge, reward model, base model).

A model argument is `default` (the embedded SmolLM2-135M-Instruct), a local Hugging Face folder, or a
Hub id `org/name[@revision]` resolved through the local Hugging Face cache (`HF_HOME`; downloads only
safetensors, configs and tokenizer files, and none at all when `HF_HUB_OFFLINE` is set). A policy
argument may also be a PEFT adapter folder on top of its base model, or what `labeler ppo` wrote: its
output folder (the newest checkpoint) or one `checkpoint-<step>` folder (its exported adapter or model). Resolving
checks the folder without loading anything, so every command can refuse a bad model argument before
an engine, a model or a tokenizer is loaded; `ModelRef.folder()` then gives the folder to load from.

Set `LABELER_FORBID_MODEL_LOAD=1` to make every model, engine and tokenizer load fail loudly: the
bad-input tests use it to prove that input is checked before anything is loaded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from labeler.core.errors import InputError, about_field
from labeler.core.input_files import read_json

FORBID_LOAD_ENV = "LABELER_FORBID_MODEL_LOAD"
DEFAULT = "default"
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")
# What a model download may fetch: weights as safetensors only (never pickles), configs, tokenizers.
HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "tokenizer*"]

Kind = Literal["causal", "reward", "policy", "backbone"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MAX_MODEL_JSON_BYTES = 16 * 1024 * 1024  # config.json, adapter_config.json: a few kB in practice
# What `labeler ppo` exports into each checkpoint: a LoRA adapter, or the whole model (full fine-tuning).
CHECKPOINT_EXPORTS = ("adapter", "model")


def guard_model_load(what: str) -> None:
    """Raise when `LABELER_FORBID_MODEL_LOAD` is set: called right before any model or tokenizer loads."""
    if os.environ.get(FORBID_LOAD_ENV):
        raise RuntimeError(f"{FORBID_LOAD_ENV} is set, but something tried to load {what}")


@dataclass(frozen=True)
class ModelRef:
    """A checked model argument: where its files are, and the id datasets record for it."""

    spec: str  # as the user gave it
    path: Path | None  # the Hugging Face folder (for the embedded model: where it is, or will be, prepared);
    # None for a served model, whose files are on its servers
    label: str  # recorded in datasets and fingerprints: the folder's name, or org/name@commit
    source: Literal["embedded", "folder", "hub", "served"]
    revision: str | None = None  # the commit hash of a Hub model
    base: ModelRef | None = None  # the base model of a PEFT adapter folder
    context_length: int | None = None  # the longest context its config.json allows (None: not known here)

    @property
    def is_adapter(self) -> bool:
        return self.base is not None

    @property
    def model_context_length(self) -> int | None:
        """The context length of the model that runs: an adapter's base model's."""
        return self.base.context_length if self.base is not None else self.context_length

    def folder(self) -> Path:
        """The folder to load from; the embedded model is converted here on first use."""
        if self.path is None:
            raise ValueError(f"{self.label!r} is a model a server serves: there is no folder to load here")
        if self.source == "embedded":
            from labeler.engine.embedded import prepare_default_model

            return prepare_default_model(self.path)
        return self.path


def served_model(name: str) -> ModelRef:
    """A model that OpenAI-compatible servers serve under `name` (nothing here to check or load).

    >>> served_model("org/judge").label
    'org/judge'
    """
    return ModelRef(name, None, name, "served")


def resolve_model(
    spec: str | Path | None,
    *,
    field: str | None = "model",
    where: str = "",
    kind: Kind = "causal",
    trust_remote_code: bool = False,
) -> ModelRef:
    """Check a model argument without loading it; `InputError` naming the path or id and `field`, the
    config field that holds the argument (the CLI shows it as its option, `labeler run` as its key), or,
    with `field` None, `where` (any other place, such as a run config's key).

    `kind`: "causal" (a causal LM folder), "reward" (a sequence classifier written by `labeler
    train-rm`), "policy" (a causal LM folder, a PEFT adapter folder on top of one, or a `labeler ppo`
    output or checkpoint folder), "backbone" (a causal LM, or a reward model to continue training).
    `trust_remote_code`: a model whose config.json points at code of its own (`auto_map`) is accepted.
    """
    with about_field(field):
        return _resolve_model(spec, where=where, kind=kind, trust_remote_code=trust_remote_code)


def _resolve_model(spec: str | Path | None, *, where: str, kind: Kind, trust_remote_code: bool) -> ModelRef:
    """`resolve_model`, its problems naming `where` (after the field, when there is one)."""
    text = DEFAULT if spec is None else str(spec)
    if text == DEFAULT:
        from labeler.engine.embedded import default_model_dir, find_gguf, is_ready

        folder = default_model_dir()
        if not is_ready(folder):
            find_gguf()  # the package holding the embedded model must be installed (InputError otherwise)
            return ModelRef(text, folder, folder.name, "embedded")
        context = check_model_folder(folder, where=where)
        return ModelRef(text, folder, folder.name, "embedded", context_length=context)
    path = Path(text).expanduser()
    if path.exists():
        if kind == "policy":
            return _policy_folder(text, path, where=where, trust_remote_code=trust_remote_code)
        context = check_model_folder(path, where=where, kind=kind, trust_remote_code=trust_remote_code)
        return ModelRef(text, path.resolve(), path.resolve().name, "folder", context_length=context)
    match = HUB_ID.match(text)
    if match is None or text.startswith((".", "/", "~")):
        raise InputError("model path does not exist", file=path, where=where)
    folder, revision = _hub_snapshot(match["repo"], match["revision"], where=where)
    context = check_model_folder(folder, where=where, kind=kind, trust_remote_code=trust_remote_code)
    base = None
    if kind == "policy" and is_adapter_folder(folder):
        base = _resolve_model(adapter_base_spec(folder), where=f"{where} (the base model of {text})".strip(),
                              kind="causal", trust_remote_code=trust_remote_code)
    return ModelRef(text, folder, f"{match['repo']}@{revision}", "hub", revision, base, context)


def is_adapter_folder(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def adapter_base_spec(adapter: Path) -> str:
    """The base model an adapter folder names (`base_model_name_or_path`), as a model argument."""
    config_file = adapter / ADAPTER_CONFIG
    base = adapter_config(adapter).get("base_model_name_or_path")
    if not base:
        raise InputError("adapter_config.json names no base_model_name_or_path", file=config_file)
    return str(base)


def checkpoint_export(path: Path, *, where: str) -> Path | None:
    """The usable policy inside a `labeler ppo` output or checkpoint folder, or None for other folders.

    An output folder (it holds `training-config.json`, and no model or adapter of its own, as `labeler dpo`
    writes) gives its newest finished checkpoint; a checkpoint gives what it exported (`adapter/` or `model/`).
    """
    from labeler.core.layout import SAVED_CONFIG, STATE_FILE, latest_checkpoint

    if (path / SAVED_CONFIG).is_file() and not (path / "config.json").is_file() and not is_adapter_folder(path):
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise InputError("a training output folder without a finished checkpoint yet", file=path, where=where)
        path = checkpoint
    if not (path / STATE_FILE).is_file():
        return None
    for name in CHECKPOINT_EXPORTS:
        if (path / name).is_dir():
            return path / name
    raise InputError(
        f"a checkpoint without an exported policy ({' or '.join(n + '/' for n in CHECKPOINT_EXPORTS)})",
        file=path,
        where=where,
    )


def checkpoint_label(checkpoint: Path) -> str:
    """How datasets name the policy a checkpoint exported: its run folder's name and its own.

    >>> checkpoint_label(Path("/runs/x/ppo/checkpoint-40"))
    'ppo/checkpoint-40'
    """
    return f"{checkpoint.parent.name}/{checkpoint.name}"


def _policy_folder(text: str, path: Path, *, where: str, trust_remote_code: bool = False) -> ModelRef:
    """A policy folder: a model, an adapter (its base checked too), or a PPO output or checkpoint."""
    from labeler.core.layout import STATE_FILE

    export = checkpoint_export(path, where=where) if path.is_dir() else None
    folder = (export or path).resolve()
    context = check_model_folder(folder, where=where, kind="policy", trust_remote_code=trust_remote_code)
    # A checkpoint's policy is named by its run and step (`ppo/checkpoint-40`): `adapter` says nothing.
    in_checkpoint = folder.name in CHECKPOINT_EXPORTS and (folder.parent / STATE_FILE).is_file()
    label = checkpoint_label(folder.parent) if in_checkpoint else folder.name
    if not is_adapter_folder(folder):
        return ModelRef(text, folder, label, "folder", context_length=context)
    base = _resolve_model(adapter_base_spec(folder), where=f"{where} (the base model of {folder})".strip(),
                          kind="causal", trust_remote_code=trust_remote_code)
    return ModelRef(text, folder, label, "folder", base=base)


def _hub_snapshot(repo: str, revision: str | None, *, where: str) -> tuple[Path, str]:
    """The cached (or downloaded) snapshot folder of a Hub model and its commit hash."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        folder = Path(
            snapshot_download(repo, revision=revision, allow_patterns=HUB_FILES, local_files_only=offline)
        )
    except LocalEntryNotFoundError:
        state = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise InputError(
            f"neither a local folder nor a Hub id found in the local Hugging Face cache ({state}; "
            f"cache: {constants.HF_HUB_CACHE}); download it first with `hf download {repo}`",
            file=f"{repo}@{revision}" if revision else repo,
            where=where,
        ) from None
    except HfHubHTTPError as exc:
        raise InputError(f"the Hub refused the model: {exc}", file=repo, where=where) from None
    return folder, folder.name


def check_model_folder(
    path: Path, *, where: str, kind: Kind = "causal", trust_remote_code: bool = False
) -> int | None:
    """`InputError` unless `path` holds a model of `kind` with safetensors weights and a tokenizer (reads
    config.json and the weights' headers only); returns the context length its config allows (None for
    an adapter, whose base model decides, or a config that does not say)."""
    if not path.is_dir():
        raise InputError("is a file, not a model folder", file=path, where=where)
    if kind == "policy" and is_adapter_folder(path):
        if not (path / ADAPTER_WEIGHTS).is_file():
            raise InputError("the adapter folder has no adapter_model.safetensors", file=path, where=where)
        check_safetensors_file(path / ADAPTER_WEIGHTS, where=where)
        check_adapter_config(path, where=where)
        return None
    config_file = path / "config.json"
    if not config_file.is_file():
        hint = " (it is a labeler run folder)" if (path / "manifest.json").is_file() else ""
        raise InputError(f"not a Hugging Face model folder: no config.json{hint}", file=path, where=where)
    config = read_json(config_file, what="a model config", limit=MAX_MODEL_JSON_BYTES, where=where,
                       invalid="config.json is not valid JSON")
    if not isinstance(config, dict):
        raise InputError("config.json is not a JSON object", file=config_file, where=where)
    if not any(path.glob("*.safetensors")):
        raise InputError(
            "no .safetensors weights in the model folder (labeler never loads pickled weights)", file=path, where=where
        )
    architectures = [str(a) for a in config.get("architectures") or []]
    is_classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
    if kind == "reward" and not is_classifier:
        raise InputError(
            f"not a reward model (architecture {', '.join(architectures) or 'unknown'}); "
            "train one with `labeler train-rm`",
            file=path,
            where=where,
        )
    if kind not in ("reward", "backbone") and is_classifier:
        raise InputError(
            f"a sequence classifier ({', '.join(architectures)}), not a causal language model", file=path, where=where
        )
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors_file(weights, where=where)
    check_tokenizer_files(path, where=where)
    if "auto_map" in config and not trust_remote_code:
        raise InputError(
            "config.json has auto_map: the model runs code shipped with it; give ‹trust_remote_code› to allow that",
            file=config_file, where=where,
        )
    return context_length(config)


# Files any one of which lets transformers build a tokenizer without the model's own code.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt",
                   "sentencepiece.bpe.model", "tokenizer.tiktoken")
# A safetensors file starts with the length of its JSON header (8 bytes, little-endian), then the header.
SAFETENSORS_PREFIX = 8
SAFETENSORS_MAX_HEADER = 100_000_000  # what the safetensors library itself refuses beyond


def check_safetensors_file(file: Path, *, where: str) -> None:
    """`InputError` unless `file` is a regular file that starts like safetensors weights: a broken link,
    an empty file, or one cut off inside its header is named before any engine tries to load it."""
    if file.is_symlink() and not file.exists():
        raise InputError("the weights file is a broken symbolic link", file=file, where=where)
    if not file.is_file():
        raise InputError("the weights file is not a regular file", file=file, where=where)
    size = file.stat().st_size
    if size == 0:
        raise InputError("the weights file is empty (0 bytes)", file=file, where=where)
    with open(file, "rb") as f:
        prefix = f.read(SAFETENSORS_PREFIX)
        header_size = int.from_bytes(prefix, "little") if len(prefix) == SAFETENSORS_PREFIX else 0
        opening = f.read(1)
    if (len(prefix) < SAFETENSORS_PREFIX or not 2 <= header_size <= SAFETENSORS_MAX_HEADER
            or SAFETENSORS_PREFIX + header_size > size or opening != b"{"):
        raise InputError(f"not safetensors weights, or cut off ({size} bytes)", file=file, where=where)


def check_tokenizer_files(path: Path, *, where: str) -> None:
    """`InputError` unless the model folder holds the files of a tokenizer."""
    if not any((path / name).is_file() for name in TOKENIZER_FILES) and not any(path.glob("*.tiktoken")):
        raise InputError(f"no tokenizer files in the model folder (one of {', '.join(TOKENIZER_FILES)})",
                         file=path, where=where)


def context_length(config: dict[str, object]) -> int | None:
    """The longest context a model's config allows: its position limit, scaled by a RoPE scaling factor.

    >>> context_length({"max_position_embeddings": 8192})
    8192
    >>> context_length({"text_config": {"max_position_embeddings": 4096}, "rope_scaling": {"factor": 4.0}})
    16384
    >>> context_length({}) is None
    True
    """
    limit = config.get("max_position_embeddings")
    text_config = config.get("text_config")
    if limit is None and isinstance(text_config, dict):
        limit = text_config.get("max_position_embeddings")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return None
    factor = 1.0
    for key in ("rope_scaling", "rope_parameters"):
        scaling = config.get(key)
        value = scaling.get("factor") if isinstance(scaling, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            factor = max(factor, float(value))
    return int(limit * factor)


def check_adapter_config(adapter: Path, *, where: str) -> None:
    """`InputError` unless the adapter is a LoRA adapter of a rank of at least 1: what vLLM serves and
    what the transformers engine merges into its base model."""
    config_file = adapter / ADAPTER_CONFIG
    config = adapter_config(adapter)
    kind = config.get("peft_type")
    if kind != "LORA":
        raise InputError(f"a {kind} adapter, not LoRA (peft_type in adapter_config.json): only LoRA adapters run here",
                         file=config_file, where=where)
    ranks = [("r", config.get("r", 8))]
    pattern = config.get("rank_pattern")
    if isinstance(pattern, dict):
        ranks += [(f"rank_pattern.{name}", rank) for name, rank in pattern.items()]
    for key, rank in ranks:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise InputError(f"the LoRA rank {key} must be a whole number of at least 1, got {rank!r}",
                             file=config_file, where=where)


def adapter_config(adapter: Path) -> dict[str, object]:
    """The JSON object of an adapter folder's adapter_config.json; `InputError` when it is not one."""
    config_file = adapter / ADAPTER_CONFIG
    config = read_json(config_file, what="an adapter config", limit=MAX_MODEL_JSON_BYTES, invalid="not valid JSON")
    if not isinstance(config, dict):
        raise InputError("adapter_config.json is not a JSON object", file=config_file)
    return config
