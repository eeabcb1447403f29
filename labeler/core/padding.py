"""Batches of token rows of different lengths: padding, the positions a padded row sees, its last token.

One implementation for every model call that pads: the transformers engine (left padding, so that
generation continues every row), the reward model (right padding) and PPO (left-padded prompts,
right-padded responses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, *, side: Literal["left", "right"]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists padded into (ids, attention mask), both (N, T) int64.

    >>> ids, mask = pad_rows([[5, 6, 7], [8]], 0, side="left")
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    >>> pad_rows([[5, 6, 7], [8]], 0, side="right")[0].tolist()
    [[5, 6, 7], [8, 0, 0]]
    """
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so a left-padded row sees the positions it has alone: (B, T).

    >>> position_ids_from_mask(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]]))
    tensor([[0, 0, 0, 1],
            [0, 1, 2, 2]])
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last attended token of each row, for left or right padding: (B, T) -> (B,).

    >>> last_token_index(torch.tensor([[1, 1, 0], [0, 1, 1], [1., 1., 1.]]))
    tensor([1, 2, 2])
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)  # (T,)
    return (positions * attention_mask.to(positions.dtype)).argmax(dim=-1)
