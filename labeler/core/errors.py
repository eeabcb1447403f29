"""Errors a user can fix (exit code 2) versus everything else (exit code 1).

Every stage raises `InputError` for bad input; the CLI turns it into a message and exit code 2.
The message always names where the problem is: a file, and a line, principle or field when known.

A library function names the config field a problem is about by its path in the config object it was
given (`field="judge.model"`), never by a command-line flag: the CLI shows that field as its option
(`--judge-model`), `labeler run` as its run-config key (`key engine.model`). `where` is any other
location (a principle, a key inside a file), or, after a field, the text that follows the field's name.

A message that names another field (what to pass instead, which two go together) writes it as
`option("overwrite")`; the CLI shows each such field as its option, `labeler run` as its key, and
`render` (a library caller) as the field itself, quoted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# A config field named inside a message: `‹out›`. Characters no field name, path or flag holds.
FIELD_MARK = re.compile(r"\u2039([A-Za-z_][A-Za-z0-9_.]*)\u203a")


def option(field: str) -> str:
    """The config field `field` (a dotted path) named inside a message, for whoever shows the message to
    say it in the user's terms: the CLI as the field's option, `labeler run` as its config key.

    >>> InputError(f"pass {option('overwrite')} to replace it").render()
    'pass `overwrite` to replace it'
    """
    return f"\u2039{field}\u203a"


def show_fields(text: str, name_of: Callable[[str], str | None] | None = None) -> str:
    """`text` with each field `option` marked shown as `name_of` names it (the field itself, quoted,
    where `name_of` is None or gives None).

    >>> show_fields(f"give {option('shard_index')} 2", {"shard_index": "--shard-index"}.get)
    'give --shard-index 2'
    >>> show_fields(f"give {option('shard_index')} 2")
    'give `shard_index` 2'
    """

    def shown(match: re.Match[str]) -> str:
        field = match.group(1)
        name = name_of(field) if name_of is not None else None
        return name if name is not None else f"`{field}`"

    return FIELD_MARK.sub(shown, text)


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
            location = f"{location} ({show_fields(where)})" if location else show_fields(where)
        message = show_fields(self.message)
        return f"{location}: {message}" if location else message

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

    def shown(self, name_of: Callable[[str], str | None]) -> InputError:
        """The same problem (each of `InputErrors`) in the user's terms: its field, and every field its
        message names, as `name_of` names them (an option, a config key); a field it does not name stays.

        >>> InputError(f"give {option('prompts')} too", field="pairs").shown({"pairs": "--pairs"}.get).render()
        '--pairs: give `prompts` too'
        """
        name = name_of(self.field) if self.field is not None else None
        where = self.place(name) if name is not None else self.where  # the field, shown, goes into `where`
        return InputError(show_fields(self.message, name_of), file=self.file, line=self.line,
                          where=show_fields(where, name_of) if where else where,
                          field=None if name is not None else self.field)


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

    def shown(self, name_of: Callable[[str], str | None]) -> InputErrors:
        return InputErrors([e.shown(name_of) for e in self.errors])


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
