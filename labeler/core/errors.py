"""Errors a user can fix (exit code 2) versus everything else (exit code 1).

Every stage raises `InputError` for bad input; the CLI turns it into a message and exit code 2.
The message always names where the problem is: a file, and a line, principle or field when known.

A library function names the config field a problem is about by its path in the config object it was
given (`field="judge.model"`), never by a command-line flag: the CLI shows that field as its option
(`--judge-model`), `labeler run` as its run-config key (`key engine.model`). `where` is any other
location (a principle, a key inside a file), or, after a field, the text that follows the field's name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.where = where
        self.field = field  # a dotted path in the config the raising function was given
        super().__init__(self.render())

    def render(self) -> str:
        location = ""
        if self.file is not None:
            location = self.file
            if self.line is not None:
                location += f":{self.line}"
        where = self.place()
        if where:
            location = f"{location} ({where})" if location else where
        return f"{location}: {self.message}" if location else self.message

    def place(self, field_name: str | None = None) -> str | None:
        """The field (as `field_name`, by default its path) followed by `where`; or `where` alone.

        >>> InputError("x", field="engine.name", where="openai").place("--engine")
        '--engine openai'
        >>> InputError("x", field="compare", where=", field 'judge'").place()
        "compare, field 'judge'"
        """
        if self.field is None:
            return self.where
        name = field_name if field_name is not None else self.field
        if not self.where:
            return name
        return name + ("" if self.where.startswith(",") else " ") + self.where

    def about(self, field: str) -> InputError:
        """The same problem as one about the config field `field`, `where` following the field's name."""
        return InputError(self.message, file=self.file, line=self.line, where=self.where or None, field=field)

    def naming(self, field_name: str) -> InputError:
        """The same problem with its field shown as `field_name` (an option, a config key)."""
        where = self.place(field_name)
        return InputError(self.message, file=self.file, line=self.line, where=where)


@contextmanager
def about_field(field: str | None) -> Iterator[None]:
    """Problems raised inside are about the config field `field`, unless they name a field of their own
    (`field` None: left as they are). A helper that checks a value for many fields (an output folder, a
    model argument) raises plain problems; its caller says which field the value came from.

    >>> try:
    ...     with about_field("out"):
    ...         raise InputError("cannot be written", file="/x")
    ... except InputError as exc:
    ...     print(exc.field, exc.place("--out"))
    out --out
    """
    try:
        yield
    except InputErrors:
        raise
    except InputError as exc:
        if field is None or exc.field is not None:
            raise
        raise exc.about(field) from None


class InputErrors(InputError):
    """Several problems found at once (e.g. every problem in a constitution)."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = errors
        Exception.__init__(self, self.render())
        self.message = self.render()
        self.file = errors[0].file if errors else None
        self.line = None
        self.where = None
        self.field = None

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
