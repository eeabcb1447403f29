"""Reading the files a user gives: regular files only, bounded, parsed without surprises.

Every reader of a user's file (data rows, constitutions, run and engine configs, templates, model
configs, reports) comes through here, so the same promises hold for all of them:

- only a regular file is read (after following links): a device such as /dev/zero, a named pipe or a
  socket is refused before it is opened, and it is opened non-blocking so that one swapped in at the
  last moment cannot hang the reader either;
- the size limit counts the bytes actually read, never `stat`, which says 0 for devices;
- YAML aliases are refused before they expand (a few of them make an exponentially large document);
- an integer too long for Python to convert, a document nested too deeply, or text holding a lone
  surrogate (a JSON escape such as "\\ud800", which no UTF-8 writer can encode) is bad input naming the
  file, the line when known, and the field.

Each problem is an `InputError`; duplicate keys are all reported at once as `InputErrors`.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from labeler.core.errors import InputError, InputErrors

MAX_DOCUMENT_BYTES = 2 * 1024 * 1024  # constitutions, configs, templates: short texts; more is the wrong file
MAX_REPORT_BYTES = 512 * 1024 * 1024  # a report labeler wrote (eval-judge, eval-policy), one entry per pair
MAX_ROW_BYTES = 64 * 1024 * 1024  # one JSONL row (a long conversation fits many times over)
MAX_DEPTH = 100  # nesting levels of a parsed document; real inputs use fewer than ten
MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300  # what Python converts between text and int (default 4300)

Place = tuple[str | int, ...]  # keys and list indices from the top of a document


@dataclass(frozen=True)
class Document:
    """A parsed file and the line of each place in it (YAML only; JSON files have none)."""

    data: object
    lines: Mapping[Place, int]


# -- opening ------------------------------------------------------------------------------------------


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, in words.

    >>> file_kind(stat.S_IFCHR), file_kind(stat.S_IFIFO)
    ('a character device', 'a named pipe (FIFO)')
    """
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _refuse_mode(mode: int, path: Path, where: str | None) -> None:
    if stat.S_ISDIR(mode):
        raise InputError("is a folder, not a file", file=path, where=where)
    if not stat.S_ISREG(mode):
        raise InputError(f"is {file_kind(mode)}, not a regular file; inputs are read from regular files only",
                         file=path, where=where)


def check_regular_file(path: str | Path, *, where: str | None = None) -> None:
    """`InputError` unless `path` is (or links to) a regular file, saying what it is instead."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError("is a broken symbolic link", file=path, where=where) from None
        raise InputError("file not found", file=path, where=where) from None
    except OSError as exc:  # a symbolic link loop, a name too long, a parent that is a file
        raise InputError(f"cannot be read: {exc.strerror}", file=path, where=where) from None
    _refuse_mode(info.st_mode, path, where)


def open_input(path: str | Path, *, where: str | None = None) -> IO[bytes]:
    """`path` opened for reading in binary, once it is known to be a regular file.

    The file is opened with O_NONBLOCK (a FIFO put in its place after the check cannot block the
    open) and checked again on the open descriptor, so what is read is what was checked."""
    path = Path(path)
    check_regular_file(path, where=where)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(f"cannot be read: {exc.strerror}", file=path, where=where) from None
    try:
        _refuse_mode(os.fstat(fd).st_mode, path, where)
    except InputError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_input_bytes(path: str | Path, *, limit: int, what: str, where: str | None = None) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them (`what` names the kind of file in
    the message, e.g. "a constitution")."""
    path = Path(path)
    with open_input(path, where=where) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise InputError(f"cannot be read: {exc.strerror}", file=path, where=where) from None
    if len(data) > limit:
        raise InputError(
            f"file is over {limit} bytes; the limit for {what} is {limit} bytes ({_size(limit)})",
            file=path,
            where=where,
        )
    return data


def read_input_text(path: str | Path, *, limit: int, what: str, where: str | None = None) -> str:
    """The UTF-8 text of `path` (a leading byte-order mark dropped), read as `read_input_bytes` does."""
    path = Path(path)
    raw = read_input_bytes(path, limit=limit, what=what, where=where)
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start  # in the file, byte-order mark included
        line = raw[:offset].count(b"\n") + 1
        message = f"not UTF-8 text: byte 0x{raw[offset]:02x} at offset {offset}"
        raise InputError(message, file=path, line=line, where=where) from None


def iter_input_lines(path: str | Path, *, where: str | None = None) -> Iterator[tuple[int, bytes]]:
    """The lines of `path` with their 1-based numbers, streamed; a line over `MAX_ROW_BYTES` is refused."""
    path = Path(path)
    with open_input(path, where=where) as handle:
        number = 0
        while True:
            raw = handle.readline(MAX_ROW_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_ROW_BYTES:
                message = f"a line over {MAX_ROW_BYTES} bytes ({_size(MAX_ROW_BYTES)}); is this a JSONL file?"
                raise InputError(message, file=path, line=number, where=where)
            yield number, raw


def _size(limit: int) -> str:
    """
    >>> _size(2 * 1024 * 1024), _size(512)
    ('2 MiB', '512 bytes')
    """
    return f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"


# -- parsing ------------------------------------------------------------------------------------------


class _HugeInteger(Exception):
    """An integer literal too long to convert; carries its text to find its line."""

    def __init__(self, digits: str) -> None:
        super().__init__(digits)
        self.digits = digits


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _HugeInteger(text)
    return int(text)


_DECODER = json.JSONDecoder(parse_int=_json_int)  # made once: `json.loads` with options makes one per call


def _huge_int_message(digits: int | None) -> str:
    """
    >>> _huge_int_message(5000)
    'an integer of 5000 digits; at most 4300 are read'
    """
    size = f"{digits} digits" if digits is not None else f"more than {MAX_INT_DIGITS} decimal digits"
    return f"an integer of {size}; at most {MAX_INT_DIGITS} are read"


def parse_json(
    text: str,
    *,
    file: str | Path,
    line: int | None = None,
    where: str | None = None,
    refuse_duplicates: bool = False,
    invalid: str = "invalid JSON",
) -> Any:
    """`text` parsed as JSON and checked by `check_tree`; `InputError` naming the line (`line` is that of
    the text's first line, for a JSONL row) otherwise. `invalid` begins a syntax error's message."""
    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        duplicates.extend(sorted({key for key in keys if keys.count(key) > 1}))
        return dict(pairs)

    first = line or 1
    decoder = json.JSONDecoder(parse_int=_json_int, object_pairs_hook=pairs_hook) if refuse_duplicates else _DECODER
    try:
        data = decoder.decode(text)
    except json.JSONDecodeError as exc:
        message = f"{invalid}: {exc.msg} (column {exc.colno})"
        raise InputError(message, file=file, line=first + exc.lineno - 1, where=where) from None
    except _HugeInteger as exc:
        found = first + text.count("\n", 0, max(text.find(exc.digits), 0))
        raise InputError(_huge_int_message(len(exc.digits.lstrip("-"))), file=file, line=found, where=where) from None
    except RecursionError:
        raise InputError(f"{invalid}: nested too deeply", file=file, line=line, where=where) from None
    if duplicates:
        message = "duplicate key '{}' in one object"
        raise InputErrors([InputError(message.format(key), file=file, where=where) for key in duplicates])
    check_tree(data, file=file, line=line, where=where)
    return data


class SafeYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases before they expand (a few of them can make an exponentially
    large document) and integers too long to convert. (The pure-Python loader, because the C one composes
    nodes where this cannot see.) `what` names the kind of file in the alias message."""

    what = "YAML files"

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            message = f"YAML aliases (*name) are not supported in {self.what}"
            raise yaml.composer.ComposerError(None, None, message, self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_checked_int(self, node: yaml.ScalarNode) -> int:
        try:
            value = self.construct_yaml_int(node)
        except ValueError:  # a decimal literal too long to convert
            digits = sum(ch.isdigit() for ch in str(node.value))
            raise yaml.constructor.ConstructorError(None, None, _huge_int_message(digits), node.start_mark) from None
        # a hexadecimal or binary literal converts at any length, but its value cannot be printed either
        if abs(value) >= _INT_CEILING:
            raise yaml.constructor.ConstructorError(None, None, _huge_int_message(None), node.start_mark)
        return value


_INT_CEILING = 10**MAX_INT_DIGITS
SafeYamlLoader.add_constructor("tag:yaml.org,2002:int", SafeYamlLoader.construct_checked_int)


def _plural(what: str) -> str:
    """
    >>> _plural("a constitution"), _plural("an engine config")
    ('constitutions', 'engine configs')
    """
    return re.sub(r"^an? ", "", what) + "s"


def parse_yaml(text: str, *, file: str | Path, what: str, where: str | None = None) -> Document:
    """`text` parsed as YAML (aliases refused) with the line of every place, checked by `check_tree`.

    Duplicate keys are refused, all of them at once (`InputErrors`); every other problem is one
    `InputError` naming the line."""
    loader = SafeYamlLoader(text)
    loader.what = _plural(what)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        detail = "; ".join(part for part in (exc.context, exc.problem) if part)
        column = f" (column {mark.column + 1})" if mark is not None else ""
        raise InputError(f"invalid YAML: {detail}{column}", file=file, line=line, where=where) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", file=file, where=where) from None
    except RecursionError:
        raise InputError("invalid YAML: nested too deeply", file=file, where=where) from None
    finally:
        loader.dispose()
    if node is None:
        return Document(data=None, lines={})
    lines, duplicates = _node_lines(node)
    if duplicates:
        raise InputErrors(
            [InputError(f"duplicate key '{place[-1]}'", file=file, line=lines.get(place), where=where)
             for place in duplicates]
        )
    check_tree(data, file=file, lines=lines, where=where)
    return Document(data=data, lines=lines)


def _node_lines(root: yaml.Node) -> tuple[dict[Place, int], list[Place]]:
    """The line of every place in a YAML node tree, plus the places of the duplicate keys found on the way."""
    lines: dict[Place, int] = {}
    duplicates: list[Place] = []
    stack: list[tuple[Place, yaml.Node]] = [((), root)]
    while stack:
        path, node = stack.pop()
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            keys_seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                lines[(*path, key)] = key_node.start_mark.line + 1
                if key in keys_seen:
                    duplicates.append((*path, key))
                keys_seen.add(key)
                stack.append(((*path, key), value_node))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(((*path, index), item) for index, item in enumerate(node.value))
    return lines, sorted(duplicates, key=lambda place: lines[place])


def read_document(path: str | Path, *, what: str, limit: int = MAX_DOCUMENT_BYTES,
                  where: str | None = None) -> Document:
    """The parsed contents of `path`: JSON for `.json` files (duplicate keys refused), YAML otherwise."""
    path = Path(path)
    text = read_input_text(path, limit=limit, what=what, where=where)
    if path.suffix.lower() == ".json":
        return Document(data=parse_json(text, file=path, where=where, refuse_duplicates=True), lines={})
    return parse_yaml(text, file=path, what=what, where=where)


def read_json(path: str | Path, *, what: str, limit: int = MAX_DOCUMENT_BYTES, where: str | None = None,
              invalid: str = "invalid JSON") -> Any:
    """The JSON value in the regular file `path`, read and checked as `parse_json` does."""
    path = Path(path)
    return parse_json(read_input_text(path, limit=limit, what=what, where=where), file=path, where=where,
                      invalid=invalid)


# -- checking what was parsed -------------------------------------------------------------------------


def render_place(place: Place) -> str:
    """A place in a document, written the way people write it.

    >>> render_place(("messages", 0, "content")), render_place((3,)), render_place(())
    ('messages[0].content', '[3]', '')
    """
    text = ""
    for part in place:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def line_of(place: Place, lines: Mapping[Place, int]) -> int | None:
    """The line of `place`, or of the nearest enclosing place that has one."""
    for end in range(len(place), -1, -1):
        if place[:end] in lines:
            return lines[place[:end]]
    return None


def _encodable(text: str) -> bool:
    """False for text holding a lone surrogate (no UTF-8 writer can encode it).

    >>> _encodable("caf\\u00e9"), _encodable("\\ud800")
    (True, False)
    """
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean(data: object) -> bool:
    """True when `data` nests at most `MAX_DEPTH` levels and holds no text with a lone surrogate.

    >>> _clean({"a": ["b", {"c": 1}]}), _clean({"a": [chr(0xD800)]}), _clean([[[]]])
    (True, False, True)
    """
    if isinstance(data, str):
        return _encodable(data)
    level: list[dict[Any, Any] | list[Any]] = [data] if isinstance(data, dict | list) else []
    depth = 0
    while level:
        if depth >= MAX_DEPTH:
            return False
        below: list[dict[Any, Any] | list[Any]] = []
        for container in level:
            items: Iterable[object] = container
            if isinstance(container, dict):
                if not all(_encodable(key) for key in container if isinstance(key, str)):
                    return False
                items = container.values()
            for item in items:
                if isinstance(item, str):
                    if not _encodable(item):
                        return False
                elif isinstance(item, dict | list):
                    below.append(item)
        level = below
        depth += 1
    return True


def check_tree(
    data: object,
    *,
    file: str | Path,
    line: int | None = None,
    lines: Mapping[Place, int] | None = None,
    where: str | None = None,
) -> None:
    """`InputError` when parsed data nests deeper than `MAX_DEPTH` or holds text with a lone surrogate,
    naming the field and the line (`line` for the whole of a JSONL row, `lines` for a YAML document).

    Explicit walks, not recursive ones, so that no depth makes them fail in their own way: a quick one
    level by level, then, only when it finds a problem, one that keeps the place of each value."""
    if _clean(data):
        return

    def fail(message: str, place: Place) -> InputError:
        found = line_of(place, lines) if lines else line
        field = render_place(place)
        detail = f"field '{field}'" if field else None
        located = ", ".join(part for part in (where, detail) if part) or None
        return InputError(message, file=file, line=found if found is not None else line, where=located)

    stack: list[tuple[object, Place]] = [(data, ())]
    while stack:
        value, place = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                raise fail("text holds a lone surrogate (an escape such as \\ud800 that is half a character)", place)
            continue
        if not isinstance(value, dict | list):
            continue
        if len(place) >= MAX_DEPTH:
            raise fail(f"nested more than {MAX_DEPTH} levels deep", place[:1])  # the field it starts in
        if isinstance(value, list):
            stack.extend((item, (*place, index)) for index, item in enumerate(value))
            continue
        for key, item in value.items():
            if isinstance(key, str) and not _encodable(key):
                raise fail("a key holds a lone surrogate (an escape such as \\ud800 that is half a character)", place)
            stack.append((item, (*place, str(key))))
