"""PPO checkpoints: everything needed to continue a run exactly, in safetensors and JSON (never pickle).

```
OUT/checkpoint-<step>/
  config.json              the PPOConfig of the run
  state.json               step, optimizer hyper-parameters and scalar state
  adapter/                 LoRA: a PEFT adapter folder (usable as --policy to start a new run)
  model/                   full fine-tuning: a Hugging Face model folder
  value_head.safetensors
  optimizer.safetensors    optimizer moments, keyed "state.<param index>.<name>"
  rng.safetensors          torch RNG states (CPU, CUDA, data order)
```
A checkpoint is written to a hidden temporary folder and renamed into place, so a crash never leaves
a half-written checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from labeler.ppo.config import PPOConfig
from labeler.ppo.model import ADAPTER_WEIGHTS, POLICY_ADAPTER, PolicyWithValueHead

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def optimizer_state_to_tensors(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer's state_dict into tensors (for safetensors) and JSON-able metadata.

    >>> tensors, meta = optimizer_state_to_tensors({
    ...     "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
    ...     "param_groups": [{"lr": 0.1, "params": [0]}],
    ... })
    >>> sorted(tensors), meta
    (['state.0.exp_avg', 'state.0.step'], {'param_groups': [{'lr': 0.1, 'params': [0]}], 'scalars': {}})
    """
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_state_from_tensors(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `optimizer_state_to_tensors`.

    >>> state = optimizer_state_from_tensors(
    ...     {"state.0.exp_avg": torch.zeros(2)}, {"param_groups": [], "scalars": {"0.n": 1}})
    >>> state["state"]
    {0: {'exp_avg': tensor([0., 0.]), 'n': 1}}
    """
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state(data_generator: torch.Generator) -> dict[str, Tensor]:
    states = {"torch": torch.get_rng_state(), "data": data_generator.get_state()}
    if torch.cuda.is_available():
        states.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return states


def restore_rng_state(states: dict[str, Tensor], data_generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    data_generator.set_state(states["data"])
    cuda = [states[f"cuda.{i}"] for i in range(len(states)) if f"cuda.{i}" in states]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `out`, oldest first."""
    if not out.is_dir():
        return []
    found = []
    for child in out.iterdir():
        match = CHECKPOINT_PATTERN.match(child.name)
        if match and (child / "state.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(out: Path) -> Path | None:
    dirs = checkpoint_dirs(out)
    return dirs[-1][1] if dirs else None


def save_checkpoint(
    out: Path,
    step: int,
    config: PPOConfig,
    policy: PolicyWithValueHead,
    optimizer: torch.optim.Optimizer,
    data_generator: torch.Generator,
    tokenizer: Any,
) -> Path:
    """Write checkpoint-<step> atomically, then delete all but the `config.keep_checkpoints` newest."""
    target = out / f"checkpoint-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".checkpoint-{step}.partial-", dir=out))
    try:
        if config.lora:
            policy.lm.save_pretrained(tmp / "adapter", selected_adapters=[POLICY_ADAPTER], safe_serialization=True)
            tokenizer.save_pretrained(tmp / "adapter")
        else:
            policy.lm.save_pretrained(tmp / "model", safe_serialization=True)
            tokenizer.save_pretrained(tmp / "model")
        value_head = {k: v.contiguous() for k, v in policy.value_head.state_dict().items()}
        save_file(value_head, tmp / "value_head.safetensors")
        optimizer_tensors, optimizer_meta = optimizer_state_to_tensors(optimizer.state_dict())
        save_file(optimizer_tensors, tmp / "optimizer.safetensors")
        save_file(rng_state(data_generator), tmp / "rng.safetensors")
        (tmp / "config.json").write_text(config.model_dump_json(indent=2) + "\n")
        # state.json last: its presence marks the checkpoint complete.
        (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": optimizer_meta}, indent=2) + "\n")
        if target.exists():  # the same step saved before a crash; this one replaces it
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    for _, old in checkpoint_dirs(out)[: -config.keep_checkpoints]:
        shutil.rmtree(old)
    return target


def load_checkpoint(
    folder: Path,
    config: PPOConfig,
    policy: PolicyWithValueHead,
    optimizer: torch.optim.Optimizer,
    data_generator: torch.Generator,
) -> int:
    """Load a checkpoint's weights, optimizer and RNG states into the run; return its step."""
    from peft import set_peft_model_state_dict

    state = json.loads((folder / "state.json").read_text())
    if config.lora:
        result: Any = set_peft_model_state_dict(
            policy.lm, load_file(folder / "adapter" / ADAPTER_WEIGHTS), adapter_name=POLICY_ADAPTER
        )
        if result.unexpected_keys:
            raise RuntimeError(
                f"{folder / 'adapter'}: adapter weights do not fit the policy: {result.unexpected_keys[:5]}"
            )
    else:
        load_model_weights(policy.lm, folder / "model")
    policy.value_head.load_state_dict(load_file(folder / "value_head.safetensors"))
    optimizer_tensors = load_file(folder / "optimizer.safetensors")
    optimizer.load_state_dict(optimizer_state_from_tensors(optimizer_tensors, state["optimizer"]))
    restore_rng_state(load_file(folder / "rng.safetensors"), data_generator)
    return int(state["step"])


def load_model_weights(model: nn.Module, folder: Path) -> None:
    """Load every *.safetensors shard in `folder` into `model`; only tied (shared) weights may be absent."""
    weights: dict[str, Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(shard))
    result = model.load_state_dict(weights, strict=False)
    parameters = dict(model.named_parameters(remove_duplicate=False))
    untied_missing = [
        name
        for name in result.missing_keys
        if not any(parameters.get(name) is parameters.get(loaded) for loaded in weights if loaded in parameters)
    ]
    if result.unexpected_keys or untied_missing:
        raise RuntimeError(
            f"{folder}: weights do not fit the model "
            f"(missing {untied_missing[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
