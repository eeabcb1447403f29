"""`labeler validate FILE...`: check files before a run, reporting every problem in each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from labeler.core.errors import InputError
from labeler.inputs.constitution import STAGES, read_constitution


def check_constitution(path: Path) -> str:
    """One line about a valid constitution file; raises `InputErrors` listing every problem otherwise."""
    loaded = read_constitution(path)
    constitution = loaded.constitution
    counts = ", ".join(f"{stage} {len(constitution.for_stage(stage))}" for stage in STAGES)
    few_shot = f", {len(constitution.few_shot)} few-shot conversations" if constitution.few_shot else ""
    if constitution.judge_few_shot:
        few_shot += f", {len(constitution.judge_few_shot)} judging demonstrations"
    return (
        f"constitution '{constitution.name}' version {constitution.version}, format {loaded.format}, "
        f"{len(constitution.principles)} principles (per stage: {counts}){few_shot}"
    )


def checker_for(path: Path) -> Callable[[Path], str]:
    """The check that applies to `path`: the one place that decides what kind of file it is.

    A run configuration (a YAML file with a top-level `stages:` key) is checked as one, together
    with the constitution and prompts it names; a JSON list of {"prompt", "corrects", "incorrects"}
    objects as judging demonstrations; every other file as a constitution.
    """
    if path.suffix.lower() in (".yaml", ".yml") and _is_run_config(path):
        return check_run_config
    if path.suffix.lower() == ".json" and _is_judge_demos(path):
        return check_judge_demos
    return check_constitution


def _is_judge_demos(path: Path) -> bool:
    from labeler.core.input_files import read_document
    from labeler.inputs.constitution.formats import is_feedback_few_shot

    try:
        return is_feedback_few_shot(read_document(path, what="a constitution").data)
    except InputError:
        return False  # the constitution check reports the problem with its line


def check_judge_demos(path: Path) -> str:
    """One line about a file of judging demonstrations (the CAI feedback few-shot format)."""
    from labeler.inputs.constitution.judge_demos import read_judge_demos

    demos = read_judge_demos(path)
    return (f"judging demonstrations in the CAI feedback few-shot format: {len(demos)} (better, worse) pairs; "
            "use with label or eval-judge --few-shot N --few-shot-file FILE")


def _is_run_config(path: Path) -> bool:
    import re

    from labeler.core.input_files import MAX_DOCUMENT_BYTES, parse_yaml, read_input_text

    try:
        text = read_input_text(path, limit=MAX_DOCUMENT_BYTES, what="a run config")
    except InputError:
        return False  # the constitution check reports the problem
    try:
        data = parse_yaml(text, file=path, what="a run config").data
    except InputError:
        # Unparsable (an alias, a syntax error): a top-level `stages:` line still tells a run config, whose
        # check then reports the problem in the terms of a run config.
        return re.search(r"^stages\s*:", text, re.MULTILINE) is not None
    return isinstance(data, dict) and "stages" in data


def check_run_config(path: Path) -> str:
    """Validate a run config with every check `labeler run` makes before a model loads (the files it names,
    the model arguments, the output folder), without loading or writing anything."""
    from labeler.inputs.constitution import load_constitution
    from labeler.inputs.rows import read_prompts
    from labeler.pipeline.run import check_pipeline, device_plan, load_run_config

    config = load_run_config(path)
    check_pipeline(config)
    prompts = sum(1 for _ in read_prompts(config.prompts))
    stages = [name for name in ("revise", "label", "train_rm", "ppo") if getattr(config.stages, name) is not None]
    plan = "".join(f"\n  {line}" for line in device_plan(config))

    def summary(path: Path) -> str:
        constitution = load_constitution(path)
        return f"{constitution.name} ({len(constitution.principles)} principles)"

    constitutions = f"constitution {summary(config.constitution)}"
    for stage in ("revise", "label"):
        if getattr(config.stages, stage) is not None and config.constitution_of(stage) != config.constitution:
            constitutions += f"; {stage} constitution {summary(config.constitution_of(stage))}"
    return (
        f"run config; stages {', '.join(stages) or 'none'}; {constitutions}; {prompts} prompts; "
        f"output {config.out}{plan}"
    )


def validate(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE", help="Constitution files (YAML or JSON, own or published format) or run configs."
        ),
    ],
) -> None:
    """Check constitutions and run configs: print OK with a summary, or every problem.

    Exit code 2 when any file has a problem; every file is checked either way.
    """
    err = Console(stderr=True)
    bad = 0
    for path in files:
        try:
            summary = checker_for(path)(path)
        except InputError as exc:
            bad += 1
            err.print(f"[bold red]FAIL[/] {escape(str(path))}", highlight=False, soft_wrap=True)  # a path never breaks
            err.print(exc.render(), highlight=False, markup=False, soft_wrap=True)
            continue
        typer.echo(f"OK {path}: {summary}")
    if bad:
        err.print(f"{bad} of {len(files)} files have problems", highlight=False)
        raise typer.Exit(code=2)
