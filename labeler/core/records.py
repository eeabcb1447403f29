"""The rows labeler writes: one frozen pydantic model per split, each owning its Arrow schema.

A split is a record class plus its name in `SPLITS`; the store, the readers and the card work from
that registry, so adding a split (or a label kind) is adding one class here.

The Arrow schema of a record class is derived mechanically from its field annotations (`str` →
string, `float` → float64, `bool` → bool, `int` → int64, `tuple[X, ...]` → list<X>, a nested model →
struct, `X | None` → nullable X), never inferred from data, so an empty shard and a full one have the
same schema and a column's type cannot drift with its contents.

>>> PreferenceRecord.arrow_schema().field("principle_scores").type
ListType(list<item: struct<principle_id: string not null, score: double not null> not null>)
"""

from __future__ import annotations

import functools
import hashlib
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from labeler.core.chat import Message

FLAG_LOW_MASS = "low_mass"
"""Flag: the judge put little probability on the two choice tokens in at least one order."""
FLAG_ORDER_FLIP = "order_flip"
"""Flag: the judge's preferred response changed when the order of the two responses was swapped."""
FLAG_TIE = "tie"
"""Flag: p_a is exactly 0.5, so chosen/rejected is arbitrary (response_a is kept as chosen)."""
FLAG_CHOICE_OUTSIDE_TOPK = "choice_outside_topk"
"""Flag: a server returned only its top log-probabilities and a choice token was not among them, so its
probability is an upper bound, not a measurement."""
FLAG_HUMAN_LABEL = "human_label"
"""Flag: chosen, rejected, p_a and margin come from people's labels (`labeler export --prefer-human`), not
from the judge; p_a_ab, p_a_ba and the other judge columns are still the judge's."""
FLAG_FROM_SCORES = "from_scores"
"""Flag: a pair binarized from a ranking that was never judged itself: p_a is σ(s_a − s_b) of the fitted
Bradley-Terry scores (both orders and the masses say the same; no principle was asked)."""
FLAGS: dict[str, str] = {
    FLAG_LOW_MASS: "the judge put little probability on the two choice tokens in at least one order",
    FLAG_ORDER_FLIP: "the two presentation orders prefer different responses",
    FLAG_TIE: "p_a is exactly 0.5: chosen and rejected are arbitrary",
    FLAG_CHOICE_OUTSIDE_TOPK: "a choice token was missing from a server's top log-probabilities",
    FLAG_HUMAN_LABEL: "chosen, rejected, p_a and margin come from human labels (export --prefer-human)",
    FLAG_FROM_SCORES: "a pair of a ranking not judged itself: p_a comes from the fitted Bradley-Terry scores",
}


def known_flags(flags: tuple[str, ...]) -> tuple[str, ...]:
    """`flags` once each, in order; a `ValueError` naming the first that is no flag of `FLAGS`.

    >>> known_flags(("tie", "low_mass", "tie"))
    ('tie', 'low_mass')
    """
    unknown = [flag for flag in flags if flag not in FLAGS]
    if unknown:
        raise ValueError(f"unknown flag {unknown[0]!r}; known: {', '.join(FLAGS)}")
    return tuple(dict.fromkeys(flags))
"""Every flag a preference row can carry, with what it means."""

FLAG_INTRANSITIVE = "intransitive"
"""Ranking flag: the judged pairs order at least one triple of responses in a cycle (A > B > C > A)."""
RANKING_FLAGS: dict[str, str] = {FLAG_INTRANSITIVE: "the judged pairs order some triple of responses in a cycle"}
"""Every flag a rankings row can carry, with what it means."""

SOURCE_PROMPTS_FILE = "prompts_file"
"""`source` kind of an SFT row: a row of the prompts file."""


def source_label(kind: str, file: str | Path | None) -> str:
    """The `source` column: how a row was made, then `:` and the name of the input file its row came from.

    Only the file's name is kept, not its folder: a dataset that travels carries no local paths, and
    the same input gives the same rows wherever it lies. `source_id` is the row's own id in that file.

    >>> source_label("pairs_file", Path("data/batch-3/pairs.jsonl"))
    'pairs_file:pairs.jsonl'
    >>> source_label("human_labelled", None)
    'human_labelled'
    """
    return kind if file is None else f"{kind}:{Path(file).name}"


def source_file(source: str) -> str | None:
    """The input file named in a `source` value (None when it names none).

    >>> source_file("prompts_file:prompts.jsonl"), source_file("revision_vs_initial")
    ('prompts.jsonl', None)
    """
    _, sep, name = source.partition(":")
    return name if sep and name else None


def prompt_text(messages: Sequence[Message]) -> str:
    """The last user turn of a conversation: the plain-text `prompt_text` column.

    >>> prompt_text([Message(role="system", content="Be brief."), Message(role="user", content="Hi?")])
    'Hi?'
    """
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    raise ValueError("the conversation has no user turn")


def record_id(*parts: str) -> str:
    """Stable id of a record from the texts that identify it (e.g. prompt, response A, response B).

    Each part is length-prefixed before hashing, so ("ab", "c") and ("a", "bc") differ.
    The result is the first 128 bits of a sha256, in hex.

    >>> record_id("What is 2+2?", "4", "5")
    'f2651a16fd6c9a372d342f8b9dbf07b2'
    >>> record_id("ab", "c") == record_id("a", "bc")
    False
    """
    digest = hashlib.sha256()
    for part in parts:
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()[:32]


class PrincipleScore(BaseModel):
    """How much one principle prefers response A (SALMON-style per-principle score)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principle_id: str = Field(description="Id of the principle in the constitution.")
    score: float = Field(
        description="log P(A) − log P(B) for this principle's question, averaged over both orders."
    )


class RevisionRound(BaseModel):
    """One critique-and-revise step of the Constitutional AI supervised stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principle_id: str = Field(description="Principle whose critique and revision requests were used.")
    critique: str = Field(description="The model's critique of the previous response.")
    revision: str = Field(description="The response rewritten after the critique.")


class Record(BaseModel):
    """Base of every split's row model: frozen, no unknown fields, a string `id` unique within a split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    split: ClassVar[str]

    id: str = Field(min_length=1, description="Stable hash identifying the record; unique within a split.")

    @classmethod
    def arrow_schema(cls) -> pa.Schema:
        """The split's Arrow schema, derived from the field annotations (cached: classes are immutable)."""
        return _schema_of(cls)

    def to_row(self) -> dict[str, Any]:
        """A dict of plain Python values matching `arrow_schema()` (nested models become dicts)."""
        return self.model_dump(mode="python")

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        """Validate one row read back from Arrow (lists of dicts become tuples of models)."""
        return cls.model_validate(row)

    @classmethod
    def to_table(cls, records: Sequence[Self]) -> pa.Table:
        """An Arrow table of `records` with exactly `arrow_schema()`."""
        return pa.Table.from_pylist([record.to_row() for record in records], schema=cls.arrow_schema())

    @classmethod
    def from_table(cls, table: pa.Table) -> list[Self]:
        """The records of an Arrow table written with `arrow_schema()`."""
        return [cls.from_row(row) for row in table.to_pylist()]

    @classmethod
    def upgrade_table(cls, table: pa.Table) -> pa.Table | None:
        """`table` in this split's current columns when it holds the split's earlier layout, else None.

        Readers call it on a shard whose columns differ from `arrow_schema()`, so runs written by an
        earlier labeler still read (and `labeler export` rewrites them in the current layout).
        """
        return None


class PreferenceRecord(Record):
    """One judged pair: the conversation, the two responses, which one won, and the soft label behind it.

    `prompt`, `chosen` and `rejected` are TRL's conversational form (lists of {role, content}
    messages), so TRL's RewardTrainer and DPOTrainer train on the split as it is, applying the chat
    template; the `*_text` columns hold the same as plain text.

    Probabilities are always "response_a is better", whatever order the judge saw the responses in.
    In the `ab` order the judge saw response_a as option A; in the `ba` order it saw response_b as
    option A, and its numbers were mapped back so that they still speak of response_a.
    """

    split: ClassVar[str] = "preferences"

    source_id: str | None = Field(
        None, description="The input row's own `id` (as text), or null when it had none; `source` names the file."
    )
    prompt: tuple[Message, ...] = Field(
        min_length=1,
        description="The whole conversation the responses answer, as {role, content} messages (system and "
        "earlier turns included): TRL's conversational prompt.",
    )
    chosen: tuple[Message] = Field(
        description="The preferred response as a list of the one assistant message (TRL's conversational form)."
    )
    rejected: tuple[Message] = Field(description="The other response, as a list of the one assistant message.")
    prompt_text: str = Field(description="The last user turn of `prompt`, as plain text.")
    chosen_text: str = Field(description="The preferred response as plain text: response_a or response_b.")
    rejected_text: str = Field(description="The other response as plain text.")
    response_a: str = Field(description="First response of the pair.")
    response_b: str = Field(description="Second response of the pair.")
    p_a: float = Field(ge=0.0, le=1.0, description="Soft label: P(response_a is better), mean of both orders.")
    p_a_ab: float = Field(ge=0.0, le=1.0, description="P(response_a is better) with response_a shown first.")
    p_a_ba: float = Field(
        ge=0.0, le=1.0, description="P(response_a is better) with response_b shown first, mapped back to A."
    )
    mass_ab: float = Field(ge=0.0, description="Probability the judge put on the two choice tokens, ab order.")
    mass_ba: float = Field(ge=0.0, description="Probability the judge put on the two choice tokens, ba order.")
    logprobs_ab: tuple[float, float] = Field(
        description="Judge log-probabilities [log P(response_a), log P(response_b)] in the ab order "
        "(response_a shown as option A): the numbers p_a_ab is computed from."
    )
    logprobs_ba: tuple[float, float] = Field(
        description="Judge log-probabilities in the ba order (response_b shown as option A), mapped back "
        "so that index 0 is still response_a: [log P(response_a), log P(response_b)]."
    )
    consistent: bool = Field(description="Both orders prefer the same response.")
    principle_ids: tuple[str, ...] = Field(description="Principles the pair was judged under.")
    principle_scores: tuple[PrincipleScore, ...] = Field(
        description="Per principle: log P(A) − log P(B), averaged over both orders (SALMON)."
    )
    margin: float = Field(
        description="Strength of the preference for chosen over rejected; TRL's RewardTrainer uses it as "
        "the margin in -logsigmoid(r_chosen - r_rejected - margin)."
    )
    judge_model: str = Field(description="Id of the judge model.")
    source: str = Field(
        description="How the pair was made, then ':' and the input file's name (e.g. pairs_file:pairs.jsonl, "
        "policy_samples:prompts.jsonl, revision_vs_initial:prompts.jsonl)."
    )
    flags: tuple[str, ...] = Field(description=f"Warnings about the label: {', '.join(FLAGS)}.")
    input_chosen: str | None = Field(
        None,
        pattern="^[ab]$",
        description="The response the input file marked as chosen, when it gave one (a pairs file of chosen and "
        "rejected, shown as A and B in a seeded random order): 'a' (response_a) or 'b' (response_b); else null.",
    )

    @model_validator(mode="after")
    def _columns_agree(self) -> PreferenceRecord:
        for name in ("chosen", "rejected"):
            (message,) = getattr(self, name)
            if message.role != "assistant":
                raise ValueError(f"{name} must hold one assistant message, got role {message.role!r}")
            if message.content != getattr(self, f"{name}_text"):
                raise ValueError(f"{name}_text must be the content of the {name} message")
        if self.prompt_text != prompt_text(self.prompt):
            raise ValueError("prompt_text must be the last user turn of prompt")
        pair = (self.chosen_text, self.rejected_text)
        if pair not in ((self.response_a, self.response_b), (self.response_b, self.response_a)):
            raise ValueError("chosen and rejected must be response_a and response_b, in either order")
        return self

    @classmethod
    def upgrade_table(cls, table: pa.Table) -> pa.Table | None:
        """Rows of the earlier layouts in the current columns: the one before `input_chosen`, and the one
        before the conversational columns (`prompt` as text, `prompt_messages`, `chosen`/`rejected` as text,
        no `source_id`)."""
        schema = cls.arrow_schema()
        if "input_chosen" in table.column_names:
            return None
        no_input_label = {"input_chosen": pa.nulls(table.num_rows, pa.string())}
        if "prompt_messages" not in table.column_names:
            return _assemble(table, schema, no_input_label)
        columns = {
            **no_input_label,
            "source_id": pa.nulls(table.num_rows, pa.string()),
            "prompt": table.column("prompt_messages"),
            "chosen": _one_message_lists(table.column("chosen"), "assistant", schema.field("chosen").type),
            "rejected": _one_message_lists(table.column("rejected"), "assistant", schema.field("rejected").type),
            "prompt_text": table.column("prompt"),
            "chosen_text": table.column("chosen"),
            "rejected_text": table.column("rejected"),
        }
        return _assemble(table, schema, columns)


def conversation_columns(prompt: Sequence[Message], chosen: str, rejected: str) -> dict[str, Any]:
    """The conversational columns of a preference row and their plain-text twins, from the conversation
    and the two responses as text (pass them to `PreferenceRecord(...)`).

    >>> columns = conversation_columns([Message(role="user", content="Hi?")], "Hello.", "Go away.")
    >>> columns["chosen"], columns["prompt_text"], columns["rejected_text"]
    ((Message(role='assistant', content='Hello.'),), 'Hi?', 'Go away.')
    """
    return {
        "prompt": tuple(prompt),
        "chosen": (Message(role="assistant", content=chosen),),
        "rejected": (Message(role="assistant", content=rejected),),
        "prompt_text": prompt_text(prompt),
        "chosen_text": chosen,
        "rejected_text": rejected,
    }


class SFTRecord(Record):
    """One prompt taken through critique-and-revise: the initial answer, each round, the final revision."""

    split: ClassVar[str] = "sft"

    source_id: str | None = Field(
        None, description="The input row's own `id` (as text), or null when it had none; `source` names the file."
    )
    prompt: str = Field(description="The user prompt as plain text.")
    prompt_messages: tuple[Message, ...] = Field(description="The prompt as chat messages (role, content).")
    initial: str = Field(description="The model's first response, before any critique.")
    revision: str = Field(description="The final revision (the last round's revision, or initial if none).")
    rounds: tuple[RevisionRound, ...] = Field(description="Each critique-and-revise round, in order.")
    messages: tuple[Message, ...] = Field(
        description="prompt_messages followed by the final revision as the assistant turn, ready for SFT."
    )
    model: str = Field(description="Id of the model that wrote the responses.")
    source: str = Field(
        SOURCE_PROMPTS_FILE,
        description="Where the prompt came from: prompts_file, then ':' and the prompts file's name.",
    )

    @classmethod
    def upgrade_table(cls, table: pa.Table) -> pa.Table | None:
        """Rows of the layout before `source_id` and `source` in the current columns."""
        if "source_id" in table.column_names or "source" in table.column_names:
            return None
        columns = {
            "source_id": pa.nulls(table.num_rows, pa.string()),
            "source": pa.array([SOURCE_PROMPTS_FILE] * table.num_rows, pa.string()),
        }
        return _assemble(table, cls.arrow_schema(), columns)


def _one_message_lists(texts: pa.ChunkedArray, role: str, list_type: pa.DataType) -> pa.Array:
    """A list column holding one {role, content} message per row, the content from `texts`."""
    contents = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    struct_type = list_type.value_type
    messages = pa.StructArray.from_arrays(
        [pa.array([role] * len(contents), pa.string()), contents], fields=list(struct_type)
    )
    offsets = pa.array(range(len(contents) + 1), pa.int32())
    return pa.ListArray.from_arrays(offsets, messages, type=list_type)


def _assemble(table: pa.Table, schema: pa.Schema, replacements: dict[str, Any]) -> pa.Table:
    """A table with exactly `schema`: each column from `replacements`, else `table`'s column of that name."""
    arrays = []
    for field in schema:
        column = replacements[field.name] if field.name in replacements else table.column(field.name)
        arrays.append(column.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class JudgedComparison(BaseModel):
    """One pair of a ranking's responses, judged in both orders as a preference row is (same columns)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    a: int = Field(ge=0, description="Index in `responses` of the response shown as A in the ab order.")
    b: int = Field(ge=0, description="Index in `responses` of the other response (B in the ab order).")
    p_a: float = Field(ge=0.0, le=1.0, description="Soft label: P(response a is better), mean of both orders.")
    p_a_ab: float = Field(ge=0.0, le=1.0, description="P(a is better) with a shown first.")
    p_a_ba: float = Field(ge=0.0, le=1.0, description="P(a is better) with b shown first, mapped back to a.")
    mass_ab: float = Field(ge=0.0, description="Probability on the two choice tokens, ab order.")
    mass_ba: float = Field(ge=0.0, description="Probability on the two choice tokens, ba order.")
    logprobs_ab: tuple[float, float] = Field(description="[log P(a), log P(b)] in the ab order.")
    logprobs_ba: tuple[float, float] = Field(description="[log P(a), log P(b)] in the ba order, mapped back.")
    consistent: bool = Field(description="Both orders prefer the same response.")
    principle_ids: tuple[str, ...] = Field(description="Principles the pair was judged under.")
    principle_scores: tuple[PrincipleScore, ...] = Field(
        description="Per principle: log P(a) − log P(b), averaged over both orders (SALMON)."
    )
    margin: float = Field(description="Strength of the preference: 2·|p_a − 0.5|.")
    flags: tuple[str, ...] = Field(description=f"Warnings about the label: {', '.join(FLAGS)}.")


class RankingRecord(Record):
    """K responses to one conversation, the pairs of them judged, and a Bradley-Terry score for each.

    `scores[i]` belongs to `responses[i]` (and `response_ids[i]`): P(i beats j) = σ(scores[i] − scores[j]).
    The preference split of the same run is derived from these rows by a stated binarization.
    """

    split: ClassVar[str] = "rankings"

    source_id: str | None = Field(
        None, description="The input row's own `id` (as text), or null when it had none; `source` names the file."
    )
    prompt: tuple[Message, ...] = Field(min_length=1, description="The conversation, as {role, content} messages.")
    prompt_text: str = Field(description="The last user turn of `prompt`, as plain text.")
    responses: tuple[str, ...] = Field(min_length=2, description="The responses ranked, as plain text.")
    response_ids: tuple[str, ...] = Field(
        description="Each response's id: the input's `response_ids`, else its position in the input list (or "
        "its sample number), as text."
    )
    scores: tuple[float, ...] = Field(
        description="Bradley-Terry score of each response (logits, mean zero; a weak Gaussian prior keeps them "
        "finite): P(i beats j) = sigmoid(scores[i] - scores[j])."
    )
    score_errors: tuple[float, ...] = Field(description="Standard error of each score (Laplace approximation).")
    comparisons: tuple[JudgedComparison, ...] = Field(description="Every judged pair, with its soft label.")
    design: str = Field(description="Which pairs were judged: 'all', or 'round_robin:N' (N pairs per prompt).")
    intransitive_triples: int = Field(ge=0, description="Triples of responses the judged pairs order in a cycle.")
    flags: tuple[str, ...] = Field(description=f"Warnings about the ranking: {', '.join(RANKING_FLAGS)}.")
    judge_model: str = Field(description="Id of the judge model.")
    source: str = Field(
        description="How the responses were made, then ':' and the input file's name (policy_samples:FILE, "
        "responses_file:FILE)."
    )

    @model_validator(mode="after")
    def _columns_agree(self) -> RankingRecord:
        k = len(self.responses)
        for name in ("response_ids", "scores", "score_errors"):
            if len(getattr(self, name)) != k:
                raise ValueError(f"{name} must hold one value per response ({k}), got {len(getattr(self, name))}")
        if len(set(self.response_ids)) != k:
            raise ValueError("response_ids must be distinct")
        for comparison in self.comparisons:
            if not (comparison.a < k and comparison.b < k and comparison.a != comparison.b):
                raise ValueError(f"comparison ({comparison.a}, {comparison.b}) does not name two of the {k} responses")
        if self.prompt_text != prompt_text(self.prompt):
            raise ValueError("prompt_text must be the last user turn of prompt")
        return self


class Completion(BaseModel):
    """One response of an UltraFeedback-shaped row, with its score."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    response_id: str = Field(description="The response's id (`response_ids` of the ranking).")
    response: str = Field(description="The response as plain text.")
    score: float = Field(description="Its Bradley-Terry score (logits, mean zero over the prompt's responses).")
    score_error: float = Field(description="The score's standard error.")
    rank: int = Field(ge=1, description="1 for the highest score of the prompt, 2 for the next, ...")


class UltraFeedbackRecord(Record):
    """A ranking in the shape of UltraFeedback: one row per prompt, each response a scored completion.

    `labeler export --ultrafeedback` writes the rankings split in this shape (split `ultrafeedback`).

    >>> ranking = RankingRecord(id="r", prompt=(Message(role="user", content="Hi?"),), prompt_text="Hi?",
    ...     responses=("a", "b"), response_ids=("0", "1"), scores=(-0.5, 0.5), score_errors=(1.0, 1.0),
    ...     comparisons=(), design="all", intransitive_triples=0, flags=(), judge_model="m", source="s")
    >>> [(c.response, c.rank) for c in UltraFeedbackRecord.from_ranking(ranking).completions]
    [('a', 2), ('b', 1)]
    """

    split: ClassVar[str] = "ultrafeedback"

    source_id: str | None = Field(None, description="The input row's own `id`, or null when it had none.")
    prompt: str = Field(description="The last user turn, as plain text (UltraFeedback's instruction).")
    prompt_messages: tuple[Message, ...] = Field(min_length=1, description="The whole conversation, as messages.")
    completions: tuple[Completion, ...] = Field(description="Every response with its score, in the input's order.")
    judge_model: str = Field(description="Id of the judge model.")
    source: str = Field(description="How the responses were made, then ':' and the input file's name.")

    @classmethod
    def from_ranking(cls, ranking: RankingRecord) -> UltraFeedbackRecord:
        order = sorted(range(len(ranking.scores)), key=lambda i: (-ranking.scores[i], i))
        rank = {index: position + 1 for position, index in enumerate(order)}
        completions = tuple(
            Completion(response_id=rid, response=text, score=score, score_error=error, rank=rank[i])
            for i, (rid, text, score, error) in enumerate(
                zip(ranking.response_ids, ranking.responses, ranking.scores, ranking.score_errors))
        )
        return cls(id=ranking.id, source_id=ranking.source_id, prompt=ranking.prompt_text,
                   prompt_messages=ranking.prompt, completions=completions, judge_model=ranking.judge_model,
                   source=ranking.source)


SPLITS: dict[str, type[Record]] = {
    "sft": SFTRecord, "preferences": PreferenceRecord, "rankings": RankingRecord, "ultrafeedback": UltraFeedbackRecord,
}
"""Every split a run directory can hold, by name (the sub-folder of the run)."""


def record_type(split: str) -> type[Record]:
    """The record class of a split name; `KeyError` names the known splits.

    >>> record_type("sft").__name__
    'SFTRecord'
    """
    try:
        return SPLITS[split]
    except KeyError:
        raise KeyError(f"unknown split {split!r}; known: {', '.join(sorted(SPLITS))}") from None


# --- Arrow schema derivation ------------------------------------------------------------------

_SCALARS: dict[type, pa.DataType] = {
    str: pa.string(),
    float: pa.float64(),
    bool: pa.bool_(),
    int: pa.int64(),
}


def arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(Arrow type, nullable) of a field annotation; `TypeError` for annotations with no Arrow form.

    >>> arrow_type(tuple[str, ...])
    (ListType(list<item: string not null>), False)
    >>> arrow_type(float | None)
    (DataType(double), True)
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        if len(members) != 1:
            raise TypeError(f"no Arrow type for the union {annotation!r}")
        inner, _ = arrow_type(members[0])
        return inner, True
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    if origin in (tuple, list):
        item_types = {arg for arg in args if arg is not Ellipsis}
        if len(item_types) != 1:
            raise TypeError(f"no Arrow type for {annotation!r}: list items must share one type")
        item, item_nullable = arrow_type(item_types.pop())
        return pa.list_(pa.field("item", item, nullable=item_nullable)), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(_fields_of(annotation, with_descriptions=False)), False
    raise TypeError(f"no Arrow type for {annotation!r}")


def _fields_of(model: type[BaseModel], *, with_descriptions: bool) -> list[pa.Field]:
    fields = []
    for name, info in model.model_fields.items():
        data_type, nullable = arrow_type(info.annotation)
        # Top-level descriptions travel in the file, so a shard documents its own columns.
        metadata = {"description": info.description} if with_descriptions and info.description else None
        fields.append(pa.field(name, data_type, nullable=nullable, metadata=metadata))
    return fields


@functools.cache
def _schema_of(model: type[Record]) -> pa.Schema:
    return pa.schema(_fields_of(model, with_descriptions=True))


def type_name(data_type: pa.DataType) -> str:
    """A short spelling of an Arrow type for documentation (no item names, no nullability).

    >>> type_name(arrow_type(tuple[PrincipleScore, ...])[0])
    'list<struct<principle_id: string, score: double>>'
    """
    if isinstance(data_type, pa.ListType):
        return f"list<{type_name(data_type.value_type)}>"
    if isinstance(data_type, pa.StructType):
        return "struct<" + ", ".join(f"{field.name}: {type_name(field.type)}" for field in data_type) + ">"
    return str(data_type)


def column_descriptions(model: type[Record]) -> Iterable[tuple[str, str, str]]:
    """(column, short Arrow type, description) for each column of a split, for documentation."""
    for field in model.arrow_schema():
        description = (field.metadata or {}).get(b"description", b"").decode()
        yield field.name, type_name(field.type), description
