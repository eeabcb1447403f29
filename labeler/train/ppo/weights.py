"""The policy's weights as one plain checkpoint: what vLLM loads in place of its own each PPO step.

A LoRA policy's checkpoint is its base model with the trained adapter's change `B @ A * scale` added to
each adapted weight (and to its bias, for adapters that train one); the base layers themselves are left
untouched, so training goes on as before. A full fine-tuning policy's checkpoint is its state dict.
Names are the base model's own (`model.layers.0.self_attn.q_proj.weight`), which is what vLLM's loader
reads; a tensor shared by two names (tied input and output embeddings) is written once. What rollouts
send each step may leave out the frozen embeddings and head (`complete=False`): vLLM's reload keeps a
layer it is given nothing for as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from labeler.train.ppo.model import POLICY_ADAPTER


def adapter_config_blocker(config: dict[str, Any]) -> str | None:
    """Why a starting adapter (its adapter_config.json) cannot be merged each step, or None when it can.

    >>> adapter_config_blocker({"peft_type": "LORA", "r": 8}) is None
    True
    >>> adapter_config_blocker({"peft_type": "LORA", "use_dora": True})
    'the starting adapter is DoRA, not plain LoRA'
    """
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        return f"the starting adapter is {config['peft_type']}, not LoRA"
    if config.get("use_dora"):
        return "the starting adapter is DoRA, not plain LoRA"
    if config.get("alora_invocation_tokens"):
        return "the starting adapter is an activated LoRA (aLoRA), not plain LoRA"
    if config.get("modules_to_save"):
        return f"the starting adapter trains whole copies of {config['modules_to_save']} (modules_to_save)"
    return None


def merge_blocker(lm: Any, adapter: str = POLICY_ADAPTER) -> str | None:
    """Why `merged_weights` cannot merge this policy, or None when it can (plain LoRA, or no adapter)."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    for name, module in lm.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_variant:
            kind = type(module.lora_variant[adapter]).__name__
            return f"the adapter's layer {name} is a LoRA variant ({kind}), not plain LoRA"
        if isinstance(module, LoraLayer) and module.lora_bias.get(adapter) and module.get_base_layer().bias is None:
            return f"the adapter trains a bias for {name}, which has no bias"
        if isinstance(module, ModulesToSaveWrapper):
            return f"the adapter trains a whole copy of {name} (modules_to_save)"
    return None


@torch.no_grad()
def merged_weights(lm: Any, adapter: str = POLICY_ADAPTER, *, complete: bool = True) -> dict[str, Tensor]:
    """Every weight of the policy with `adapter` merged in, under the base model's names.

    `lm` is a transformers model or a PEFT wrapper of one; other adapters it holds (the frozen reference)
    are left out. `complete=False` also leaves out a LoRA policy's input embeddings and output head where
    the adapter does not change them: the largest frozen tensors, which an engine started on the base
    model already holds. Raises ValueError where `merge_blocker` names a reason.
    """
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    blocker = merge_blocker(lm, adapter)
    if blocker is not None:
        raise ValueError(f"cannot merge the policy's weights: {blocker}")
    model = lm.get_base_model() if isinstance(lm, PeftModel) else lm
    changes: dict[str, Tensor] = {}  # checkpoint name -> what the adapter adds to it
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or adapter in module.merged_adapters:
            continue
        if adapter in module.lora_A or adapter in module.lora_embedding_A:
            changes[f"{name}.weight"] = module.get_delta_weight(adapter)
            if module.lora_bias.get(adapter, False):
                changes[f"{name}.bias"] = module.lora_B[adapter].bias * module.scaling[adapter]
    weights: dict[str, Tensor] = {}
    seen: set[int] = set()
    frozen: set[int] = set()  # left out unless adapted: the engine has them from the base model
    if not complete and isinstance(lm, PeftModel):
        modules = [model.get_input_embeddings(), model.get_output_embeddings()]
        frozen = {m.weight.data_ptr() for m in modules if m is not None and hasattr(m, "weight")}
    for name, tensor in model.state_dict().items():
        if ".lora_" in name:  # lora_A / lora_B / lora_embedding_* / lora_magnitude_vector of any adapter
            continue
        if tensor.data_ptr() in seen:  # tied to a tensor already written (vLLM ties them again)
            continue
        seen.add(tensor.data_ptr())
        name = name.replace(".base_layer.", ".")
        if name in changes:
            tensor = tensor + changes.pop(name).to(tensor.dtype)
        elif tensor.data_ptr() in frozen:
            continue
        weights[name] = tensor.detach().contiguous()
    if changes:
        raise ValueError(f"adapted weights missing from the model's state dict: {sorted(changes)}")
    return weights


def save_merged(lm: Any, path: Path, adapter: str = POLICY_ADAPTER, *, complete: bool = True) -> Path:
    """Write `merged_weights` to a safetensors file at `path` (its folder must exist)."""
    from safetensors.torch import save_file

    save_file(merged_weights(lm, adapter, complete=complete), str(path))
    return path
