"""One writer per run folder: an exclusive lock on `RUN/.lock`, held from a command's first write to its end.

Two processes writing one run would each commit shards of the same records, and the split would hold
every record twice. The first process to write takes `flock` on `RUN/.lock` (its pid written inside,
for the message a second one prints); a second process is refused at once with an `InputError`. The
kernel drops the lock when its holder dies, so the lock of a killed run is simply taken again: the
pid left in the file only says who held it last. A process that ends (also on Ctrl-C) removes the file
as it gives the lock back, so only a killed one leaves it.

Within one process the lock is reentrant: the stages of a pipeline, a stage and the card written after
it, share one hold. `command_lock` keeps a lock taken inside its block held until the block ends.
The processes of a run in parts each write their own part folder, so each holds that folder's lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from labeler.core.errors import InputError
from labeler.core.layout import MANIFEST_LOCK, WRITER_LOCK


@dataclass
class _Hold:
    fd: int
    count: int  # holds in this process: stores open, command blocks running
    scoped: int  # of `count`, those owed to `command_lock` blocks


_held: dict[Path, _Hold] = {}
_scopes: Counter[Path] = Counter()


def _key(run_dir: Path) -> Path:
    return Path(os.path.abspath(run_dir))


def open_no_follow(path: Path, flags: int) -> int:
    """`os.open` of a file that may not be a symbolic link (O_NOFOLLOW): a link planted in a run must
    never make labeler create or write its target. `InputError` naming the link."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(
                "is a symbolic link, which labeler never follows for its own files; delete the link", file=path
            ) from None
        raise


def lock_file(path: Path, *, wait: bool) -> int:
    """An fd of the lock file `path` (created if missing) holding its exclusive flock; `BlockingIOError`
    when another process holds it and `wait` is False.

    A holder removes the file when it gives the lock back (`unlock_file`), so a process that opened the
    file just before may lock a file no longer there: the lock counts only once the file at `path` is
    the one locked, else the new file is locked instead.
    """
    while True:
        fd = open_no_follow(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            if _is_at(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def unlock_file(fd: int, path: Path) -> None:
    """Give back a lock `lock_file` took, removing its file first (while the lock still keeps others
    out): no lock file stays behind a command that ended."""
    try:
        if _is_at(fd, path):
            os.unlink(path)
    except OSError:
        pass  # a read-only or vanished folder: the file stays, the lock goes with the fd all the same
    finally:
        os.close(fd)


def _is_at(fd: int, path: Path) -> bool:
    """Whether the open file `fd` is the file now at `path`."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return False


def refuse_linked_lock_files(run_dir: Path) -> None:
    """`InputError` if a lock file of the run is a symbolic link (checked before anything is written)."""
    for name in (WRITER_LOCK, MANIFEST_LOCK):
        path = Path(run_dir) / name
        if path.is_symlink():
            raise InputError(
                "is a symbolic link, which labeler never follows for its own files; delete the link", file=path
            )


def holder_pid(run_dir: Path) -> int | None:
    """The pid written in `RUN/.lock` by the process that took it last (None if none can be read)."""
    try:
        fd = open_no_follow(Path(run_dir) / WRITER_LOCK, os.O_RDONLY)
    except (OSError, InputError):
        return None
    try:
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def _take(run_dir: Path) -> int:
    """The fd of `RUN/.lock`, locked by this process; `InputError` if another process holds it."""
    path = run_dir / WRITER_LOCK
    try:
        fd = lock_file(path, wait=False)
    except BlockingIOError:
        pid = holder_pid(run_dir)
        who = f"pid {pid}" if pid is not None else "a process whose pid is not recorded"
        raise InputError(
            f"another labeler process ({who}) is writing this run; one process writes a run at a time: "
            "wait for it to end, or give another ‹out›",
            file=run_dir,
            field="out",
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError as exc:
        os.close(fd)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    return fd


def acquire(run_dir: Path) -> Path:
    """Take (or, in this process, take once more) the writer lock of `run_dir`, creating the folder if
    needed; returns the key to `release` it with."""
    key = _key(run_dir)
    hold = _held.get(key)
    if hold is None:
        key.mkdir(parents=True, exist_ok=True)
        hold = _held[key] = _Hold(_take(key), count=_scopes[key], scoped=_scopes[key])
    hold.count += 1
    return key


def release(key: Path) -> None:
    """Give back one hold; the lock is released when the last one goes."""
    hold = _held.get(key)
    if hold is None:
        return
    hold.count -= 1
    if hold.count <= 0:
        del _held[key]
        unlock_file(hold.fd, key / WRITER_LOCK)  # closing the only fd of the lock file releases the flock


@contextlib.contextmanager
def writer_lock(run_dir: Path) -> Iterator[None]:
    """Hold the writer lock of `run_dir` for the block (taken at once)."""
    key = acquire(run_dir)
    try:
        yield
    finally:
        release(key)


@contextlib.contextmanager
def command_lock(run_dir: Path) -> Iterator[None]:
    """Keep the writer lock of `run_dir`, if anything in the block takes it, until the block ends.

    Nothing is taken up front: a command refused on bad input creates no lock file. A stage's store
    takes the lock before its first write; the block keeps it held for what the command writes after
    the stage (the dataset card, the next stage of a pipeline).
    """
    key = _key(run_dir)
    _scopes[key] += 1
    hold = _held.get(key)
    if hold is not None:
        hold.count += 1
        hold.scoped += 1
    try:
        yield
    finally:
        _scopes[key] -= 1
        if _scopes[key] <= 0:
            del _scopes[key]
        hold = _held.get(key)
        if hold is not None and hold.scoped > 0:
            hold.scoped -= 1
            release(key)
