"""What `labeler eval-judge` reports: the metrics of judged human pairs, the report models, the tables.

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
The intervals and the first-position rate are `labeler.evaluate.stats`'; agreement and calibration
are `labeler.evaluate.human_agreement`'s. `labeler.evaluate.judge_run` judges the pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from labeler.core.records import PreferenceRecord
from labeler.evaluate.human_agreement import (
    CALIBRATION_BINS,
    ReliabilityBin,
    agreement,
    agreement_credit,
    expected_calibration_error,
    reliability_table,
)
from labeler.evaluate.stats import BOOTSTRAP_RESAMPLES, bootstrap_interval, first_position_rate, wilson_interval

if TYPE_CHECKING:
    from rich.table import Table

    from labeler.evaluate.judge_run import Configuration, EvalJudgeConfig, HumanPair

# eval-judge's agreement intervals have always used z to six decimals; kept so that its numbers stay as they were.
Z_95_SIX_DECIMALS = 1.959964


# -- metrics: pure functions over per-pair arrays -------------------------------------------------


def position_consistency(p_a_ab: np.ndarray, p_a_ba: np.ndarray) -> float:
    """Share of pairs whose two orders prefer the same response (an exact 0.5 prefers neither).

    >>> position_consistency(np.array([0.9, 0.9, 0.5]), np.array([0.7, 0.2, 0.5]))
    0.3333333333333333
    """
    same = ((p_a_ab > 0.5) & (p_a_ba > 0.5)) | ((p_a_ab < 0.5) & (p_a_ba < 0.5))
    return float(same.mean())


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
    low, high = wilson_interval(float(agreement_credit(p_a, human_a).sum()), len(p_a), z=Z_95_SIX_DECIMALS)
    return JudgeMetrics(
        n=len(p_a),
        agreement=share,
        agreement_low=low,
        agreement_high=high,
        agreement_ab=agreement(p_a_ab, human_a),
        agreement_ba=agreement(p_a_ba, human_a),
        position_consistency=position_consistency(p_a_ab, p_a_ba),
        p_first=first_position_rate(p_a_ab, p_a_ba),
        mean_mass=float(mass.mean()),
        ece=expected_calibration_error(p_a, human_a),
    )



# -- the report -----------------------------------------------------------------------------------


class PairResult(BaseModel):
    """One judged human pair."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    line: int = Field(description="Line (or row number) of the pair in the input file.")
    group: str | None = Field(description="Its value of the group_by column.")
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
    groups: dict[str, JudgeMetrics] = Field(description="The same metrics per value of the group_by column.")
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


# -- comparing configurations ---------------------------------------------------------------------


def paired_bootstrap(
    reference: np.ndarray, other: np.ndarray, *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES
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
    low, high = bootstrap_interval(diffs, seed=seed, resamples=resamples)
    return PairedDifference(mean=float(diffs.mean()), low=low, high=high)


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
