"""The PPO policy (a causal LM with a value head) and its frozen reference.

The reference is the policy as the run started, and stays that way when the run resumes:
- a fresh LoRA adapter: the base model itself, i.e. the policy with its adapter disabled;
- a trained adapter given as the starting policy: a frozen second copy of that adapter on the same
  base (disabling it would measure KL to the base, not to the starting policy);
- full fine-tuning (no LoRA): a frozen deep copy of the starting model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from labeler.core.padding import position_ids_from_mask
from labeler.engine.model_ref import ModelRef, guard_model_load
from labeler.train.common.tokenizer import load_tokenizer
from labeler.train.ppo.config import PPOConfig

ADAPTER_DIR = "adapter"  # inside a checkpoint: the trained adapter, usable as a starting policy
MODEL_DIR = "model"  # inside a checkpoint of full fine-tuning: the whole model
POLICY_ADAPTER = "default"  # PEFT's name for the adapter a PeftModel is created with
REFERENCE_ADAPTER = "reference"


def response_logits(lm: nn.Module, sequences: Tensor, attention_mask: Tensor, width: int) -> Tensor:
    """Logits that predicted each of the last `width` tokens: (B, P + width) -> (B, width, V)."""
    out = lm(
        input_ids=sequences,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=width + 1,  # the lm head runs only where the response is predicted
        use_cache=False,
    )
    return out.logits[:, :-1]


class PolicyWithValueHead(nn.Module):
    """A causal LM (plain or PEFT-wrapped) plus a linear value head on its final hidden state."""

    def __init__(self, lm: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.lm: Any = lm  # a transformers model or a PEFT wrapper of one: generate, save_pretrained, ...
        self.value_head = nn.Linear(hidden_size, 1)  # kept in float32 whatever the LM's dtype
        nn.init.normal_(self.value_head.weight, std=1.0 / math.sqrt(hidden_size + 1))
        nn.init.zeros_(self.value_head.bias)

    def forward(self, sequences: Tensor, attention_mask: Tensor, width: int) -> tuple[Tensor, Tensor]:
        """Logits (B, width, V) and values (B, width) for the last `width` tokens of each sequence.

        Both come from the position before each token: the state in which it was sampled.
        """
        out = self.lm(
            input_ids=sequences,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            logits_to_keep=width + 1,
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = out.hidden_states[-1][:, -(width + 1) : -1]  # (B, width, H), after the final norm
        values = self.value_head(hidden.float()).squeeze(-1)  # (B, width)
        return out.logits[:, :-1], values


class Reference(Protocol):
    """Logits of the starting policy for the last `width` tokens: (B, L) -> (B, width, V)."""

    def __call__(self, sequences: Tensor, attention_mask: Tensor, width: int) -> Tensor: ...


class DisabledAdapterReference:
    """The base model under a fresh LoRA adapter: the policy with its adapter switched off."""

    def __init__(self, peft_model: Any) -> None:
        self.peft_model = peft_model

    @torch.no_grad()
    def __call__(self, sequences: Tensor, attention_mask: Tensor, width: int) -> Tensor:
        with self.peft_model.disable_adapter():
            return response_logits(self.peft_model, sequences, attention_mask, width)


class SecondAdapterReference:
    """A frozen copy of the starting adapter, loaded next to the trained one on the same base."""

    def __init__(self, peft_model: Any) -> None:
        self.peft_model = peft_model

    @contextmanager
    def _active(self) -> Iterator[None]:
        # set_adapter also sets requires_grad: the reference stays frozen (inference_mode), and switching
        # back makes the policy adapter trainable again and freezes the reference.
        self.peft_model.set_adapter(REFERENCE_ADAPTER, inference_mode=True)
        try:
            yield
        finally:
            self.peft_model.set_adapter(POLICY_ADAPTER)

    @torch.no_grad()
    def __call__(self, sequences: Tensor, attention_mask: Tensor, width: int) -> Tensor:
        with self._active():
            return response_logits(self.peft_model, sequences, attention_mask, width)


class FrozenCopyReference:
    """A frozen deep copy of the starting model (full fine-tuning)."""

    def __init__(self, lm: nn.Module) -> None:
        self.lm = copy.deepcopy(lm).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, sequences: Tensor, attention_mask: Tensor, width: int) -> Tensor:
        return response_logits(self.lm, sequences, attention_mask, width)


def policy_tokenizer(policy: ModelRef) -> Any:
    """The starting policy's tokenizer (from the adapter folder when it has one, else from its base)."""
    folder = policy.folder()
    if policy.base is not None and not (folder / "tokenizer_config.json").is_file():
        folder = policy.base.folder()
    return load_tokenizer(folder)


def base_folder(policy: ModelRef) -> Path:
    """The folder of the starting policy's base model: itself, or the base its adapter names."""
    return policy.base.folder() if policy.base is not None else policy.folder()


def load_causal_lm(policy: ModelRef, dtype: torch.dtype, device: torch.device | str = "cpu") -> Any:
    """A policy as one plain causal LM for inference: its adapter (if any) merged into its base."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    guard_model_load(f"policy {policy.path}")
    hf_logging.disable_progress_bar()
    lm: Any = AutoModelForCausalLM.from_pretrained(str(base_folder(policy)), dtype=dtype, use_safetensors=True)
    if policy.base is not None:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, str(policy.folder())).merge_and_unload()
    return lm.to(device).eval()


def build_policy(
    config: PPOConfig, start: ModelRef, device: torch.device
) -> tuple[PolicyWithValueHead, Reference]:
    """The trainable policy and its frozen reference, both as the run starts (before any checkpoint).

    `start` is the starting policy (a model, or an adapter on its base), checked by `resolve_model`.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    guard_model_load(f"policy {start.path}")
    hf_logging.disable_progress_bar()  # PPO's own progress bar is the one to watch
    base: Any = AutoModelForCausalLM.from_pretrained(
        str(base_folder(start)), dtype=getattr(torch, config.dtype), use_safetensors=True
    )
    base = base.to(device)
    hidden_size = base.config.hidden_size
    starts_from_adapter = start.is_adapter
    adapter = str(start.folder())
    reference: Reference
    if config.lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        if starts_from_adapter:
            lm = PeftModel.from_pretrained(base, adapter, adapter_name=POLICY_ADAPTER, is_trainable=True)
            lm.load_adapter(adapter, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
            lm.set_adapter(POLICY_ADAPTER)
            reference = SecondAdapterReference(lm)
        else:
            lora = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                # No dropout: rollout and update must see the same function, or the PPO ratio is noise.
                lora_dropout=0.0,
                target_modules=(
                    config.lora_target_modules
                    if isinstance(config.lora_target_modules, str)
                    else list(config.lora_target_modules)
                ),
                task_type="CAUSAL_LM",
            )
            lm = get_peft_model(base, lora)
            reference = DisabledAdapterReference(lm)
    else:
        if starts_from_adapter:
            from peft import PeftModel

            lm = PeftModel.from_pretrained(base, adapter).merge_and_unload()
        else:
            lm = base
        lm.requires_grad_(True)
        reference = FrozenCopyReference(lm)
    policy = PolicyWithValueHead(lm, hidden_size).to(device)
    return policy, reference
