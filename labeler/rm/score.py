"""Accuracy of a reward model on human-labelled pairs, overall and per group.

Input: JSONL, one pair a line, e.g.
    {"prompt": "How do I ...?", "chosen": "...", "rejected": "...", "category": "harmless"}
`prompt` is text (one user turn) or a list of {role, content} messages; `chosen` and `rejected` are
text (the assistant's reply) or lists of messages that continue the prompt (TRL's conversational form).
A pair counts as correct when r_chosen > r_rejected strictly; ties are counted separately.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from labeler.errors import InputError
from labeler.rm.config import ScoreRMConfig

Message = dict[str, str]


@dataclass(frozen=True)
class LabelledPair:
    """One human-labelled pair, as two full conversations."""

    line: int
    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]
    group: str | None


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


def _messages(value: Any, *, field: str, file: Path, line: int, role: str) -> tuple[Message, ...]:
    """Text becomes one message of `role`; a list must be {role, content} messages with text content."""
    if isinstance(value, str):
        return ({"role": role, "content": value},)
    if isinstance(value, list) and value:
        messages = []
        for index, message in enumerate(value):
            if not (
                isinstance(message, dict)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                raise InputError(
                    f"{field}[{index}] must be a {{role, content}} message with text content",
                    file=file,
                    line=line,
                    where=field,
                )
            messages.append({"role": message["role"], "content": message["content"]})
        return tuple(messages)
    raise InputError(
        f"{field} must be text or a non-empty list of messages, got {value!r:.60}", file=file, line=line, where=field
    )


def read_labelled_pairs(path: Path, *, group_by: str | None = None) -> list[LabelledPair]:
    """Every pair in a JSONL file; InputError naming the file and line of the first bad one."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason})", file=path) from None
    pairs = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON: {exc.msg}", file=path, line=number) from None
        if not isinstance(row, dict):
            raise InputError("each line must be a JSON object", file=path, line=number)
        for needed in ("prompt", "chosen", "rejected"):
            if needed not in row:
                raise InputError(f"missing field {needed!r}", file=path, line=number, where=needed)
        prompt = _messages(row["prompt"], field="prompt", file=path, line=number, role="user")
        chosen = _messages(row["chosen"], field="chosen", file=path, line=number, role="assistant")
        rejected = _messages(row["rejected"], field="rejected", file=path, line=number, role="assistant")
        group = None
        if group_by is not None:
            value = row.get(group_by)
            if value is None or isinstance(value, dict | list):
                raise InputError(
                    f"group column {group_by!r} is missing or not a single value",
                    file=path,
                    line=number,
                    where=group_by,
                )
            group = str(value)
        pairs.append(LabelledPair(line=number, chosen=(*prompt, *chosen), rejected=(*prompt, *rejected), group=group))
    if not pairs:
        raise InputError("no pairs in the file", file=path)
    return pairs


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
    from labeler.rm.model import load_reward_model

    pairs = read_labelled_pairs(config.pairs, group_by=config.group_by)
    model = load_reward_model(config.model, max_length=config.max_length, batch_size=config.batch_size)
    chosen = model.score([p.chosen for p in pairs]).float().cpu().tolist()
    rejected = model.score([p.rejected for p in pairs]).float().cpu().tolist()
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
