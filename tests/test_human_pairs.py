"""The one reader of human-labelled pairs (eval-judge and score-rm): text and TRL's conversational form."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeler.core.errors import InputError
from labeler.inputs.human_pairs import read_human_labelled_pairs

ROWS = [
    {"prompt": "Is the sky blue?", "chosen": "Yes, on a clear day.", "rejected": "No.", "topic": "facts"},
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": [{"role": "assistant", "content": "5"}],
        "topic": 7,
    },
]


def test_text_and_conversational_rows_read_alike(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in ROWS) + "\n")
    first, second = read_human_labelled_pairs(path, "topic")
    assert (first.chosen, first.rejected, first.group, first.line) == ("Yes, on a clear day.", "No.", "facts", 1)
    assert (second.chosen, second.rejected, second.group, second.line) == ("4", "5", "7", 2)
    assert [m.role for m in second.prompt] == ["system", "user"]
    assert second.conversation(second.rejected) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "5"},
    ]
    assert read_human_labelled_pairs(path)[0].group is None


def test_parquet_reads_like_jsonl(tmp_path: Path) -> None:
    jsonl, parquet = tmp_path / "pairs.jsonl", tmp_path / "pairs.parquet"
    jsonl.write_text(json.dumps(ROWS[0]) + "\n")
    pq.write_table(pa.Table.from_pylist([ROWS[0]]), parquet)
    assert read_human_labelled_pairs(parquet, "topic") == read_human_labelled_pairs(jsonl, "topic")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p", "chosen": [], "rejected": "r"}, "(field 'chosen'): expected text or a list of one"),
        ({"prompt": "p", "chosen": [{"role": "assistant", "content": " "}], "rejected": "r"}, "non-empty text"),
        ({"prompt": "p", "chosen": "c", "rejected": 5}, "(field 'rejected'): expected text"),
        ({"chosen": "c", "rejected": "r"}, "row has none of the fields"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path: Path, row: dict, message: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError) as error:
        read_human_labelled_pairs(path)
    assert f"{path}:2" in str(error.value) and message in str(error.value)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n")
    with pytest.raises(InputError, match="no pairs"):
        read_human_labelled_pairs(path)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "trl"])
def test_a_labeler_export_is_a_file_of_labelled_pairs(tmp_path: Path, fmt: str) -> None:
    """score-rm and eval-judge read an exported preference shard as it is, every turn of the prompt kept."""
    from sample_runs import HH_CONVERSATION, make_run

    from labeler.publish.export import ExportConfig, export_run

    run = make_run(tmp_path, pairs=4)
    export_run(ExportConfig(run=run, out=tmp_path / "out", format=fmt, split=("preferences",)))
    (shard,) = (tmp_path / "out" / "preferences").iterdir()
    pairs = read_human_labelled_pairs(shard)
    assert len(pairs) == 4 and pairs[0].prompt == HH_CONVERSATION
    assert pairs[0].chosen.startswith(("First answer 0", "Second answer 0"))
