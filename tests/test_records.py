"""Record models and their Arrow schemas: exact columns, round trips through Arrow IPC, validation."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from labeler.core.chat import Message
from labeler.core.errors import InputError
from labeler.core.records import (
    SPLITS,
    PreferenceRecord,
    PrincipleScore,
    Record,
    RevisionRound,
    SFTRecord,
    arrow_type,
    record_id,
)
from labeler.store.shards import decode_shard, encode_shard


def preference(i: int = 0, **overrides: object) -> PreferenceRecord:
    prompt, a, b = f"Question {i}?", f"Answer one to {i}.", f"Answer two to {i}."
    fields: dict[str, object] = dict(
        id=record_id(prompt, a, b),
        source_id=f"row-{i}",
        prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        chosen=[{"role": "assistant", "content": b}],
        rejected=[{"role": "assistant", "content": a}],
        prompt_text=prompt,
        chosen_text=b,
        rejected_text=a,
        response_a=a,
        response_b=b,
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
        source="pairs_file:pairs.jsonl",
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
        source_id=None,
        prompt=prompt,
        prompt_messages=messages,
        initial=f"initial {i}",
        revision=final,
        rounds=tuple(steps),
        messages=(*messages, Message(role="assistant", content=final)),
        model="policy-model",
        source="prompts_file:prompts.jsonl",
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
        ("source_id", pa.string()),
        ("prompt", _list(MESSAGE)),
        ("chosen", _list(MESSAGE)),
        ("rejected", _list(MESSAGE)),
        ("prompt_text", pa.string()),
        ("chosen_text", pa.string()),
        ("rejected_text", pa.string()),
        ("response_a", pa.string()),
        ("response_b", pa.string()),
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
        ("input_chosen", pa.string()),
    ],
    "sft": [
        ("id", pa.string()),
        ("source_id", pa.string()),
        ("prompt", pa.string()),
        ("prompt_messages", _list(MESSAGE)),
        ("initial", pa.string()),
        ("revision", pa.string()),
        ("rounds", _list(_struct(principle_id=pa.string(), critique=pa.string(), revision=pa.string()))),
        ("messages", _list(MESSAGE)),
        ("model", pa.string()),
        ("source", pa.string()),
    ],
}
NULLABLE = {"source_id", "input_chosen"}  # null when the input row has no id (no label) of its own


@pytest.mark.parametrize("split", sorted(EXPECTED))
def test_schema_is_exactly_the_specified_columns(split: str) -> None:
    expected = pa.schema([pa.field(name, kind, nullable=name in NULLABLE) for name, kind in EXPECTED[split]])
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
    assert row["prompt"][1] == {"role": "user", "content": "Question 0?"}
    assert list(row["chosen"]) == [{"role": "assistant", "content": "Answer two to 0."}]
    assert row["principle_scores"][1] == {"principle_id": "honest", "score": 1.5}
    assert row["logprobs_ba"][0] == -math.inf
    assert list(row) == [name for name, _ in EXPECTED["preferences"]]


def _say(text: str, role: str = "assistant") -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def test_chosen_must_be_one_of_the_pair() -> None:
    one, two = "Answer one to 0.", "Answer two to 0."
    swapped = preference(chosen=_say(one), chosen_text=one, rejected=_say(two), rejected_text=two)
    assert swapped.chosen_text == one and swapped.chosen[0].content == one
    with pytest.raises(ValidationError, match="chosen and rejected"):
        preference(chosen=_say("something else"), chosen_text="something else")
    with pytest.raises(ValidationError, match="chosen and rejected"):
        preference(rejected=_say(two), rejected_text=two)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"chosen": _say("Answer one to 0.")}, "chosen_text must be the content"),
        ({"rejected": _say("Answer one to 0.", role="user")}, "one assistant message"),
        ({"prompt_text": "Be brief."}, "last user turn"),
        ({"prompt": _say("Be brief.", role="system")}, "no user turn"),
        ({"chosen": [*_say("Answer two to 0."), *_say("more")]}, "chosen"),
        ({"prompt": []}, "prompt"),
    ],
)
def test_the_conversational_columns_and_their_texts_agree(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        preference(**overrides)


def test_a_multi_turn_conversation_keeps_every_turn_in_prompt() -> None:
    turns = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Human: my neighbour's dog barks all night."},
        {"role": "assistant", "content": "That sounds exhausting. Have you talked to them?"},
        {"role": "user", "content": "Yes, twice. What else can I do?"},
    ]
    record = preference(prompt=turns, prompt_text=turns[-1]["content"])
    assert [m.model_dump() for m in record.prompt] == turns
    assert PreferenceRecord.from_table(PreferenceRecord.to_table([record])) == [record]


def test_a_shard_of_the_earlier_layout_reads_in_the_current_columns() -> None:
    """Runs written before the conversational columns (prompt text + prompt_messages, chosen as text)
    still read, so they can be exported, reported on and trained on; resuming them is refused."""
    record = preference(3)
    row = record.to_row()
    old = {
        "id": row["id"], "prompt": row["prompt_text"], "prompt_messages": row["prompt"],
        "response_a": row["response_a"], "response_b": row["response_b"], "chosen": row["chosen_text"],
        "rejected": row["rejected_text"],
        **{k: row[k] for k in ("p_a", "p_a_ab", "p_a_ba", "mass_ab", "mass_ba", "logprobs_ab", "logprobs_ba",
                               "consistent", "principle_ids", "principle_scores", "margin", "judge_model")},
        "source": "pairs_file", "flags": row["flags"],
    }  # fmt: skip
    data = encode_shard(pa.Table.from_pylist([old]))
    table = decode_shard(data, file=Path("shard-00000.arrow"), record_type=PreferenceRecord, upgrade=True)
    assert table.schema.equals(PreferenceRecord.arrow_schema(), check_metadata=True)
    (back,) = PreferenceRecord.from_table(table)
    assert back == record.model_copy(update={"source_id": None, "source": "pairs_file"})
    with pytest.raises(InputError, match="earlier labeler"):
        decode_shard(data, file=Path("shard-00000.arrow"), record_type=PreferenceRecord)

    sft_row = sft(1).to_row()
    del sft_row["source_id"], sft_row["source"]
    table = decode_shard(encode_shard(pa.Table.from_pylist([sft_row])), file=Path("s.arrow"), record_type=SFTRecord,
                         upgrade=True)  # fmt: skip
    assert SFTRecord.from_table(table) == [sft(1).model_copy(update={"source": "prompts_file"})]


def test_other_columns_are_still_refused_when_upgrading() -> None:
    data = encode_shard(pa.table({"id": ["x"], "text": ["hello"]}))
    with pytest.raises(InputError, match="do not match"):
        decode_shard(data, file=Path("s.arrow"), record_type=PreferenceRecord, upgrade=True)


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


def test_shards_written_before_input_chosen_read_with_it_null() -> None:
    """The layout just before `input_chosen`: every column but that one, read back with it null."""
    record = preference(3)
    table = PreferenceRecord.to_table([record]).drop_columns(["input_chosen"])
    data = encode_shard(table)
    with pytest.raises(InputError, match="previous layout"):
        decode_shard(data, file=Path("shard-00000.arrow"), record_type=PreferenceRecord)
    upgraded = decode_shard(data, file=Path("shard-00000.arrow"), record_type=PreferenceRecord, upgrade=True)
    assert upgraded.schema.equals(PreferenceRecord.arrow_schema(), check_metadata=True)
    assert PreferenceRecord.from_table(upgraded) == [record.model_copy(update={"input_chosen": None})]


def test_input_chosen_is_a_or_b() -> None:
    record = preference(1)
    assert record.model_copy(update={"input_chosen": "b"}).input_chosen == "b"
    with pytest.raises(ValidationError):
        PreferenceRecord.model_validate({**record.model_dump(), "input_chosen": "chosen"})
