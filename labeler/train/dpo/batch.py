"""Judged pairs as token rows: the prompt through the chat template, each response after it, and a mask
that marks the response tokens (the only ones whose log-probabilities count).

A response's tokens are what the chat template adds to the prompt rendered with its assistant turn
opened: the rendering of prompt + response minus that prompt's tokens, where the two first differ
(TRL's DPOTrainer splits them the same way), so the end-of-turn tokens belong to the response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labeler.core.chat import Message
from labeler.core.padding import pad_rows
from labeler.core.records import PreferenceRecord

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TokenizedPair:
    """One pair's tokens: the prompt both responses continue, then each response."""

    prompt: tuple[int, ...]
    response_a: tuple[int, ...]
    response_b: tuple[int, ...]
    truncated: bool  # tokens were cut to fit max_length


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens two sequences start with in common.

    >>> common_prefix_length([1, 2, 3], [1, 2, 4, 5]), common_prefix_length([1, 2], [1, 2, 3])
    (2, 2)
    """
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def fit(prompt: Sequence[int], response: Sequence[int], max_length: int) -> tuple[list[int], list[int]]:
    """Prompt and response within `max_length` tokens: the prompt loses tokens from the left first (its end,
    next to the response, matters most), then the response from the right; at least one prompt token stays.

    >>> fit([1, 2, 3, 4], [5, 6], 4)
    ([3, 4], [5, 6])
    >>> fit([1, 2], [5, 6, 7, 8], 3)
    ([2], [5, 6])
    """
    response = list(response)[: max(1, max_length - 1)]
    keep = max(1, max_length - len(response))
    return list(prompt)[-keep:], response


def tokenize_pair(tokenizer: Any, pair: PreferenceRecord, max_length: int) -> TokenizedPair:
    """The tokens of a pair's prompt and two responses, rendered with the chat template."""
    messages = [m.model_dump() for m in pair.prompt]
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_texts = [
        tokenizer.apply_chat_template(
            [*messages, Message(role="assistant", content=response).model_dump()], tokenize=False
        )
        for response in (pair.response_a, pair.response_b)
    ]
    prompt, full_a, full_b = tokenizer([prompt_text, *full_texts], add_special_tokens=False)["input_ids"]
    cut = min(common_prefix_length(prompt, full_a), common_prefix_length(prompt, full_b))
    prompt = prompt[:cut]
    response_a, response_b = full_a[cut:], full_b[cut:]
    longest = max(len(response_a), len(response_b))
    kept_prompt, _ = fit(prompt, [0] * longest, max_length)
    _, kept_a = fit(prompt, response_a, max_length)
    _, kept_b = fit(prompt, response_b, max_length)
    truncated = len(kept_prompt) < len(prompt) or len(kept_a) < len(response_a) or len(kept_b) < len(response_b)
    return TokenizedPair(tuple(kept_prompt), tuple(kept_a), tuple(kept_b), truncated)


def collate(pairs: Sequence[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """B pairs as 2B right-padded rows, all the A sides then all the B sides: `input_ids`, `attention_mask`,
    `response_mask` (2B, T), and `response_tokens` (2B,), the length of each row's response."""
    import torch

    rows = [p.prompt + p.response_a for p in pairs] + [p.prompt + p.response_b for p in pairs]
    responses = [len(p.response_a) for p in pairs] + [len(p.response_b) for p in pairs]
    input_ids, attention_mask = pad_rows(rows, pad_id, side="right")
    response_mask = torch.zeros_like(attention_mask)
    for i, (row, length) in enumerate(zip(rows, responses)):
        response_mask[i, len(row) - length : len(row)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
        "response_tokens": torch.tensor(responses, dtype=torch.float32),
    }


__all__ = ["TokenizedPair", "collate", "common_prefix_length", "fit", "tokenize_pair"]
