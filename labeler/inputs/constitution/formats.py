"""The constitution formats labeler reads, detected from the parsed file and turned into labeler's own.

Each reader takes the parsed file (as `json` or `yaml` returns it) and gives a `Normalised`: a
document in labeler's own format, ready for `Constitution.model_validate`, plus where each principle
sits in the file and what the file calls each field, so that every problem can be reported in the
file's own terms. Problems a reader can see in the file's shape are collected, never raised one by one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

FormatName = Literal[
    "labeler",
    "anthropic-critique-revision",
    "anthropic-judge-principles",
    "hf-cai-recipe",
    "salmon",
    "dromedary",
]

# One line per format, used in messages and in `labeler validate`'s output.
FORMATS: dict[FormatName, str] = {
    "labeler": (
        "labeler's own format: a mapping with name, version, description, license, principles, few_shot, "
        "judge_few_shot"
    ),
    "anthropic-critique-revision": (
        "Anthropic's CAI critique/revision requests: an object of "
        '{"prompt": [critique request], "edit_request": revision request} entries'
    ),
    "anthropic-judge-principles": (
        "Anthropic's labelling principles: a list of multiple-choice question strings"
    ),
    "hf-cai-recipe": (
        'the Hugging Face CAI recipe: {"constitutions": [{"critic", "revision"}], "system_chat": [chats]}'
    ),
    "salmon": "a SALMON principle collection: a list of {dimension, definition, negative_definition, weight}",
    "dromedary": (
        "a Dromedary self-align prompt (text): `N (name). rule` lines under a `## General Rules` heading"
    ),
}

PathKey = str | int
FilePath = tuple[PathKey, ...]


@dataclass(frozen=True)
class Problem:
    """One problem with a constitution file, located as precisely as is known."""

    message: str
    path: FilePath = ()  # where in the file (keys and list indices), for the line number
    principle: int | None = None  # position of the principle in the file
    principle_id: str | None = None
    field: str | None = None  # the field as the file names it


@dataclass(frozen=True)
class PrincipleSource:
    """Where the principle at one position of the normalised document came from."""

    index: int  # position among the file's principles
    path: FilePath  # the principle's own place in the file
    keys: Mapping[str, FilePath] = field(default_factory=dict)  # own field -> place inside `path`

    def file_path(self, own_field: str) -> FilePath:
        return self.path + self.keys.get(own_field, (own_field,))


@dataclass(frozen=True)
class Normalised:
    """A parsed file turned into labeler's own format, with the way back to the file's own terms."""

    format: FormatName
    document: object  # labeler's own format, for Constitution.model_validate
    sources: tuple[PrincipleSource, ...]  # one per principle in document["principles"]
    header_paths: Mapping[str, FilePath] = field(default_factory=dict)  # own top-level key -> file path
    problems: tuple[Problem, ...] = ()


def slugify(text: str) -> str:
    """A principle id made from free text: lowercase, runs of other characters become '-'.

    >>> slugify("Honest and Accurate")
    'honest-and-accurate'
    >>> slugify("  Empathy-driven Responses! ")
    'empathy-driven-responses'
    >>> slugify("中文")
    ''
    """
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def unique_id(wanted: str, index: int, taken: set[str]) -> str:
    """`wanted` (slugified), else `principle-<index>`, made unique by a numeric suffix; records it in `taken`.

    >>> taken = set()
    >>> unique_id("Kind", 0, taken), unique_id("kind", 1, taken), unique_id("", 2, taken)
    ('kind', 'kind-2', 'principle-2')
    """
    base = slugify(wanted) or f"principle-{index}"
    candidate, suffix = base, 2
    while candidate in taken:
        candidate, suffix = f"{base}-{suffix}", suffix + 1
    taken.add(candidate)
    return candidate


def strip_scaffolding(text: str, request_label: str, answer_label: str) -> str:
    """The request inside CAI prompt scaffolding ("\\n\\nCritiqueRequest: ...\\n\\nCritique:").

    >>> strip_scaffolding("\\n\\nCritiqueRequest: Find harm.\\n\\nCritique:", "CritiqueRequest", "Critique")
    'Find harm.'
    >>> strip_scaffolding("Please rewrite it.", "RevisionRequest", "Revision")
    'Please rewrite it.'
    """
    body = text.strip()
    if body.startswith(f"{request_label}:"):
        body = body[len(request_label) + 1 :]
    # Only a label on a line of its own is scaffolding; a request may itself end with "Revision:".
    return re.sub(rf"(?:^|\n)\s*{re.escape(answer_label)}:\s*$", "", body).strip()


def strip_options(text: str) -> str:
    """A labelling principle without its trailing "Options:" (labeler's templates list the options).

    >>> strip_options("\\nWhich response is less harmful? Options:")
    'Which response is less harmful?'
    """
    return re.sub(r"\s*Options:\s*$", "", text).strip()


def type_name(value: object) -> str:
    """How a parsed value is named in messages.

    >>> type_name([1]), type_name({}), type_name("x"), type_name(None)
    ('a list', 'an object', 'a string', 'null')
    """
    names = {list: "a list", dict: "an object", str: "a string", bool: "a boolean", int: "a number"}
    names[float] = "a number"
    if value is None:
        return "null"
    return names.get(type(value), type(value).__name__)


def _is_salmon_item(item: object) -> bool:
    return isinstance(item, dict) and ("dimension" in item or "definition" in item) and "id" not in item


@dataclass(frozen=True)
class DromedaryRule:
    """One `N (name). rule` line of a Dromedary self-align prompt."""

    name: str
    text: str
    line: int


@dataclass(frozen=True)
class DromedaryRules:
    """The rules of a Dromedary self-align prompt: a text file, not YAML, whose principles are the
    `N (name). rule` lines under its `## General Rules` heading (the prose and examples around them are
    the prompt, not principles)."""

    rules: tuple[DromedaryRule, ...]


DROMEDARY_HEADING = re.compile(r"#{1,6}[ \t]*General Rules[ \t]*")
DROMEDARY_RULE = re.compile(r"[ \t]*\d+[ \t]*\(([^()\n]+)\)\.[ \t]*(\S.*?)[ \t]*")
MARKDOWN_HEADING = re.compile(r"#{1,6}[ \t]")


def parse_dromedary(text: str) -> DromedaryRules | None:
    """The rules under the `## General Rules` heading of `text`; None when it has no such heading.

    >>> rules = parse_dromedary("# Watson\\n\\n## General Rules\\n\\nWatson must:\\n\\n"
    ...                         "1 (ethical). Be good.\\n2 (candor). Admit it.\\n\\n## Examples\\n3 (x). Not a rule.")
    >>> [(r.name, r.text, r.line) for r in rules.rules]
    [('ethical', 'Be good.', 7), ('candor', 'Admit it.', 8)]
    >>> parse_dromedary("name: x") is None
    True
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if DROMEDARY_HEADING.fullmatch(line.strip())), None)
    if start is None:
        return None
    rules = []
    for number, line in enumerate(lines[start + 1 :], start=start + 2):
        if MARKDOWN_HEADING.match(line):
            break  # the next section (the examples) begins
        match = DROMEDARY_RULE.fullmatch(line)
        if match:
            rules.append(DromedaryRule(name=match[1].strip(), text=match[2], line=number))
    return DromedaryRules(tuple(rules))


def read_dromedary(data: DromedaryRules, name: str) -> Normalised:
    """Each rule a principle for the salmon stage: its name the dimension, its text the definition."""
    principles: list[dict[str, object]] = []
    sources: list[PrincipleSource] = []
    problems: list[Problem] = []
    taken: set[str] = set()
    for index, rule in enumerate(data.rules):
        principle_id = unique_id(rule.name, index, taken)
        principles.append({"id": principle_id, "dimension": rule.name, "definition": rule.text})
        sources.append(PrincipleSource(index=index, path=(index,), keys={"dimension": (), "definition": ()}))
    if not data.rules:
        problems.append(Problem("the General Rules section holds no `N (name). rule` lines, so no principles"))
    return Normalised(
        format="dromedary",
        document=_published_document(name, "dromedary", principles),
        sources=tuple(sources),
        problems=tuple(problems),
    )


def detect_format(data: object) -> FormatName | None:
    """Which format a parsed file is in, from its shape alone; None when it is in none of them.

    >>> detect_format({"name": "x", "principles": []})
    'labeler'
    >>> detect_format({"harmful0": {"prompt": ["..."], "edit_request": "..."}})
    'anthropic-critique-revision'
    >>> detect_format(["Which response is kinder? Options:"])
    'anthropic-judge-principles'
    >>> detect_format({"constitutions": [], "system_chat": []})
    'hf-cai-recipe'
    >>> detect_format([{"dimension": "Kind", "definition": "..."}])
    'salmon'
    >>> detect_format({"principles": [{"dimension": "Kind"}]})
    'salmon'
    >>> detect_format({"title": "x"}) is None, detect_format(["x", {}]) is None
    (True, True)
    """
    if isinstance(data, dict):
        principles = data.get("principles")
        if (
            set(data) == {"principles"}
            and isinstance(principles, list)
            and principles
            and all(_is_salmon_item(item) for item in principles)
        ):
            return "salmon"
        if {"name", "version", "description", "license", "principles", "few_shot", "judge_few_shot"} & set(data):
            return "labeler"
        if "constitutions" in data or "system_chat" in data:
            return "hf-cai-recipe"
        if any(isinstance(v, dict) and ("prompt" in v or "edit_request" in v) for v in data.values()):
            return "anthropic-critique-revision"
        return None
    if isinstance(data, list) and data:
        if all(isinstance(item, str) for item in data) or (
            any(isinstance(item, str) for item in data) and not any(isinstance(item, dict) for item in data)
        ):
            return "anthropic-judge-principles"
        if any(_is_salmon_item(item) for item in data) and not any(isinstance(item, str) for item in data):
            return "salmon"
    return None


def _unknown_keys(entry: Mapping[object, object], allowed: Sequence[str]) -> list[object]:
    return [key for key in entry if key not in allowed]


def read_labeler(data: dict[object, object]) -> Normalised:
    """labeler's own format: the document is the file itself."""
    principles = data.get("principles")
    sources: tuple[PrincipleSource, ...] = ()
    if isinstance(principles, list):
        sources = tuple(PrincipleSource(index=i, path=("principles", i)) for i in range(len(principles)))
    return Normalised(format="labeler", document=data, sources=sources)


def read_anthropic_critique_revision(data: dict[object, object], name: str) -> Normalised:
    """{"harmful0": {"prompt": ["...CritiqueRequest: ... Critique:"], "edit_request": "..."}, ...}."""
    principles: list[dict[str, object]] = []
    sources: list[PrincipleSource] = []
    problems: list[Problem] = []
    taken: set[str] = set()
    for index, (key, entry) in enumerate(data.items()):
        principle_id = unique_id(str(key), index, taken)
        problem = partial(Problem, path=(str(key),), principle=index, principle_id=principle_id)
        if not isinstance(entry, dict):
            message = f"expected an object with 'prompt' and 'edit_request', got {type_name(entry)}"
            problems.append(problem(message))
            continue
        for extra in _unknown_keys(entry, ("prompt", "edit_request")):
            message = f"unknown key '{extra}'; this format has 'prompt' and 'edit_request'"
            problems.append(problem(message, field=str(extra)))
        principle: dict[str, object] = {"id": principle_id}
        keys: dict[str, FilePath] = {"critique": ("prompt",), "revision": ("edit_request",)}
        prompt = entry.get("prompt")
        if isinstance(prompt, list) and len(prompt) != 1:
            message = f"expected one critique request in the list, found {len(prompt)}"
            problems.append(problem(message, field="prompt"))
        elif isinstance(prompt, list):
            principle["critique"] = _unwrap(prompt[0], "CritiqueRequest", "Critique")
            keys["critique"] = ("prompt", 0)
        elif prompt is not None:
            # A bare string is read too.
            principle["critique"] = _unwrap(prompt, "CritiqueRequest", "Critique")
        if entry.get("edit_request") is not None:
            principle["revision"] = _unwrap(entry["edit_request"], "RevisionRequest", "Revision")
        principles.append(principle)
        sources.append(PrincipleSource(index=index, path=(str(key),), keys=keys))
    return Normalised(
        format="anthropic-critique-revision",
        document=_published_document(name, "anthropic-critique-revision", principles),
        sources=tuple(sources),
        problems=tuple(problems),
    )


def _unwrap(value: object, request_label: str, answer_label: str) -> object:
    """A request without its scaffolding; a value that is not text is left for validation to report."""
    return strip_scaffolding(value, request_label, answer_label) if isinstance(value, str) else value


DEMONSTRATION_TURNS = ("CritiqueRequest:", "Critique:", "RevisionRequest:", "Revision:")


def is_critique_revision_demonstration(text: str) -> bool:
    """Whether a string is a whole critique/revision demonstration dialogue (Anthropic's few-shot file),
    not a judge question.

    >>> is_critique_revision_demonstration("Human: hi\\n\\nAssistant: yo\\n\\nCritiqueRequest: x\\n\\nCritique: y")
    True
    >>> is_critique_revision_demonstration("Which response is less harmful? Critique: none. Options:")
    False
    """
    return sum(turn in text for turn in DEMONSTRATION_TURNS) >= 2 and "CritiqueRequest:" in text


def read_anthropic_judge_principles(data: list[object], name: str) -> Normalised:
    """["\\nPlease choose the response that ... Options:", ...]."""
    principles: list[dict[str, object]] = []
    sources: list[PrincipleSource] = []
    problems: list[Problem] = []
    for index, item in enumerate(data):
        principle_id = f"principle-{index}"
        if isinstance(item, str) and is_critique_revision_demonstration(item):
            message = (
                "this is a critique/revision few-shot demonstration (a dialogue with CritiqueRequest:, Critique:, "
                "RevisionRequest: and Revision: turns, as in Anthropic's few-shot file), not a judge principle; "
                "give demonstrations to revise as few_shot entries of a labeler constitution"
            )
            problems.append(Problem(message, path=(index,), principle=index, principle_id=principle_id))
            continue
        if not isinstance(item, str):
            message = f"expected a question string, got {type_name(item)}"
            problems.append(Problem(message, path=(index,), principle=index, principle_id=principle_id))
            continue
        principles.append({"id": principle_id, "judge": strip_options(item)})
        sources.append(PrincipleSource(index=index, path=(index,), keys={"judge": ()}))
    return Normalised(
        format="anthropic-judge-principles",
        document=_published_document(name, "anthropic-judge-principles", principles),
        sources=tuple(sources),
        problems=tuple(problems),
    )


def read_hf_cai_recipe(data: dict[object, object], name: str) -> Normalised:
    """{"constitutions": [{"critic": ..., "revision": ...}], "system_chat": [[{"role", "content"}, ...]]}."""
    problems: list[Problem] = [
        Problem(
            f"unknown key '{extra}'; this format has 'constitutions' and 'system_chat'",
            path=(str(extra),),
            field=str(extra),
        )
        for extra in _unknown_keys(data, ("constitutions", "system_chat"))
    ]
    entries = data.get("constitutions")
    if not isinstance(entries, list):
        message = "missing key 'constitutions'"
        if entries is not None:
            message = f"expected a list, got {type_name(entries)}"
        problems.append(Problem(message, path=("constitutions",), field="constitutions"))
        entries = []
    principles: list[dict[str, object]] = []
    sources: list[PrincipleSource] = []
    for index, entry in enumerate(entries):
        principle_id = f"principle-{index}"
        problem = partial(Problem, path=("constitutions", index), principle=index, principle_id=principle_id)
        if not isinstance(entry, dict):
            message = f"expected an object with 'critic' and 'revision', got {type_name(entry)}"
            problems.append(problem(message))
            continue
        for extra in _unknown_keys(entry, ("critic", "revision")):
            message = f"unknown key '{extra}'; this format has 'critic' and 'revision'"
            problems.append(problem(message, field=str(extra)))
        principle: dict[str, object] = {"id": principle_id}
        if entry.get("critic") is not None:
            principle["critique"] = entry["critic"]
        if entry.get("revision") is not None:
            principle["revision"] = entry["revision"]
        principles.append(principle)
        path: FilePath = ("constitutions", index)
        sources.append(PrincipleSource(index=index, path=path, keys={"critique": ("critic",)}))
    document = _published_document(name, "hf-cai-recipe", principles)
    if data.get("system_chat") is not None:
        document["few_shot"] = data["system_chat"]
    return Normalised(
        format="hf-cai-recipe",
        document=document,
        sources=tuple(sources),
        header_paths={"few_shot": ("system_chat",)},
        problems=tuple(problems),
    )


SALMON_KEYS = ("dimension", "definition", "negative_definition", "weight")


def read_salmon(items: list[object], name: str, prefix: FilePath = ()) -> Normalised:
    """[{"dimension": ..., "definition": ..., "negative_definition"?: ..., "weight"?: ...}, ...].

    `prefix` is where the list sits: () for a bare list, ("principles",) for {"principles": [...]}.
    """
    principles: list[dict[str, object]] = []
    sources: list[PrincipleSource] = []
    problems: list[Problem] = []
    taken: set[str] = set()
    for index, item in enumerate(items):
        dimension = item.get("dimension") if isinstance(item, dict) else None
        principle_id = unique_id(dimension if isinstance(dimension, str) else "", index, taken)
        problem = partial(Problem, path=(*prefix, index), principle=index, principle_id=principle_id)
        if not isinstance(item, dict):
            message = f"expected an object with dimension and definition, got {type_name(item)}"
            problems.append(problem(message))
            continue
        for extra in _unknown_keys(item, SALMON_KEYS):
            message = f"unknown key '{extra}'; this format has {', '.join(SALMON_KEYS)}"
            problems.append(problem(message, field=str(extra)))
        for required in ("dimension", "definition"):
            if item.get(required) is None:
                problems.append(problem(f"missing required key '{required}'", field=required))
        given = {key: item[key] for key in SALMON_KEYS if item.get(key) is not None}
        principle = {"id": principle_id, **given}
        principles.append(principle)
        sources.append(PrincipleSource(index=index, path=(*prefix, index)))
    return Normalised(
        format="salmon",
        document=_published_document(name, "salmon", principles),
        sources=tuple(sources),
        problems=tuple(problems),
    )


def _published_document(
    name: str, format_name: FormatName, principles: Sequence[Mapping[str, object]]
) -> dict[str, object]:
    """The own-format header for a file that has none: named after the file."""
    return {
        "name": name,
        "version": "1",
        "description": f"read from {FORMATS[format_name].split(':')[0]}",
        "principles": list(principles),
    }


def is_feedback_few_shot(data: object) -> bool:
    """Whether a parsed file is in the CAI feedback few-shot format.

    >>> is_feedback_few_shot([{"prompt": "\\n\\nHuman: hi\\n\\nAssistant:", "corrects": ["a"], "incorrects": ["b"]}])
    True
    >>> is_feedback_few_shot([{"prompt": "x"}]), is_feedback_few_shot(["Which is kinder?"])
    (False, False)
    """
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(item, dict) for item in data)
        and any("corrects" in item or "incorrects" in item for item in data)
    )


def unknown_format_message(data: object) -> str:
    """Why a parsed file is in none of the formats, and which formats labeler reads."""
    if data is None:
        opening = "the file is empty"
    elif is_feedback_few_shot(data):
        return (
            'this is a file of judging demonstrations (CAI feedback few-shot format: {"prompt", "corrects", '
            '"incorrects"} objects), not a constitution: give it to label or eval-judge with ‹few_shot_file›'
        )
    elif isinstance(data, list) and not data:
        opening = "the file holds an empty list: no principles"
    else:
        opening = f"not a constitution in any format labeler reads (the file holds {type_name(data)})"
    listed = "\n".join(f"  - {description}" for description in FORMATS.values())
    return f"{opening}; labeler reads:\n{listed}"


def normalise(data: object, name: str) -> Normalised | None:
    """The parsed file in labeler's own format; None when it is in no format labeler reads.

    `name` names a constitution read from a format that has no name of its own (the file's stem).
    """
    if isinstance(data, DromedaryRules):
        return read_dromedary(data, name)
    format_name = detect_format(data)
    if format_name == "labeler" and isinstance(data, dict):
        return read_labeler(data)
    if format_name == "anthropic-critique-revision" and isinstance(data, dict):
        return read_anthropic_critique_revision(data, name)
    if format_name == "anthropic-judge-principles" and isinstance(data, list):
        return read_anthropic_judge_principles(data, name)
    if format_name == "hf-cai-recipe" and isinstance(data, dict):
        return read_hf_cai_recipe(data, name)
    if format_name == "salmon" and isinstance(data, list):
        return read_salmon(data, name)
    if format_name == "salmon" and isinstance(data, dict) and isinstance(data["principles"], list):
        return read_salmon(data["principles"], name, prefix=("principles",))
    return None
