"""Checks on the folders a command will write, made before anything is loaded or written."""

from __future__ import annotations

import os
from pathlib import Path

from labeler.errors import InputError


def check_output_folder(path: Path, *, where: str) -> None:
    """`InputError` unless `path` is a folder that can be written, or can be created as one.

    Nothing is created: a command that stops on bad input leaves no empty folder behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("exists and is not a folder", file=path, where=where)
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot be created: {existing} is not a folder", file=path, where=where)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot be written ({existing} is read-only or not ours)", file=path, where=where)


def check_output_file(path: Path, *, where: str) -> None:
    """`InputError` unless `path` can be written as a file (its folder exists or can be created)."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder; give a file name", file=path, where=where)
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError("cannot be written (read-only)", file=path, where=where)
    check_output_folder(path.parent, where=where)
