"""Accuracy of a reward model on human-labelled pairs, overall and per group.

Input: JSONL, Parquet or Arrow, one pair a row (read by `labeler.inputs.human_pairs`), e.g.
    {"prompt": "How do I ...?", "chosen": "...", "rejected": "...", "category": "harmless"}
`prompt` is text (one user turn) or a list of {role, content} messages; `chosen` and `rejected` are
text (the assistant's reply) or TRL's conversational form, a list of the one assistant message.
A pair counts as correct when r_chosen > r_rejected strictly; ties are counted separately.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from labeler.core.outputs import check_outputs
from labeler.engine.model_ref import resolve_model
from labeler.inputs.human_pairs import read_human_labelled_pairs
from labeler.train.rm.config import ScoreRMConfig


class GroupScore(BaseModel):
    """Accuracy over one set of pairs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pairs: int = Field(description="Number of pairs.")
    accuracy: float = Field(description="Fraction with r_chosen > r_rejected.")
    ties: int = Field(description="Pairs with r_chosen == r_rejected (counted as wrong).")
    mean_margin: float = Field(description="Mean of r_chosen − r_rejected.")


class ScoreReport(BaseModel):
    """What `labeler score-rm` prints and writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Reward model folder.")
    pairs_file: str = Field(description="The JSONL of labelled pairs.")
    group_by: str | None = Field(description="Column the groups come from, if any.")
    overall: GroupScore = Field(description="All pairs together.")
    groups: dict[str, GroupScore] = Field(description="Per value of the group column, sorted by name.")


def group_scores(
    reward_chosen: Sequence[float], reward_rejected: Sequence[float], groups: Sequence[str | None]
) -> tuple[GroupScore, dict[str, GroupScore]]:
    """Accuracy overall and per group (groups of None are only counted overall).

    >>> overall, per_group = group_scores([1.0, 0.0, 2.0], [0.0, 1.0, 2.0], ["x", "x", "y"])
    >>> overall.accuracy, overall.ties, per_group["x"].accuracy, per_group["y"].ties
    (0.3333333333333333, 1, 0.5, 1)
    """

    def summary(indices: Sequence[int]) -> GroupScore:
        margins = [reward_chosen[i] - reward_rejected[i] for i in indices]
        return GroupScore(
            pairs=len(indices),
            accuracy=sum(m > 0 for m in margins) / len(indices),
            ties=sum(m == 0 for m in margins),
            mean_margin=sum(margins) / len(indices),
        )

    by_group: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        if group is not None:
            by_group.setdefault(group, []).append(index)
    return summary(range(len(groups))), {name: summary(by_group[name]) for name in sorted(by_group)}


def score_reward_model(config: ScoreRMConfig) -> ScoreReport:
    """Score every labelled pair with the reward model; write the report to `config.out` when set."""
    from labeler.train.rm.model import load_reward_model

    # Every check before the model loads: the model folder, every row, the output file.
    folder = resolve_model(config.model, field="model", kind="reward").folder()
    pairs = read_human_labelled_pairs(config.pairs, group_by=config.group_by)
    if config.out is not None:
        check_outputs(config.out, "file", {"model": config.model, "pairs": config.pairs})
    model = load_reward_model(folder, max_length=config.max_length, batch_size=config.batch_size)
    chosen = model.score([p.conversation(p.chosen) for p in pairs]).float().cpu().tolist()
    rejected = model.score([p.conversation(p.rejected) for p in pairs]).float().cpu().tolist()
    overall, groups = group_scores(chosen, rejected, [p.group for p in pairs])
    report = ScoreReport(
        model=str(config.model),
        pairs_file=str(config.pairs),
        group_by=config.group_by,
        overall=overall,
        groups=groups,
    )
    if config.out is not None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return report


def report_table(report: ScoreReport) -> Any:
    """The report as a rich table: one row per group, then the total."""
    from rich.table import Table

    table = Table(title=f"reward model accuracy: {report.model}")
    table.add_column(report.group_by or "pairs")
    for name in ("pairs", "accuracy", "ties", "mean margin"):
        table.add_column(name, justify="right")

    def add(name: str, score: GroupScore, **style: Any) -> None:
        cells = (str(score.pairs), f"{score.accuracy:.3f}", str(score.ties), f"{score.mean_margin:+.3f}")
        table.add_row(name, *cells, **style)

    rows: Mapping[str, GroupScore] = report.groups
    for name, score in rows.items():
        add(name, score)
    add("all", report.overall, style="bold")
    return table
