"""What `labeler --help` and each command's help say: names a user can type, claims the code keeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeler.cli.app import main

COMMANDS = ["init", "validate", "generate", "revise", "label", "eval-judge", "eval-policy", "report", "train-rm",
            "score-rm", "ppo", "dpo", "export", "push", "merge", "run", "model prepare"]  # fmt: skip


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert run_cli([*command.split(), "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_metavars_not_python_types(command: str, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    text = help_of(command, capsys)
    assert "list[" not in text and "<path>" not in text, text


def test_arguments_show_their_metavar(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert "\n  FILE  Constitution files" in help_of("validate", capsys)
    assert "\n  RUN_PART  Run folders" in help_of("merge", capsys)
    assert "--engine-config FILE" in help_of("label", capsys)


def test_score_rm_pairs_help_names_every_format_its_reader_takes(tmp_path: Path, capsys, monkeypatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from labeler.inputs.human_pairs import read_human_labelled_pairs

    monkeypatch.setenv("COLUMNS", "200")
    line = next(line for line in help_of("score-rm", capsys).splitlines() if "--pairs" in line)
    assert "JSONL/Parquet/Arrow" in line
    row = {"prompt": "hi", "chosen": "hello", "rejected": "go away"}
    (tmp_path / "pairs.jsonl").write_text(json.dumps(row) + "\n")
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "pairs.parquet")
    with pa.OSFile(str(tmp_path / "pairs.arrow"), "wb") as sink, pa.ipc.new_file(
        sink, pa.Table.from_pylist([row]).schema
    ) as writer:
        writer.write_table(pa.Table.from_pylist([row]))
    for name in ("pairs.jsonl", "pairs.parquet", "pairs.arrow"):
        (pair,) = read_human_labelled_pairs(tmp_path / name)
        assert pair.chosen == "hello"


def test_validate_never_breaks_a_path(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    folder = tmp_path / ("a-rather-long-folder-name-for-constitutions" * 2)
    folder.mkdir()
    bad = folder / "constitution-with-a-long-name.yaml"
    bad.write_text("name: x\n")
    assert run_cli(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"FAIL {bad}\n" in err, err


def test_run_help_points_to_what_an_install_has(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    text = help_of("run", capsys)
    assert "configs/demo.yaml" not in text
    assert "labeler init" in text


def test_init_writes_a_starter_config_that_loads(tmp_path: Path, capsys, monkeypatch) -> None:
    from labeler.pipeline.run import load_run_config

    monkeypatch.chdir(tmp_path)
    assert run_cli(["init"]) == 0
    assert "wrote run.yaml" in capsys.readouterr().out
    config = load_run_config(tmp_path / "run.yaml")
    assert config.constitution == tmp_path / "constitution.yaml" and config.prompts == tmp_path / "prompts.jsonl"
    assert config.stages.revise is not None and config.stages.label is not None and config.stages.train_rm is not None
    assert run_cli(["init", str(tmp_path / "other.yaml")]) == 0
    assert (tmp_path / "other.yaml").read_text() == (tmp_path / "run.yaml").read_text()


def test_init_never_replaces_a_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("out: keep\n")
    assert run_cli(["init", str(path)]) == 2
    assert f"{path}: exists already" in capsys.readouterr().err
    assert path.read_text() == "out: keep\n"
    assert run_cli(["init", str(tmp_path / "no-such-folder" / "run.yaml")]) == 2
    assert "its folder does not exist" in capsys.readouterr().err
    assert run_cli(["init", str(tmp_path)]) == 2
