"""Judging demonstrations read from a file: labeler's own `{conversation, better, worse}` entries or the
published CAI feedback few-shot format, a JSON list of `{"prompt", "corrects", "incorrects"}` objects
whose prompt is a "\\n\\nHuman: ...\\n\\nAssistant:" transcript.

Every problem is reported at once, naming the file, the line when known, the entry and its field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from labeler.core.chat import Message
from labeler.core.errors import InputError, InputErrors
from labeler.inputs.constitution.formats import FilePath, is_feedback_few_shot, type_name
from labeler.inputs.constitution.load import read_document
from labeler.inputs.constitution.schema import JudgeDemo
from labeler.inputs.transcripts import transcript_turns

FEEDBACK_KEYS = ("prompt", "corrects", "incorrects")
def split_transcript(text: str) -> tuple[Message, ...]:
    """A "\\n\\nHuman: ...\\n\\nAssistant: ..." transcript as messages, ending with the Human turn the
    demonstration's replies answer (an empty last Assistant turn, the place the reply goes, is dropped).
    ValueError when the text is not such a transcript.

    >>> text = "\\n\\nHuman: Hi there\\n\\nAssistant: Hello!\\n\\nHuman: Bye\\n\\nAssistant:"
    >>> [(m.role, m.content) for m in split_transcript(text)]
    [('user', 'Hi there'), ('assistant', 'Hello!'), ('user', 'Bye')]
    >>> split_transcript("just text")
    Traceback (most recent call last):
    ...
    ValueError: not a transcript: expected it to start with 'Human:' (after optional blank lines)
    """
    messages = transcript_turns(text)
    if not messages or messages[-1].role != "user":
        raise ValueError("not a transcript ending with a Human turn (the reply being judged follows it)")
    return messages


def read_judge_demos(path: Path) -> tuple[JudgeDemo, ...]:
    """The judging demonstrations in `path` (JSON or YAML): a list of `{conversation, better, worse}`
    entries (or a mapping holding one under `judge_few_shot`), or a CAI feedback few-shot list, each of
    whose `corrects` x `incorrects` gives one demonstration. Raises `InputErrors` listing every problem."""
    document = read_document(path, what="a judging demonstrations file")
    data: object = document.data
    prefix: FilePath = ()
    if isinstance(data, dict) and "judge_few_shot" in data:
        data, prefix = data["judge_few_shot"], ("judge_few_shot",)
    if not isinstance(data, list) or not data:
        message = (
            "expected a non-empty list of judging demonstrations: {conversation, better, worse} entries or "
            f'CAI feedback {{"prompt", "corrects", "incorrects"}} objects (the file holds {type_name(data)})'
        )
        raise InputErrors([InputError(message, file=path)])
    feedback = is_feedback_few_shot(data)
    demos: list[JudgeDemo] = []
    problems: list[InputError] = []

    def problem(message: str, index: int, key: str | None = None) -> None:
        place: FilePath = (*prefix, index) if key is None else (*prefix, index, key)
        line = next((document.lines[place[:end]] for end in range(len(place), 0, -1) if place[:end] in document.lines),
                    None)
        where = f"demonstration {index}" + (f", field '{key}'" if key else "")
        problems.append(InputError(message, file=path, line=line, where=where))

    for index, item in enumerate(data):
        if not isinstance(item, dict):
            problem(f"expected an object, got {type_name(item)}", index, None)
            continue
        if feedback:
            demos += _feedback_demos(item, index, problem)
            continue
        try:
            demos.append(JudgeDemo.model_validate(item))
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                key = ".".join(str(part) for part in error["loc"]) or None
                kind = error["type"]
                message = (f"missing required key '{key}'" if kind == "missing" else
                           f"unknown key '{key}'; allowed keys: conversation, better, worse"
                           if kind == "extra_forbidden" else error["msg"])
                problem(message, index, key)
    if problems:
        raise InputErrors(problems)
    return tuple(demos)


Report = Callable[[str, int, str | None], None]  # message, entry index, field


def _feedback_demos(item: dict[str, object], index: int, problem: Report) -> list[JudgeDemo]:
    unknown = [key for key in item if key not in FEEDBACK_KEYS]
    for key in unknown:
        problem(f"unknown key '{key}'; this format has {', '.join(FEEDBACK_KEYS)}", index, str(key))
    prompt, corrects, incorrects = (item.get(key) for key in FEEDBACK_KEYS)
    if not isinstance(prompt, str):
        problem(f"expected the transcript as a string, got {type_name(prompt)}", index, "prompt")
        return []
    try:
        conversation = split_transcript(prompt)
    except ValueError as exc:
        problem(str(exc), index, "prompt")
        return []
    replies = {}
    for key, value in (("corrects", corrects), ("incorrects", incorrects)):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
            problem(f"expected a non-empty list of reply strings, got {type_name(value)}", index, key)
            return []
        replies[key] = [v.strip() for v in value]
    same = sorted(set(replies["corrects"]) & set(replies["incorrects"]))
    if same:
        problem(f"a reply is both correct and incorrect: {same[0][:60]!r}", index, "incorrects")
        return []
    return [JudgeDemo(conversation=conversation, better=good, worse=bad)
            for good in replies["corrects"] for bad in replies["incorrects"]]


def demos_sha256(demos: Sequence[JudgeDemo]) -> str:
    """Hex sha256 of the demonstrations' content (recorded in a run's fingerprint)."""
    text = json.dumps([d.model_dump(mode="json") for d in demos], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
