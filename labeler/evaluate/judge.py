"""How far the AI judge can be trusted: agreement with human-labelled pairs, position bias, calibration.

Each human pair (`prompt`, `chosen`, `rejected`, optional group column) is judged exactly as
`labeler label` judges pairs: in both orders, through `judge_pairs`. Which of the two responses is
`response_a` is decided by a seeded hash of the row, so the human's choice sits in the first
position for about half of the pairs and a judge that always prefers one position scores about 50 %.

The metrics are small pure functions over four per-pair arrays (`p_a_ab`, `p_a_ba`, `mass`,
`human_a`), so they can be checked against slow, obvious references:

- agreement: the side the soft label favours (p_a = mean of both orders) is the human's side;
  agreement of each order alone (`ab`: response_a shown first; `ba`: response_b shown first);
- position consistency: both orders prefer the same response;
- P(first): the mean probability given to whichever response was shown first (0.5 = no bias);
- mean choice mass: probability put on the two choice tokens at all;
- calibration: with confidence = max(p_a, 1 − p_a) ∈ [0.5, 1], ten equal bins on [0.5, 1], the
  reliability table (count, mean confidence, accuracy per bin) and its expected calibration error.

An exact coin flip (p = 0.5) agrees with the human half the time: it scores 0.5, never 0 or 1.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from labeler.core.config_files import read_yaml_mapping
from labeler.core.errors import InputError, InputErrors
from labeler.core.outputs import check_outputs
from labeler.core.progress import progress_bar
from labeler.core.records import PreferenceRecord
from labeler.core.sampling import seed_for
from labeler.core.shipped import shipped_folder
from labeler.engine import ChoiceRequest, ChoiceScores, Engine, EngineConfig, GenerationParams, engine_model
from labeler.engine.base import Conversation, Generation
from labeler.engine.model_ref import ModelRef
from labeler.evaluate.calibration import (
    CALIBRATION_BINS,
    ReliabilityBin,
    agreement,
    agreement_credit,
    expected_calibration_error,
    reliability_table,
)
from labeler.inputs.constitution import load_constitution
from labeler.inputs.human_pairs import read_human_labelled_pairs
from labeler.inputs.rows import stable_id
from labeler.inputs.templates import Templates
from labeler.stages.common import engine_for
from labeler.stages.judge import JudgeOptions, Panel, judge_pairs, panel_for, position_priors
from labeler.stages.pairs import Pair, make_pair
from labeler.store.atomic import atomic_write_text

if TYPE_CHECKING:
    from rich.table import Table

# The shipped constitution: inside an installed wheel, else the repository's constitutions/ folder.
DEFAULT_CONSTITUTION = shipped_folder("constitutions") / "helpful-honest.yaml"
SOURCE_HUMAN = "human_pairs"


class EvalJudgeConfig(BaseModel):
    """Options of `labeler eval-judge`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pairs: Path = Field(description="JSONL/Parquet/Arrow of `prompt` (text or messages), `chosen`, `rejected`.")
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


# -- metrics: pure functions over per-pair arrays -------------------------------------------------


def position_consistency(p_a_ab: np.ndarray, p_a_ba: np.ndarray) -> float:
    """Share of pairs whose two orders prefer the same response (an exact 0.5 prefers neither).

    >>> position_consistency(np.array([0.9, 0.9, 0.5]), np.array([0.7, 0.2, 0.5]))
    0.3333333333333333
    """
    same = ((p_a_ab > 0.5) & (p_a_ba > 0.5)) | ((p_a_ab < 0.5) & (p_a_ba < 0.5))
    return float(same.mean())


def p_first(p_a_ab: np.ndarray, p_a_ba: np.ndarray) -> float:
    """Mean probability given to whichever response was shown first (0.5: no position bias).

    In the ab order response_a is first (p_a_ab); in the ba order response_b is (1 − p_a_ba).

    >>> round(p_first(np.array([0.9]), np.array([0.2])), 6)
    0.85
    """
    return float(((p_a_ab + (1.0 - p_a_ba)) / 2.0).mean())


def wilson_interval(share: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a share measured on n pairs (ties count half, as in `agreement`).

    >>> [round(x, 4) for x in wilson_interval(0.5, 400)]
    [0.4512, 0.5488]
    >>> [round(x, 4) for x in wilson_interval(1.0, 10)]
    [0.7225, 1.0]
    """
    if n <= 0:
        raise ValueError("no pairs to measure")
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


class JudgeMetrics(BaseModel):
    """How the judge did on a set of human pairs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(description="Pairs judged.")
    agreement: float = Field(description="Share where p_a (both orders averaged) favours the human's choice.")
    agreement_low: float = Field(description="Lower end of agreement's 95% Wilson interval.")
    agreement_high: float = Field(description="Upper end of agreement's 95% Wilson interval.")
    agreement_ab: float = Field(description="The same from the ab order alone (response_a shown first).")
    agreement_ba: float = Field(description="The same from the ba order alone (response_b shown first).")
    position_consistency: float = Field(description="Share of pairs where both orders prefer the same response.")
    p_first: float = Field(description="Mean probability given to the response shown first (0.5: unbiased).")
    mean_mass: float = Field(description="Mean probability put on the two choice tokens, over both orders.")
    ece: float = Field(description=f"Expected calibration error ({CALIBRATION_BINS} confidence bins on [0.5, 1]).")


def judge_metrics(p_a_ab: np.ndarray, p_a_ba: np.ndarray, mass: np.ndarray, human_a: np.ndarray) -> JudgeMetrics:
    """Every metric of one set of pairs, from the per-pair arrays (`mass`: mean of both orders).

    >>> m = judge_metrics(np.array([0.9, 0.8]), np.array([0.3, 0.6]), np.array([0.9, 0.7]), np.array([True, False]))
    >>> m.agreement, m.agreement_ab, m.agreement_ba, m.position_consistency, round(m.p_first, 6)
    (0.5, 0.5, 0.0, 0.5, 0.7)
    """
    if len(p_a_ab) == 0:
        raise ValueError("no pairs to measure")
    p_a = (p_a_ab + p_a_ba) / 2.0
    share = agreement(p_a, human_a)
    low, high = wilson_interval(share, len(p_a))
    return JudgeMetrics(
        n=len(p_a),
        agreement=share,
        agreement_low=low,
        agreement_high=high,
        agreement_ab=agreement(p_a_ab, human_a),
        agreement_ba=agreement(p_a_ba, human_a),
        position_consistency=position_consistency(p_a_ab, p_a_ba),
        p_first=p_first(p_a_ab, p_a_ba),
        mean_mass=float(mass.mean()),
        ece=expected_calibration_error(p_a, human_a),
    )


# -- the report -----------------------------------------------------------------------------------


class PairResult(BaseModel):
    """One judged human pair."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    line: int = Field(description="Line (or row number) of the pair in the input file.")
    group: str | None = Field(description="Its value of the --group-by column.")
    chosen_is_a: bool = Field(description="Whether the human's chosen response was laid out as response_a.")
    p_a: float = Field(description="Judge's probability that response_a is better, both orders averaged.")
    p_chosen: float = Field(description="Judge's probability that the human's chosen response is better.")
    p_a_ab: float = Field(description="That probability from the ab order alone.")
    p_a_ba: float = Field(description="That probability from the ba order alone, mapped back to response_a.")
    mass_ab: float = Field(description="Choice-token mass in the ab order.")
    mass_ba: float = Field(description="Choice-token mass in the ba order.")
    agrees: float = Field(description="1 if the judge sided with the human, 0 if not, 0.5 for a coin flip.")


class EvalJudgeReport(BaseModel):
    """What `labeler eval-judge` prints and writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pairs_file: str
    judge_model: str
    constitution: str
    principles: str
    cot: bool
    group_by: str | None
    chosen_as_a: int = Field(description="Pairs laid out with the human's choice as response_a.")
    overall: JudgeMetrics
    groups: dict[str, JudgeMetrics] = Field(description="The same metrics per value of the --group-by column.")
    reliability: list[ReliabilityBin]
    pairs: list[PairResult]


def build_report(config: EvalJudgeConfig, configuration: Configuration, human: Sequence[HumanPair],
                 records: Sequence[PreferenceRecord], judge_model: str) -> EvalJudgeReport:
    """The metrics of judged human pairs, overall and per group (records in the order of `human`)."""
    p_a_ab = np.array([r.p_a_ab for r in records])
    p_a_ba = np.array([r.p_a_ba for r in records])
    mass = np.array([(r.mass_ab + r.mass_ba) / 2.0 for r in records])
    human_a = np.array([h.human_a for h in human])
    groups = {}
    if config.group_by is not None:
        names = np.array([h.group for h in human])
        for name in sorted(set(names.tolist())):
            mine = names == name
            groups[name] = judge_metrics(p_a_ab[mine], p_a_ba[mine], mass[mine], human_a[mine])
    p_a = (p_a_ab + p_a_ba) / 2.0
    credit = agreement_credit(p_a, human_a)
    return EvalJudgeReport(
        pairs_file=str(config.pairs),
        judge_model=judge_model,
        constitution=str(configuration.constitution),
        principles=configuration.options.principles,
        cot=configuration.options.cot,
        group_by=config.group_by,
        chosen_as_a=int(human_a.sum()),
        overall=judge_metrics(p_a_ab, p_a_ba, mass, human_a),
        groups=groups,
        reliability=reliability_table(p_a, human_a),
        pairs=[
            PairResult(line=h.line, group=h.group, chosen_is_a=h.human_a, p_a=float(p_a[i]),
                       p_chosen=float(p_a[i] if h.human_a else 1.0 - p_a[i]), p_a_ab=r.p_a_ab, p_a_ba=r.p_a_ba,
                       mass_ab=r.mass_ab, mass_ba=r.mass_ba, agrees=float(credit[i]))
            for i, (h, r) in enumerate(zip(human, records))
        ],
    )


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


def eval_judge(config: EvalJudgeConfig, judge: Engine | None = None) -> EvalJudgeReport | CompareReport:
    """Judge every human pair in both orders and measure the judge against the human labels; with
    `config.compare`, do so under each configuration and compare them pair by pair."""
    # Every check before a judge loads: constitutions, templates, every row, the models, the output file.
    configurations = [_prepare(c) for c in configurations_of(config)]
    human = read_human_pairs(config.pairs, config.group_by, config.options.seed)
    if config.out is not None:
        check_outputs(config.out, "file", {
            "--pairs": config.pairs, "--constitution": config.constitution, "--templates": config.templates,
            "--compare": config.compare, "--few-shot-file": config.options.few_shot_file,
            "--judge-model": config.judge.model,
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
    where = "--judge-model" if configuration.file is None else f"{configuration.file}: judge.model"
    return _Prepared(configuration, panel, templates, engine_model(configuration.judge, where=where))


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
                for start in range(0, len(human), config.batch_size):
                    batch = [h.pair for h in human[start : start + config.batch_size]]
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
    data = read_yaml_mapping(path, what="a judging configuration", where="--compare", empty_ok=True)
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


def paired_bootstrap(
    reference: np.ndarray, other: np.ndarray, *, seed: int = 0, resamples: int = 2000
) -> PairedDifference:
    """The mean of `other − reference` over the same pairs and its 95 % paired-bootstrap interval: pairs
    are resampled with replacement, both configurations' scores moving together.

    >>> d = paired_bootstrap(np.array([0.0, 1.0, 0.0, 1.0] * 50), np.array([1.0, 1.0, 0.0, 1.0] * 50))
    >>> d.mean, d.low > 0.15, d.high < 0.35
    (0.25, True, True)
    """
    if len(reference) != len(other) or len(reference) == 0:
        raise ValueError("a paired difference needs the same, non-zero number of pairs on both sides")
    diffs = np.asarray(other, dtype=float) - np.asarray(reference, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return PairedDifference(mean=float(diffs.mean()), low=float(low), high=float(high))


class PairedDifference(BaseModel):
    """Agreement of a configuration minus the reference's, on the same pairs, with its 95 % interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: float
    low: float
    high: float


class ComparedConfiguration(BaseModel):
    """One configuration of a comparison: its report, its cost and its difference to the first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    file: str | None
    prompts: int = Field(description="Prompts the engine scored or continued for this configuration.")
    seconds: float = Field(description="Seconds its engine calls took in this run.")
    difference: PairedDifference | None = Field(description="Agreement minus the first configuration's.")
    report: EvalJudgeReport


class CompareReport(BaseModel):
    """What `labeler eval-judge --compare` prints and writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pairs_file: str
    n: int
    configurations: list[ComparedConfiguration]


def compare_table(report: CompareReport) -> Table:
    """One row per configuration: agreement with its interval, the paired difference to the first
    configuration with its interval, position consistency, ECE and cost."""
    from rich.table import Table

    table = Table(title=f"judging configurations on {report.pairs_file} ({report.n} pairs; differences are "
                        f"to '{report.configurations[0].name}', 95% paired bootstrap)")
    for header in ("configuration", "agreement [95% CI]", "difference [95% CI]", "position consistency", "ECE",
                   "prompts", "seconds"):
        table.add_column(header, justify="left" if header == "configuration" else "right")
    for entry in report.configurations:
        m = entry.report.overall
        d = entry.difference
        table.add_row(
            entry.name,
            f"{m.agreement:.1%} [{m.agreement_low:.1%}, {m.agreement_high:.1%}]",
            "-" if d is None else f"{d.mean:+.1%} [{d.low:+.1%}, {d.high:+.1%}]",
            f"{m.position_consistency:.1%}",
            f"{m.ece:.3f}",
            str(entry.prompts),
            f"{entry.seconds:.1f}",
        )
    return table


def report_tables(report: EvalJudgeReport) -> list[Table]:
    """The report as rich tables: the metrics (overall and per group), then the reliability table."""
    from rich.table import Table

    title = f"{report.judge_model} on {report.pairs_file} ({report.overall.n} pairs, principles {report.principles}"
    title += ", chain of thought" if report.cot else ""
    title += f"; columns: all pairs, then by {report.group_by})" if report.group_by else ")"
    # One row per metric and one column per set of pairs, so that many groups still fit a terminal.
    sets = [("all", report.overall)] + list(report.groups.items())
    metrics = Table(title=title)
    metrics.add_column("metric")
    for name, _ in sets:
        metrics.add_column(name, justify="right")
    rows = (
        ("n", "pairs", "{:d}"),
        ("agreement", "agreement (both orders)", "{:.1%}"),
        ("agreement_low", "  95% interval, low", "{:.1%}"),
        ("agreement_high", "  95% interval, high", "{:.1%}"),
        ("agreement_ab", "agreement, ab order only", "{:.1%}"),
        ("agreement_ba", "agreement, ba order only", "{:.1%}"),
        ("position_consistency", "position consistency", "{:.1%}"),
        ("p_first", "P(prefer first position)", "{:.3f}"),
        ("mean_mass", "mean choice mass", "{:.3f}"),
        ("ece", "ECE", "{:.3f}"),
    )
    for key, label, fmt in rows:
        metrics.add_row(label, *(fmt.format(getattr(m, key)) for _, m in sets))

    reliability = Table(title="reliability (confidence = max(p_a, 1 - p_a))")
    for header in ("confidence", "count", "mean confidence", "accuracy"):
        reliability.add_column(header, justify="right")
    for index, b in enumerate(report.reliability):
        closing = "]" if index == len(report.reliability) - 1 else ")"
        reliability.add_row(
            f"[{b.low:.2f}, {b.high:.2f}{closing}",
            str(b.count),
            "-" if b.mean_confidence is None else f"{b.mean_confidence:.3f}",
            "-" if b.accuracy is None else f"{b.accuracy:.1%}",
        )
    return [metrics, reliability]
