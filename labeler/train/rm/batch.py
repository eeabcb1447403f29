"""Training examples as token batches: rendered with the chat template, the shared prompt kept once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from labeler.core.padding import pad_rows
from labeler.train.rm.labels import TrainingExample

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


def render(tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[Mapping[str, str]]]) -> list[str]:
    """Each conversation ({role, content} mappings, what the template takes) as the chat template writes it
    (the template holds every special token)."""
    return [str(tokenizer.apply_chat_template([dict(m) for m in c], tokenize=False)) for c in conversations]


def render_pairs(tokenizer: PreTrainedTokenizerBase, examples: Sequence[TrainingExample]) -> list[str]:
    """The A conversations of `examples`, then the B ones, rendered with the chat template."""
    conversations = [e.conversation_a for e in examples] + [e.conversation_b for e in examples]
    return render(tokenizer, [[m.model_dump() for m in c] for c in conversations])


def encode_conversations(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[Mapping[str, str]]], max_length: int
) -> dict[str, torch.Tensor]:
    """Render each conversation with the chat template and tokenise: `input_ids`, `attention_mask`, (N, T).

    Padding follows `tokenizer.padding_side`. Sequences longer than `max_length` lose tokens from the
    left: the reward is read at the last token, so the end of the response must survive.
    """
    tokenizer.truncation_side = "left"
    encoded = tokenizer(
        render(tokenizer, conversations),
        add_special_tokens=False,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def shared_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common start of two token sequences, leaving each at least one token of its own.

    The two conversations of a pair share their prompt tokens: those run through the model once.

    >>> shared_prefix_length([1, 2, 3, 4], [1, 2, 5])
    2
    >>> shared_prefix_length([1, 2, 3], [1, 2, 3, 4])  # the last token must stay: the reward is read there
    2
    """
    limit = min(len(a), len(b)) - 1
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def collate_pairs(
    examples: Sequence[TrainingExample],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    *,
    share_prefix: bool = True,
) -> dict[str, torch.Tensor]:
    """One batch of B pairs for `LastTokenReward`: the A conversations, then the B ones, right-padded.

    Without sharing: `input_ids`, `attention_mask` of shape (2B, T). With sharing, the tokens that a
    pair's two conversations start with (the prompt) go once into `prefix_ids`, `prefix_mask` (B, P),
    and `input_ids`, `attention_mask` (2B, S) hold only what follows, row i continuing prefix row
    i mod B: same rewards, fewer tokens through the model. Sharing falls back to full rows when a pair
    shares nothing. Always: `target_a`, `margin` (B,), `targets` and `mask` (B, K): every head's target
    (column 0 is `target_a`, the others the examples' `head_targets`) and whether the pair has it, and
    `tokens` (a scalar: the real tokens of all 2B full conversations, the throughput measure).
    """
    import torch

    tokenizer.truncation_side = "left"
    texts = render_pairs(tokenizer, examples)
    ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    ids_a, ids_b = ids[: len(examples)], ids[len(examples) :]
    pad_id = tokenizer.pad_token_id
    batch: dict[str, torch.Tensor] = {}
    shared = [shared_prefix_length(a, b) for a, b in zip(ids_a, ids_b, strict=True)]
    if share_prefix and min(shared) > 0:
        prefixes = [a[:n] for a, n in zip(ids_a, shared)]
        batch["prefix_ids"], batch["prefix_mask"] = pad_rows(prefixes, pad_id, side="right")
        rest = [a[n:] for a, n in zip(ids_a, shared)] + [b[n:] for b, n in zip(ids_b, shared)]
        batch["input_ids"], batch["attention_mask"] = pad_rows(rest, pad_id, side="right")
    else:
        batch["input_ids"], batch["attention_mask"] = pad_rows(ids, pad_id, side="right")
    batch["target_a"] = torch.tensor([e.target_a for e in examples], dtype=torch.float32)
    batch["margin"] = torch.tensor([e.margin for e in examples], dtype=torch.float32)
    heads = [(e.target_a, *e.head_targets) for e in examples]
    batch["targets"] = torch.tensor([[0.5 if t is None else t for t in row] for row in heads], dtype=torch.float32)
    batch["mask"] = torch.tensor([[t is not None for t in row] for row in heads], dtype=torch.bool)
    batch["tokens"] = torch.tensor(sum(len(row) for row in ids))
    return batch


def count_truncated(tokenizer: PreTrainedTokenizerBase, examples: Sequence[TrainingExample], max_length: int) -> int:
    """How many of the 2 × len(examples) conversations are longer than `max_length` tokens."""
    texts = render_pairs(tokenizer, examples)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return sum(length > max_length for length in lengths)
