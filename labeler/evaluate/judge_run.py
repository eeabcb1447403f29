"""`labeler eval-judge`: judge human-labelled pairs as `labeler label` does, under one or more configurations.

Each human pair (`prompt`, `chosen`, `rejected`, optional group column) is judged exactly as
`labeler label` judges pairs: in both orders, through `judge_pairs`. Which of the two responses is
`response_a` is decided by a seeded hash of the row, so the human's choice sits in the first
position for about half of the pairs and a judge that always prefers one position scores about 50 %.
What is measured on the judged pairs, and how it is shown, is `labeler.evaluate.judge_report`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labeler.core.batching import batches
from labeler.core.config_files import read_yaml_mapping
from labeler.core.errors import InputError, InputErrors, about_field
from labeler.core.layout import MANIFEST_NAME
from labeler.core.outputs import check_outputs
from labeler.core.progress import progress_bar
from labeler.core.records import PreferenceRecord
from labeler.core.sampling import seed_for
from labeler.core.shipped import shipped_folder
from labeler.engine import ChoiceRequest, ChoiceScores, Engine, EngineConfig, GenerationParams, engine_model
from labeler.engine.base import Conversation, Generation
from labeler.engine.model_ref import ModelRef
from labeler.evaluate.judge_report import (
    ComparedConfiguration,
    CompareReport,
    EvalJudgeReport,
    build_report,
    paired_bootstrap,
)
from labeler.inputs.constitution import load_constitution
from labeler.inputs.human_pairs import read_human_labelled_pairs
from labeler.inputs.rows import stable_id
from labeler.inputs.templates import Templates
from labeler.stages.common import engine_for
from labeler.stages.judge import JudgeOptions, Panel, judge_pairs, panel_for, position_priors
from labeler.stages.pairs import Pair, make_pair
from labeler.store.atomic import atomic_write_text
from labeler.store.human import HUMAN_FOLDER

# The shipped constitution: inside an installed wheel, else the repository's constitutions/ folder.
DEFAULT_CONSTITUTION = shipped_folder("constitutions") / "helpful-honest.yaml"
SOURCE_HUMAN = "human_pairs"


class EvalJudgeConfig(BaseModel):
    """Options of `labeler eval-judge`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pairs: Path | None = Field(
        None,
        description="JSONL/Parquet/Arrow of `prompt` (text or messages), `chosen`, `rejected` (or a run's human/ "
        "folder: as ‹human›).",
    )
    human: Path | None = Field(
        None,
        description="A run folder: measure the run's own judge (the p_a it stored) on the pairs people labelled "
        "with `labeler review` (RUN/human/), with inter-annotator agreement; no model is loaded.",
    )
    group_by: str | None = Field(None, description="Column to report agreement per value of (e.g. category).")
    constitution: Path = Field(DEFAULT_CONSTITUTION, description="Constitution whose judge questions are asked.")
    judge: EngineConfig = Field(default_factory=EngineConfig, description="The judge model and engine.")
    options: JudgeOptions = Field(
        default_factory=JudgeOptions, description="How pairs are judged (principles, chain of thought, seed)."
    )
    templates: Path | None = Field(None, description="Folder of templates overriding the shipped ones.")
    batch_size: int = Field(64, ge=1, description="Pairs per engine call.")
    compare: tuple[Path, ...] = Field(
        (),
        description="Judging configurations to compare on the same pairs: YAML files of name, constitution, "
        "templates, judge (engine settings) and options (judging settings), each over the command's own.",
    )
    out: Path | None = Field(None, description="Write the report as JSON here (default: print only).")
    quiet: bool = Field(False, description="Plain log lines instead of a progress bar.")


# -- reading human pairs --------------------------------------------------------------------------


@dataclass(frozen=True)
class HumanPair:
    """A human-labelled pair laid out for judging: `human_a` says whether response_a is the chosen one."""

    pair: Pair
    human_a: bool
    group: str | None
    line: int


def chosen_first(seed: int, row_key: str) -> bool:
    """Whether a row shows its chosen response as response_a: a seeded hash, about half of the rows.

    The hash depends on the row's content, not its position in the file, so reordering a file
    keeps each pair's layout.

    >>> chosen_first(0, "row") == chosen_first(0, "row")
    True
    >>> sum(chosen_first(0, str(i)) for i in range(1000)) in range(450, 551)
    True
    """
    return seed_for(seed, row_key, "position") % 2 == 0


def read_human_pairs(path: Path, group_by: str | None, seed: int) -> list[HumanPair]:
    """Every row of a human-pairs file, laid out A/B by `chosen_first`; a bad row raises `InputError`."""
    pairs = []
    for row in read_human_labelled_pairs(path, group_by):
        a_is_chosen = chosen_first(seed, stable_id(list(row.prompt), row.chosen, row.rejected))
        a, b = (row.chosen, row.rejected) if a_is_chosen else (row.rejected, row.chosen)
        pairs.append(HumanPair(make_pair(row.prompt, a, b, SOURCE_HUMAN), a_is_chosen, row.group, row.line))
    return pairs



@dataclass(frozen=True)
class Configuration:
    """One judging configuration of a run: the command's own, or a --compare file over it."""

    name: str
    file: Path | None
    constitution: Path
    templates: Path | None
    judge: EngineConfig
    options: JudgeOptions


@dataclass(frozen=True)
class _Prepared:
    """A configuration with everything its checks loaded."""

    configuration: Configuration
    panel: Panel
    templates: Templates
    model: ModelRef


def human_run_of(config: EvalJudgeConfig) -> Path | None:
    """The run whose human labels to measure its judge on (`human`, or `pairs` naming a run's human/
    folder), or None for a pairs file to judge; `InputError` naming the field when neither or both is given.

    >>> human_run_of(EvalJudgeConfig(human=Path("runs/demo")))
    PosixPath('runs/demo')
    """
    if config.pairs is not None and config.human is not None:
        raise InputError("give a pairs file or a run's human labels, not both", field="human")
    if config.human is not None:
        return config.human
    if config.pairs is None:
        raise InputError("is missing: give a file of human-labelled pairs, or a run with human labels", field="pairs")
    if config.pairs.is_dir() and config.pairs.name == HUMAN_FOLDER and (config.pairs.parent / MANIFEST_NAME).is_file():
        return config.pairs.parent
    return None


def eval_judge(config: EvalJudgeConfig, judge: Engine | None = None) -> EvalJudgeReport | CompareReport:
    """Judge every human pair in both orders and measure the judge against the human labels; with
    `config.compare`, do so under each configuration and compare them pair by pair."""
    if human_run_of(config) is not None:
        raise InputError("names a run's human labels: `human_run_report` measures them", field="pairs")
    assert config.pairs is not None
    # Every check before a judge loads: constitutions, templates, every row, the models, the output file.
    configurations = [_prepare(c) for c in configurations_of(config)]
    human = read_human_pairs(config.pairs, config.group_by, config.options.seed)
    if config.out is not None:
        check_outputs(config.out, "file", {
            "pairs": config.pairs, "constitution": config.constitution, "templates": config.templates,
            "compare": config.compare, "options.few_shot_file": config.options.few_shot_file,
            "judge.model": config.judge.model,
        })
    results = _judge_all(config, configurations, human, judge)
    reports = [build_report(config, p.configuration, human, records, model_id)
               for p, (records, model_id, _, _) in zip(configurations, results)]
    report: EvalJudgeReport | CompareReport
    if not config.compare:
        report = reports[0]
    else:
        credits = [np.array([pair.agrees for pair in r.pairs]) for r in reports]
        entries = []
        for index, (p, r, (_, _, prompts, seconds)) in enumerate(zip(configurations, reports, results)):
            diff = None if index == 0 else paired_bootstrap(credits[0], credits[index], seed=config.options.seed)
            entries.append(ComparedConfiguration(
                name=p.configuration.name, file=None if p.configuration.file is None else str(p.configuration.file),
                prompts=prompts, seconds=round(seconds, 2), difference=diff, report=r,
            ))
        report = CompareReport(pairs_file=str(config.pairs), n=len(human), configurations=entries)
    if config.out is not None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config.out, report.model_dump_json(indent=2) + "\n")
    return report


def _prepare(configuration: Configuration) -> _Prepared:
    """Every check of one configuration that needs no model: constitution, demonstrations, templates, model."""
    constitution = load_constitution(configuration.constitution)
    panel = panel_for(constitution, configuration.options, str(configuration.constitution))
    templates = Templates.load(configuration.templates)
    if configuration.file is None:
        model = engine_model(configuration.judge, field="judge.model")
    else:
        model = engine_model(configuration.judge, field=None, where=f"{configuration.file}: judge.model")
    return _Prepared(configuration, panel, templates, model)


def _judge_all(
    config: EvalJudgeConfig, prepared: Sequence[_Prepared], human: Sequence[HumanPair], judge: Engine | None
) -> list[tuple[list[PreferenceRecord], str, int, float]]:
    """Each configuration's records, judge model id, prompts scored and seconds, in the order given.

    Configurations on the same engine settings share one engine and take turns batch by batch, so a
    prefix cache computes each pair's shared text once for all of them (later configurations' seconds
    are the cheaper for it; the prompt counts are not).
    """
    results: dict[int, tuple[list[PreferenceRecord], str, int, float]] = {}
    groups: dict[EngineConfig, list[int]] = {}
    for index, p in enumerate(prepared):
        groups.setdefault(p.configuration.judge, []).append(index)
    with progress_bar(len(human) * len(prepared), "judging", unit="pairs", quiet=config.quiet or None) as advance:
        for engine_config, members in groups.items():
            given = judge if engine_config == config.judge else None
            with engine_for(engine_config, given, prepared[members[0]].model) as engine:
                _ = engine.max_model_len  # starts a lazy engine here, so no configuration's seconds include it
                counted = {i: _CountingEngine(engine) for i in members}
                records: dict[int, list[PreferenceRecord]] = {i: [] for i in members}
                seconds = dict.fromkeys(members, 0.0)
                priors = {}
                for i in members:
                    options = prepared[i].configuration.options
                    if options.calibrate:
                        started = time.perf_counter()
                        priors[i] = position_priors(counted[i], prepared[i].templates, prepared[i].panel, options)
                        seconds[i] += time.perf_counter() - started
                for batch in batches([h.pair for h in human], config.batch_size):
                    for i in members:
                        p = prepared[i]
                        started = time.perf_counter()
                        records[i] += judge_pairs(counted[i], p.templates, p.panel, batch, p.configuration.options,
                                                  priors.get(i))
                        seconds[i] += time.perf_counter() - started
                        advance(len(batch))
                for i in members:
                    results[i] = (records[i], engine.model_id, counted[i].prompts, seconds[i])
    return [results[i] for i in range(len(prepared))]


class _CountingEngine:
    """An engine that counts the prompts it is asked to score or continue (the cost of a configuration)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.prompts = 0

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def prompt_lengths(self, conversations: Sequence[Conversation]) -> list[int]:
        return self.engine.prompt_lengths(conversations)

    def generate(
        self, conversations: Sequence[Conversation], params: GenerationParams, seeds: Sequence[int] | None = None
    ) -> list[Generation]:
        self.prompts += len(conversations)
        return self.engine.generate(conversations, params, seeds)

    def choice_logprobs(self, requests: Sequence[ChoiceRequest], choices: Sequence[str]) -> list[ChoiceScores]:
        self.prompts += len(requests)
        return self.engine.choice_logprobs(requests, choices)

    def close(self) -> None:  # the engine is its owner's to close
        pass

    def __enter__(self) -> _CountingEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


# -- comparing configurations ---------------------------------------------------------------------


class CompareFile(BaseModel):
    """One --compare file: a judging configuration, each part over the command's own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(None, description="Name in the comparison (default: the file's stem).")
    constitution: Path | None = Field(None, description="Constitution (relative paths: from the file's folder).")
    templates: Path | None = Field(None, description="Templates folder (relative paths: from the file's folder).")
    judge: dict[str, Any] = Field(default_factory=dict, description="Engine settings over the command's.")
    options: dict[str, Any] = Field(default_factory=dict, description="Judging settings over the command's.")


def configurations_of(config: EvalJudgeConfig) -> list[Configuration]:
    """The configurations a run judges under: the command's own, or each --compare file over it."""
    if not config.compare:
        return [Configuration("command line", None, config.constitution, config.templates, config.judge,
                              config.options)]
    configurations, problems = [], []
    for path in config.compare:  # every file's problems at once
        try:
            configurations.append(_from_file(config, path))
        except InputErrors as exc:
            problems += exc.errors
        except InputError as exc:
            problems.append(exc)
    if problems:
        raise InputErrors(problems)
    names = [c.name for c in configurations]
    for name in names:
        if names.count(name) > 1:
            raise InputError(f"two configurations are named '{name}': give each a distinct `name:`",
                             field="compare")
    return configurations


def _from_file(config: EvalJudgeConfig, path: Path) -> Configuration:
    # empty: the command's own settings
    with about_field("compare"):
        data = read_yaml_mapping(path, what="a judging configuration", empty_ok=True)
    try:
        entry = CompareFile.model_validate(data)
    except ValidationError as exc:
        raise _file_errors(exc, path, "") from None
    folder = path.parent

    def resolved(value: Path | None, default: Path | None) -> Path | None:
        return default if value is None else value if value.is_absolute() else folder / value

    options = {**entry.options}
    if isinstance(options.get("few_shot_file"), str) and not Path(options["few_shot_file"]).is_absolute():
        options["few_shot_file"] = str(folder / options["few_shot_file"])
    try:
        judge = EngineConfig.model_validate({**config.judge.model_dump(), **entry.judge})
    except ValidationError as exc:
        raise _file_errors(exc, path, "judge.") from None
    try:
        judge_options = JudgeOptions.model_validate({**config.options.model_dump(), **options})
    except ValidationError as exc:
        raise _file_errors(exc, path, "options.") from None
    constitution = resolved(entry.constitution, config.constitution)
    assert constitution is not None
    return Configuration(entry.name or path.stem, path, constitution, resolved(entry.templates, config.templates),
                         judge, judge_options)


def _file_errors(exc: ValidationError, path: Path, prefix: str) -> InputErrors:
    errors = []
    for error in exc.errors(include_url=False):
        key = prefix + ".".join(str(part) for part in error["loc"])
        message = f"unknown key '{key}'" if error["type"] == "extra_forbidden" else error["msg"]
        errors.append(InputError(message, file=path, field="compare", where=f", field '{key}'"))
    return InputErrors(errors)
