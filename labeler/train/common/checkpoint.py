"""Training checkpoints, one format for every trainer: `OUT/checkpoint-<step>/`.

```
checkpoint-<step>/
  config.json            # the config of the run that wrote it (a resumed run must match it)
  state.json             # {"step": ..., "optimizer": {...}, ...the trainer's own scalars}
  trainable.safetensors  # every parameter being trained, by name (all weights, or LoRA adapters + heads)
  optimizer.safetensors  # optimizer moments and step counts, keyed "<param index>.<name>"
  rng.safetensors        # torch (and CUDA) generator states, and the trainer's own generators
  ...                    # whatever the trainer exports beside them (e.g. PPO's usable adapter/)
```
Everything is JSON or safetensors: loading a checkpoint never unpickles anything. A checkpoint is
written to a hidden temporary folder and renamed into place, and only a folder holding `state.json`
counts, so a crash while saving leaves the previous checkpoint intact and never a half one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors.torch import load_file, save_file
from torch import nn

from labeler.core.errors import InputError
from labeler.core.layout import (  # the folder layout, readable without torch
    CHECKPOINT_PATTERN,
    STATE_FILE,
    checkpoint_dir,
    checkpoint_steps,
    latest_checkpoint,
)

__all__ = [
    "CHECKPOINT_PATTERN",
    "STATE_FILE",
    "checkpoint_dir",
    "checkpoint_steps",
    "latest_checkpoint",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
]

CONFIG_FILE = "config.json"
TRAINABLE_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"


def save_checkpoint(
    out: Path,
    step: int,
    *,
    config: BaseModel,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    keep: int,
    generators: Mapping[str, torch.Generator] | None = None,
    export: Callable[[Path], None] | None = None,
) -> Path:
    """Write `checkpoint-<step>` atomically, then delete all but the newest `keep` checkpoints.

    `export(folder)` writes extra files into the checkpoint before it is committed (a trainer's
    usable model folder, for instance).
    """
    final = checkpoint_dir(out, step)
    partial = Path(tempfile.mkdtemp(prefix=f".checkpoint-{step}.partial-", dir=out))
    try:
        trainable = {name: p.detach().contiguous().cpu() for name, p in module.named_parameters() if p.requires_grad}
        save_file(trainable, partial / TRAINABLE_FILE)
        optimizer_tensors, optimizer_meta = flatten_optimizer_state(optimizer.state_dict())
        save_file(optimizer_tensors, partial / OPTIMIZER_FILE)
        save_file(_rng_tensors(generators or {}), partial / RNG_FILE)
        (partial / CONFIG_FILE).write_text(config.model_dump_json(indent=2) + "\n", encoding="utf-8")
        if export is not None:
            export(partial)
        # state.json last: a folder counts as a checkpoint only once it is there.
        (partial / STATE_FILE).write_text(
            json.dumps({**state, "step": step, "optimizer": optimizer_meta}, indent=2) + "\n", encoding="utf-8"
        )
        if final.exists():  # the same step saved before a crash; this one replaces it
            shutil.rmtree(final)
        os.replace(partial, final)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    for old in checkpoint_steps(out)[:-keep]:
        shutil.rmtree(checkpoint_dir(out, old))
    return final


def load_checkpoint(
    folder: Path,
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: Mapping[str, torch.Generator] | None = None,
) -> dict[str, Any]:
    """Restore trained parameters, optimizer and generator states from `folder`; return its state.json.

    `InputError` naming the file when the checkpoint does not fit the model being trained.
    """
    state: dict[str, Any] = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    saved = load_file(folder / TRAINABLE_FILE)
    expected = {name for name, p in module.named_parameters() if p.requires_grad}
    if set(saved) != expected:
        missing, extra = sorted(expected - set(saved)), sorted(set(saved) - expected)
        raise InputError(
            f"the checkpoint's trained parameters do not match this model (missing {missing[:3]}, extra {extra[:3]})",
            file=folder / TRAINABLE_FILE,
        )
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name in saved:
                parameter.copy_(saved[name])
    optimizer.load_state_dict(unflatten_optimizer_state(load_file(folder / OPTIMIZER_FILE), state["optimizer"]))
    _restore_rng(load_file(folder / RNG_FILE), generators or {})
    return state


def read_checkpoint_config(folder: Path) -> dict[str, Any]:
    """The config a checkpoint was written with, as JSON data."""
    config: dict[str, Any] = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    return config


def flatten_optimizer_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and the JSON-able rest.

    >>> opt = torch.optim.AdamW([nn.Parameter(torch.ones(2))])
    >>> opt.param_groups[0]["params"][0].grad = torch.ones(2); opt.step()
    >>> tensors, meta = flatten_optimizer_state(opt.state_dict())
    >>> sorted(tensors), meta["scalars"]
    (['0.exp_avg', '0.exp_avg_sq', '0.step'], {})
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `flatten_optimizer_state`.

    >>> unflatten_optimizer_state({"0.exp_avg": torch.zeros(2)}, {"param_groups": [], "scalars": {"0.n": 1}})
    {'state': {0: {'exp_avg': tensor([0., 0.]), 'n': 1}}, 'param_groups': []}
    """
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors(generators: Mapping[str, torch.Generator]) -> dict[str, torch.Tensor]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for device, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{device}"] = rng
    tensors.update({f"generator.{name}": g.get_state() for name, g in generators.items()})
    return tensors


def _restore_rng(tensors: Mapping[str, torch.Tensor], generators: Mapping[str, torch.Generator]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        cuda = [tensors[f"cuda.{d}"] for d in range(torch.cuda.device_count()) if f"cuda.{d}" in tensors]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    for name, generator in generators.items():
        generator.set_state(tensors[f"generator.{name}"])
