"""Read a constitution file, in any format labeler reads, reporting every problem at once.

Reading goes: bytes (size limit) → UTF-8 text → YAML or JSON (with line numbers), or the rules of a
Dromedary self-align prompt's text → format detection
and normalisation (`formats.py`) → validation against `Constitution`. Each step reports every problem
it finds, naming the file, the line when known, the principle (position and id) and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from labeler.core import input_files
from labeler.core.chat import Message
from labeler.core.errors import InputError, InputErrors
from labeler.core.input_files import MAX_DOCUMENT_BYTES, Document
from labeler.inputs.constitution.formats import (
    FilePath,
    FormatName,
    Normalised,
    PrincipleSource,
    Problem,
    detect_format,
    normalise,
    parse_dromedary,
    type_name,
    unknown_format_message,
)
from labeler.inputs.constitution.schema import (
    DUPLICATE_ERROR,
    INCOMPLETE_ERROR,
    Constitution,
    Principle,
    pairing_problems,
)

MAX_BYTES = MAX_DOCUMENT_BYTES  # constitutions are short texts; anything larger is the wrong file


@dataclass(frozen=True)
class LoadedConstitution:
    """A constitution, the file it came from and the format that file was in."""

    path: Path
    format: FormatName
    constitution: Constitution


def load_constitution(path: str | Path) -> Constitution:
    """The constitution in `path` (YAML or JSON, any format labeler reads).

    Raises `InputErrors` listing every problem, each naming the file, the line when known, the
    principle (its position in the file, from 0, and its id) and the field.
    """
    return read_constitution(path).constitution


def read_constitution(path: str | Path) -> LoadedConstitution:
    """Like `load_constitution`, also saying which format the file was in."""
    path = Path(path)
    document = _read(path, "a constitution", texts=True)
    normalised = normalise(document.data, name=path.stem)
    if normalised is None:
        raise InputErrors([InputError(unknown_format_message(document.data), file=path)])
    problems = [*normalised.problems, *_raw_problems(normalised)]
    constitution: Constitution | None = None
    try:
        constitution = Constitution.model_validate(normalised.document)
    except ValidationError as exc:
        problems += _validation_problems(exc, normalised)
    if problems or constitution is None:
        ordered = _ordered(problems, document.lines)
        raise InputErrors([_to_input_error(problem, path, document.lines) for problem in ordered])
    return LoadedConstitution(path=path, format=normalised.format, constitution=constitution)


def dump_constitution(constitution: Constitution) -> str:
    """The constitution as YAML in labeler's own format (what `load_constitution` reads back equal)."""
    data = constitution.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def read_document(path: Path, what: str = "a constitution") -> Document:
    """The parsed contents of `path`: JSON for `.json` files, YAML otherwise (`what` names the kind of file).

    Raises `InputErrors` for a missing or unreadable file, one that is not a regular file, one over
    `MAX_BYTES`, bytes that are not UTF-8, a syntax error (with its line), for duplicate keys, YAML aliases,
    integers too long to read, nesting too deep and text with a lone surrogate (see `labeler.core.input_files`).
    """
    return _read(path, what, texts=False)


def _read(path: Path, what: str, *, texts: bool) -> Document:
    """`read_document`; with `texts`, a file that is no YAML, or YAML in no format labeler reads, with a
    `## General Rules` heading (a Dromedary self-align prompt) is read as its rules."""
    try:
        text = input_files.read_input_text(path, limit=MAX_BYTES, what=what)
        if path.suffix.lower() == ".json":
            return Document(data=input_files.parse_json(text, file=path, refuse_duplicates=True), lines={})
        try:
            document = input_files.parse_yaml(text, file=path, what=what)
        except InputError:
            document = None  # not YAML: perhaps the prose of a Dromedary prompt, else the syntax error stands
            if not texts or parse_dromedary(text) is None:
                raise
        if texts and (document is None or detect_format(document.data) is None):
            rules = parse_dromedary(text)
            if rules is not None:
                return Document(data=rules, lines={(i,): rule.line for i, rule in enumerate(rules.rules)})
        assert document is not None
        return document
    except InputErrors:
        raise
    except InputError as exc:
        raise InputErrors([exc]) from None


def _document_principles(normalised: Normalised) -> list[object]:
    document = normalised.document
    principles = document.get("principles") if isinstance(document, dict) else None
    return principles if isinstance(principles, list) else []


def _raw_id(item: object) -> str | None:
    value = item.get("id") if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


def _raw_problems(normalised: Normalised) -> list[Problem]:
    """Problems across fields and principles, checked on the raw document so that they are reported
    even when a principle also has type errors (the models only check them once fields are valid).

    A missing field that the format reader already reported as malformed is not reported again.
    """
    reported = {(p.principle, p.field) for p in normalised.problems if p.principle is not None}
    reported_principles = {principle for principle, _ in reported}
    problems: list[Problem] = []
    first_with_id: dict[str, PrincipleSource] = {}
    for item, source in zip(_document_principles(normalised), normalised.sources, strict=True):
        if not isinstance(item, dict):
            continue
        principle_id = _raw_id(item)
        present = [key for key, value in item.items() if key in Principle.model_fields and value is not None]
        for own_field, message in pairing_problems(present):
            if own_field is None and source.index in reported_principles:
                continue
            file_key = source.keys.get(own_field, (own_field,))[:1] if own_field else ()
            if own_field and (source.index, str(file_key[0]) if file_key else None) in reported:
                continue
            path = source.file_path(own_field) if own_field else source.path
            problems.append(
                Problem(
                    message,
                    path=path,
                    principle=source.index,
                    principle_id=principle_id,
                    field=_field_label(source, own_field) if own_field else None,
                )
            )
        if principle_id is None:
            continue
        first = first_with_id.get(principle_id)
        if first is not None:
            problems.append(
                Problem(
                    f"duplicate id '{principle_id}': principle {first.index} has it too",
                    path=source.file_path("id"),
                    principle=source.index,
                    principle_id=principle_id,
                    field="id",
                )
            )
        else:
            first_with_id[principle_id] = source
    return problems


def _field_label(source: PrincipleSource, own_field: str) -> str:
    """The field as the file names it, with labeler's name alongside where they differ."""
    inner = _render_path(source.keys.get(own_field, (own_field,)))
    if not inner:
        return own_field
    return inner if inner == own_field else f"{inner} ({own_field})"


def _validation_problems(exc: ValidationError, normalised: Normalised) -> list[Problem]:
    """Each pydantic error, located in the file's own terms."""
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        if error["type"] in (INCOMPLETE_ERROR, DUPLICATE_ERROR):
            continue  # `_raw_problems` reports these, with the field and the other principle
        if error["type"] == "too_short" and error["input"]:
            continue  # every principle failed validation, and each failure is reported on its own
        loc = tuple(error["loc"])
        position = loc[1] if len(loc) >= 2 and loc[0] == "principles" and isinstance(loc[1], int) else None
        if position is not None and position < len(normalised.sources):
            problems.append(_principle_problem(error, normalised, position))
            continue
        head = loc[0] if loc and isinstance(loc[0], str) else None
        path = (*normalised.header_paths.get(head, (head,)), *loc[1:]) if head else loc
        model = Constitution if len(loc) == 1 else Message if head == "few_shot" and len(loc) == 4 else None
        problems.append(Problem(_describe(error, model), path=path, field=_render_path(path) or None))
    return problems


def _principle_problem(error: Any, normalised: Normalised, position: int) -> Problem:
    """A pydantic error inside the principle at `position` of the normalised document."""
    loc = tuple(error["loc"])
    source = normalised.sources[position]
    principle_id = _raw_id(_document_principles(normalised)[position])
    own_field = loc[2] if len(loc) > 2 and isinstance(loc[2], str) else None
    message = _describe(error, Principle if len(loc) == 3 else None)
    if own_field is None:
        return Problem(message, path=source.path, principle=source.index, principle_id=principle_id)
    return Problem(
        message,
        path=source.file_path(own_field) + loc[3:],
        principle=source.index,
        principle_id=principle_id,
        field=_field_label(source, own_field) + _render_path(loc[3:]),
    )


def _describe(error: Any, model: type[BaseModel] | None) -> str:
    """A pydantic error as a sentence about the file. `model` is the one the error's key belongs to."""
    kind = error["type"]
    key = error["loc"][-1] if error["loc"] else None
    if kind == "missing":
        return f"missing required key '{key}'"
    if kind == "extra_forbidden":
        allowed = f"; allowed keys: {', '.join(model.model_fields)}" if model is not None else ""
        return f"unknown key '{key}'{allowed}"
    if kind == "too_short" and error["loc"] == ("principles",):
        return "no principles: the list is empty"
    if kind == "string_pattern_mismatch":
        return f"'{error['input']}' is not a valid id: use lowercase letters, digits and '-'"
    message = error["msg"].removeprefix("Value error, ")
    value = error["input"]
    if kind == "empty_text" or isinstance(value, dict | list | tuple):
        return message
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"{message} (got {type_name(value)} {shown})"


def _render_path(path: FilePath) -> str:
    """A place in a file, written the way people write it.

    >>> _render_path(("system_chat", 0, 1, "role")), _render_path((3,)), _render_path(())
    ('system_chat[0][1].role', '[3]', '')
    """
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _ordered(problems: list[Problem], lines: Mapping[FilePath, int]) -> list[Problem]:
    """File-level problems first, then by principle position, each group by line (stable otherwise)."""
    return sorted(
        problems,
        key=lambda p: (-1 if p.principle is None else p.principle, _line_of(p.path, lines) or 0),
    )


def _line_of(path: FilePath, lines: Mapping[FilePath, int]) -> int | None:
    """The line of `path`, or of the nearest enclosing place that has one."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _to_input_error(problem: Problem, file: Path, lines: Mapping[FilePath, int]) -> InputError:
    where: str | None = None
    if problem.principle is not None:
        where = f"principle {problem.principle}"
        if problem.principle_id is not None:
            where += f" '{problem.principle_id}'"
        if problem.field:
            where += f", field '{problem.field}'"
    elif problem.field:
        where = f"field '{problem.field}'"
    return InputError(problem.message, file=file, line=_line_of(problem.path, lines), where=where)
