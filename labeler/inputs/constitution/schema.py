"""A constitution: named principles, each usable by the stages whose fields it fills in.

Three stages read principles, each through its own fields:
- `revise` (Constitutional AI's supervised stage): `critique` + `revision` requests;
- `judge` (A/B judging, RLAIF): a multiple-choice `judge` question;
- `salmon` (one score per principle): `dimension` + `definition` (+ `negative_definition`).

A principle may fill in any subset of these, but at least one; stages skip principles they cannot use.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator
from pydantic_core import PydanticCustomError

from labeler.core.chat import Message

Stage = Literal["revise", "judge", "salmon"]
STAGES: tuple[Stage, ...] = ("revise", "judge", "salmon")

# The fields each stage needs; a principle lacking one of them is skipped by that stage.
STAGE_FIELDS: dict[Stage, tuple[str, ...]] = {
    "revise": ("critique", "revision"),
    "judge": ("judge",),
    "salmon": ("definition",),
}

ID_PATTERN = r"^[a-z0-9-]+$"
ROLES = ("system", "user", "assistant")

# Custom error types, so a loader that reports these problems itself (with better locations) can
# recognise the model's own report of the same problem.
INCOMPLETE_ERROR = "principle_incomplete"
DUPLICATE_ERROR = "duplicate_id"


def _clean_text(value: str) -> str:
    """Strip surrounding whitespace; a text that is empty afterwards is an error.

    Templates decide the whitespace around a principle's text, so the text itself carries none.
    """
    text = value.strip()
    if not text:
        raise PydanticCustomError("empty_text", "must not be empty or only whitespace")
    return text


def _version_text(value: object) -> object:
    """`version: 1` and `version: "1.2"` are both common; keep versions as text (bools stay errors)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Text = Annotated[str, Strict(), AfterValidator(_clean_text)]

_LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


def license_id(value: str) -> str:
    """A license as the Hugging Face Hub spells it: lower case, letters, digits, `.`, `+` and `-`.

    >>> license_id("Apache-2.0")
    'apache-2.0'
    >>> license_id("CC BY 4.0")
    Traceback (most recent call last):
    ...
    ValueError: 'CC BY 4.0' is not a license id such as apache-2.0, cc-by-4.0 or mit
    """
    normalised = value.strip().lower()
    if not _LICENSE_ID.match(normalised):
        raise ValueError(f"{value!r} is not a license id such as apache-2.0, cc-by-4.0 or mit")
    return normalised


def pairing_problems(present: Iterable[str]) -> list[tuple[str | None, str]]:
    """What is wrong with a principle that fills in exactly the fields `present`: (field, message) pairs.

    >>> pairing_problems({"critique", "revision", "judge"})
    []
    >>> pairing_problems({"critique"})
    [('revision', 'critique without revision: the revise stage needs both')]
    >>> pairing_problems({"dimension"})[0][1]
    'a principle needs at least one of: critique + revision, judge, or definition'
    """
    fields = set(present)
    problems: list[tuple[str | None, str]] = []
    if "critique" in fields and "revision" not in fields:
        problems.append(("revision", "critique without revision: the revise stage needs both"))
    if "revision" in fields and "critique" not in fields:
        problems.append(("critique", "revision without critique: the revise stage needs both"))
    if "negative_definition" in fields and "definition" not in fields:
        problems.append(("definition", "negative_definition without definition"))
    if not any(all(f in fields for f in needed) for needed in STAGE_FIELDS.values()) and not (
        {"critique", "revision"} & fields
    ):
        problems.append(
            (None, "a principle needs at least one of: critique + revision, judge, or definition")
        )
    return problems


class Principle(BaseModel):
    """One principle of a constitution."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Strict()] = Field(
        pattern=ID_PATTERN,
        max_length=100,
        description="Unique within the constitution; lowercase letters, digits and '-'.",
    )
    critique: Text | None = Field(default=None, description="Critique request (revise stage).")
    revision: Text | None = Field(default=None, description="Revision request (revise stage).")
    judge: Text | None = Field(
        default=None, description="Multiple-choice question answered with A or B (judge stage)."
    )
    dimension: Text | None = Field(
        default=None,
        description="Short name of the quality, e.g. 'Harmless' (salmon stage; defaults to the id).",
    )
    definition: Text | None = Field(default=None, description="What 'more <dimension>' means (salmon stage).")
    negative_definition: Text | None = Field(
        default=None, description="The principle negated (salmon stage)."
    )
    weight: Annotated[float, Strict()] = Field(
        default=1.0,
        gt=0.0,
        allow_inf_nan=False,
        description="Relative weight when principle scores are combined.",
    )

    @model_validator(mode="after")
    def _complete(self) -> Principle:
        present = [name for name in type(self).model_fields if getattr(self, name) is not None]
        problems = pairing_problems(present)
        if problems:
            raise PydanticCustomError(INCOMPLETE_ERROR, "; ".join(message for _, message in problems))
        return self

    def supports(self, stage: Stage) -> bool:
        """Whether `stage` can use this principle.

        >>> Principle(id="p", judge="Which response is kinder?").supports("judge")
        True
        >>> Principle(id="p", judge="Which response is kinder?").supports("revise")
        False
        """
        return all(getattr(self, name) is not None for name in STAGE_FIELDS[stage])


def _check_conversation(conversation: tuple[Message, ...]) -> tuple[Message, ...]:
    if not conversation:
        raise PydanticCustomError("empty_conversation", "a few-shot conversation needs at least one message")
    for message in conversation:
        if message.role not in ROLES:
            raise PydanticCustomError(
                "bad_role",
                "role '{role}' is not one of: {roles}",
                {"role": message.role, "roles": ", ".join(ROLES)},
            )
    return conversation


FewShotConversation = Annotated[tuple[Message, ...], AfterValidator(_check_conversation)]


class JudgeDemo(BaseModel):
    """A judging demonstration: a conversation and two replies to its last turn, the better one known."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    conversation: FewShotConversation = Field(description="The conversation the two replies answer.")
    better: Text = Field(description="The reply a judge should prefer.")
    worse: Text = Field(description="The reply a judge should not prefer.")

    @model_validator(mode="after")
    def _two_replies(self) -> JudgeDemo:
        # Equal replies teach the judge that one text is both better and worse than itself.
        if self.better == self.worse:
            raise PydanticCustomError("same_replies", "better and worse are the same text: a demonstration needs "
                                      "two different replies")
        return self


class Constitution(BaseModel):
    """A named, versioned list of principles, plus optional few-shot demonstrations."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Text = Field(description="Short name, e.g. 'harmless'.")
    version: Annotated[str, Strict(), BeforeValidator(_version_text), AfterValidator(_clean_text)] = Field(
        default="1", description="Version of this constitution's text (recorded in run manifests)."
    )
    description: Annotated[str, Strict()] = Field(default="", description="One line saying what it is for.")
    license: Annotated[str, Strict(), AfterValidator(license_id)] | None = Field(
        default=None,
        description="License of the data made with it, as a Hub license id (e.g. apache-2.0, cc-by-4.0, mit): "
        "the dataset card states it.",
    )
    principles: tuple[Principle, ...] = Field(min_length=1, description="The principles, in order.")
    few_shot: tuple[FewShotConversation, ...] = Field(
        default=(), description="Demonstration conversations shown before the real one (revise stage)."
    )
    judge_few_shot: tuple[JudgeDemo, ...] = Field(
        default=(),
        description="Judging demonstrations ({conversation, better, worse}) shown before the question with "
        "‹few_shot› N (judge stage).",
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> Constitution:
        seen: dict[str, int] = {}
        for index, principle in enumerate(self.principles):
            if principle.id in seen:
                raise PydanticCustomError(
                    DUPLICATE_ERROR,
                    "duplicate principle id '{id}' (principles {first} and {second})",
                    {"id": principle.id, "first": seen[principle.id], "second": index},
                )
            seen[principle.id] = index
        return self

    def for_stage(self, stage: Stage) -> tuple[Principle, ...]:
        """The principles `stage` can use, in order; for `salmon`, `dimension` defaults to the id.

        >>> c = Constitution(name="c", principles=(
        ...     Principle(id="kind", judge="Which response is kinder?"),
        ...     Principle(id="honest", definition="The response states only what it believes true."),
        ... ))
        >>> [p.id for p in c.for_stage("judge")], [p.dimension for p in c.for_stage("salmon")]
        (['kind'], ['honest'])
        """
        usable = tuple(p for p in self.principles if p.supports(stage))
        if stage == "salmon":
            usable = tuple(
                p if p.dimension is not None else p.model_copy(update={"dimension": p.id}) for p in usable
            )
        return usable

    def get(self, principle_id: str) -> Principle:
        """The principle with this id (KeyError when there is none)."""
        for principle in self.principles:
            if principle.id == principle_id:
                return principle
        raise KeyError(principle_id)

    def canonical_json(self) -> str:
        """One fixed JSON text for this constitution: same content, same text, whatever the source file.

        An unset `license` and empty `judge_few_shot` are left out, so constitutions written before those
        fields existed keep their hash.
        """
        unset = {"license"} if self.license is None else set()
        unset |= set() if self.judge_few_shot else {"judge_few_shot"}
        data = self.model_dump(mode="json", exclude=unset)
        return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def summary(self) -> dict[str, str | None]:
        """Name, version and license: what a run's fingerprint records of the constitution besides its hash."""
        return {"name": self.name, "version": self.version, "license": self.license}

    def sha256(self) -> str:
        """Hex sha256 of `canonical_json()` (recorded in run manifests)."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()
