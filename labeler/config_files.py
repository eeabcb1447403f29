"""Reading YAML settings files (run configs, engine configs): a mapping, or bad input naming the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labeler.errors import InputError


def read_yaml_mapping(path: Path, *, where: str | None = None, empty_ok: bool = False) -> dict[str, Any]:
    """The top-level mapping of a YAML file; `InputError` naming the file (and line) otherwise.

    `empty_ok`: a file with no settings at all (empty, or comments only) is an empty mapping."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise InputError("is a folder, not a YAML file", file=path, where=where) from None
    except FileNotFoundError:
        raise InputError("file not found", file=path, where=where) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the file: {exc}", file=path, where=where) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML: {exc}", file=path, line=mark.line + 1 if mark else None, where=where) from exc
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise InputError("expected a YAML mapping of settings", file=path, where=where)
    return data
