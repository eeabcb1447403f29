"""Checks on what a command will write, made before anything is loaded or written.

`check_outputs` is the one check a command's preflight makes of its output, given the command's inputs:

- the path can be written: not on a kernel file system (/proc, /sys, /dev), not a device or FIFO, not a
  symbolic link that leads nowhere, no name longer than the file system allows;
- it is none of the inputs and holds none of them (a run's output folder may be the run it reads from
  when the command writes another split of it: `label --pairs-from RUN --out RUN`);
- a folder is new, empty (labeler's own lock files aside), or already holds output of the same kind (a
  run for the split-writing commands, a training run for the trainers): a rerun resumes, and nothing
  else is written over.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

from labeler.core.errors import InputError, about_field, option
from labeler.core.input_files import file_kind
from labeler.core.layout import (
    MANIFEST_LOCK,
    MANIFEST_NAME,
    RUN_PARTS_FOLDER,
    SAVED_CONFIG,
    WRITER_LOCK,
    holds_training_run,
)

# file: one file written; run: a run folder a split is written into; training: a trainer's folder;
# empty: a folder built beside it and renamed into place (an export, the converted embedded model).
OutputKind = Literal["file", "run", "training", "empty"]
# What an input option may hold: a path, several, a model argument that may be a Hub id, or nothing.
InputPaths = Path | str | Sequence[Path | str] | None

# Kernel file systems: what is written there is not kept as data (and /dev holds devices).
PSEUDO_FILE_SYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))
WRITABLE_UNDER_DEV = (Path("/dev/shm"),)  # a tmpfs, a usual place for scratch output
# Hidden files labeler itself writes into its output folders: they do not make a folder "not empty".
LABELER_LOCK_FILES = frozenset({WRITER_LOCK, MANIFEST_LOCK})
LABELER_TEMP_PREFIXES = (".manifest.json.",)  # a manifest write interrupted before its rename
DEFAULT_NAME_MAX = 255
DEFAULT_PATH_MAX = 4096


def check_outputs(
    out: Path,
    kind: OutputKind,
    inputs: Mapping[str, InputPaths] | None = None,
    *,
    same_run: Path | None = None,
    field: str | None = "out",
) -> None:
    """`InputError` naming `out` and `field` (the config field that holds it) unless `out` can take this
    command's output of `kind`.

    `inputs` maps each input (its config field, e.g. "pairs") to the paths given for it; a model argument
    that is not an existing path (a Hub id, "default") is no local input and is left out. `same_run`: an
    input run that `out` may be, because the command writes another split of it. Writes nothing.
    """
    with about_field(field):
        _check_outputs(Path(out), kind, inputs or {}, same_run)


def _check_outputs(out: Path, kind: OutputKind, inputs: Mapping[str, InputPaths], same_run: Path | None) -> None:
    where = ""  # the problems are about the output field, which `check_outputs` names
    _check_names(out, where)
    _check_links(out, where)
    resolved = Path(os.path.realpath(out))
    _check_place(out, resolved, where)
    for field, path in named_inputs(inputs):
        _check_not_over_input(out, resolved, kind, field, path, same_run, where)
    if kind == "file":
        check_output_file(out, where=where)
    else:
        check_output_folder(out, where=where)
    if kind != "file":
        _check_folder_holds(out, kind, where)


def check_output_folder(path: Path, *, field: str | None = None, where: str = "") -> None:
    """`InputError` (about the config field `field`, else naming `where`) unless `path` is a folder that
    can be written, or can be created as one.

    Nothing is created: a command that stops on bad input leaves no empty folder behind.
    """
    with about_field(field):
        _check_output_folder(Path(path), where)


def _check_output_folder(path: Path, where: str) -> None:
    if path.exists() and not path.is_dir():
        raise InputError("exists and is not a folder", file=path, where=where)
    existing = path
    while not existing.exists():
        if existing.is_symlink():  # a link that leads nowhere: creating the folder would fail
            raise InputError(f"cannot be created: {existing} is a symbolic link that leads nowhere", file=path,
                             where=where)  # fmt: skip
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot be created: {existing} is not a folder", file=path, where=where)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot be written ({existing} is read-only or not ours)", file=path, where=where)


def check_output_file(path: Path, *, where: str = "") -> None:
    """`InputError` unless `path` can be written as a regular file (its folder exists or can be created)."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder; give a file name", file=path, where=where)
    if path.exists():
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"is {file_kind(mode)}, not a regular file; give a file name", file=path, where=where)
        if not os.access(path, os.W_OK):
            raise InputError("cannot be written (read-only)", file=path, where=where)
    check_output_folder(path.parent, where=where)


def named_inputs(inputs: Mapping[str, InputPaths]) -> Iterator[tuple[str, Path]]:
    """Each (field, path) of `inputs` that names something on disk (Hub ids and "default" are not paths).

    >>> list(named_inputs({"pairs": Path("/"), "model": "default", "compare": ("/", "/nowhere")}))
    [('pairs', PosixPath('/')), ('compare', PosixPath('/'))]
    """
    for field, given in inputs.items():
        paths: Sequence[Path | str] = () if given is None else (given,) if isinstance(given, str | Path) else given
        for path in map(Path, paths):
            if str(path) and os.path.lexists(path):  # never raises, even for a name too long
                yield field, path


def is_inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies under it (both already resolved).

    >>> is_inside(Path("/a/b/c"), Path("/a/b")), is_inside(Path("/a/bc"), Path("/a/b"))
    (True, False)
    """
    return path == folder or folder in path.parents


def _check_names(out: Path, where: str) -> None:
    """No name in the path longer than the file system allows, nor the whole path (ENAMETOOLONG)."""
    base = _nearest_existing(out)
    name_max = _pathconf(base, "PC_NAME_MAX", DEFAULT_NAME_MAX)
    for part in out.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise InputError(
                f"a name in the path is {size} bytes long ({part[:40]}...); the file system allows at most "
                f"{name_max}",
                file=_shown(out),
                where=where,
            )
    path_max = _pathconf(base, "PC_PATH_MAX", DEFAULT_PATH_MAX)
    size = len(os.fsencode(os.path.abspath(out)))
    if size >= path_max:
        raise InputError(f"the path is {size} bytes long; the file system allows less than {path_max}",
                         file=_shown(out), where=where)  # fmt: skip


def _check_links(out: Path, where: str) -> None:
    """A symbolic link as the output (or on the way to it) must lead to something: a dangling link would
    create its target somewhere else, or fail half way."""
    current = out
    while True:
        if current.is_symlink() and not current.exists():
            target = os.readlink(current)
            raise InputError(
                f"is a symbolic link to {target}, which does not exist (or is a link loop); give the real path",
                file=current,
                where=where,
            )
        if current.exists() or current.parent == current:
            return
        current = current.parent


def _check_place(out: Path, resolved: Path, where: str) -> None:
    """Not the root of the file system, nor a kernel file system."""
    if resolved == Path(resolved.anchor):
        raise InputError("is the root of the file system; give a folder of its own", file=out, where=where)
    for root in PSEUDO_FILE_SYSTEMS:
        if is_inside(resolved, root) and not any(is_inside(resolved, ok) for ok in WRITABLE_UNDER_DEV):
            raise InputError(
                f"is under {root}, a kernel file system of devices and system state; write the output "
                "to a folder on disk",
                file=out,
                where=where,
            )


def _check_not_over_input(
    out: Path, resolved: Path, kind: OutputKind, field: str, path: Path, same_run: Path | None, where: str
) -> None:
    """The output is not the input given as `field`, does not hold it, and is not inside a run's split."""
    source = Path(os.path.realpath(path))
    if _same(out, resolved, path, source):
        if kind == "run" and same_run is not None and _same(same_run, Path(os.path.realpath(same_run)), path, source):
            return  # the command writes another split of the run it reads
        what = "file" if source.is_file() else "folder"
        raise InputError(
            f"is the {what} given as {option(field)} ({path}): writing the output there would replace that input; "
            "choose another ‹out›",
            file=out,
            where=where,
        )
    if kind == "run" and is_inside(source, resolved / RUN_PARTS_FOLDER):
        return  # a part of this run, built under OUT/.parts and merged into it
    if kind != "file" and is_inside(source, resolved):
        raise InputError(
            f"holds the input given as {option(field)} ({path}): the output would be written over its own inputs; "
            "choose a folder of its own",
            file=out,
            where=where,
        )
    if source.is_dir() and is_inside(resolved, source):
        for reserved in _run_folders(source):
            if is_inside(resolved, reserved):
                raise InputError(
                    f"is inside {reserved}, a folder of the run given as {option(field)}: labeler writes that folder "
                    "itself; choose a folder beside it",
                    file=out,
                    where=where,
                )


def _check_folder_holds(out: Path, kind: OutputKind, where: str) -> None:
    """An existing output folder is empty, or holds this kind of output (a rerun resumes it)."""
    if not out.is_dir():
        return
    try:
        entries = sorted(os.listdir(out))
    except OSError as exc:
        raise InputError(f"cannot be read: {exc.strerror}", file=out, where=where) from None
    if kind == "empty":
        if entries:  # the output is renamed into place: only an empty folder may be replaced
            raise InputError("is not empty; write into a new or empty folder", file=out, where=where)
        return
    others = [name for name in entries if not _labeler_hidden(name)]
    if not others:
        return
    if kind == "run":
        if (out / MANIFEST_NAME).is_file():
            return
        what = f"holds no labeler run (no {MANIFEST_NAME})"
    else:
        if holds_training_run(out):
            return
        what = f"holds no training run (no {SAVED_CONFIG})"
    listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
    raise InputError(
        f"is not empty ({listed}) and {what}; write into a new or empty folder", file=out, where=where
    )


def _run_folders(folder: Path) -> list[Path]:
    """The folders a labeler run writes itself (its splits and report), when `folder` is a run."""
    from labeler.core.records import SPLITS

    if not (folder / MANIFEST_NAME).is_file():
        return []
    return [folder / name for name in (*SPLITS, "report")]


def _labeler_hidden(name: str) -> bool:
    """Whether `name` is a hidden file or folder labeler writes in its output folders (locks, interrupted
    writes, the parts of a run in parts that a crash left before their merge)."""
    return name in LABELER_LOCK_FILES or name == RUN_PARTS_FOLDER or name.startswith(LABELER_TEMP_PREFIXES)


def _same(a: Path, a_resolved: Path, b: Path, b_resolved: Path) -> bool:
    """Whether two paths name one file or folder: the same resolved path, or the same inode (a hard link)."""
    if a_resolved == b_resolved:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False  # one of them does not exist (yet)


def _nearest_existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (the current folder for a relative path)."""
    current = Path(os.path.abspath(path))
    while not os.path.exists(current) and current.parent != current:  # os.path: False, not ENAMETOOLONG
        current = current.parent
    return current


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default  # not reported by this file system: the usual Linux limit


def _shown(path: Path) -> str:
    """A path short enough for a message (a name too long is cut, its length said in the message)."""
    text = str(path)
    return text if len(text) <= 120 else text[:60] + "..." + text[-40:]
