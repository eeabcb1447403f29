"""The soft-label math of A/B judging with position swapping (RLAIF), as small pure functions.

Every pair is judged twice: in the `ab` order response_a is shown as option A; in the `ba` order
response_b is. A judgment is the log-probability of the two choice tokens ("A", "B") as the next
token. Everything here speaks of response_a, whatever order the judge saw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from labeler.core.records import FLAG_CHOICE_OUTSIDE_TOPK, FLAG_LOW_MASS, FLAG_ORDER_FLIP, FLAG_TIE


def p_first(logprob_first: float, logprob_second: float) -> float:
    """P(option A) normalised over the two choice tokens: exp(a) / (exp(a) + exp(b)).

    Computed as a logistic of the difference, which never overflows.

    >>> round(p_first(math.log(0.3), math.log(0.1)), 6)
    0.75
    >>> p_first(-1000.0, -1000.0)
    0.5
    """
    diff = logprob_first - logprob_second
    if diff >= 0:
        return 1.0 / (1.0 + math.exp(-diff))
    e = math.exp(diff)
    return e / (1.0 + e)


def unswap(logprobs_ba: Sequence[float]) -> tuple[float, float]:
    """Map [log P("A"), log P("B")] from the `ba` order back to [log P(resp_a), log P(resp_b)].

    In the `ba` order the token "A" stands for response_b.

    >>> unswap([-0.1, -2.0])
    (-2.0, -0.1)
    """
    return (logprobs_ba[1], logprobs_ba[0])


@dataclass(frozen=True)
class OrderedJudgment:
    """The judge's numbers for one pair under one principle, both orders, mapped back to response_a."""

    logprobs_ab: tuple[float, float]  # [log P(resp_a), log P(resp_b)], response_a shown first
    logprobs_ba: tuple[float, float]  # the same, response_b shown first, already mapped back
    bounded: bool = False  # some choice was outside a top-k list: its log-probability is an upper bound
    # The judge's log-odds for the first position on content-free input (contextual calibration):
    # removed from each order's log-odds before the orders are combined. 0 leaves them as they are.
    position_prior: float = 0.0

    @property
    def log_odds_ab(self) -> float:
        """log P(resp_a) − log P(resp_b) in the ab order, the position prior removed (response_a is first)."""
        return self.logprobs_ab[0] - self.logprobs_ab[1] - self.position_prior

    @property
    def log_odds_ba(self) -> float:
        """The same in the ba order, where response_b is first: the prior counts against response_b."""
        return self.logprobs_ba[0] - self.logprobs_ba[1] + self.position_prior

    @property
    def p_a_ab(self) -> float:
        return p_first(self.log_odds_ab, 0.0)

    @property
    def p_a_ba(self) -> float:
        return p_first(self.log_odds_ba, 0.0)

    @property
    def mass_ab(self) -> float:
        return math.exp(self.logprobs_ab[0]) + math.exp(self.logprobs_ab[1])

    @property
    def mass_ba(self) -> float:
        return math.exp(self.logprobs_ba[0]) + math.exp(self.logprobs_ba[1])

    @property
    def score(self) -> float:
        """SALMON score: log P(A) − log P(B), averaged over both orders (positive favours response_a)."""
        return principle_score(self.logprobs_ab, self.logprobs_ba)


def judgment(
    logprobs_ab: Sequence[float],
    logprobs_ba_raw: Sequence[float],
    *,
    bounded: bool = False,
    position_prior: float = 0.0,
) -> OrderedJudgment:
    """Both orders' raw choice log-probabilities → one judgment about response_a.

    `logprobs_ba_raw` is what the engine returned for the `ba` order ([log P("A"), log P("B")]);
    `bounded` says that some of the four numbers is only an upper bound (a choice outside a top-k list);
    `position_prior` is the judge's log-odds for the first position on content-free input (see `OrderedJudgment`).

    >>> j = judgment([math.log(0.6), math.log(0.2)], [math.log(0.3), math.log(0.5)])
    >>> round(j.p_a_ab, 3), round(j.p_a_ba, 3)
    (0.75, 0.625)
    >>> prior = math.log(3)  # the judge gives the first position 3:1 odds on content-free input
    >>> calibrated = judgment([math.log(0.6), math.log(0.2)], [math.log(0.3), math.log(0.5)], position_prior=prior)
    >>> round(calibrated.p_a_ab, 3), round(calibrated.p_a_ba, 3), round(calibrated.score, 6) == round(j.score, 6)
    (0.5, 0.833, True)
    """
    ab = (float(logprobs_ab[0]), float(logprobs_ab[1]))
    return OrderedJudgment(ab, unswap([float(x) for x in logprobs_ba_raw]), bounded, position_prior)


def principle_score(logprobs_ab: Sequence[float], logprobs_ba: Sequence[float]) -> float:
    """log P(A) − log P(B) per order (both mapped back to response_a), averaged.

    >>> principle_score([-0.5, -1.5], [-1.0, -0.5])
    0.25
    """
    return ((logprobs_ab[0] - logprobs_ab[1]) + (logprobs_ba[0] - logprobs_ba[1])) / 2.0


def clamp(p: float, low: float, high: float) -> float:
    """Clamp a probability into [low, high] (CoT labels are over-confident; CAI used 0.4–0.6).

    >>> clamp(0.97, 0.4, 0.6), clamp(0.5, 0.4, 0.6)
    (0.6, 0.5)
    """
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"clamp range must satisfy 0 <= low <= high <= 1, got ({low}, {high})")
    return min(max(p, low), high)


@dataclass(frozen=True)
class SoftLabel:
    """The aggregated label of one pair over the principles it was judged under."""

    p_a: float
    p_a_ab: float
    p_a_ba: float
    mass_ab: float
    mass_ba: float
    logprobs_ab: tuple[float, float]
    logprobs_ba: tuple[float, float]
    consistent: bool
    flags: tuple[str, ...]

    @property
    def a_wins(self) -> bool:
        """Whether response_a is chosen (an exact tie goes to response_a and is flagged)."""
        return self.p_a >= 0.5

    @property
    def margin(self) -> float:
        """Preference strength in [0, 1]: 2·|p_a − 0.5| (0 for a coin flip, 1 for certainty)."""
        return abs(self.p_a - 0.5) * 2.0


Aggregation = Literal["prob", "logodds"]
AGGREGATIONS: tuple[Aggregation, ...] = ("prob", "logodds")


def combine_orders(
    judgments: Sequence[OrderedJudgment], how: Aggregation, weights: Sequence[float] | None = None
) -> tuple[float, float]:
    """Each order's P(response_a) over several principles' judgments of one pair: (p_a_ab, p_a_ba).

    `prob` averages the probabilities (CAI's ensemble); `logodds` averages the log-odds and maps the
    mean back (a product of experts: a confident principle outweighs several unsure ones). `weights`
    (default: equal) weight each judgment in either mean.

    >>> sure, unsure = judgment([0.0, -4.0], [-4.0, 0.0]), judgment([-1.0, -0.9], [-0.9, -1.0])
    >>> [round(p, 3) for p in combine_orders([sure, unsure], "prob")]
    [0.729, 0.729]
    >>> [round(p, 3) for p in combine_orders([sure, unsure], "logodds")]
    [0.875, 0.875]
    >>> [round(p, 3) for p in combine_orders([sure, unsure], "logodds", [3.0, 1.0])]
    [0.951, 0.951]
    """
    w = [1.0] * len(judgments) if weights is None else [float(x) for x in weights]
    total = sum(w)
    if how == "logodds":
        ab = sum(x * j.log_odds_ab for x, j in zip(w, judgments)) / total
        ba = sum(x * j.log_odds_ba for x, j in zip(w, judgments)) / total
        return p_first(ab, 0.0), p_first(ba, 0.0)
    return (sum(x * j.p_a_ab for x, j in zip(w, judgments)) / total,
            sum(x * j.p_a_ba for x, j in zip(w, judgments)) / total)


def aggregate(
    judgments: Sequence[OrderedJudgment],
    *,
    low_mass: float,
    clamp_range: tuple[float, float] | None = None,
    also_scored: Sequence[OrderedJudgment] = (),
    how: Aggregation = "prob",
    weights: Sequence[float] | None = None,
) -> SoftLabel:
    """Combine several principles' judgments of one pair into its soft label.

    Per order the judgments are combined by `combine_orders` (`how`, `weights`); `p_a` is the mean of
    the two orders. `low_mass` flags a pair when either order's mean mass falls below it;
    `order_flip` when the two orders prefer different responses; `tie` when p_a is exactly 0.5;
    `choice_outside_topk` when any judgment, or any of `also_scored` (judgments recorded with the pair
    that do not decide p_a, such as SALMON scores), rests on a bounded log-probability. A bounded
    choice keeps its bound in the numbers (mass included): the flag says they are not exact.

    >>> j = judgment([math.log(0.6), math.log(0.2)], [math.log(0.5), math.log(0.3)])
    >>> label = aggregate([j], low_mass=0.5)
    >>> round(label.p_a, 4), label.consistent, label.flags
    (0.5625, False, ('order_flip',))
    >>> bounded = judgment([math.log(0.9), math.log(0.01)], [math.log(0.01), math.log(0.9)], bounded=True)
    >>> aggregate([bounded], low_mass=0.5).flags
    ('choice_outside_topk',)
    """
    if not judgments:
        raise ValueError("a pair needs at least one judgment")
    n = len(judgments)
    p_ab, p_ba = combine_orders(judgments, how, weights)
    if clamp_range is not None:
        p_ab, p_ba = clamp(p_ab, *clamp_range), clamp(p_ba, *clamp_range)
    mass_ab = sum(j.mass_ab for j in judgments) / n
    mass_ba = sum(j.mass_ba for j in judgments) / n
    lp_ab = (sum(j.logprobs_ab[0] for j in judgments) / n, sum(j.logprobs_ab[1] for j in judgments) / n)
    lp_ba = (sum(j.logprobs_ba[0] for j in judgments) / n, sum(j.logprobs_ba[1] for j in judgments) / n)
    p_a = (p_ab + p_ba) / 2.0
    consistent = (p_ab > 0.5) == (p_ba > 0.5) and p_ab != 0.5 and p_ba != 0.5
    flags = []
    if min(mass_ab, mass_ba) < low_mass:
        flags.append(FLAG_LOW_MASS)
    if not consistent:
        flags.append(FLAG_ORDER_FLIP)
    if p_a == 0.5:
        flags.append(FLAG_TIE)
    if any(j.bounded for j in (*judgments, *also_scored)):
        flags.append(FLAG_CHOICE_OUTSIDE_TOPK)
    return SoftLabel(p_a, p_ab, p_ba, mass_ab, mass_ba, lp_ab, lp_ba, consistent, tuple(flags))
