"""Chat rendering and choice-token resolution shared by both engines.

Both engines render prompts with the model's own Hugging Face tokenizer and hand token ids to the
model, so the two engines always see byte-identical inputs (what the parity test relies on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from labeler.core.errors import InputError
from labeler.engine.base import ChoiceRequest, Conversation


def chat_text(tokenizer: Any, messages: Conversation, assistant_prefix: str = "") -> str:
    """The conversation rendered by the model's chat template, opening the assistant turn."""
    if tokenizer.chat_template is None:
        raise InputError(
            "the model's tokenizer has no chat template; use an instruct/chat model",
            where=f"model {getattr(tokenizer, 'name_or_path', '?')}",
        )
    text: str = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        tokenize=False,
        add_generation_prompt=True,
    )
    return text + assistant_prefix


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text. Special tokens come from the chat template text, never added twice."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def choice_inputs(
    tokenizer: Any, requests: Sequence[ChoiceRequest], choices: Sequence[str]
) -> list[tuple[list[int], list[int]]]:
    """For each request: (prompt token ids, one token id per choice) to score as the next token.

    The ids are resolved from the prompt text followed by each choice, because a tokenizer may merge
    the end of the prompt with the choice ("is A" can be "is" + " A"): see `split_choices`.
    """
    if len(choices) < 2 or len(set(choices)) != len(choices):
        raise ValueError(f"need at least two distinct choices, got {list(choices)}")
    texts = [chat_text(tokenizer, r.messages, r.assistant_prefix) for r in requests]
    flat = encode_texts(tokenizer, [t + c for t in texts for c in choices])
    k = len(choices)
    return [split_choices(flat[i * k : (i + 1) * k], choices, text) for i, text in enumerate(texts)]


def split_choices(
    encodings: Sequence[Sequence[int]], choices: Sequence[str], prompt: str = ""
) -> tuple[list[int], list[int]]:
    """(prompt ids, choice ids) from the encodings of the prompt followed by each choice.

    The scored position is where the encodings stop agreeing; each choice must be exactly one token
    after it, or the choice cannot be scored as one next token (`InputError`).

    >>> split_choices([[5, 9, 49], [5, 9, 50]], ["A", "B"])    # "... (" + "A" | "B"
    ([5, 9], [49, 50])
    >>> split_choices([[5, 9, 7, 49], [5, 9, 50]], ["AA", "B"])
    Traceback (most recent call last):
    ...
    labeler.core.errors.InputError: prompt ending '': choices ['AA', 'B'] are not single tokens ...
    """
    common = _common_prefix_length(encodings)
    tails = [list(enc[common:]) for enc in encodings]
    if any(len(tail) != 1 for tail in tails):
        shown = {c: tail for c, tail in zip(choices, tails)}
        raise InputError(
            f"choices {list(choices)} are not single tokens after the prompt text "
            f"(token ids after the shared prefix: {shown}); pick choice strings that tokenize "
            "to one token each after the template's text",
            where=f"prompt ending {prompt[-40:]!r}",
        )
    return list(encodings[0][:common]), [tail[0] for tail in tails]


def _common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix all sequences share.

    >>> _common_prefix_length([[1, 2, 3], [1, 2, 4]])
    2
    """
    shortest = min(len(s) for s in seqs)
    for i in range(shortest):
        if any(s[i] != seqs[0][i] for s in seqs[1:]):
            return i
    return shortest


def derive_seed(base: int, index: int) -> int:
    """A per-sample seed from a per-request seed (stable across engines and runs).

    >>> derive_seed(7, 0) == derive_seed(7, 0) and derive_seed(7, 0) != derive_seed(7, 1)
    True
    """
    import hashlib

    digest = hashlib.sha256(f"{base}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
