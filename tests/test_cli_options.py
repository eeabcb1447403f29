"""The command line's options: one default per field (the same as a run config's), one name per option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
import typer.testing
from pydantic import BaseModel

from labeler.cli import datasets, judge, stages, training
from labeler.cli.app import app
from labeler.cli.options import ConfigCommand, default_at
from labeler.pipeline.run import (
    PPOStage,
    RunConfig,
    Stages,
    TrainRMStage,
    eval_config,
    label_config,
    ppo_config,
    revise_config,
    train_rm_config,
)

CONFIG_COMMANDS = {c.name: c for c in (*stages.COMMANDS, *judge.COMMANDS, *training.COMMANDS, *datasets.COMMANDS)}
CLICK: Any = typer.main.get_command(app)  # a click group (typer may carry its own copy of click)

# What a run config sets for a stage from its own keys (paths, the run seed, what it decides itself),
# where the command has no default or a default of its own.
SET_BY_THE_RUN = {
    "revise": set(),
    "label": {"pairs_from"},
    "train-rm": {"data", "out", "resume", "constitution"},
    "ppo": {"prompts", "out", "reward_model", "resume"},
    "eval-policy": {"baseline", "candidate", "prompts", "reward_model", "out", "judge.data_parallel_size"},
}


def _run_config(tmp_path: Path) -> RunConfig:
    return RunConfig(
        out=tmp_path / "run", constitution=tmp_path / "c.yaml", prompts=tmp_path / "p.jsonl",
        eval_prompts=tmp_path / "e.jsonl", stages=Stages(train_rm=TrainRMStage(), ppo=PPOStage()),
    )


def _stage_configs(run: RunConfig) -> dict[str, BaseModel]:
    assert run.stages.train_rm is not None and run.stages.ppo is not None
    return {
        "revise": revise_config(run),
        "label": label_config(run),
        "train-rm": train_rm_config(run, run.stages.train_rm),
        "ppo": ppo_config(run, run.stages.ppo),
        "eval-policy": eval_config(run, 1),
    }


def _cli_default(command: ConfigCommand, name: str, path: str) -> Any:
    """What the command line gives a field when its option is left out: the option's default as click has
    it, else (an option shown without one) the field's own default, which pydantic fills in."""
    params = {p.name: p for p in CLICK.commands[command.name].params}
    default = params[name].default
    parts = path.split(".")
    sections = [".".join(parts[:n]) for n in range(1, len(parts))]
    if default is None and all(default_at(command.model, section) is not None for section in sections):
        default = default_at(command.model, path)
    return list(default) if isinstance(default, tuple) else default


def _value_at(config: BaseModel, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part) if value is not None else None  # a section left out (None)
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", sorted(SET_BY_THE_RUN))
def test_every_option_default_is_the_run_configs(name: str, tmp_path: Path) -> None:
    command = CONFIG_COMMANDS[name]
    built = _stage_configs(_run_config(tmp_path))[name]
    params = {p.name: p for p in CLICK.commands[name].params}
    differ = {}
    for opt in command.opts:
        if opt.merge_file or opt.path in SET_BY_THE_RUN[name] or params[opt.name].required:
            continue
        cli, run = _cli_default(command, opt.name, opt.path), _value_at(built, opt.path)
        if cli != run:
            differ[opt.cli_flag] = (cli, run)
    assert not differ, f"{name}: option default vs run config's (flag: (cli, run)): {differ}"


def _commands(group: Any, prefix: str = "") -> dict[str, Any]:
    found = {}
    for name, command in group.commands.items():
        nested = hasattr(command, "commands")
        found.update(_commands(command, f"{prefix}{name} ") if nested else {prefix + name: command})
    return found


def test_no_command_declares_a_flag_twice() -> None:
    twice = {}
    for name, command in _commands(CLICK).items():
        seen: dict[str, str] = {}
        for param in command.params:
            for flag in (*param.opts, *param.secondary_opts):
                if flag in seen and param.param_type_name == "option":
                    twice[f"{name} {flag}"] = (seen[flag], param.name)
                seen[flag] = param.name
    assert not twice, f"flags declared twice (command flag: (first, second)): {twice}"


def run_cli(args: list[str]) -> int:
    from labeler.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


@pytest.mark.parametrize(
    ("command", "flag"),
    [("label", "--batch-size"), ("label", "--engine-batch-size"), ("revise", "--batch-size"),
     ("revise", "--engine-batch-size"), ("eval-judge", "--batch-size"), ("eval-judge", "--engine-batch-size"),
     ("eval-policy", "--batch-size"), ("eval-policy", "--engine-batch-size")],
)
def test_a_bad_batch_size_names_its_own_option(command: str, flag: str, tmp_path: Path, capsys) -> None:
    given = {
        "label": ["--constitution", "c.yaml", "--pairs", "p.jsonl", "--out", str(tmp_path / "out")],
        "revise": ["--constitution", "c.yaml", "--prompts", "p.jsonl", "--out", str(tmp_path / "out")],
        "eval-judge": ["--pairs", "p.jsonl", "--constitution", "c.yaml"],
        "eval-policy": ["--baseline", "a", "--candidate", "b", "--prompts", "p.jsonl", "--constitution", "c.yaml"],
    }[command]
    assert run_cli([command, *given, flag, "0"]) == 2
    err = capsys.readouterr().err
    assert f"{flag}: " in err, err
    other = {"--batch-size": "--engine-batch-size", "--engine-batch-size": "--batch-size"}[flag]
    assert f"{other}: " not in err, err


def test_the_engine_batch_and_the_work_batch_are_two_fields() -> None:
    command = CONFIG_COMMANDS["label"]
    paths = {opt.cli_flag: opt.path for opt in command.opts}
    assert paths["--batch-size"] == "work.batch_size"
    assert paths["--engine-batch-size"] == "judge.batch_size"
    assert CONFIG_COMMANDS["eval-judge"].flag_of("batch_size") == "--batch-size"
    assert CONFIG_COMMANDS["eval-judge"].flag_of("judge.batch_size") == "--engine-batch-size"


def test_the_config_reference_shows_the_defaults_a_section_left_out_gets() -> None:
    from labeler.pipeline.config_reference import generate
    from labeler.stages.label import PAIR_SAMPLING
    from labeler.stages.revise import REVISE_SAMPLING

    text = generate()
    for key, params in (("stages.revise.sampling", REVISE_SAMPLING), ("stages.label.pair_sampling", PAIR_SAMPLING)):
        for name in ("n", "temperature", "top_p", "max_tokens"):
            assert f"| `{key}.{name}` | {type(getattr(params, name)).__name__} | `{getattr(params, name)!r}` |" in text
    assert "| `stages.revise.sampling.top_p` | float | `0.95` |" in text
    assert "| `stages.revise.sampling.max_tokens` | int | `160` |" in text


def test_a_field_a_message_names_is_shown_as_the_option_on_the_cli_and_as_the_key_in_a_run(tmp_path: Path) -> None:
    from labeler.core.errors import InputError, option
    from labeler.pipeline.run import _with_config_key

    error = InputError(f"pass {option('work.overwrite')} to redo the run; see {option('judge.model')}",
                       field="work.shard_index")
    label = CONFIG_COMMANDS["label"]
    assert label.named(error).render() == "--shard-index: pass --overwrite to redo the run; see --judge-model"
    assert error.render() == "work.shard_index: pass `work.overwrite` to redo the run; see `judge.model`"
    in_run = _with_config_key(InputError(f"leave out {option('judge.model')}"), _run_config(tmp_path), "label")
    assert in_run.render() == "leave out `engine.model`"


def test_help_text_names_other_fields_as_their_options() -> None:
    result = typer.testing.CliRunner().invoke(app, ["export", "--help"], terminal_width=400)
    assert "instead of --shard-size" in result.output and "\u2039" not in result.output
