"""Accuracy of a reward model on human-labelled pairs, overall and per group.

Input: JSONL, Parquet or Arrow, one pair a row (read by `labeler.inputs.human_pairs`), e.g.
    {"prompt": "How do I ...?", "chosen": "...", "rejected": "...", "category": "harmless"}
`prompt` is text (one user turn) or a list of {role, content} messages; `chosen` and `rejected` are
text (the assistant's reply) or TRL's conversational form, a list of the one assistant message.
A pair counts as correct when r_chosen > r_rejected strictly; ties are counted separately.

A reward model with one head per principle (`train-rm --heads principles`) is scored under a weighting
of its heads (`weights`, by default its constitution's), and each head on its own as well: the same
scores reweighted, with no retraining.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from labeler.core.outputs import check_outputs
from labeler.engine.model_ref import resolve_model
from labeler.inputs.human_pairs import read_human_labelled_pairs
from labeler.train.rm.config import ScoreRMConfig
from labeler.train.rm.heads import check_head_weights, default_head_weights, head_names, read_reward_card, weight_vector


class GroupScore(BaseModel):
    """Accuracy over one set of pairs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pairs: int = Field(description="Number of pairs.")
    accuracy: float = Field(description="Fraction with r_chosen > r_rejected.")
    ties: int = Field(description="Pairs with r_chosen == r_rejected (counted as wrong).")
    mean_margin: float = Field(description="Mean of r_chosen − r_rejected.")


class HeadScore(BaseModel):
    """Accuracy of one head of a reward model, on its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    overall: GroupScore = Field(description="All pairs together.")
    groups: dict[str, GroupScore] = Field(description="Per value of the group column, sorted by name.")


class ScoreReport(BaseModel):
    """What `labeler score-rm` prints and writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Reward model folder.")
    pairs_file: str = Field(description="The JSONL of labelled pairs.")
    group_by: str | None = Field(description="Column the groups come from, if any.")
    weights: dict[str, float] = Field(description="The weight of each head in the reward that `overall` and "
                                      "`groups` score (a head not named weighs 0).")
    overall: GroupScore = Field(description="All pairs together.")
    groups: dict[str, GroupScore] = Field(description="Per value of the group column, sorted by name.")
    heads: dict[str, HeadScore] = Field(
        default_factory=dict, description="Each head on its own (a model with several heads), in output order."
    )


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
    import torch

    from labeler.train.rm.model import load_reward_model

    # Every check before the model loads: the model folder, every row, the output file.
    folder = resolve_model(config.model, field="model", kind="reward").folder()
    heads = head_names(folder)
    weights = check_head_weights(
        config.weights or default_head_weights(heads, read_reward_card(folder)), heads, field="weights"
    )
    pairs = read_human_labelled_pairs(config.pairs, group_by=config.group_by)
    if config.out is not None:
        check_outputs(config.out, "file", {"model": config.model, "pairs": config.pairs})
    model = load_reward_model(folder, max_length=config.max_length, batch_size=config.batch_size)
    chosen = model.score_heads([p.conversation(p.chosen) for p in pairs]).float().cpu()  # (N, K)
    rejected = model.score_heads([p.conversation(p.rejected) for p in pairs]).float().cpu()
    groups_of = [p.group for p in pairs]
    vector = torch.tensor(weight_vector(heads, weights))  # (K,)
    overall, groups = group_scores((chosen @ vector).tolist(), (rejected @ vector).tolist(), groups_of)
    per_head = {}
    if len(heads) > 1:
        for k, name in enumerate(heads):
            head_overall, head_groups = group_scores(chosen[:, k].tolist(), rejected[:, k].tolist(), groups_of)
            per_head[name] = HeadScore(overall=head_overall, groups=head_groups)
    report = ScoreReport(
        model=str(config.model),
        pairs_file=str(config.pairs),
        group_by=config.group_by,
        weights=weights,
        overall=overall,
        groups=groups,
        heads=per_head,
    )
    if config.out is not None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return report


def weighting_text(weights: Mapping[str, float]) -> str:
    """A weighting as people write it.

    >>> weighting_text({"kind": 1.0, "brief": 0.5})
    'kind=1, brief=0.5'
    """
    return ", ".join(f"{name}={weight:g}" for name, weight in weights.items())


def heads_table(report: ScoreReport) -> Any:
    """Each head's accuracy on its own: one row per head, one column per group, then all pairs."""
    from rich.table import Table

    table = Table(title="accuracy of each head on its own")
    table.add_column("head")
    for name in report.groups:
        table.add_column(name, justify="right")
    table.add_column("all", justify="right")
    for head, score in report.heads.items():
        table.add_row(head, *(f"{score.groups[name].accuracy:.3f}" for name in report.groups),
                      f"{score.overall.accuracy:.3f}")
    return table


def report_table(report: ScoreReport) -> Any:
    """The report as a rich table: one row per group, then the total."""
    from rich.table import Table

    title = f"reward model accuracy: {report.model}"
    if report.heads:
        title += f" (heads weighted {weighting_text(report.weights)})"
    table = Table(title=title)
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
