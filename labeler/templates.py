"""The prompt templates every stage renders: jinja2 files in `prompts/`, overridable from a user folder.

Each template renders the text of one user turn (or, for `judge_cot_answer`, the start of an
assistant turn). Templates run in jinja2's immutable sandbox with `StrictUndefined`; prompt and
response texts are passed in as data, so template syntax inside them (`{{ 7*7 }}`) reaches the
output verbatim and is never evaluated.

Rendering is bounded: at most `MAX_LOOP_ITERATIONS` loop iterations and `MAX_RENDER_SECONDS` per
rendering, at most `MAX_OUTPUT_CHARS` of output, and no operator, filter or string method that
builds text wider than `MAX_WIDTH` at once. A template over a bound is refused like any other broken
template (it is rendered on sample values when loaded, so before any model loads).

A template is checked when it is loaded: it must use every variable its stage passes, may use no
other, and must render a sample; a failure names the template file.
"""

from __future__ import annotations

import contextvars
import hashlib
import re
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from labeler.constitution import Principle
from labeler.engine.base import Message
from labeler.errors import InputError
from labeler.input_files import MAX_DOCUMENT_BYTES, read_input_text
from labeler.shipped import shipped_folder

# The shipped templates: inside an installed wheel, else the repository's prompts/ folder.
DEFAULT_FOLDER = shipped_folder("prompts")
SUFFIX = ".jinja"

_CONVERSATION = [{"role": "user", "content": "How do I boil an egg?"}]
_PAIR = {"conversation": _CONVERSATION, "response_a": "Boil it for 9 minutes.", "response_b": "Ask a chef."}
_PRINCIPLE = Principle(
    id="sample",
    critique="Is the response harmful?",
    revision="Rewrite the response.",
    judge="Which response is less harmful?",
    dimension="Harmless",
    definition="The response causes no harm.",
    negative_definition="The response causes harm.",
).model_dump(mode="json")

# Each template, the variables it is rendered with, and sample values used to try it at load time.
VARIABLES: dict[str, dict[str, object]] = {
    "critique": {"principle": _PRINCIPLE},
    "revision": {"principle": _PRINCIPLE},
    "judge": {**_PAIR, "question": "Which response is more helpful?"},
    "judge_cot": {**_PAIR, "question": "Which response is more helpful?"},
    "judge_cot_answer": {"rationale": "Response A answers the question."},
    "judge_answer": {},
    "salmon": {**_PAIR, "dimension": "Helpful", "definition": "The response answers the question."},
}


MAX_LOOP_ITERATIONS = 100_000
MAX_OUTPUT_CHARS = 2_000_000
MAX_WIDTH = 10_000
MAX_RENDER_SECONDS = 10.0
_WIDE_STR_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_FORMAT_NUMBER = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?|\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")


class TemplateBudgetError(Exception):
    """A template went over one of the bounds on rendering."""


@dataclass
class _Budget:
    iterations: int = MAX_LOOP_ITERATIONS
    deadline: float = float("inf")


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("template_budget")


def _budgeted(items: Iterable[Any]) -> Iterator[Any]:
    """A loop's items, each one spent from the rendering's budget of iterations and time."""
    budget = _BUDGET.get(None) or _Budget()
    for item in items:
        budget.iterations -= 1
        if budget.iterations < 0:
            raise TemplateBudgetError(f"more than {MAX_LOOP_ITERATIONS} loop iterations in one rendering")
        if time.monotonic() > budget.deadline:
            raise TemplateBudgetError(f"rendering took longer than {MAX_RENDER_SECONDS:.0f} s")
        yield item


def _check_width(*values: object) -> None:
    if any(isinstance(v, int) and abs(v) > MAX_WIDTH for v in values):
        raise TemplateBudgetError(f"a width or repeat count above {MAX_WIDTH}")


def _check_format(text: str) -> None:
    """Refuse %- and {}-format specs that would pad to more than MAX_WIDTH characters (or take it from data)."""
    for match in _FORMAT_NUMBER.finditer(text):
        numbers = [g for g in match.groups() if g]
        if "*" in numbers or any(int(n) > MAX_WIDTH for n in numbers if n.isdigit()):
            raise TemplateBudgetError(f"a format width above {MAX_WIDTH}")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox with every loop, wide operation and the output bounded."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):  # every loop draws on the rendering's budget
            loop.iter = nodes.Filter(loop.iter, "_budgeted", [], [], None, None, lineno=loop.lineno)
        return tree

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                    if len(sequence) * count > MAX_OUTPUT_CHARS:
                        raise TemplateBudgetError(f"a repetition longer than {MAX_OUTPUT_CHARS}")
        elif operator == "**" and isinstance(right, int | float) and abs(right) > 4096:
            raise TemplateBudgetError("an exponent above 4096")
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(getattr(__obj, "__self__", None), str) and getattr(__obj, "__name__", "") in _WIDE_STR_METHODS:
            _check_width(*args, *kwargs.values())
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, str) and attribute in ("format", "format_map"):
            _check_format(obj)  # "{:>99999999}".format(1)
        return super().getattr(obj, attribute)


def _wide_filter(filter_function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose numeric arguments are widths, refused above MAX_WIDTH."""

    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_width(*args, *kwargs.values())
        return filter_function(value, *args, **kwargs)

    return bounded


def _format_filter(value: str, *args: Any, **kwargs: Any) -> str:
    _check_format(str(value))
    result: str = jinja2.filters.do_format(value, *args, **kwargs)
    return result


def _environment(loader: jinja2.BaseLoader) -> BoundedSandbox:
    env = BoundedSandbox(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # plain text for a model, not HTML
        trim_blocks=True,  # a line holding only a {% tag %} leaves no blank line behind
        lstrip_blocks=True,
        keep_trailing_newline=False,  # a file's final newline is not part of the turn
    )
    env.filters["_budgeted"] = _budgeted
    for name in ("center", "indent", "wordwrap", "truncate"):
        env.filters[name] = _wide_filter(env.filters[name])
    env.filters["format"] = _format_filter
    del env.globals["lipsum"]  # generates text of any length
    return env


def _principle_data(principle: Principle) -> dict[str, Any]:
    """A principle as plain data: templates read its fields and can call none of its methods."""
    return principle.model_dump(mode="json")


def _conversation_data(conversation: Sequence[Message | Mapping[str, str]]) -> list[dict[str, str]]:
    return [
        {"role": m.role, "content": m.content}
        if isinstance(m, Message)
        else {"role": m["role"], "content": m["content"]}
        for m in conversation
    ]


def _template_line(exc: BaseException, filename: str) -> int | None:
    """The template line a rendering error happened on (jinja2 rewrites tracebacks to point there)."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == filename]
    return frames[-1].lineno if frames else None


@dataclass(frozen=True)
class Templates:
    """The loaded templates: one method per template, each returning the rendered text."""

    folder: Path | None  # the user folder, when templates were overridden
    sources: Mapping[str, str]  # name -> template text
    paths: Mapping[str, Path]  # name -> file it came from
    compiled: Mapping[str, jinja2.Template] = field(repr=False, compare=False)

    @classmethod
    def load(cls, folder: Path | None = None) -> Templates:
        """The shipped templates, with any of them replaced by `<name>.jinja` files from `folder`.

        Raises `InputError` naming the template file when a template cannot be read or compiled,
        leaves out a variable its stage passes, uses one it does not, or fails to render a sample.
        Unknown `.jinja` files in `folder` are ignored with a warning.
        """
        paths = {name: DEFAULT_FOLDER / f"{name}{SUFFIX}" for name in VARIABLES}
        if folder is not None:
            folder = Path(folder)
            if not folder.is_dir():
                raise InputError("templates folder does not exist or is not a folder", file=folder)
            for path in sorted(folder.glob(f"*{SUFFIX}")):
                if path.stem in VARIABLES:
                    paths[path.stem] = path
                else:
                    warnings.warn(
                        f"{path}: not a template labeler renders (known: {', '.join(VARIABLES)}); ignored",
                        stacklevel=2,
                    )
        sources = {name: _read(path) for name, path in paths.items()}

        def source_of(name: str) -> tuple[str, str, Callable[[], bool]] | None:
            # Only the known templates can be loaded (e.g. by {% include %}); files never change here.
            return (sources[name], str(paths[name]), lambda: True) if name in sources else None

        env = _environment(jinja2.FunctionLoader(source_of))
        compiled = {name: _compile(env, name, sources[name], paths[name]) for name in VARIABLES}
        templates = cls(folder=folder, sources=sources, paths=paths, compiled=compiled)
        for name, sample in VARIABLES.items():
            templates._render(name, sample)
        return templates

    def _render(self, name: str, variables: Mapping[str, object]) -> str:
        path = self.paths[name]
        token = _BUDGET.set(_Budget(deadline=time.monotonic() + MAX_RENDER_SECONDS))
        try:
            size, parts = 0, []
            for part in self.compiled[name].generate(**variables):
                size += len(part)
                if size > MAX_OUTPUT_CHARS:
                    raise TemplateBudgetError(f"more than {MAX_OUTPUT_CHARS} characters of output")
                parts.append(part)
            return "".join(parts)
        # Only template code runs inside render(): whatever it raises is a fault of that template
        # (a sandbox refusal, an undefined variable, a bad filter argument), reported as such.
        except Exception as exc:
            line = _template_line(exc, str(path))
            raise InputError(
                f"template '{name}' failed to render: {type(exc).__name__}: {exc}", file=path, line=line
            ) from exc
        finally:
            _BUDGET.reset(token)

    def critique(self, principle: Principle) -> str:
        """The user turn asking for a critique of the last response under `principle`."""
        return self._render("critique", {"principle": _principle_data(principle)})

    def revision(self, principle: Principle) -> str:
        """The user turn asking to rewrite the response after the critique."""
        return self._render("revision", {"principle": _principle_data(principle)})

    def judge(
        self,
        conversation: Sequence[Message | Mapping[str, str]],
        response_a: str,
        response_b: str,
        question: str,
    ) -> str:
        """The user turn asking which of two replies answers `question` better, with the letter A or B."""
        return self._render(
            "judge",
            {
                "conversation": _conversation_data(conversation),
                "response_a": response_a,
                "response_b": response_b,
                "question": question,
            },
        )

    def judge_cot(
        self,
        conversation: Sequence[Message | Mapping[str, str]],
        response_a: str,
        response_b: str,
        question: str,
    ) -> str:
        """Like `judge`, but asking to reason step by step before answering."""
        return self._render(
            "judge_cot",
            {
                "conversation": _conversation_data(conversation),
                "response_a": response_a,
                "response_b": response_b,
                "question": question,
            },
        )

    def judge_cot_answer(self, rationale: str) -> str:
        """The assistant prefix after a rationale; the choice is scored as the token right after it."""
        return self._render("judge_cot_answer", {"rationale": rationale})

    def judge_answer(self) -> str:
        """The assistant prefix of judge and SALMON answers; the choice is scored right after it."""
        return self._render("judge_answer", {})

    def salmon(
        self,
        conversation: Sequence[Message | Mapping[str, str]],
        response_a: str,
        response_b: str,
        dimension: str,
        definition: str,
    ) -> str:
        """The user turn asking which reply is more `dimension`, as `definition` describes it."""
        return self._render(
            "salmon",
            {
                "conversation": _conversation_data(conversation),
                "response_a": response_a,
                "response_b": response_b,
                "dimension": dimension,
                "definition": definition,
            },
        )

    def sha256(self) -> dict[str, str]:
        """Hex sha256 of each template's text, by name (recorded in run manifests)."""
        texts = sorted(self.sources.items())
        return {name: hashlib.sha256(text.encode("utf-8")).hexdigest() for name, text in texts}


def _read(path: Path) -> str:
    """A template's text: a regular file of UTF-8 (an editor's byte-order mark is not template text)."""
    return read_input_text(path, limit=MAX_DOCUMENT_BYTES, what="a template")


def _compile(env: BoundedSandbox, name: str, source: str, path: Path) -> jinja2.Template:
    """Compile one template and check the variables it uses against those its stage passes."""
    try:
        used = meta.find_undeclared_variables(env.parse(source, name=name, filename=str(path)))
        template = env.get_template(name)
    except jinja2.TemplateSyntaxError as exc:
        message = f"template '{name}' has a syntax error: {exc.message}"
        raise InputError(message, file=path, line=exc.lineno) from exc
    passed = set(VARIABLES[name])
    missing = sorted(passed - used)
    if missing:
        raise InputError(
            f"template '{name}' never uses {', '.join(repr(v) for v in missing)}; "
            f"it is rendered with: {', '.join(sorted(passed))}",
            file=path,
        )
    unknown = sorted(used - passed - set(env.globals))
    if unknown:
        raise InputError(
            f"template '{name}' uses undefined variable {', '.join(repr(v) for v in unknown)}; "
            f"it is rendered with: {', '.join(sorted(passed))}",
            file=path,
        )
    return template
