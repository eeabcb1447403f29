"""Reading user files (`labeler.core.input_files`): regular files only, bounded on the bytes read, and parsed
JSON/YAML checked for aliases, integer lengths, nesting and lone surrogates, each problem naming the file,
the line and the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labeler.cli.options import ConfigCommand, Opt, engine_options, work_options
from labeler.core import input_files
from labeler.core.errors import InputError, InputErrors
from labeler.core.input_files import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    check_regular_file,
    iter_input_lines,
    parse_json,
    parse_yaml,
    read_document,
    read_input_bytes,
    read_input_text,
)

HUGE = "7" * (MAX_INT_DIGITS + 1)
LONGEST = "7" * MAX_INT_DIGITS


def error_of(call: object, *args: object, **kwargs: object) -> InputError:
    with pytest.raises(InputError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


# -- what is opened -----------------------------------------------------------------------------------


def test_a_regular_file_and_a_link_to_one_are_read(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"hello")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    assert read_input_bytes(tmp_path / "link.txt", limit=5, what="a file") == b"hello"


def test_a_device_is_refused_even_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    for path in (Path("/dev/zero"), tmp_path / "zero.yaml"):
        error = error_of(read_input_bytes, path, limit=1 << 20, what="a file")
        assert error.file == str(path)
        assert error.message.startswith("is a character device, not a regular file")


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # nobody writes to it: an open for reading would wait forever
    assert "named pipe (FIFO)" in error_of(read_input_text, fifo, limit=100, what="a file", where="--x").message
    assert error_of(check_regular_file, fifo).file == str(fifo)
    with pytest.raises(InputError, match="named pipe"):
        list(iter_input_lines(fifo))


def test_missing_folder_and_broken_link_say_which(tmp_path: Path) -> None:
    (tmp_path / "broken").symlink_to(tmp_path / "nowhere")
    assert error_of(check_regular_file, tmp_path / "absent").message == "file not found"
    assert error_of(check_regular_file, tmp_path / "broken").message == "is a broken symbolic link"
    assert error_of(check_regular_file, tmp_path).message == "is a folder, not a file"


def test_the_limit_counts_the_bytes_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"x" * 101)
    assert read_input_bytes(path, limit=101, what="a file") == b"x" * 101
    error = error_of(read_input_bytes, path, limit=100, what="a run config")
    assert "the limit for a run config is 100 bytes" in error.message


def test_text_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jinja"
    path.write_bytes(b"\xef\xbb\xbfone\ntwo \xe9\n")
    error = error_of(read_input_text, path, limit=100, what="a template")
    assert (error.line, error.message) == (2, "not UTF-8 text: byte 0xe9 at offset 11")
    path.write_bytes(b"\xef\xbb\xbfone\n")
    assert read_input_text(path, limit=100, what="a template") == "one\n"  # the byte-order mark dropped


def test_a_line_over_the_row_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(input_files, "MAX_ROW_BYTES", 10)
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"{}\n" + b"x" * 50 + b"\n")
    lines = iter_input_lines(path)
    assert next(lines) == (1, b"{}\n")
    with pytest.raises(InputError) as caught:
        next(lines)
    assert caught.value.line == 2


# -- JSON ---------------------------------------------------------------------------------------------


def test_json_integers_over_the_conversion_limit_name_their_line() -> None:
    assert parse_json(f'{{"n": {LONGEST}}}', file="f.json") == {"n": int(LONGEST)}
    for text in (f'{{"a": 1,\n "n": {HUGE}}}', f'{{"a": 1,\n "n": -{HUGE}}}'):
        error = error_of(parse_json, text, file="f.json")
        assert (error.file, error.line) == ("f.json", 2)
        assert error.message == f"an integer of {len(HUGE)} digits; at most {MAX_INT_DIGITS} are read"


def test_a_jsonl_row_is_named_by_its_own_line() -> None:
    error = error_of(parse_json, f'{{"n": {HUGE}}}', file="rows.jsonl", line=7)
    assert error.line == 7
    assert error_of(parse_json, '{"n": }', file="rows.jsonl", line=7).line == 7


def test_json_nested_too_deeply_is_bad_input_at_any_depth() -> None:
    error = error_of(parse_json, "[" * 100_000 + "]" * 100_000, file="f.json", line=3)
    assert (error.line, error.message) == (3, "invalid JSON: nested too deeply")
    depth = MAX_DEPTH + 1
    error = error_of(parse_json, '{"meta": ' + "[" * depth + "]" * depth + "}", file="f.json", line=3)
    assert (error.where, error.message) == ("field 'meta'", f"nested more than {MAX_DEPTH} levels deep")
    assert parse_json("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1), file="f.json") is not None


def test_a_lone_surrogate_names_the_field() -> None:
    text = '{"messages": [{"role": "user", "content": "hi \\ud800"}]}'
    error = error_of(parse_json, text, file="p.jsonl", line=4)
    assert (error.line, error.where) == (4, "field 'messages[0].content'")
    assert "lone surrogate" in error.message
    assert "lone surrogate" in error_of(parse_json, '{"\\udc00": 1}', file="p.jsonl").message
    assert parse_json('{"prompt": "caf\\u00e9 \\ud83d\\ude00"}', file="p.jsonl") == {"prompt": "café 😀"}


def test_json_duplicate_keys_are_refused_only_when_asked() -> None:
    assert parse_json('{"a": 1, "a": 2}', file="f.json") == {"a": 2}
    with pytest.raises(InputErrors) as caught:
        parse_json('{"a": 1, "a": 2}', file="f.json", refuse_duplicates=True)
    assert caught.value.errors[0].message == "duplicate key 'a' in one object"


# -- YAML ---------------------------------------------------------------------------------------------

BOMB = "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n"


def test_yaml_aliases_are_refused_before_expanding_with_the_line() -> None:
    error = error_of(parse_yaml, BOMB, file="run.yaml", what="a run config")
    assert error.line == 2
    assert error.message == "invalid YAML: YAML aliases (*name) are not supported in run configs (column 8)"
    merge = "base: &base {dtype: auto}\nengine:\n  <<: *base\n"
    assert error_of(parse_yaml, merge, file="e.yaml", what="an engine config").line == 3
    assert parse_yaml("a: &anchor [1]\n", file="x.yaml", what="a file").data == {"a": [1]}  # an anchor alone


def test_yaml_integers_over_the_conversion_limit_name_their_line() -> None:
    assert parse_yaml(f"n: {LONGEST}\n", file="c.yaml", what="a file").data == {"n": int(LONGEST)}
    for value in (HUGE, "-" + HUGE, "0x" + "f" * 4000, "1_" + HUGE):
        error = error_of(parse_yaml, f"name: x\nweight: {value}\n", file="c.yaml", what="a file")
        assert error.line == 2, value
        assert "digits; at most" in error.message


def test_yaml_nested_too_deeply_is_bad_input() -> None:
    error = error_of(parse_yaml, "a: " + "[" * 5000 + "]" * 5000 + "\n", file="c.yaml", what="a file")
    assert error.message == "invalid YAML: nested too deeply"
    indented = "".join("  " * level + "k:\n" for level in range(MAX_DEPTH + 5))
    error = error_of(parse_yaml, "name: x\n" + indented, file="c.yaml", what="a file")
    assert (error.line, error.where) == (2, "field 'k'")


def test_yaml_lone_surrogate_names_field_and_line() -> None:
    error = error_of(parse_yaml, 'name: x\nstop: ["ok", "\\ud800"]\n', file="run.yaml", what="a file", where="--x")
    assert (error.line, error.where) == (2, "--x, field 'stop[1]'")


def test_yaml_duplicate_keys_are_all_reported_with_lines() -> None:
    with pytest.raises(InputErrors) as caught:
        parse_yaml("a: 1\nb: 2\na: 3\nb: 4\n", file="c.yaml", what="a file")
    assert [(e.line, e.message) for e in caught.value.errors] == [(3, "duplicate key 'a'"), (4, "duplicate key 'b'")]


def test_yaml_lines_of_every_place() -> None:
    document = parse_yaml("name: x\nstages:\n  revise:\n    rounds: 1\n", file="run.yaml", what="a file")
    assert document.lines[("stages", "revise", "rounds")] == 4


def test_read_document_parses_by_suffix(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"a": [1]}')
    (tmp_path / "c.yaml").write_text("a: [1]\n")
    assert read_document(tmp_path / "c.json", what="a file").data == {"a": [1]}
    assert read_document(tmp_path / "c.yaml", what="a file").lines[("a",)] == 1
    (tmp_path / "d.json").write_text('{"a": 1, "a": 2}')
    with pytest.raises(InputErrors):
        read_document(tmp_path / "d.json", what="a file")


# -- the files' values, as the command line takes them ------------------------------------------------


def _label_command() -> ConfigCommand:
    from labeler.stages.label import LabelConfig

    opts = (Opt("constitution"), Opt("pairs"), Opt("out"), *engine_options("judge"), *work_options())
    return ConfigCommand("label", LabelConfig, opts, lambda config: None)


def test_a_bad_engine_config_value_is_blamed_on_the_file_and_key(tmp_path: Path) -> None:
    engine = tmp_path / "engine.yaml"
    engine.write_text("dtype: auto\nbatch_size: 0\n")
    command = _label_command()
    given = {"constitution": tmp_path / "c.yaml", "pairs": tmp_path / "p.jsonl", "out": tmp_path / "out",
             "judge__file": engine}
    with pytest.raises(InputError) as caught:
        command.build(given)
    assert caught.value.render().startswith(f"{engine}:2 (--engine-config, key batch_size): ")
    assert "--engine-batch-size" not in caught.value.render()
    # the same value typed as the option is the option's, file or no file
    with pytest.raises(InputError) as caught:
        command.build({**given, "judge__batch_size": 0})
    assert caught.value.render().startswith("--engine-batch-size: ")


def test_a_bad_shard_index_is_one_sentence_without_the_section(tmp_path: Path) -> None:
    given = {"constitution": tmp_path / "c.yaml", "pairs": tmp_path / "p.jsonl", "out": tmp_path / "out",
             "work__shard_index": 5, "work__num_shards": 2}
    with pytest.raises(InputError) as caught:
        _label_command().build(given)
    shown = _label_command().named(caught.value).render()  # as the command shows it
    assert shown == "--shard-index 5 must be below --num-shards 2 (the parts are numbered 0 to 1)"
