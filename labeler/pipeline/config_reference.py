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

from labeler.core.errors import show_fields

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


def _default_value(info: Any) -> Any:
    if info.default is not PydanticUndefined:
        return info.default
    if info.default_factory is not None:
        return info.default_factory()
    return PydanticUndefined


def _shown(value: Any) -> str:
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{value!r}`"


def reference(
    model: type[BaseModel], prefix: str = "", seen: set[str] | None = None, defaults: BaseModel | None = None
) -> list[str]:
    """Markdown tables of a config model and every model nested in it, keys as dotted paths.

    `defaults`: the value the parent field gives this section when it is left out; its values are the
    defaults of the section's keys (a field's own default may say otherwise: `top_p` is 1.0 in general,
    0.95 in `stages.revise.sampling`).
    """
    seen = seen if seen is not None else set()
    lines = [f"#### `{prefix or 'top level'}`", "", (model.__doc__ or "").strip().splitlines()[0], "",
             "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, type[BaseModel], BaseModel | None]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        value = getattr(defaults, name) if isinstance(defaults, model) else _default_value(info)
        description = show_fields(info.description or "").replace("|", "\\|")
        kind = _type_name(info.annotation).replace("|", "\\|")
        lines.append(f"| `{key}` | {kind} | {_shown(value)} | {description} |")
        nested += [(key, m, value if isinstance(value, m) else None) for m in _nested_models(info.annotation)]
    lines.append("")
    for key, sub, sub_defaults in nested:
        if key not in seen:
            seen.add(key)
            lines += reference(sub, key, seen, sub_defaults)
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
