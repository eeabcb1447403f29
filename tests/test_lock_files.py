"""Lock files: taken by one process at a time, and removed when given back, so no run keeps one."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from labeler.core.layout import MANIFEST_LOCK, WRITER_LOCK
from labeler.store.atomic import exclusive_lock
from labeler.store.lock import lock_file, unlock_file, writer_lock


def test_a_lock_given_back_leaves_no_file(tmp_path: Path) -> None:
    with exclusive_lock(tmp_path / MANIFEST_LOCK):
        assert (tmp_path / MANIFEST_LOCK).is_file()
    with writer_lock(tmp_path):
        assert (tmp_path / WRITER_LOCK).read_text() == f"{os.getpid()}\n"
        with writer_lock(tmp_path):  # reentrant: the inner release keeps the lock and its file
            pass
        assert (tmp_path / WRITER_LOCK).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_waiter_on_a_removed_lock_file_takes_the_new_one(tmp_path: Path) -> None:
    """A locks; B waits on the same file; A gives it back and removes the file. B must not hold a lock on
    the removed file while C locks a new one: each lock counts only on the file at the path."""
    path = tmp_path / "x.lock"
    first = lock_file(path, wait=True)
    taken: list[int] = []
    waiter = threading.Thread(target=lambda: taken.append(lock_file(path, wait=True)))
    waiter.start()
    time.sleep(0.2)  # the waiter has opened the file and waits in flock
    assert not taken
    unlock_file(first, path)
    waiter.join(timeout=5)
    assert taken, "the waiter never got the lock"
    # the waiter holds the lock of the file now at the path: a third process is kept out
    assert path.exists() and os.path.samestat(os.fstat(taken[0]), os.stat(path))
    with pytest.raises(BlockingIOError):
        lock_file(path, wait=False)
    unlock_file(taken[0], path)
    assert not path.exists()


def test_an_unremovable_lock_file_is_still_given_back(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    fd = lock_file(path, wait=True)
    path.unlink()  # gone already (removed by hand): giving the lock back must not fail
    unlock_file(fd, path)
    again = lock_file(path, wait=False)
    unlock_file(again, path)
