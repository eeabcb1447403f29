"""The reward model: a scalar head on a causal-LM backbone, read at the last real token of a conversation.

The backbone is `AutoModelForSequenceClassification(num_labels=1)`: the decoder plus a linear `score`
head. transformers pools that head at the last token that differs from `pad_token_id`, which goes wrong
when a chat template ends a turn with the pad token itself (SmolLM2 pads with `<|im_end|>`). Here the
reward is read at the last position the attention mask keeps, so left and right padding agree and a
reward never comes from padding.

    model = load_reward_model("runs/rm")
    rewards = model.score([[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]])

A model with one head per principle (`heads=principles`) has `num_labels` = heads: `score_heads` gives
every head's reward, `score` their weighted sum (by default the constitution's weights; see `heads`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from labeler.core.errors import InputError
from labeler.core.padding import last_token_index, position_ids_from_mask
from labeler.engine.model_ref import guard_model_load
from labeler.train.common.tokenizer import load_tokenizer
from labeler.train.rm.heads import (
    REWARD_CARD,
    check_head_weights,
    default_head_weights,
    head_names,
    read_reward_card,
    weight_vector,
)

__all__ = ["REWARD_CARD", "LastTokenReward", "RewardModel", "load_classifier", "load_reward_model", "read_reward_card"]


class LastTokenReward(nn.Module):
    """Wraps a causal-LM sequence classifier: token rows -> one reward per row, read at its last real token.

    `forward(input_ids, attention_mask)`: (N, T) -> (N,), or (N, K) for a classifier with K > 1 heads.
    With `prefix_ids`, `prefix_mask` (B, P) as well, row i of `input_ids` continues prefix row i mod B:
    the prefix runs once and its keys and values serve every row that continues it (the prompt a pair's
    two responses share), which gives the same rewards as running each full row. Both passes happen
    inside one `forward`, so a DDP wrapper sees each parameter used in one forward per step. A module of
    its own so that
    `accelerate` can wrap it.
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        if not hasattr(classifier, "score") or not hasattr(classifier, "base_model_prefix"):
            raise TypeError(f"{type(classifier).__name__} is not a causal-LM sequence classifier with a `score` head")
        self.classifier: Any = classifier  # a transformers model: its attributes are not typed

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prefix_ids: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        backbone = getattr(self.classifier, self.classifier.base_model_prefix)
        if prefix_ids is None or prefix_mask is None:
            hidden = backbone(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                use_cache=False,
            ).last_hidden_state  # (N, T, C)
        else:
            cache = backbone(
                input_ids=prefix_ids,
                attention_mask=prefix_mask,
                position_ids=position_ids_from_mask(prefix_mask),
                use_cache=True,
            ).past_key_values  # keys/values of the (B, P) prefix rows, part of the autograd graph
            owner = torch.arange(input_ids.shape[0], device=input_ids.device) % prefix_ids.shape[0]  # (N,)
            cache.batch_select_indices(owner)  # (N, heads, P, head_dim): each row gets its prefix
            offset = prefix_mask.sum(dim=-1)[owner]  # (N,) real prefix tokens before each row
            hidden = backbone(
                input_ids=input_ids,
                attention_mask=torch.cat([prefix_mask[owner], attention_mask], dim=-1),  # (N, P + T)
                position_ids=offset[:, None] + position_ids_from_mask(attention_mask),
                past_key_values=cache,
                use_cache=True,
            ).last_hidden_state  # (N, T, C)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last = hidden[rows, last_token_index(attention_mask)]  # (N, C)
        return self.classifier.score(last).squeeze(-1).float()  # (N,), or (N, K) with K heads


def disable_dropout(module: nn.Module) -> None:
    """Set every dropout probability to 0 (as TRL does for reward models).

    Dropout would give the two sides of a pair different noise, so r_a − r_b would carry it too.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1)); disable_dropout(net); net[1].p
    0.0
    """
    for child in module.modules():
        if isinstance(child, nn.Dropout):
            child.p = 0.0


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' weight-loading progress bar and load report for the duration.

    Loading a causal LM as a sequence classifier always reports the new `score` head as missing and
    the unused `lm_head` as unexpected: both are what we ask for, and the report would read as an error.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_classifier(
    path: Path | str, *, dtype: torch.dtype, pad_token_id: int, heads: Sequence[str] | None = None
) -> Any:
    """`AutoModelForSequenceClassification` from safetensors only, no remote code: one output, or one per
    name in `heads` (the names go into its config's `id2label`, so a saved copy says which output is which).

    The folder was checked by `labeler.engine.model_ref.resolve_model` (config, safetensors) before.
    """
    from transformers import AutoModelForSequenceClassification

    guard_model_load(f"model {path}")
    named: dict[str, Any] = {"num_labels": 1}
    if heads is not None:
        named = {
            "num_labels": len(heads),
            "id2label": dict(enumerate(heads)),
            "label2id": {name: index for index, name in enumerate(heads)},
        }
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            **named,
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=False,
        )
    if not hasattr(model, "score"):
        raise InputError(
            f"{type(model).__name__} has no `score` head: the base model must be a causal LM", file=path
        )
    model.config.pad_token_id = pad_token_id  # transformers' own pooling needs it; so do saved copies
    return model


class RewardModel:
    """A trained reward model ready to score conversations, in batches."""

    def __init__(
        self,
        classifier: nn.Module,
        tokenizer: Any,
        *,
        max_length: int,
        batch_size: int = 16,
        heads: Sequence[str] = ("LABEL_0",),
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.reward = LastTokenReward(classifier).eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.heads = tuple(heads)  # output names, in order
        self.weights = check_head_weights(weights or {self.heads[0]: 1.0}, self.heads, field="weights")

    @property
    def device(self) -> torch.device:
        return next(self.reward.parameters()).device

    @torch.no_grad()
    def score(
        self, conversations: Sequence[Sequence[Mapping[str, str]]], weights: Mapping[str, float] | None = None
    ) -> torch.Tensor:
        """One reward per conversation (prompt messages then the assistant's response): float32 (N,) on `device`.

        With several heads, the weighted sum Σ_k w_k r_k by `weights` (default: the model's own weighting).
        """
        chosen = self.weights if weights is None else check_head_weights(weights, self.heads, field="weights")
        vector = torch.tensor(weight_vector(self.heads, chosen), device=self.device)  # (K,)
        return self.score_heads(conversations) @ vector

    @torch.no_grad()
    def score_heads(self, conversations: Sequence[Sequence[Mapping[str, str]]]) -> torch.Tensor:
        """Every head's reward for each conversation: float32 (N, K) on `device`, columns in `heads` order."""
        from labeler.train.rm.batch import encode_conversations

        scores = []
        for start in range(0, len(conversations), self.batch_size):
            batch = encode_conversations(
                self.tokenizer, conversations[start : start + self.batch_size], self.max_length
            )
            rewards = self.reward(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            scores.append(rewards.reshape(len(rewards), len(self.heads)))  # (B, K), also for one head
        if not scores:
            return torch.zeros(0, len(self.heads), device=self.device)
        return torch.cat(scores)


def _context_length(classifier: Any, tokenizer: Any) -> int:
    """The longest input the model takes: its position limit, or the tokenizer's when smaller."""
    limits = [getattr(classifier.config, "max_position_embeddings", None), tokenizer.model_max_length]
    return min(int(limit) for limit in limits if limit)


def load_reward_model(
    path: Path | str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    max_length: int | None = None,
    batch_size: int = 16,
) -> RewardModel:
    """Load a reward model saved by `labeler train-rm` (or any causal-LM sequence classifier folder).

    `max_length` defaults to the one the model was trained with; `device` to CUDA when available.
    """
    card = read_reward_card(path)
    heads = head_names(path)
    if len(heads) > 1 and "heads" not in card:
        raise InputError(
            f"has {len(heads)} outputs but no `heads` in its {REWARD_CARD}: a reward model has one output, "
            "or one per head written by `labeler train-rm`",
            file=path,
        )
    tokenizer = load_tokenizer(path)
    classifier = load_classifier(path, dtype=dtype, pad_token_id=tokenizer.pad_token_id, heads=heads)
    trained_length = card.get("config", {}).get("max_length")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return RewardModel(
        classifier.to(device),
        tokenizer,
        max_length=max_length or trained_length or _context_length(classifier, tokenizer),
        batch_size=batch_size,
        heads=heads,
        weights=default_head_weights(heads, card),
    )
