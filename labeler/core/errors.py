"""Errors a user can fix (exit code 2) versus everything else (exit code 1).

Every stage raises `InputError` for bad input; the CLI turns it into a message and exit code 2.
The message always names where the problem is: a file, and a line, principle or field when known.
"""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input the user can fix: names the file and the line/principle/field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        where: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.where = where
        super().__init__(self.render())

    def render(self) -> str:
        location = ""
        if self.file is not None:
            location = self.file
            if self.line is not None:
                location += f":{self.line}"
        if self.where:
            location = f"{location} ({self.where})" if location else self.where
        return f"{location}: {self.message}" if location else self.message


class InputErrors(InputError):
    """Several problems found at once (e.g. every problem in a constitution)."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = errors
        Exception.__init__(self, self.render())
        self.message = self.render()
        self.file = errors[0].file if errors else None
        self.line = None
        self.where = None

    def render(self) -> str:
        return "\n".join(e.render() for e in self.errors)


class EngineError(Exception):
    """The engine cannot go on: its servers keep failing past the retry budget, or refuse a request.

    Exit code 1. Nothing partial is returned, so the records written before it stay and a rerun of the
    same command resumes after them.
    """


class PartsFailed(Exception):
    """Parts of a stage run in parts (replica processes, Ray tasks) failed, after every part had ended.

    Exit code 1. The message names each failed part and gives its own error; the parts that finished are
    on disk, so a rerun of the same command resumes from them.
    """
