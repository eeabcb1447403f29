"""What `labeler eval-policy` reports: the report models, every figure from the per-prompt numbers, the tables.

Win rates and the intervals of means are `labeler.evaluate.win_rate`'s (its statistics are
`labeler.evaluate.stats`'); `labeler.evaluate.policy_run` samples, judges and scores the answers.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from labeler.core.errors import InputError
from labeler.engine import Generation, GenerationParams
from labeler.evaluate.win_rate import MeanWithInterval, WinRate, mean_with_interval, win_rate

if TYPE_CHECKING:
    from rich.table import Table

    from labeler.evaluate.policy_run import EvalPlan, EvalPolicyConfig

EVAL_POLICY_JSON = "eval-policy.json"  # where a run keeps an evaluation (each iteration its own)
ROLES = ("baseline", "candidate")
Role = Literal["baseline", "candidate"]

# -- the report ---------------------------------------------------------------------------------------


class PromptResult(BaseModel):
    """One prompt: both answers and what was measured on them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    group: str | None
    baseline: str = Field(description="The baseline's answer.")
    candidate: str = Field(description="The candidate's answer.")
    p_candidate: float = Field(description="P(candidate's answer better), both orders and every principle averaged.")
    principles: dict[str, float] = Field(description="P(candidate's answer better) per principle.")
    baseline_tokens: int
    candidate_tokens: int
    reward_baseline: float | None = None
    reward_candidate: float | None = None
    kl: float | None = Field(None, description="log p_candidate - log p_baseline of the candidate's answer (nats).")


class Lengths(BaseModel):
    """Answer lengths of both policies, and the win rate split by which answer was longer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    baseline_tokens: MeanWithInterval
    candidate_tokens: MeanWithInterval
    baseline_chars: float
    candidate_chars: float
    candidate_longer: int = Field(description="Prompts where the candidate's answer has more tokens.")
    win_rate_when_longer: float | None = Field(description="Mean P(candidate better) where its answer is longer.")
    win_rate_otherwise: float | None = Field(description="Mean P(candidate better) where it is not longer.")


class HeadRewards(BaseModel):
    """Mean scores of one head of a reward model with several, for both policies' answers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    baseline: MeanWithInterval
    candidate: MeanWithInterval
    difference: MeanWithInterval = Field(description="Per prompt: candidate's score minus baseline's.")


class Rewards(BaseModel):
    """Mean reward-model scores of both policies' answers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reward_model: str
    baseline: MeanWithInterval
    candidate: MeanWithInterval
    difference: MeanWithInterval = Field(description="Per prompt: candidate's reward minus baseline's.")
    heads: dict[str, HeadRewards] = Field(
        default_factory=dict,
        description="A reward model with one head per principle: each head's mean, in output order (the reward "
        "above is their weighted sum, by the model's own weights).",
    )


class KL(BaseModel):
    """KL of the candidate to the baseline on the candidate's answers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_answer: MeanWithInterval = Field(description="Summed over each answer's tokens (nats), mean over prompts.")
    per_token: float = Field(description="Total over all answers / their total tokens (nats per token).")
    dtype: str
    exact: bool = Field(description="Whether the answers were sampled at temperature 1 without top-p.")


class JudgeStats(BaseModel):
    """How sure of itself the judge was on these pairs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean_mass: float = Field(description="Mean probability on the two choice tokens, both orders, all principles.")
    position_consistency: float = Field(description="Share of judgments whose two orders prefer the same answer.")


class EvalPolicyReport(BaseModel):
    """What `labeler eval-policy` prints and writes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    baseline: str
    candidate: str
    judge_model: str
    prompts_file: str
    constitution: str
    group_by: str | None
    seed: int
    sampling: GenerationParams
    principle_ids: list[str]
    overall: WinRate
    principles: dict[str, WinRate]
    groups: dict[str, WinRate]
    judge: JudgeStats
    lengths: Lengths
    rewards: Rewards | None
    kl: KL | None
    kl_skipped: str | None = Field(None, description="Why there is no KL, when there is none.")
    settings: dict[str, Any] = Field(description="The settings that decide these figures (see `eval_settings`).")
    prompts: list[PromptResult]


# Settings that do not change the figures: where they are written, how they are batched, how chatty.
NOT_SETTINGS = frozenset({"out", "quiet", "batch_size"})


def eval_settings(config: EvalPolicyConfig) -> dict[str, Any]:
    """The config as JSON data, less what does not change the figures (engine runtime knobs included)."""
    from labeler.stages.common import fingerprint_config

    data = fingerprint_config(config)
    return {key: value for key, value in data.items() if key not in NOT_SETTINGS}


# -- the numbers --------------------------------------------------------------------------------------


def build_report(
    config: EvalPolicyConfig,
    plan: EvalPlan,
    answers: dict[str, list[Generation]],
    texts: dict[str, list[str]],
    per_principle: dict[str, np.ndarray],
    masses: Sequence[float],
    consistent: Sequence[bool],
    rewards: dict[str, np.ndarray] | None,
    kl_values: np.ndarray | None,
    kl_skipped: str | None,
    judge_model: str,
    head_rewards: dict[str, dict[str, np.ndarray]] | None = None,
) -> EvalPolicyReport:
    """Every figure of the report from the per-prompt numbers (`head_rewards`: head -> role -> scores, for a
    reward model with several heads)."""
    seed = config.seed
    p = np.mean(np.stack(list(per_principle.values())), axis=0)  # (n,) mean over principles
    groups = {}
    if config.group_by is not None:
        names = np.array([prompt.group for prompt in plan.prompts])
        groups = {name: win_rate(p[names == name], seed=seed) for name in sorted(set(names.tolist()))}
    tokens = {role: np.array([g.token_counts[0] for g in answers[role]], dtype=float) for role in ROLES}
    longer = tokens["candidate"] > tokens["baseline"]
    lengths = Lengths(
        baseline_tokens=mean_with_interval(tokens["baseline"], seed=seed),
        candidate_tokens=mean_with_interval(tokens["candidate"], seed=seed),
        baseline_chars=float(np.mean([len(t) for t in texts["baseline"]])),
        candidate_chars=float(np.mean([len(t) for t in texts["candidate"]])),
        candidate_longer=int(longer.sum()),
        win_rate_when_longer=float(p[longer].mean()) if longer.any() else None,
        win_rate_otherwise=float(p[~longer].mean()) if (~longer).any() else None,
    )
    reward_report = None
    if rewards is not None and plan.reward_model is not None:
        reward_report = Rewards(
            reward_model=plan.reward_model.label,
            baseline=mean_with_interval(rewards["baseline"], seed=seed),
            candidate=mean_with_interval(rewards["candidate"], seed=seed),
            difference=mean_with_interval(rewards["candidate"] - rewards["baseline"], seed=seed),
            heads={
                head: HeadRewards(
                    baseline=mean_with_interval(by_role["baseline"], seed=seed),
                    candidate=mean_with_interval(by_role["candidate"], seed=seed),
                    difference=mean_with_interval(by_role["candidate"] - by_role["baseline"], seed=seed),
                )
                for head, by_role in (head_rewards or {}).items()
            },
        )
    kl_report = None
    if kl_values is not None:
        exact = config.sampling.temperature == 1.0 and config.sampling.top_p == 1.0
        kl_report = KL(per_answer=mean_with_interval(kl_values, seed=seed),
                       per_token=float(kl_values.sum() / max(tokens["candidate"].sum(), 1.0)),
                       dtype=config.kl_dtype, exact=exact)
        if not exact:
            print("note: the answers were not sampled at temperature 1 without top-p, so the KL figure is the "
                  "log-ratio on tempered samples, not KL(candidate || baseline)", file=sys.stderr)
    prompt_rows = [
        PromptResult(
            id=prompt.id, group=prompt.group, baseline=texts["baseline"][i], candidate=texts["candidate"][i],
            p_candidate=float(p[i]), principles={pid: float(v[i]) for pid, v in per_principle.items()},
            baseline_tokens=int(tokens["baseline"][i]), candidate_tokens=int(tokens["candidate"][i]),
            reward_baseline=None if rewards is None else float(rewards["baseline"][i]),
            reward_candidate=None if rewards is None else float(rewards["candidate"][i]),
            kl=None if kl_values is None else float(kl_values[i]),
        )
        for i, prompt in enumerate(plan.prompts)
    ]
    return EvalPolicyReport(
        baseline=plan.baseline.label,
        candidate=plan.candidate.label,
        judge_model=judge_model,
        prompts_file=str(config.prompts),
        constitution=str(config.constitution),
        group_by=config.group_by,
        seed=seed,
        sampling=config.sampling,
        principle_ids=list(per_principle),
        overall=win_rate(p, seed=seed),
        principles={pid: win_rate(v, seed=seed) for pid, v in per_principle.items()},
        groups=groups,
        judge=JudgeStats(mean_mass=float(np.mean(masses)), position_consistency=float(np.mean(consistent))),
        lengths=lengths,
        rewards=reward_report,
        kl=kl_report,
        kl_skipped=None if kl_values is not None else kl_skipped,
        settings=eval_settings(config),
        prompts=prompt_rows,
    )


def read_eval_policy(path: Path) -> EvalPolicyReport:
    """An eval-policy JSON file; `InputError` naming it when it is not one."""
    from pydantic import ValidationError

    from labeler.core.input_files import MAX_REPORT_BYTES, read_input_bytes

    data = read_input_bytes(path, limit=MAX_REPORT_BYTES, what="an eval-policy report")
    try:
        return EvalPolicyReport.model_validate_json(data)
    except ValidationError as exc:
        raise InputError(f"not an eval-policy report: {exc.errors()[0]['msg']}", file=path) from None


# -- printing -----------------------------------------------------------------------------------------


def interval(value: float, low: float, high: float, percent: bool = True) -> str:
    """A figure with its interval.

    >>> interval(0.5, 0.4, 0.61)
    '50.0% [40.0%, 61.0%]'
    >>> interval(1.234, 0.5, 2.0, percent=False)
    '1.234 [0.500, 2.000]'
    """
    if percent:
        return f"{value:.1%} [{low:.1%}, {high:.1%}]"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def report_tables(report: EvalPolicyReport) -> list[Table]:
    """The report as rich tables: win rates (overall, per principle, per group), then the other figures."""
    from rich.table import Table

    wins = Table(title=f"{report.candidate} against {report.baseline} on {report.prompts_file} "
                       f"({report.overall.n} prompts; judge {report.judge_model}; 95% intervals)")
    for header in ("", "win rate (bootstrap)", "wins / ties / losses", "hard win rate (Wilson)"):
        wins.add_column(header, justify="right" if header else "left")
    rows = [("all", report.overall)] + [(f"principle {k}", v) for k, v in report.principles.items()]
    rows += [(f"{report.group_by} = {k}", v) for k, v in report.groups.items()]
    for name, w in rows:
        wins.add_row(name, interval(w.win_rate, w.low, w.high), f"{w.wins} / {w.ties} / {w.losses}",
                     interval(w.hard_win_rate, w.hard_low, w.hard_high))

    figures = Table(title="what else differs")
    for header in ("", "baseline", "candidate"):
        figures.add_column(header, justify="right" if header else "left")
    lengths = report.lengths
    figures.add_row("answer tokens", interval(lengths.baseline_tokens.mean, lengths.baseline_tokens.low,
                                              lengths.baseline_tokens.high, percent=False),
                    interval(lengths.candidate_tokens.mean, lengths.candidate_tokens.low,
                             lengths.candidate_tokens.high, percent=False))
    figures.add_row("answer characters", f"{lengths.baseline_chars:.1f}", f"{lengths.candidate_chars:.1f}")
    figures.add_row("win rate where the candidate is longer / not", "",
                    f"{_maybe(lengths.win_rate_when_longer)} ({lengths.candidate_longer} prompts) / "
                    f"{_maybe(lengths.win_rate_otherwise)}")
    if report.rewards is not None:
        r = report.rewards
        figures.add_row(f"mean reward ({r.reward_model})", interval(r.baseline.mean, r.baseline.low, r.baseline.high,
                                                                  percent=False),
                        interval(r.candidate.mean, r.candidate.low, r.candidate.high, percent=False))
        figures.add_row("reward difference", "", interval(r.difference.mean, r.difference.low, r.difference.high,
                                                          percent=False))
        for head, h in r.heads.items():
            figures.add_row(f"  head {head}", interval(h.baseline.mean, h.baseline.low, h.baseline.high, percent=False),
                            interval(h.candidate.mean, h.candidate.low, h.candidate.high, percent=False))
    if report.kl is not None:
        k = report.kl.per_answer
        figures.add_row("KL(candidate || baseline) per answer, nats", "",
                        interval(k.mean, k.low, k.high, percent=False) + ("" if report.kl.exact else " (tempered)"))
        figures.add_row("  per token", "", f"{report.kl.per_token:.4f}")
    else:
        figures.add_row("KL", "", f"skipped: {report.kl_skipped}")
    figures.add_row("judge: mean choice mass / position consistency", "",
                    f"{report.judge.mean_mass:.3f} / {report.judge.position_consistency:.1%}")
    return [wins, figures]


def _maybe(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1%}"
