"""The run config `labeler init` writes: a starting point shipped in the package (`starter.yaml`)."""

from __future__ import annotations

from pathlib import Path

from labeler.core.errors import InputError

STARTER = Path(__file__).with_name("starter.yaml")


def write_starter_config(path: Path) -> Path:
    """Write the starter run config to `path`, never over an existing file (`InputError` naming it)."""
    text = STARTER.read_text(encoding="utf-8")
    try:
        with path.open("x", encoding="utf-8") as file:  # "x": an existing file is never replaced
            file.write(text)
    except FileExistsError:
        raise InputError("exists already; give another path or remove it first", file=path) from None
    except FileNotFoundError:
        raise InputError("its folder does not exist", file=path) from None
    except IsADirectoryError:
        raise InputError("is a folder; give the name of the file to write", file=path) from None
    return path
