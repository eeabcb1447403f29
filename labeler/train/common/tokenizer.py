"""The tokenizer a trainer renders conversations with: a pad token and a chat template, or bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labeler.core.errors import InputError


def load_tokenizer(folder: Path | str) -> Any:
    """The folder's tokenizer, padding with EOS when it has no pad token; `InputError` without a chat template."""
    from transformers import AutoTokenizer

    from labeler.engine.model_ref import guard_model_load

    guard_model_load(f"tokenizer {folder}")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token is None:
        raise InputError("the tokenizer has neither a pad token nor an EOS token to pad with", file=folder)
    if not tokenizer.chat_template:
        raise InputError("the tokenizer has no chat template; conversations cannot be rendered", file=folder)
    return tokenizer
