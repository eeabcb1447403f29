"""Reading user input files: prompts, response pairs and human-labelled pairs.

A conversation is a `prompt` text (an HH-RLHF transcript is read as its turns) or a list of {role, content}
messages; a pair without a prompt field holds two whole conversations that share all but their last reply
(HH-RLHF's released rows, TRL's implicit prompt), split as TRL splits them (`labeler.inputs.transcripts`).

JSONL (one JSON object per line), Parquet and Arrow (IPC file or stream) are read as streams of
rows, each with its 1-based line (JSONL) or row number, so every bad row can be named exactly.
Only regular files are read, and each JSONL row is checked as `labeler.core.input_files` checks every
parsed document (integer lengths, nesting, lone surrogates).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeler.core.chat import Message
from labeler.core.errors import InputError
from labeler.core.input_files import check_regular_file, iter_input_lines, parse_json
from labeler.inputs.transcripts import is_transcript, split_at_last_reply, transcript_turns

PROMPT_FIELDS = ("prompt", "messages", "prompt_messages")
VALID_ROLES = ("system", "user", "assistant")
# Characters that show nothing: a text of only these (and whitespace) is as empty as "".
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"


@dataclass(frozen=True)
class Row:
    """One input row and where it came from."""

    file: Path
    line: int
    data: dict[str, Any]

    def error(self, message: str, field: str | None = None) -> InputError:
        return InputError(message, file=self.file, line=self.line, where=f"field {field!r}" if field else None)


def iter_rows(path: str | Path) -> Iterator[Row]:
    """Rows of a JSONL, Parquet or Arrow file, streamed (never the whole file in memory for JSONL)."""
    path = Path(path)
    check_input_file(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        yield from _iter_jsonl(path)
    elif suffix in (".parquet", ".arrow", ".feather", ".ipc"):
        yield from _iter_arrow(path, suffix)
    else:
        raise InputError("unknown input format; use .jsonl, .parquet or .arrow", file=path)


def check_input_file(path: Path, where: str | None = None) -> None:
    """`InputError` unless `path` is (or links to) a readable regular file, saying what it is instead."""
    check_regular_file(path, where=where)


def _iter_jsonl(path: Path) -> Iterator[Row]:
    for number, raw in iter_input_lines(path):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 ({exc.reason} at byte {exc.start})", file=path, line=number) from exc
        if not text.strip():
            continue
        # without its line ending, so that an error at the end of the row names this line, not the next
        data = parse_json(text.rstrip("\r\n"), file=path, line=number)
        if not isinstance(data, dict):
            raise InputError(f"expected a JSON object, got {type(data).__name__}", file=path, line=number)
        yield Row(path, number, data)


def _iter_arrow(path: Path, suffix: str) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if suffix == ".parquet":
            batches: Iterator[Any] = pq.ParquetFile(path).iter_batches(batch_size=1024)
        else:
            batches = _arrow_batches(pa, path)
        number = 0
        for batch in batches:
            for data in batch.to_pylist():
                number += 1
                yield Row(path, number, data)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read as {suffix[1:]}: {exc}", file=path) from exc


def _arrow_batches(pa: Any, path: Path) -> Iterator[Any]:
    try:
        reader = pa.ipc.open_file(path)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    except pa.ArrowInvalid:
        with pa.ipc.open_stream(path) as stream:
            yield from stream


def row_messages(row: Row) -> tuple[Message, ...]:
    """The conversation a row asks about: `prompt` text (an HH-RLHF transcript is read as its turns), or
    a `prompt`/`messages`/`prompt_messages` list. A row that gives two different conversations in two of
    these fields is refused, naming both."""
    given = [field for field in PROMPT_FIELDS if row.data.get(field) is not None]
    if not given:
        raise row.error(f"row has none of the fields {', '.join(PROMPT_FIELDS)}")
    first = _prompt(row, given[0])
    for field in given[1:]:
        if _prompt(row, field) != first:
            raise row.error(f"the row gives two different conversations, in {given[0]!r} and {field!r}: keep one",
                            field)
    return first


def _prompt(row: Row, field: str) -> tuple[Message, ...]:
    value = row.data[field]
    if not isinstance(value, str):
        return parse_messages(value, row, field)
    if is_blank(value):
        raise row.error("empty prompt (only whitespace or zero-width characters)", field)
    if not is_transcript(value):
        return (Message(role="user", content=value),)
    turns = _transcript(row, field, value)
    if turns[-1].role == "assistant":
        raise row.error("the transcript ends with an assistant reply; a prompt ends with the user's turn "
                        "(or an empty 'Assistant:')", field)
    return turns


def _transcript(row: Row, field: str, text: str) -> tuple[Message, ...]:
    try:
        return transcript_turns(text)
    except ValueError as exc:
        raise row.error(str(exc), field) from None


def parse_messages(value: Any, row: Row, field: str) -> tuple[Message, ...]:
    """A prompt given as a list of {role, content} messages: it ends with a user turn."""
    messages = parse_turns(value, row, field)
    if messages[-1].role == "assistant":
        raise row.error("the conversation ends with an assistant turn; the prompt must end with a user turn", field)
    if not any(m.role == "user" for m in messages):
        raise row.error("the conversation has no user turn (a system turn alone asks nothing)", field)
    return messages


def parse_turns(value: Any, row: Row, field: str) -> tuple[Message, ...]:
    """A non-empty list of {role, content} messages, each with a known role and a text that shows something."""
    if not isinstance(value, list) or not value:
        raise row.error("expected text or a non-empty list of {role, content} messages", field)
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in VALID_ROLES:
            raise row.error(f"message {i} needs a role in {VALID_ROLES} and a text content", field)
        if is_blank(m["content"]):
            raise row.error(f"message {i} ({m['role']}) is empty (only whitespace or zero-width characters)", field)
        messages.append(Message(role=m["role"], content=m["content"]))
    return tuple(messages)


def reply_field(row: Row, field: str) -> str:
    """A reply as text: a string, or a list of exactly one assistant message (TRL's conversational form)."""
    value = row.data.get(field)
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != "assistant":
            raise row.error("expected text or a list of one {role: assistant, content} message", field)
        value = value[0].get("content")
        if not isinstance(value, str) or is_blank(value):
            raise row.error("the assistant message needs a non-empty text content", field)
        return value
    text = text_field(row, field)
    assert text is not None  # required: text_field raised otherwise
    return text


def row_replies(row: Row, first: str, second: str) -> tuple[tuple[Message, ...], str, str]:
    """The conversation a row asks about and its two replies, in the fields `first` and `second`.

    With a prompt field, the replies are texts (or TRL's one-assistant-message lists). Without one (the
    shape of Anthropic's HH-RLHF release and of TRL's implicit prompt), `first` and `second` each hold the
    whole conversation, as an HH transcript or a message list, the same up to the last assistant turn:
    the shared part is the prompt and each last turn a reply."""
    values = [row.data.get(field) for field in (first, second)]
    whole_given = any(isinstance(v, list) and len(v) > 1 or isinstance(v, str) and is_transcript(v) for v in values)
    if any(row.data.get(field) is not None for field in PROMPT_FIELDS) or not whole_given:
        return row_messages(row), reply_field(row, first), reply_field(row, second)
    for field in (first, second):
        if row.data.get(field) is None:
            raise row.error(f"missing field (a row without {', '.join(PROMPT_FIELDS)} holds two whole "
                            f"conversations in {first} and {second})", field)
    whole = [_whole_conversation(row, field) for field in (first, second)]
    try:
        return split_at_last_reply(*whole)
    except ValueError as exc:
        raise row.error(f"no prompt field, and {first} and {second} do not split into a shared prompt and "
                        f"two replies: {exc}", second) from None


def _whole_conversation(row: Row, field: str) -> tuple[Message, ...]:
    value = row.data[field]
    if isinstance(value, list):
        return parse_turns(value, row, field)
    if not isinstance(value, str) or not is_transcript(value):
        raise row.error(f"no prompt field, so {field} must be the whole conversation: an HH-RLHF transcript "
                        "('\\n\\nHuman: ...\\n\\nAssistant: ...') or a list of {role, content} messages", field)
    return _transcript(row, field, value)


def is_blank(text: str) -> bool:
    """Whether a text shows nothing: empty, whitespace, or zero-width characters only.

    >>> is_blank(" \\u200b\\n"), is_blank("\\ufeffhi")
    (True, False)
    """
    return all(c.isspace() or c in ZERO_WIDTH for c in text)


def text_field(row: Row, field: str, *, required: bool = True) -> str | None:
    """A non-empty text field, or None when optional and absent."""
    value = row.data.get(field)
    if value is None:
        if required:
            raise row.error("missing field", field)
        return None
    if not isinstance(value, str):
        raise row.error(f"expected text, got {type(value).__name__}", field)
    if is_blank(value):
        raise row.error("empty text (only whitespace or zero-width characters)", field)
    return value


def source_id(row: Row) -> str | None:
    """The row's own `id` as text (a number becomes its decimal text), or None when it has none.

    It travels into the datasets as `source_id`; the records' own ids stay content hashes.
    """
    value = row.data.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise row.error(f"expected text or a whole number, got {type(value).__name__}", "id")
    text = str(value)
    if not text.strip():
        raise row.error("empty id", "id")
    return text


def stable_id(*parts: object) -> str:
    """A stable hex id from JSON-able parts (the same input always gives the same id).

    >>> stable_id("a", ["b"]) == stable_id("a", ["b"])
    True
    >>> len(stable_id("a"))
    16
    """
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _jsonable(value: object) -> object:
    if isinstance(value, Message):
        return {"role": value.role, "content": value.content}
    raise TypeError(f"cannot hash {type(value).__name__}")


def group_value(row: Row, group_by: str) -> str:
    """A row's value of a group column (text or a number), or bad input naming file, line and column."""
    value: Any = row.data.get(group_by)
    if value is None or isinstance(value, (dict, list)) or not str(value).strip():
        raise row.error("missing or empty group value (expected text or a number)", group_by)
    return str(value)


@dataclass(frozen=True)
class Prompt:
    """A prompt to work on: id, conversation, optional given response, and where it came from."""

    id: str
    messages: tuple[Message, ...]
    response: str | None
    line: int
    source_id: str | None = None  # the row's own `id`, when it has one
    group: str | None = None  # its value of the group column, when one was asked for


def read_prompts(path: str | Path, group_by: str | None = None) -> Iterator[Prompt]:
    """Prompts from a file; a row's `id` is kept (and is its `source_id`), otherwise a stable hash of its
    conversation.

    With `group_by`, every row must have a value in that column (`Prompt.group`).
    """
    seen: dict[str, int] = {}
    for row in iter_rows(path):
        messages = row_messages(row)
        given = source_id(row)
        pid = given if given is not None else stable_id([m for m in messages])
        if pid in seen:
            raise row.error(f"duplicate id {pid!r} (first on line {seen[pid]})", "id")
        seen[pid] = row.line
        group = group_value(row, group_by) if group_by is not None else None
        yield Prompt(pid, messages, text_field(row, "response", required=False), row.line, given, group)
