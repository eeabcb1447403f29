"""Conversations as people store them: Anthropic's HH-RLHF transcripts and TRL's implicit-prompt pairs.

HH-RLHF writes a conversation as one text, "\\n\\nHuman: ...\\n\\nAssistant: ...", and its released rows
hold no prompt at all: `chosen` and `rejected` are each the whole conversation, the same up to the last
assistant turn. TRL's "implicit prompt" form is that shape with message lists. These pure functions turn
both into labeler's turns; the row readers (`labeler.inputs.rows`) call them and name the file and line
when a text or a pair cannot be read as one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from labeler.core.chat import Message

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def is_transcript(text: str) -> bool:
    """Whether a text is an HH-RLHF transcript: it starts with "Human:" (after blank lines) and has an
    "Assistant:" turn. A prompt that merely begins with the word "Human:" has no such turn and stays text.

    >>> is_transcript("\\n\\nHuman: Hi\\n\\nAssistant:"), is_transcript("Human: is this a question?")
    (True, False)
    """
    body = text.lstrip("\n")
    return body.startswith("Human:") and "\n\nAssistant:" in body


def transcript_turns(text: str) -> tuple[Message, ...]:
    """Every turn of a transcript, in order, each stripped; an empty last "Assistant:" (the place the reply
    goes) is dropped. ValueError when the text does not start with a "Human:" turn, or a turn is empty.

    >>> text = "\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Bye\\n\\nAssistant:"
    >>> [(m.role, m.content) for m in transcript_turns(text)]
    [('user', 'Hi'), ('assistant', 'Hello!'), ('user', 'Bye')]
    >>> [m.role for m in transcript_turns("Human: Hi\\n\\nAssistant: Hello!")]
    ['user', 'assistant']
    """
    body = text.lstrip("\n")
    marks = list(_TURN.finditer(body))
    if not marks or marks[0].start() != 0:
        raise ValueError("not a transcript: expected it to start with 'Human:' (after optional blank lines)")
    turns = []
    for index, mark in enumerate(marks):
        last = index + 1 == len(marks)
        content = body[mark.end() : marks[index + 1].start() if not last else len(body)].strip()
        if not content and last and mark.group(1) == "Assistant":
            break  # where the reply goes
        if not content:
            raise ValueError(f"turn {index} ({mark.group(1)}) of the transcript is empty")
        turns.append(Message(role=_ROLES[mark.group(1)], content=content))
    return tuple(turns)


def split_at_last_reply(
    chosen: Sequence[Message], rejected: Sequence[Message]
) -> tuple[tuple[Message, ...], str, str]:
    """Two whole conversations that share everything up to their last assistant turn, as TRL's
    `extract_prompt` splits them: (the shared prompt, the chosen reply, the rejected reply).
    ValueError when they do not end in an assistant turn each after a shared prompt.

    >>> user, a, b = Message(role="user", content="Hi"), "Hello!", "Go away."
    >>> split_at_last_reply([user, Message(role="assistant", content=a)], [user, Message(role="assistant", content=b)])
    ((Message(role='user', content='Hi'),), 'Hello!', 'Go away.')
    """
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    prompt = tuple(chosen[:shared])
    ends = (tuple(chosen[shared:]), tuple(rejected[shared:]))
    if shared == len(chosen) and shared == len(rejected):
        raise ValueError("chosen and rejected are the same conversation: no two replies to compare")
    if shared == 0:
        raise ValueError("chosen and rejected share no conversation: they differ from their first turn")
    for name, end in zip(("chosen", "rejected"), ends):
        if len(end) != 1 or end[0].role != "assistant":
            raise ValueError(
                f"{name} goes on for {len(end)} turn(s) after the shared conversation; expected one assistant "
                "reply (the two conversations must be the same up to their last assistant turn)"
            )
    if not prompt or prompt[-1].role != "user":
        raise ValueError("the shared conversation must end with a user turn")
    return prompt, ends[0][0].content, ends[1][0].content
