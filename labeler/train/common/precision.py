"""The dtype a pair trainer's weights train in, from its settings (`train-rm` and `dpo` alike)."""

from __future__ import annotations

import torch

from labeler.train.common.config import PairTrainingSettings


def weights_dtype(config: PairTrainingSettings) -> torch.dtype:
    """The dtype the weights train in: `weights_dtype`, where auto means bfloat16 for bf16 training on a GPU."""
    if config.weights_dtype == "auto":
        return torch.bfloat16 if config.mixed_precision == "bf16" and torch.cuda.is_available() else torch.float32
    return torch.bfloat16 if config.weights_dtype == "bfloat16" else torch.float32
