"""Human-labelled pairs: the one reader behind `labeler eval-judge` and `labeler score-rm`.

A row (JSONL, Parquet or Arrow) holds the conversation (`prompt` as text, an HH-RLHF transcript read as
its turns, or a `prompt`, `messages` or `prompt_messages` list of {role, content}), `chosen` and
`rejected` (text, or TRL's conversational form: a list holding the one assistant message that answers)
and, when asked for, a group column. Without a prompt field, `chosen` and `rejected` are each the whole
conversation (Anthropic's released HH-RLHF rows, TRL's implicit prompt), split at the last assistant turn.
A bad row raises `InputError` naming the file, the line and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labeler.core.chat import Message
from labeler.core.errors import InputError
from labeler.inputs.rows import group_value, iter_rows, row_replies


@dataclass(frozen=True)
class HumanLabelledPair:
    """One row: the conversation so far, the response a person preferred and the one they did not."""

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    group: str | None
    line: int

    def conversation(self, response: str) -> list[dict[str, str]]:
        """The prompt followed by `response` as the assistant's turn, as plain {role, content} dicts."""
        prompt = [{"role": m.role, "content": m.content} for m in self.prompt]
        return [*prompt, {"role": "assistant", "content": response}]


def read_human_labelled_pairs(path: Path, group_by: str | None = None) -> list[HumanLabelledPair]:
    """Every row of a human-labelled file, in file order; an empty file is an error too."""
    pairs = []
    for row in iter_rows(path):
        prompt, chosen, rejected = row_replies(row, "chosen", "rejected")
        if chosen.strip() == rejected.strip():
            raise row.error(
                "chosen and rejected are the same text; a human label needs two different responses", "rejected"
            )
        group = group_value(row, group_by) if group_by is not None else None
        pairs.append(HumanLabelledPair(prompt, chosen, rejected, group, row.line))
    if not pairs:
        raise InputError("no pairs in the file", file=path)
    return pairs
