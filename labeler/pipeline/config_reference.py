"""The run-config reference in README.md, generated from the pydantic models (never kept by hand).

`python -m labeler.pipeline.config_reference --write` refreshes README.md between the markers; a test checks
that README.md holds exactly what this module generates.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _nested_models(a)]


def _default(info: Any) -> str:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        value = info.default_factory()
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{value!r}`"


def reference(model: type[BaseModel], prefix: str = "", seen: set[str] | None = None) -> list[str]:
    """Markdown tables of a config model and every model nested in it, keys as dotted paths."""
    seen = seen if seen is not None else set()
    lines = [f"#### `{prefix or 'top level'}`", "", (model.__doc__ or "").strip().splitlines()[0], "",
             "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        description = (info.description or "").replace("|", "\\|")
        kind = _type_name(info.annotation).replace("|", "\\|")
        lines.append(f"| `{key}` | {kind} | {_default(info)} | {description} |")
        nested += [(key, m) for m in _nested_models(info.annotation)]
    lines.append("")
    for key, sub in nested:
        if key not in seen:
            seen.add(key)
            lines += reference(sub, key, seen)
    return lines


def generate() -> str:
    from labeler.pipeline.run import RunConfig

    return "\n".join(reference(RunConfig)).rstrip() + "\n"


def splice(readme: str, body: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}{END}{tail}"


def main() -> None:
    path = Path(__file__).resolve().parents[2] / "README.md"
    text = splice(path.read_text(), generate())
    if "--write" in sys.argv:
        path.write_text(text)
    else:
        sys.stdout.write(generate())


if __name__ == "__main__":
    main()
