"""Where the files labeler ships (prompt templates, constitutions) are.

A wheel carries copies in `labeler/_shipped/` (see setup.py); a source checkout or an editable
install uses the repository's top-level folders.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # the labeler package folder


def shipped_folder(name: str, package: Path = PACKAGE) -> Path:
    """The shipped folder `name` ("prompts" or "constitutions"): the installed copy, else the repository's."""
    installed = package / "_shipped" / name
    return installed if installed.is_dir() else package.parent / name
