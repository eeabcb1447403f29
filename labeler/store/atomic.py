"""Crash-safe file writes: write a temporary file in the same folder, fsync, rename over the target.

A reader (or a process resuming after kill -9) sees either the old file or the whole new one, never a
part. Temporary names end in `.partial`, so globs such as `*.arrow` never pick them up.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = ".partial"


def temp_path_for(path: Path) -> Path:
    """A unique temporary name next to `path` (same folder, hence same filesystem for `os.replace`).

    >>> temp_path_for(Path("run/manifest.json")).name.endswith(".partial")
    True
    """
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (the directory entry is data too)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably."""
    temp = temp_path_for(path)
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        # A full disk fails on the hidden temporary name (or names none): say which file was being written.
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        # After a successful replace the temporary name no longer exists; after a failure, remove it.
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing) for the duration of the block.

    Serialises read-modify-write cycles of a run's manifest between processes writing different
    splits of the same run. The kernel drops the lock when the process dies, so a crash never
    leaves a run locked. A lock file that is a symbolic link is refused, never followed. The file is
    removed when the lock is given back (`lock_file`, `unlock_file`): a finished run keeps none.
    """
    from labeler.store.lock import lock_file, unlock_file

    fd = lock_file(path, wait=True)
    try:
        yield
    finally:
        unlock_file(fd, path)
