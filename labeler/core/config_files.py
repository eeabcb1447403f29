"""Reading YAML settings files (run configs, engine configs, judging configurations): a mapping, or bad
input naming the line. Reading itself (regular files only, bounded, YAML aliases refused) is
`labeler.core.input_files`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labeler.core.errors import InputError
from labeler.core.input_files import Document, read_document


def read_yaml_document(path: Path, *, what: str = "a settings file", where: str | None = None,
                       empty_ok: bool = False) -> Document:
    """The top-level mapping of a YAML (or `.json`) file with the line of each key; `InputError` naming
    the file (and line) otherwise.

    `empty_ok`: a file with no settings at all (empty, or comments only) is an empty mapping."""
    document = read_document(path, what=what, where=where)
    if document.data is None and empty_ok:
        return Document(data={}, lines={})
    if not isinstance(document.data, dict):
        raise InputError("expected a YAML mapping of settings", file=path, where=where)
    return document


def read_yaml_mapping(path: Path, *, what: str = "a settings file", where: str | None = None,
                      empty_ok: bool = False) -> dict[str, Any]:
    """The top-level mapping of a YAML file, as `read_yaml_document` reads it."""
    data = read_yaml_document(path, what=what, where=where, empty_ok=empty_ok).data
    assert isinstance(data, dict)
    return data
