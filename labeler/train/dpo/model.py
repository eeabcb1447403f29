"""The DPO policy and its reference, and the log-probability of a response under either.

The reference is the policy as the run started, and stays that way when the run resumes:
- a fresh LoRA adapter: the base model itself, i.e. the policy with its adapter disabled;
- a trained adapter given as the starting policy: a frozen second copy of it on the same base;
- full fine-tuning (no LoRA): a frozen deep copy of the starting model.
The trainer reads reference log-probabilities once before training (`labeler.train.dpo.train`) and keeps
them; the reference model is used again only to measure the KL on held-out pairs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from labeler.core.padding import position_ids_from_mask
from labeler.engine.model_ref import ModelRef, guard_model_load
from labeler.train.dpo.config import DPOConfig
from labeler.train.dpo.losses import response_logprobs
from labeler.train.ppo.model import POLICY_ADAPTER, REFERENCE_ADAPTER, base_folder
from labeler.train.rm.model import disable_dropout


def logits_of(lm: nn.Module, input_ids: Tensor, attention_mask: Tensor, keep: int = 0) -> Tensor:
    """Next-token logits of right-padded rows: (N, T) -> (N, T, V), or of their last `keep` positions only."""
    return lm(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=keep,  # 0: every position
        use_cache=False,
    ).logits


def sequence_logprobs(lm: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """log pi(response | prompt) of every row of a collated batch, summed over response tokens: (2B,).

    The LM head runs only from the position before the earliest response token on: the logits of the
    prompt tokens before it would be masked out anyway, and the head is a large share of a small model."""
    input_ids, response_mask = batch["input_ids"], batch["response_mask"]
    first = int(response_mask.argmax(dim=-1).min())  # the earliest response token of any row
    start = max(first - 1, 0)
    logits = logits_of(lm, input_ids, batch["attention_mask"], keep=input_ids.shape[1] - start)  # (2B, T - start, V)
    return response_logprobs(logits, input_ids[:, start:], response_mask[:, start:])


class Policy:
    """The trainable causal LM, and how to run its reference (the policy as it started)."""

    def __init__(self, lm: Any, *, peft: bool, frozen_copy: Any | None, second_adapter: bool) -> None:
        self.lm = lm  # a transformers model or a PEFT wrapper of one
        self.peft = peft
        self.frozen_copy = frozen_copy
        self.second_adapter = second_adapter

    @contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The module that computes as the reference does, for the duration (no gradients)."""
        with torch.no_grad():
            if self.frozen_copy is not None:
                yield self.frozen_copy
            elif self.second_adapter:
                self.lm.set_adapter(REFERENCE_ADAPTER, inference_mode=True)
                try:
                    yield self.lm
                finally:
                    self.lm.set_adapter(POLICY_ADAPTER)
            else:
                with self.lm.disable_adapter():
                    yield self.lm


def load_policy(config: DPOConfig, start: ModelRef, dtype: torch.dtype, device: torch.device) -> Policy:
    """The trainable policy and its reference, both as the run starts (before any checkpoint loads)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    guard_model_load(f"policy {start.path}")
    hf_logging.disable_progress_bar()  # the trainer's own progress bar is the one to watch
    base: Any = AutoModelForCausalLM.from_pretrained(
        str(base_folder(start)), dtype=dtype, use_safetensors=True, trust_remote_code=False
    )
    base = base.to(device)
    disable_dropout(base)
    adapter = str(start.folder())
    if config.lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        if start.is_adapter:
            lm = PeftModel.from_pretrained(base, adapter, adapter_name=POLICY_ADAPTER, is_trainable=True)
            lm.load_adapter(adapter, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
            lm.set_adapter(POLICY_ADAPTER)
            return Policy(lm, peft=True, frozen_copy=None, second_adapter=True)
        targets = config.lora_target_modules
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=0.0,  # the policy and reference passes must see the same function
            target_modules=targets if isinstance(targets, str) else list(targets),
            task_type="CAUSAL_LM",
        )
        return Policy(get_peft_model(base, lora), peft=True, frozen_copy=None, second_adapter=False)
    if start.is_adapter:
        from peft import PeftModel

        base = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    base.requires_grad_(True)
    frozen = copy.deepcopy(base).eval().requires_grad_(False)
    return Policy(base, peft=False, frozen_copy=frozen, second_adapter=False)

