"""The prompt templates every stage renders: jinja2 files in `prompts/`, overridable from a user folder.

Each template renders the text of one user turn (or, for `judge_cot_answer`, the start of an
assistant turn). Templates run in jinja2's immutable sandbox with `StrictUndefined`; prompt and
response texts are passed in as data, so template syntax inside them (`{{ 7*7 }}`) reaches the
output verbatim and is never evaluated.

Rendering is bounded in time and memory (`labeler.inputs.sandbox`: loops, calls, the size of every value
an operation builds, checked before it is built) and to `MAX_OUTPUT_CHARS` of output. A template over
a bound is refused like any other broken template (it is rendered on sample values when loaded, so
before any model loads).

A template is checked when it is loaded: it must use every variable its stage passes, may use no
other, and must render a sample; a failure names the template file.
"""

from __future__ import annotations

import hashlib
import re
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from labeler.core.chat import Message
from labeler.core.errors import InputError
from labeler.core.input_files import MAX_DOCUMENT_BYTES, read_input_text
from labeler.core.shipped import shipped_folder
from labeler.inputs.constitution import Principle
from labeler.inputs.sandbox import MAX_OUTPUT_CHARS, BoundedSandbox, TemplateBudgetError
from labeler.inputs.sandbox import start as start_budget
from labeler.inputs.sandbox import stop as stop_budget

# The shipped templates: inside an installed wheel, else the repository's prompts/ folder.
DEFAULT_FOLDER = shipped_folder("prompts")
SUFFIX = ".jinja"
_LONG_NUMBER = re.compile(r"\d{4301}")  # more digits than Python reads as a number

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


def _environment(loader: jinja2.BaseLoader) -> BoundedSandbox:
    return BoundedSandbox(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # plain text for a model, not HTML
        trim_blocks=True,  # a line holding only a {% tag %} leaves no blank line behind
        lstrip_blocks=True,
        keep_trailing_newline=False,  # a file's final newline is not part of the turn
    )


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
        token = start_budget()
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
            stop_budget(token)

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
    except ValueError as exc:
        # The lexer reads a literal number of more digits than Python converts (4300).
        line = next((n for n, text in enumerate(source.splitlines(), 1) if _LONG_NUMBER.search(text)), None)
        message = f"template '{name}' has a number of more than 4300 digits ({exc.__class__.__name__})"
        raise InputError(message, file=path, line=line) from exc
    except (RecursionError, SyntaxError, MemoryError) as exc:
        # Expressions or blocks nested thousands deep: jinja2's parser or Python's compiler gives up.
        message = f"template '{name}' is nested too deeply to compile ({type(exc).__name__})"
        raise InputError(message, file=path) from exc
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
