"""Training checkpoints: `OUT/checkpoint-<step>/`, enough to continue exactly where training stopped.

```
checkpoint-<step>/
  config.json            # the RMTrainConfig that wrote it; a resumed run must match it
  state.json             # step, token count, pending metric sums, optimizer hyper-parameters
  trainable.safetensors  # the parameters being trained (all of them, or LoRA adapters + head)
  optimizer.safetensors  # AdamW moments and step counts, keyed "<param index>.<name>"
  rng.safetensors        # torch (and CUDA) generator states
```
Everything is JSON or safetensors: loading a checkpoint never unpickles anything. A checkpoint is
written under a temporary name and renamed, so a crash while saving leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from labeler.errors import InputError

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"


def checkpoint_steps(out: Path) -> list[int]:
    """Steps of the finished checkpoints in `out`, oldest first.

    >>> checkpoint_steps(Path("/nonexistent"))
    []
    """
    if not out.is_dir():
        return []
    steps = []
    for child in out.iterdir():
        match = CHECKPOINT_PATTERN.match(child.name)
        if match and (child / STATE_FILE).is_file():
            steps.append(int(match.group(1)))
    return sorted(steps)


def latest_checkpoint(out: Path) -> Path | None:
    """The newest finished checkpoint folder in `out`, or None."""
    steps = checkpoint_steps(out)
    return out / f"checkpoint-{steps[-1]}" if steps else None


def save_checkpoint(
    out: Path,
    step: int,
    *,
    config_json: str,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    keep: int,
) -> Path:
    """Write `checkpoint-<step>` atomically, then delete all but the newest `keep` checkpoints."""
    final = out / f"checkpoint-{step}"
    partial = out / f".checkpoint-{step}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    trainable = {name: p.detach().contiguous().cpu() for name, p in module.named_parameters() if p.requires_grad}
    save_file(trainable, partial / "trainable.safetensors")
    optimizer_tensors, optimizer_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(optimizer_tensors, partial / "optimizer.safetensors")
    save_file(_rng_tensors(), partial / "rng.safetensors")
    (partial / CONFIG_FILE).write_text(config_json + "\n", encoding="utf-8")
    # state.json last: a folder counts as a checkpoint only once it is there.
    (partial / STATE_FILE).write_text(
        json.dumps({**state, "step": step, "optimizer": optimizer_meta}, indent=2) + "\n", encoding="utf-8"
    )
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    for old in checkpoint_steps(out)[:-keep]:
        shutil.rmtree(out / f"checkpoint-{old}")
    return final


def load_checkpoint(folder: Path, *, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore parameters, optimizer and RNG state from `folder`; return its state.json."""
    state: dict[str, Any] = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    saved = load_file(folder / "trainable.safetensors")
    expected = {name for name, p in module.named_parameters() if p.requires_grad}
    if set(saved) != expected:
        missing, extra = sorted(expected - set(saved)), sorted(set(saved) - expected)
        raise InputError(
            f"the checkpoint's trained parameters do not match this model (missing {missing[:3]}, extra {extra[:3]})",
            file=folder / "trainable.safetensors",
        )
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name in saved:
                parameter.copy_(saved[name])
    optimizer.load_state_dict(_unflatten_optimizer(load_file(folder / "optimizer.safetensors"), state["optimizer"]))
    _restore_rng(load_file(folder / "rng.safetensors"))
    return state


def read_checkpoint_config(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    return config


def _flatten_optimizer(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and the JSON-able rest.

    >>> opt = torch.optim.AdamW([nn.Parameter(torch.ones(2))])
    >>> opt.param_groups[0]["params"][0].grad = torch.ones(2); opt.step()
    >>> tensors, meta = _flatten_optimizer(opt.state_dict())
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


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for device, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{device}"] = rng
    return tensors


def _restore_rng(tensors: Mapping[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        cuda = [tensors[f"cuda.{d}"] for d in range(torch.cuda.device_count()) if f"cuda.{d}" in tensors]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
