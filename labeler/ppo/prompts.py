"""Prompts for PPO rollouts: a JSONL file, one conversation to complete per line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labeler.errors import InputError

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("prompt_messages", "messages")


def parse_prompt_row(row: Any) -> list[dict[str, str]]:
    """The chat messages of one prompt row: `prompt_messages` or `messages` (a list of {role, content}),
    else `prompt` (text, a single user turn). Raises ValueError saying what is wrong.

    >>> parse_prompt_row({"prompt": "Name a color."})
    [{'role': 'user', 'content': 'Name a color.'}]
    >>> parse_prompt_row({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]})
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]
    """
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    key = next((k for k in MESSAGE_KEYS if k in row), None)
    if key is None:
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("needs `prompt` (non-empty text) or `prompt_messages`/`messages` (a list)")
        return [{"role": "user", "content": prompt}]
    messages = row[key]
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"`{key}` must be a non-empty list of {{role, content}} objects")
    parsed: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValueError(f"`{key}[{i}]` must be an object with a text `content`")
        if message.get("role") not in ROLES:
            raise ValueError(f"`{key}[{i}].role` is {message.get('role')!r}; expected one of {', '.join(ROLES)}")
        parsed.append({"role": message["role"], "content": message["content"]})
    if parsed[-1]["role"] == "assistant":
        # The policy writes the assistant's turn; a prompt that already ends with one has nothing to complete.
        raise ValueError(f"the last message of `{key}` is the assistant's; a prompt must end before it")
    return parsed


def load_prompts(path: Path) -> list[list[dict[str, str]]]:
    """Every prompt in a JSONL file, in file order; any bad row is an `InputError` naming file and line."""
    if not path.is_file():
        raise InputError("prompts file not found", file=path)
    prompts: list[list[dict[str, str]]] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                prompts.append(parse_prompt_row(json.loads(line)))
            except json.JSONDecodeError as exc:
                raise InputError(f"not valid JSON: {exc.msg}", file=path, line=number) from exc
            except ValueError as exc:
                raise InputError(str(exc), file=path, line=number) from exc
    if not prompts:
        raise InputError("no prompts in the file", file=path)
    return prompts
