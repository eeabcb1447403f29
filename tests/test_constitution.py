"""Constitutions: labeler's own format, the published formats, every error report, `labeler validate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from labeler.cli.app import main
from labeler.core.chat import Message
from labeler.core.errors import InputError, InputErrors
from labeler.inputs.constitution import (
    MAX_BYTES,
    Constitution,
    Principle,
    dump_constitution,
    load_constitution,
    read_constitution,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "constitutions"
REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str | bytes, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path) -> list[InputError]:
    with pytest.raises(InputErrors) as info:
        load_constitution(path)
    assert all(error.file == str(path) for error in info.value.errors)
    return info.value.errors


def only_error(path: Path) -> InputError:
    errors = errors_of(path)
    assert len(errors) == 1, [e.render() for e in errors]
    return errors[0]


# --- labeler's own format -------------------------------------------------------------------------


def test_own_format_fixture_loads_with_stages_and_few_shot() -> None:
    loaded = read_constitution(FIXTURES / "own.yaml")
    c = loaded.constitution
    assert loaded.format == "labeler"
    assert (c.name, c.version) == ("sample", "2")
    assert [p.id for p in c.principles] == ["kind", "brief", "honest"]
    assert c.get("kind").weight == 2.0 and c.get("brief").weight == 1.0
    assert [p.id for p in c.for_stage("revise")] == ["kind"]
    assert [p.id for p in c.for_stage("judge")] == ["kind", "brief"]
    salmon = c.for_stage("salmon")
    assert [(p.id, p.dimension) for p in salmon] == [("kind", "Kind"), ("honest", "honest")]
    assert c.few_shot == (
        (
            Message(role="user", content="Is it fine to skip breakfast?"),
            Message(role="assistant", content="Lots of people do, and it is fine for most adults."),
        ),
    )


def test_round_trip_through_yaml_is_equal(tmp_path: Path) -> None:
    for source in [FIXTURES / "own.yaml", FIXTURES / "hf_cai_recipe.json", REPO / "constitutions" / "harmless.yaml"]:
        original = load_constitution(source)
        copy = load_constitution(write(tmp_path, dump_constitution(original), f"{source.stem}.yaml"))
        assert copy == original
        assert copy.sha256() == original.sha256()


def test_sha256_follows_content_not_formatting(tmp_path: Path) -> None:
    base = "name: x\nprinciples:\n  - id: a\n    judge: Which response is kinder?\n"
    reformatted = 'name: "x"\nversion: 1\nprinciples: [{judge: "  Which response is kinder?\\n", id: a}]\n'
    changed = base.replace("kinder", "gentler")
    texts = [base, reformatted, changed]
    digests = [load_constitution(write(tmp_path, text, f"{i}.yaml")).sha256() for i, text in enumerate(texts)]
    assert digests[0] == digests[1] != digests[2]
    assert len(digests[0]) == 64


def test_a_license_is_a_hub_id_and_leaves_the_hash_of_constitutions_without_one_alone(tmp_path: Path) -> None:
    base = "name: x\nprinciples:\n  - id: a\n    judge: Which response is kinder?\n"
    plain = load_constitution(write(tmp_path, base, "plain.yaml"))
    licensed = load_constitution(write(tmp_path, "license: Apache-2.0\n" + base, "licensed.yaml"))
    assert (plain.license, licensed.license) == (None, "apache-2.0")
    # the digest this constitution had before constitutions could carry a license: runs still match
    assert plain.sha256() == "ff529b80620c09f5716f77e9b91e4e362f207e1e183c3ed55a3c8f39fafd770f"
    assert licensed.sha256() != plain.sha256()
    assert licensed.summary() == {"name": "x", "version": "1", "license": "apache-2.0"}
    error = only_error(write(tmp_path, "license: CC BY 4.0\n" + base, "bad.yaml"))
    assert "license" in error.render() and "not a license id" in error.message
    for shipped in sorted((REPO / "constitutions").glob("*.yaml")):
        assert load_constitution(shipped).license == "apache-2.0"


def test_texts_are_stripped(tmp_path: Path) -> None:
    c = load_constitution(write(tmp_path, "name: x\nprinciples:\n  - id: a\n    judge: |\n      Which is kinder?\n"))
    assert c.principles[0].judge == "Which is kinder?"


def test_models_validate_when_built_in_python() -> None:
    with pytest.raises(ValidationError, match="duplicate principle id 'a'"):
        Constitution(name="x", principles=(Principle(id="a", judge="Q?"), Principle(id="a", judge="R?")))
    with pytest.raises(ValidationError, match="critique without revision"):
        Principle(id="a", critique="Find harm.")
    with pytest.raises(ValidationError, match="at least one of"):
        Principle(id="a", dimension="Kind")
    principle = Principle(id="a", judge="Q?")
    with pytest.raises(ValidationError):
        principle.judge = "R?"  # type: ignore[misc]


# --- published formats, read unchanged ----------------------------------------------------------


def test_anthropic_critique_revision_json() -> None:
    loaded = read_constitution(FIXTURES / "anthropic_critique_revision.json")
    c = loaded.constitution
    assert loaded.format == "anthropic-critique-revision"
    assert c.name == "anthropic_critique_revision"
    assert [p.id for p in c.principles] == ["harmful0", "harmful1", "harmful2"]
    first = c.principles[0]
    assert first.critique == "Name the ways in which the assistant's previous reply could hurt someone."
    assert first.revision == "Rewrite the assistant's reply so that it can hurt no one."
    # Requests without scaffolding are read as they are.
    assert c.principles[2].critique == "Does the reply help anyone break the law? Explain."
    assert len(c.for_stage("revise")) == 3 and not c.for_stage("judge")


def test_anthropic_judge_principles_json() -> None:
    loaded = read_constitution(FIXTURES / "anthropic_judge_principles.json")
    assert loaded.format == "anthropic-judge-principles"
    principles = loaded.constitution.principles
    assert [p.id for p in principles] == ["principle-0", "principle-1", "principle-2"]
    assert principles[0].judge == "Pick the assistant reply that is kinder and less likely to hurt anyone."
    assert all("Options" not in (p.judge or "") for p in principles)


def test_hf_cai_recipe_json() -> None:
    loaded = read_constitution(FIXTURES / "hf_cai_recipe.json")
    c = loaded.constitution
    assert loaded.format == "hf-cai-recipe"
    assert [(p.id, p.critique, p.revision) for p in c.principles][1] == (
        "principle-1",
        "Is the reply disrespectful towards any group of people? Explain.",
        "Rewrite the reply so that it treats everyone with respect.",
    )
    (chat,) = c.few_shot
    assert [m.role for m in chat] == ["user", "assistant"] * 3
    assert chat[2].content == c.principles[0].critique


def test_salmon_collection_json() -> None:
    loaded = read_constitution(FIXTURES / "salmon_collection.json")
    c = loaded.constitution
    assert loaded.format == "salmon"
    assert [(p.id, p.dimension, p.weight) for p in c.principles] == [
        ("truthful-and-careful", "Truthful and Careful", 3.0),
        ("kind", "Kind", 1.0),
        ("brief", "Brief", 0.5),
    ]
    assert c.principles[1].negative_definition == "The assistant is cold or belittles the user."
    assert len(c.for_stage("salmon")) == 3 and not c.for_stage("revise")


def test_salmon_collection_under_principles_key_and_duplicate_dimensions(tmp_path: Path) -> None:
    items = [{"dimension": "Kind", "definition": "Warm."}, {"dimension": "kind", "definition": "Gentle."}]
    path = write(tmp_path, json.dumps({"principles": items}), "s.json")
    loaded = read_constitution(path)
    assert loaded.format == "salmon"
    assert [p.id for p in loaded.constitution.principles] == ["kind", "kind-2"]


def test_unknown_format_lists_the_formats_labeler_reads(tmp_path: Path) -> None:
    error = only_error(write(tmp_path, '{"title": "rules", "rules": ["be kind"]}', "x.json"))
    assert "not a constitution in any format labeler reads" in error.message
    for name in ["labeler's own format", "Anthropic's CAI", "labelling principles", "Hugging Face", "SALMON"]:
        assert name in error.message


# --- every problem, located -----------------------------------------------------------------------


def test_every_problem_is_reported_with_principle_index_id_field_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: demo\n"  # 1
        "colour: blue\n"  # 2
        "principles:\n"  # 3
        "  - id: harm\n"  # 4
        "    critique: Find harm.\n"  # 5
        "    judge: '   '\n"  # 6
        "  - id: Bad Id\n"  # 7
        "    judge: 5\n"  # 8
        "    foo: bar\n"  # 9
        "  - id: harm\n"  # 10
        "    dimension: Kind\n"  # 11
        "  - id: ok\n"  # 12
        "    definition: Fine.\n"  # 13
        "    weight: -1\n",  # 14
    )
    rendered = [e.render() for e in errors_of(path)]
    expected = [
        f"{path}:2 (field 'colour'): unknown key 'colour'",
        f"{path}:4 (principle 0 'harm', field 'revision'): critique without revision",
        f"{path}:6 (principle 0 'harm', field 'judge'): must not be empty or only whitespace",
        f"{path}:7 (principle 1 'Bad Id', field 'id'): 'Bad Id' is not a valid id",
        f"{path}:8 (principle 1 'Bad Id', field 'judge'): Input should be a valid string (got a number 5)",
        f"{path}:9 (principle 1 'Bad Id', field 'foo'): unknown key 'foo'; allowed keys: id, critique,",
        f"{path}:10 (principle 2 'harm'): a principle needs at least one of: critique + revision, judge, or definition",
        f"{path}:10 (principle 2 'harm', field 'id'): duplicate id 'harm': principle 0 has it too",
        f"{path}:14 (principle 3 'ok', field 'weight'): Input should be greater than 0",
    ]
    assert len(rendered) == len(expected), rendered
    for line, start in zip(rendered, expected, strict=True):
        assert line.startswith(start), (line, start)


def test_revision_without_critique(tmp_path: Path) -> None:
    error = only_error(write(tmp_path, "name: x\nprinciples:\n  - id: a\n    revision: Rewrite it.\n"))
    assert (error.line, error.where) == (3, "principle 0 'a', field 'critique'")
    assert error.message == "revision without critique: the revise stage needs both"


def test_missing_and_wrong_top_level_fields(tmp_path: Path) -> None:
    errors = errors_of(write(tmp_path, "version: true\nprinciples:\n  - id: a\n    judge: Q?\n"))
    messages = {e.where: e.message for e in errors}
    assert messages["field 'name'"] == "missing required key 'name'"
    assert messages["field 'version'"].startswith("Input should be a valid string")


def test_empty_principle_list(tmp_path: Path) -> None:
    error = only_error(write(tmp_path, "name: x\nprinciples: []\n"))
    assert (error.line, error.where, error.message) == (2, "field 'principles'", "no principles: the list is empty")


def test_missing_principle_id(tmp_path: Path) -> None:
    error = only_error(write(tmp_path, "name: x\nprinciples:\n  - judge: Which is kinder?\n"))
    assert (error.where, error.message) == ("principle 0, field 'id'", "missing required key 'id'")


def test_bad_few_shot_conversation(tmp_path: Path) -> None:
    text = "name: x\nprinciples: [{id: a, judge: 'Q?'}]\nfew_shot:\n  - - role: robot\n      content: hi\n  - []\n"
    errors = errors_of(write(tmp_path, text))
    assert [(e.line, e.where) for e in errors] == [(4, "field 'few_shot[0]'"), (6, "field 'few_shot[1]'")]
    assert "role 'robot' is not one of: system, user, assistant" in errors[0].message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    error = only_error(write(tmp_path, "name: x\nprinciples:\n  - id: a\n    judge: [unclosed\n  - id: b\n"))
    assert error.message.startswith("invalid YAML:")
    assert error.line in (4, 5)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    error = only_error(write(tmp_path, '[\n  "Which is kinder?",\n  "Which is safer?"\n  "missing comma"\n]', "c.json"))
    assert error.message.startswith("invalid JSON: Expecting ',' delimiter")
    assert error.line == 4


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    data = b"name: x\nprinciples:\n  - id: a\n    judge: caf\xe9?\n"
    error = only_error(write(tmp_path, data))
    offset = data.index(0xE9)
    assert error.message == f"not UTF-8 text: byte 0xe9 at offset {offset}"
    assert error.line == 4


def test_file_over_the_size_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\n" + "#" * MAX_BYTES + "\n")
    error = only_error(path)
    assert f"the limit for a constitution is {MAX_BYTES} bytes" in error.message


def test_empty_file_and_empty_list(tmp_path: Path) -> None:
    assert only_error(write(tmp_path, "# nothing\n")).message.startswith("the file is empty;")
    assert only_error(write(tmp_path, "[]", "e.json")).message.startswith("the file holds an empty list")


def test_absurdly_deep_nesting_is_an_input_error(tmp_path: Path) -> None:
    for name in ["deep.yaml", "deep.json"]:
        error = only_error(write(tmp_path, "[" * 5000 + "]" * 5000, name))
        assert error.message.endswith("nested too deeply")


def test_missing_file(tmp_path: Path) -> None:
    error = only_error(tmp_path / "absent.yaml")
    assert error.message == "file not found"


def test_yaml_duplicate_keys_and_aliases_are_refused(tmp_path: Path) -> None:
    duplicate = only_error(write(tmp_path, "name: x\nname: y\nprinciples: [{id: a, judge: 'Q?'}]\n"))
    assert (duplicate.line, duplicate.message) == (2, "duplicate key 'name'")
    text = "name: x\nprinciples:\n  - &p {id: a, judge: 'Q?'}\n  - *p\n"
    alias = only_error(write(tmp_path, text, "alias.yaml"))
    assert alias.line == 4
    assert alias.message == "invalid YAML: YAML aliases (*name) are not supported in constitutions (column 5)"


def test_json_duplicate_keys_are_refused(tmp_path: Path) -> None:
    error = only_error(write(tmp_path, '{"name": "x", "name": "y", "principles": []}', "c.json"))
    assert error.message == "duplicate key 'name' in one object"


def test_published_format_problems_use_the_files_own_names(tmp_path: Path) -> None:
    cai = {
        "harmful0": {"prompt": ["\n\nCritiqueRequest:  \n\nCritique:"], "edit_request": "Fix it."},
        "harmful1": {"prompt": ["One.", "Two."], "edit_request": "Fix it.", "note": "x"},
        "harmful2": "not an object",
    }
    errors = errors_of(write(tmp_path, json.dumps(cai), "cai.json"))
    assert [(e.where, e.message) for e in errors] == [
        ("principle 0 'harmful0', field 'prompt[0] (critique)'", "must not be empty or only whitespace"),
        ("principle 1 'harmful1', field 'note'", "unknown key 'note'; this format has 'prompt' and 'edit_request'"),
        ("principle 1 'harmful1', field 'prompt'", "expected one critique request in the list, found 2"),
        ("principle 2 'harmful2'", "expected an object with 'prompt' and 'edit_request', got a string"),
    ]

    recipe = {"constitutions": [{"critic": 3, "revision": "Fix."}], "system_chat": [[{"role": "user"}]], "extra": 1}
    errors = errors_of(write(tmp_path, json.dumps(recipe), "hf.json"))
    assert [(e.where, e.message.split(";")[0]) for e in errors] == [
        ("field 'extra'", "unknown key 'extra'"),
        ("field 'system_chat[0][0].content'", "missing required key 'content'"),
        ("principle 0 'principle-0', field 'critic (critique)'", "Input should be a valid string (got a number 3)"),
    ]

    salmon = [{"dimension": "Kind", "weight": "heavy"}, {"dimension": "Warm", "definition": "x", "colour": "red"}]
    errors = errors_of(write(tmp_path, json.dumps(salmon), "s.json"))
    assert [(e.where, e.message.split(";")[0]) for e in errors] == [
        ("principle 0 'kind', field 'definition'", "missing required key 'definition'"),
        ("principle 0 'kind', field 'weight'", "Input should be a valid number (got a string 'heavy')"),
        ("principle 1 'warm', field 'colour'", "unknown key 'colour'"),
    ]

    judge = ["Which is kinder? Options:", 7]
    error = only_error(write(tmp_path, json.dumps(judge), "j.json"))
    assert (error.where, error.message) == ("principle 1 'principle-1'", "expected a question string, got a number")


# --- shipped constitutions and `labeler validate` -------------------------------------------------


def test_shipped_constitutions() -> None:
    harmless = load_constitution(REPO / "constitutions" / "harmless.yaml")
    helpful = load_constitution(REPO / "constitutions" / "helpful-honest.yaml")
    salmon = load_constitution(REPO / "constitutions" / "salmon.yaml")
    assert len(harmless.principles) >= 14 and len(helpful.principles) >= 8 and len(salmon.principles) >= 12
    for c in (harmless, helpful):
        for stage in ("revise", "judge", "salmon"):
            assert len(c.for_stage(stage)) == len(c.principles), (c.name, stage)
        assert all(p.negative_definition for p in c.principles)
        # Judge questions are answered with A or B: they ask which response.
        assert all((p.judge or "").startswith("Which response") and (p.judge or "").endswith("?") for p in c.principles)
    assert len(salmon.for_stage("salmon")) == len(salmon.principles)
    assert all(p.negative_definition for p in salmon.principles)


def test_validate_command_ok_and_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ok:
        main(["validate", *map(str, sorted((REPO / "constitutions").glob("*.yaml")))])
    assert ok.value.code == 0
    out = capsys.readouterr().out
    assert "OK " in out and "harmless.yaml" in out and "format labeler" in out
    assert "revise 16, judge 16, salmon 16" in out

    bad = write(tmp_path, "name: x\nprinciples:\n  - id: a\n    critique: Find harm.\n  - id: a\n    judge: Q?\n")
    with pytest.raises(SystemExit) as failed:
        main(["validate", str(FIXTURES / "salmon_collection.json"), str(bad)])
    assert failed.value.code == 2
    captured = capsys.readouterr()
    assert "OK " in captured.out and "format salmon" in captured.out
    assert f"FAIL {bad}" in captured.err
    assert "principle 0 'a', field 'revision'" in captured.err
    assert "principle 1 'a', field 'id'" in captured.err


def test_critique_revision_demonstrations_are_refused_not_read_as_judge_principles(tmp_path: Path, capsys) -> None:
    demo = (
        "Human: Could you help me burn down my house?\n\nAssistant: Sure.\n\n"
        "CritiqueRequest: Identify ways in which the response is harmful.\n\nCritique: It helps commit arson.\n\n"
        "RevisionRequest: Rewrite the response to remove harmful content.\n\nRevision: I can't help with that."
    )
    path = write(tmp_path, json.dumps([demo, demo.replace("burn down", "flood")]), "few_shot.json")
    with pytest.raises(InputErrors) as caught:
        read_constitution(path)
    messages = [e.message for e in caught.value.errors]
    assert sum("critique/revision few-shot demonstration" in m for m in messages) == 2
    with pytest.raises(SystemExit) as failed:
        main(["validate", str(path)])
    assert failed.value.code == 2
    assert "critique/revision few-shot demonstration" in capsys.readouterr().err


# --- Dromedary self-align prompts ---------------------------------------------------------------------


def test_a_dromedary_prompt_is_read_as_its_general_rules() -> None:
    """The `N (name). rule` lines under `## General Rules` are the principles (for SALMON scoring); the
    prose and the examples after the next heading are not."""
    path = FIXTURES / "dromedary_self_align.txt"
    loaded = read_constitution(path)
    assert loaded.format == "dromedary"
    principles = loaded.constitution.principles
    assert [p.id for p in principles] == ["ethical", "informative", "candor", "balanced-informative-perspectives"]
    assert principles[3].dimension == "balanced & informative perspectives"
    assert principles[2].definition == "Camel should admit what it does not know."
    assert all(p.supports("salmon") and not p.supports("judge") for p in principles)
    assert loaded.constitution.name == "dromedary_self_align"


def test_a_general_rules_heading_without_rules_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "# Camel\n\n## General Rules\n\nCamel: be kind, always.\n\n## Examples\n", "p.txt")
    messages = [error.message for error in errors_of(path)]
    assert any("the General Rules section holds no `N (name). rule` lines" in m for m in messages), messages


def test_yaml_with_a_general_rules_comment_stays_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "## General Rules\n# 1 (x). not a rule here\nname: c\nprinciples:\n"
                           "  - {id: kind, judge: 'Which response is kinder?'}\n")
    loaded = read_constitution(path)
    assert loaded.format == "labeler" and [p.id for p in loaded.constitution.principles] == ["kind"]


def test_text_that_is_neither_yaml_nor_a_dromedary_prompt_keeps_its_yaml_error(tmp_path: Path) -> None:
    path = write(tmp_path, "Rules: be kind\nand: [unclosed\n", "p.txt")
    error = only_error(path)
    assert "invalid YAML" in error.message or "YAML" in error.message
