"""`labeler eval-judge --human RUN`: the run's own judge (the p_a it stored) against the labels people
added with `labeler review` (`RUN/human/`), on exactly those pairs; no model is loaded.

Each labelled pair counts once: its human side is the majority of its annotators' A/B choices (ties and
skips are no side; a pair whose annotators split evenly is left out and counted). The judge's agreement
is `judge_metrics` over those pairs, with its Wilson interval, overall and per annotator (each on the
pairs that annotator chose A or B on). Where two or more people labelled a pair (A, B or tie), their
**inter-annotator agreement** is the share of annotator pairs on the same pair that made the same choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from labeler.core.errors import InputError
from labeler.evaluate.judge_report import Z_95_SIX_DECIMALS, JudgeMetrics, judge_metrics
from labeler.evaluate.stats import wilson_interval
from labeler.store.human import HumanLabel, annotators, human_folder, human_side, labels_by_pair, read_human_labels
from labeler.store.manifest import load_manifest
from labeler.store.readers import iter_shard_tables


class InterAnnotator(BaseModel):
    """How often two people who labelled the same pair made the same choice."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pairs: int = Field(description="Pairs labelled (A, B or tie) by two or more annotators.")
    comparisons: int = Field(description="Annotator pairs compared on those pairs.")
    agreement: float = Field(description="Share of those comparisons with the same choice.")
    agreement_low: float = Field(description="Lower end of its 95% Wilson interval.")
    agreement_high: float = Field(description="Upper end of its 95% Wilson interval.")


class HumanRunReport(BaseModel):
    """What `labeler eval-judge --human RUN` prints and writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run: str
    judge_models: list[str] = Field(description="The judge model(s) that labelled the pairs measured.")
    annotators: list[str]
    labelled_pairs: int = Field(description="Pairs with a human label of any kind.")
    measured_pairs: int = Field(description="Pairs with a human side (A or B): the judge is measured on these.")
    ties: int = Field(description="Pairs whose human labels were only ties (no side).")
    skipped: int = Field(description="Pairs whose human labels were only skips.")
    split: int = Field(description="Pairs whose annotators chose A and B equally often (left out).")
    not_in_run: int = Field(description="Labelled pair ids the run's preference split does not hold (yet).")
    overall: JudgeMetrics | None = Field(description="The judge against the humans' side; None with no pair.")
    per_annotator: dict[str, JudgeMetrics] = Field(description="The same on each annotator's own A/B labels.")
    inter_annotator: InterAnnotator | None = Field(description="Where two or more people labelled a pair.")


def inter_annotator(by_pair: Mapping[str, Mapping[str, HumanLabel]]) -> InterAnnotator | None:
    """Agreement between annotators on the pairs two or more of them labelled A, B or tie.

    >>> from labeler.store.human import new_label
    >>> both = {"p": {"x": new_label("p", "x", "A"), "y": new_label("p", "y", "A")},
    ...         "q": {"x": new_label("q", "x", "A"), "y": new_label("q", "y", "tie")}}
    >>> inter_annotator(both).agreement
    0.5
    """
    same = comparisons = pairs = 0
    for labels in by_pair.values():
        choices = [label.choice for label in labels.values() if label.choice != "skip"]
        if len(choices) < 2:
            continue
        pairs += 1
        for first, second in combinations(choices, 2):
            comparisons += 1
            same += first == second
    if comparisons == 0:
        return None
    low, high = wilson_interval(same, comparisons, z=Z_95_SIX_DECIMALS)
    return InterAnnotator(pairs=pairs, comparisons=comparisons, agreement=same / comparisons, agreement_low=low,
                          agreement_high=high)  # fmt: skip


def judged_rows(run_dir: Path, ids: set[str]) -> dict[str, dict[str, object]]:
    """The judge's numbers of the preference rows of `ids`, read shard by shard (verified); a split still
    being written gives the rows committed so far."""
    wanted = pa.array(sorted(ids), pa.string())
    found: dict[str, dict[str, object]] = {}
    columns = ["id", "p_a_ab", "p_a_ba", "mass_ab", "mass_ba", "judge_model"]
    for table in iter_shard_tables(run_dir, "preferences", require_complete=False):
        hits = table.select(columns).filter(pc.is_in(table.column("id"), value_set=wanted))
        for row in hits.to_pylist():
            found[str(row["id"])] = row
    return found


def human_run_report(run_dir: Path) -> HumanRunReport:
    """The run's judge against the human labels of `RUN/human/`; `InputError` when there are none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError("is not a run folder (it does not exist, or is a file)", file=run_dir, field="human")
    manifest = load_manifest(run_dir)
    if "preferences" not in manifest.splits:
        raise InputError("the run has no preference split, so no judge to measure", file=run_dir, field="human")
    by_pair = labels_by_pair(read_human_labels(run_dir))
    if not by_pair:
        raise InputError(
            f"no human labels in {human_folder(run_dir)}: add some with `labeler review`", file=run_dir, field="human"
        )
    rows = judged_rows(run_dir, set(by_pair))
    sides = {pair: human_side(labels) for pair, labels in by_pair.items() if pair in rows}
    measured = sorted(pair for pair, side in sides.items() if side is not None)
    only = {pair: {label.choice for label in labels.values()} for pair, labels in by_pair.items() if pair in rows}
    per_annotator = {}
    for name in annotators(run_dir):
        own = [(pair, labels[name].choice == "A") for pair, labels in sorted(by_pair.items())
               if pair in rows and name in labels and labels[name].choice in ("A", "B")]  # fmt: skip
        if own:
            per_annotator[name] = _metrics(rows, [pair for pair, _ in own], [side for _, side in own])
    return HumanRunReport(
        run=run_dir.name,
        judge_models=sorted({str(rows[pair]["judge_model"]) for pair in measured}),
        annotators=annotators(run_dir),
        labelled_pairs=len(by_pair),
        measured_pairs=len(measured),
        ties=sum(choices <= {"tie", "skip"} and "tie" in choices for choices in only.values()),
        skipped=sum(choices == {"skip"} for choices in only.values()),
        split=sum(side is None and bool(only[pair] & {"A", "B"}) for pair, side in sides.items()),
        not_in_run=len(set(by_pair) - set(rows)),
        overall=_metrics(rows, measured, [bool(sides[pair]) for pair in measured]) if measured else None,
        per_annotator=per_annotator,
        inter_annotator=inter_annotator(by_pair),
    )


def _metrics(rows: Mapping[str, Mapping[str, object]], pairs: list[str], human_a: list[bool]) -> JudgeMetrics:
    def column(name: str) -> np.ndarray:
        return np.array([float(rows[pair][name]) for pair in pairs])  # type: ignore[arg-type]

    mass = (column("mass_ab") + column("mass_ba")) / 2.0
    return judge_metrics(column("p_a_ab"), column("p_a_ba"), mass, np.array(human_a))


def human_run_tables(report: HumanRunReport) -> list[object]:
    """The report as rich tables: the judge against the humans (overall, per annotator), then the counts."""
    from rich.table import Table

    judges = ", ".join(report.judge_models) or "the judge"
    metrics = Table(title=f"{judges} against human labels of {report.run} ({report.measured_pairs} pairs with a side)")
    metrics.add_column("metric")
    sets = ([("all", report.overall)] if report.overall else []) + list(report.per_annotator.items())
    for name, _ in sets:
        metrics.add_column(name, justify="right")
    for key, label, fmt in (
        ("n", "pairs", "{:d}"),
        ("agreement", "agreement (both orders)", "{:.1%}"),
        ("agreement_low", "  95% interval, low", "{:.1%}"),
        ("agreement_high", "  95% interval, high", "{:.1%}"),
        ("position_consistency", "position consistency", "{:.1%}"),
        ("ece", "ECE", "{:.3f}"),
    ):
        metrics.add_row(label, *(fmt.format(getattr(m, key)) for _, m in sets if m is not None))
    counts = Table(title="human labels")
    counts.add_column("what")
    counts.add_column("count", justify="right")
    for label, value in (
        ("annotators", ", ".join(report.annotators)),
        ("pairs labelled", report.labelled_pairs),
        ("measured (a side: A or B)", report.measured_pairs),
        ("ties only", report.ties),
        ("skipped only", report.skipped),
        ("annotators split A/B evenly", report.split),
        ("not in the run's preference split", report.not_in_run),
    ):
        counts.add_row(label, str(value))
    inter = report.inter_annotator
    if inter is None:
        counts.add_row("inter-annotator agreement", "no pair labelled by two people")
    else:
        counts.add_row(
            "inter-annotator agreement",
            f"{inter.agreement:.1%} [{inter.agreement_low:.1%}, {inter.agreement_high:.1%}] "
            f"({inter.comparisons} comparisons on {inter.pairs} pairs)",
        )
    return [metrics, counts]
