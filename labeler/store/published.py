"""What leaves a run (`labeler export`, `labeler push`): the run's own files, and no path of the machine.

Two rules, each one function:

- `check_inside_run`: a file is published only when the way to it from the run folder stays inside the
  run. A symbolic link that leads out of the run (or to nothing) is never followed: the run is refused,
  naming the link, because a run with a link out of it is not publishable as it is.
- `without_local_paths`: everything a published manifest, card or report says is mapped so that an
  absolute path (`/home/me/data/pairs.jsonl`, `~/runs/x`) becomes its file name (`pairs.jsonl`, `x`).
  Content hashes stay, so what a run was made from is still identified, by name and content.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from labeler.core.errors import InputError
from labeler.store.manifest import Manifest

# A whole value that is an absolute path (`/x`, `/x/y/`, `~/x`, `~`), or a relative one that says so (`./x`,
# `../x/y`) or names an input file in a folder (`data/pairs.jsonl`; not `org/model`, a Hub id).
_WHOLE_PATH = re.compile(
    r"~?/[^\n\r\t\0]*|~|\.\.?/[^\n\r\t\0]*"
    r"|[^\s:]+/[^\n\r\t\0]*\.(?:ya?ml|json|jsonl|ndjson|parquet|arrow|feather|ipc|jinja|j2|txt|csv|tsv)"
)
# An absolute path of at least two names inside longer text. Not one that continues a word, a number, a
# URL or base64 (`org/name`, `3/4`, `https://host/a/b`, `ab+/cd/ef`), nor one inside a data: URI.
_PATH_CHAR = r"[^\s/\"'`<>|()\[\]{},;]"
_EMBEDDED_PATH = re.compile(
    rf"(?P<keep>data:[^\s\"')]+)|(?<![\w+/.~\\-])(?P<path>~?/(?:{_PATH_CHAR}+/)+{_PATH_CHAR}*)"
)
# Report files rewritten as text when published; other files (plots) go as they are.
TEXT_SUFFIXES = (".json", ".md", ".html", ".txt", ".csv", ".yaml", ".yml")


def file_name(path: str) -> str:
    """The last name of a path, without the folders before it (a root or home alone stays as it is).

    >>> file_name("/home/me/data/pairs.jsonl"), file_name("~/runs/x/"), file_name("/")
    ('pairs.jsonl', 'x', '/')
    """
    return PurePosixPath(path.rstrip("/")).name or path


def text_without_local_paths(text: str) -> str:
    """`text` with each absolute path in it replaced by its file name.

    >>> text_without_local_paths("/srv/in/c.yaml"), text_without_local_paths("../in/c.yaml")
    ('c.yaml', 'c.yaml')
    >>> text_without_local_paths("constitutions/harmless.yaml"), text_without_local_paths("HuggingFaceTB/SmolLM2")
    ('harmless.yaml', 'HuggingFaceTB/SmolLM2')
    >>> text_without_local_paths("labeler label --pairs /home/me/p.jsonl --out runs/x")
    'labeler label --pairs p.jsonl --out runs/x'
    >>> text_without_local_paths("HuggingFaceTB/SmolLM2 at https://huggingface.co/a/b, 3/4, </s>")
    'HuggingFaceTB/SmolLM2 at https://huggingface.co/a/b, 3/4, </s>'
    """
    if _WHOLE_PATH.fullmatch(text):
        return file_name(text)

    def name_only(match: re.Match[str]) -> str:
        return match["keep"] or file_name(match["path"])

    return _EMBEDDED_PATH.sub(name_only, text)


def without_local_paths(value: Any) -> Any:
    """A JSON-like value with every path in its strings (keys too) replaced by the file name.

    >>> without_local_paths({"config": {"pairs": "/tmp/x/p.jsonl", "n": 2, "stop": ["</s>"]},
    ...                      "models": {"judge": "/home/me/models/judge"}})
    {'config': {'pairs': 'p.jsonl', 'n': 2, 'stop': ['</s>']}, 'models': {'judge': 'judge'}}
    """
    if isinstance(value, str):
        return text_without_local_paths(value)
    if isinstance(value, dict):
        return {without_local_paths(key): without_local_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_local_paths(item) for item in value]
    return value


def published_manifest(manifest: Manifest) -> Manifest:
    """The manifest as it is published: fingerprints, stage statistics and export options without paths."""
    splits = {
        name: entry.model_copy(update={
            "fingerprint": without_local_paths(entry.fingerprint),
            "stats": without_local_paths(entry.stats) if entry.stats is not None else None,
        })
        for name, entry in manifest.splits.items()
    }  # fmt: skip
    export = manifest.export
    if export is not None:
        export = export.model_copy(update={"options": without_local_paths(export.options),
                                           "source": file_name(export.source)})  # fmt: skip
    return manifest.model_copy(update={"splits": splits, "export": export})


def published_bytes(path: Path, data: bytes) -> bytes:
    """A report file's bytes as published: JSON without paths (still JSON), other text files without
    paths, anything else (images) unchanged."""
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data  # not text after all: nothing in it reads as a path
    if suffix == ".json":
        try:
            parsed = json.loads(text)
        except ValueError:
            return text_without_local_paths(text).encode("utf-8")
        return (json.dumps(without_local_paths(parsed), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return text_without_local_paths(text).encode("utf-8")


def _link_out(link: Path, root: Path) -> InputError:
    """The error for a symbolic link that leads out of the run, or to nothing."""
    target = os.readlink(link)
    problem = "leads to nothing" if not link.exists() else "leads out of the run"
    return InputError(
        f"is a symbolic link to {target}, which {problem}: labeler never publishes what a link points to "
        f"outside the run ({root}), and a run with such a link is not publishable as it is; copy the files "
        "into the run instead of linking them",
        file=link,
    )


def check_inside_run(run: Path, relative: str | PurePosixPath) -> Path:
    """`run / relative`, after checking that every step of the way stays inside the run.

    `InputError` naming the first symbolic link that leads out of the run (or is dangling), or the path
    when it is absolute or climbs out with `..`. Links that stay inside the run are followed.
    """
    rel = PurePosixPath(relative)
    path = Path(run) / rel
    if rel.is_absolute() or ".." in rel.parts:
        raise InputError("is not a path inside the run: an altered manifest or a bad name", file=path)
    root = Path(run).resolve()
    step = Path(run)
    for part in rel.parts:
        step = step / part
        if step.is_symlink() and (not step.exists() or not step.resolve().is_relative_to(root)):
            raise _link_out(step, root)
    return path


def files_inside_run(run: Path, folder: str) -> list[Path]:
    """Every file under `run/folder`, in name order, each reached without leaving the run.

    `InputError` for a link that leads out of the run (see `check_inside_run`) or for something that is
    neither a file nor a folder (a FIFO, a device). A folder reached twice (a link inside the run) counts once.
    """
    start = check_inside_run(run, folder)
    found: list[Path] = []
    seen: set[Path] = set()
    pending = [start]
    while pending:
        current = pending.pop()
        real = current.resolve()
        if real in seen:
            continue
        seen.add(real)
        for entry in current.iterdir():
            check_inside_run(run, entry.relative_to(run).as_posix())
            if entry.is_dir():
                pending.append(entry)
            elif entry.is_file():
                found.append(entry)
            else:
                raise InputError("is neither a file nor a folder; only files are published", file=entry)
    return sorted(found)
