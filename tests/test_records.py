"""Record models and their Arrow schemas: exact columns, round trips through Arrow IPC, validation."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from pydantic import ValidationError

from labeler.engine.base import Message
from labeler.records import (
    SPLITS,
    PreferenceRecord,
    PrincipleScore,
    Record,
    RevisionRound,
    SFTRecord,
    arrow_type,
    record_id,
)


def preference(i: int = 0, **overrides: object) -> PreferenceRecord:
    prompt, a, b = f"Question {i}?", f"Answer one to {i}.", f"Answer two to {i}."
    fields: dict[str, object] = dict(
        id=record_id(prompt, a, b),
        prompt=prompt,
        prompt_messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        response_a=a,
        response_b=b,
        chosen=b,
        rejected=a,
        p_a=0.3,
        p_a_ab=0.4,
        p_a_ba=0.2,
        mass_ab=0.9,
        mass_ba=0.05,
        logprobs_ab=[math.log(0.36), math.log(0.54)],
        logprobs_ba=[-math.inf, math.log(0.05)],
        consistent=True,
        principle_ids=["harm", "honest"],
        principle_scores=[{"principle_id": "harm", "score": -0.4}, {"principle_id": "honest", "score": 1.5}],
        margin=0.4,
        judge_model="judge-model",
        source="policy-samples",
        flags=["low_mass"],
    )
    fields.update(overrides)
    return PreferenceRecord.model_validate(fields)


def sft(i: int = 0, rounds: int = 2) -> SFTRecord:
    prompt = f"Question {i}?"
    steps = [
        RevisionRound(principle_id=f"p{k}", critique=f"critique {k} of {i}", revision=f"revision {k} of {i}")
        for k in range(rounds)
    ]
    final = steps[-1].revision if steps else f"initial {i}"
    messages = (Message(role="user", content=prompt),)
    return SFTRecord(
        id=record_id(prompt),
        prompt=prompt,
        prompt_messages=messages,
        initial=f"initial {i}",
        revision=final,
        rounds=tuple(steps),
        messages=(*messages, Message(role="assistant", content=final)),
        model="policy-model",
    )


def _list(item: pa.DataType) -> pa.DataType:
    return pa.list_(pa.field("item", item, nullable=False))


def _struct(**fields: pa.DataType) -> pa.DataType:
    return pa.struct([pa.field(name, kind, nullable=False) for name, kind in fields.items()])


MESSAGE = _struct(role=pa.string(), content=pa.string())

# The contract of SPEC.md, written out by hand: the derived schemas must equal these exactly.
EXPECTED = {
    "preferences": [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("prompt_messages", _list(MESSAGE)),
        ("response_a", pa.string()),
        ("response_b", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("p_a", pa.float64()),
        ("p_a_ab", pa.float64()),
        ("p_a_ba", pa.float64()),
        ("mass_ab", pa.float64()),
        ("mass_ba", pa.float64()),
        ("logprobs_ab", _list(pa.float64())),
        ("logprobs_ba", _list(pa.float64())),
        ("consistent", pa.bool_()),
        ("principle_ids", _list(pa.string())),
        ("principle_scores", _list(_struct(principle_id=pa.string(), score=pa.float64()))),
        ("margin", pa.float64()),
        ("judge_model", pa.string()),
        ("source", pa.string()),
        ("flags", _list(pa.string())),
    ],
    "sft": [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("prompt_messages", _list(MESSAGE)),
        ("initial", pa.string()),
        ("revision", pa.string()),
        ("rounds", _list(_struct(principle_id=pa.string(), critique=pa.string(), revision=pa.string()))),
        ("messages", _list(MESSAGE)),
        ("model", pa.string()),
    ],
}


@pytest.mark.parametrize("split", sorted(EXPECTED))
def test_schema_is_exactly_the_specified_columns(split: str) -> None:
    expected = pa.schema([pa.field(name, kind, nullable=False) for name, kind in EXPECTED[split]])
    schema = SPLITS[split].arrow_schema()
    assert schema.equals(expected), f"{schema}\n!=\n{expected}"
    assert schema.names == list(SPLITS[split].model_fields)


def test_every_column_documents_itself_in_the_schema() -> None:
    for record_type in SPLITS.values():
        for field in record_type.arrow_schema():
            assert field.metadata and field.metadata[b"description"], (record_type.__name__, field.name)


def test_registry_names_match_the_classes() -> None:
    assert {name: cls.split for name, cls in SPLITS.items()} == {name: name for name in SPLITS}


@pytest.mark.parametrize("record", [preference(1), sft(2), sft(3, rounds=0)], ids=["pref", "sft", "sft-no-rounds"])
def test_round_trip_through_an_arrow_stream(record: Record) -> None:
    record_type = type(record)
    table = record_type.to_table([record])
    assert table.schema.equals(record_type.arrow_schema())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    back = pa.ipc.open_stream(sink.getvalue()).read_all()
    assert back.schema.equals(record_type.arrow_schema())
    assert record_type.from_table(back) == [record]
    assert record_type.from_row(record.to_row()) == record


def test_row_values_are_the_plain_columns() -> None:
    row = preference().to_row()
    assert row["prompt_messages"][1] == {"role": "user", "content": "Question 0?"}
    assert row["principle_scores"][1] == {"principle_id": "honest", "score": 1.5}
    assert row["logprobs_ba"][0] == -math.inf
    assert list(row) == [name for name, _ in EXPECTED["preferences"]]


def test_chosen_must_be_one_of_the_pair() -> None:
    assert preference(chosen="Answer one to 0.", rejected="Answer two to 0.").chosen == "Answer one to 0."
    with pytest.raises(ValidationError, match="chosen and rejected"):
        preference(chosen="something else")
    with pytest.raises(ValidationError, match="chosen and rejected"):
        preference(chosen="Answer two to 0.", rejected="Answer two to 0.")


@pytest.mark.parametrize(
    "field, value",
    [("p_a", 1.2), ("p_a_ab", -0.1), ("p_a_ba", math.nan), ("mass_ab", -0.5), ("logprobs_ab", [0.0, 0.0, 0.0]),
     ("id", ""), ("unknown_column", 1)],
)
def test_bad_values_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        preference(**{field: value})
    assert field in str(info.value)


def test_records_are_frozen() -> None:
    record = preference()
    with pytest.raises(ValidationError):
        record.p_a = 0.9  # type: ignore[misc]
    assert isinstance(record.principle_scores[0], PrincipleScore)
    assert isinstance(record.flags, tuple)


def test_a_new_split_is_one_class() -> None:
    class Graded(Record):
        split = "graded"
        score: float | None
        tags: tuple[str, ...]

    schema = Graded.arrow_schema()
    assert schema.field("score").nullable and schema.field("score").type == pa.float64()
    assert not schema.field("tags").nullable
    rows = [Graded(id="x", score=None, tags=("a",)), Graded(id="y", score=0.5, tags=())]
    assert Graded.from_table(Graded.to_table(rows)) == rows


def test_types_without_an_arrow_form_are_refused() -> None:
    with pytest.raises(TypeError, match="no Arrow type"):
        arrow_type(dict[str, int])
    with pytest.raises(TypeError, match="share one type"):
        arrow_type(tuple[str, int])


def test_record_id_is_stable_and_unambiguous() -> None:
    assert record_id("p", "a", "b") == record_id("p", "a", "b")
    assert record_id("p", "a", "b") != record_id("p", "b", "a")
    assert record_id("ab", "c") != record_id("a", "bc")
    assert len(record_id("x")) == 32 and int(record_id("x"), 16) >= 0
