"""Principle-conditioned reward modelling (SALMON): the reward model reads the principles it judges by.

Each training example shows the reward model a few principles, sampled with a seeded generator from the
constitution's salmon principles, some of them negated (their `negative_definition` is shown instead),
in a system message. The judge scored every principle separately (`principle_scores`: log P(A) − log P(B));
among the shown principles the one with the largest |score| decides the target, and a negated principle
flips it. The reward model thus learns to follow whichever principles it is shown, so one reward model
serves many mixes of principles at PPO time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from labeler.core.chat import Message


class SalmonPrinciple(Protocol):
    """What this module reads from a constitution principle (see `Constitution.for_stage("salmon")`)."""

    @property
    def id(self) -> str: ...
    @property
    def dimension(self) -> str | None: ...
    @property
    def definition(self) -> str | None: ...
    @property
    def negative_definition(self) -> str | None: ...


@dataclass(frozen=True)
class ShownPrinciple:
    """One principle as the reward model sees it."""

    principle_id: str
    dimension: str
    text: str  # the definition, or the negative definition when negated
    negated: bool


def sample_shown_principles(
    principles: Sequence[SalmonPrinciple],
    scored_ids: Collection[str],
    *,
    count: int,
    negate_probability: float,
    rng: random.Random,
) -> tuple[ShownPrinciple, ...]:
    """Pick up to `count` principles that the judge scored for this pair, negating some of them.

    Only principles with a score can decide a target, so only those are drawn. A principle without a
    `negative_definition` is never negated.

    >>> from types import SimpleNamespace as P
    >>> pool = [P(id="kind", dimension="Kind", definition="is kind", negative_definition="is unkind"),
    ...         P(id="brief", dimension="Brief", definition="is brief", negative_definition=None)]
    >>> shown = sample_shown_principles(pool, {"kind"}, count=2, negate_probability=1.0, rng=random.Random(0))
    >>> shown
    (ShownPrinciple(principle_id='kind', dimension='Kind', text='is unkind', negated=True),)
    """
    candidates = [p for p in principles if p.id in scored_ids and p.definition is not None]
    picked = rng.sample(candidates, min(count, len(candidates)))
    shown = []
    for principle in picked:
        assert principle.definition is not None  # filtered above
        negative = principle.negative_definition
        negate = negative is not None and rng.random() < negate_probability
        shown.append(
            ShownPrinciple(
                principle_id=principle.id,
                dimension=principle.dimension or principle.id,
                text=negative if negate and negative is not None else principle.definition,
                negated=negate,
            )
        )
    return tuple(shown)


def salmon_target(shown: Sequence[ShownPrinciple], scores: Mapping[str, float]) -> float:
    """P(A better) under the shown principles: sigmoid of the score of the most decisive one.

    The most decisive principle is the shown one with the largest |log P(A) − log P(B)| (the first
    shown wins a tie); a negated principle asks for the opposite, so its score changes sign.

    >>> kind = ShownPrinciple("kind", "Kind", "is kind", negated=False)
    >>> brief = ShownPrinciple("brief", "Brief", "is brief", negated=False)
    >>> round(salmon_target([kind, brief], {"kind": 0.5, "brief": -2.0}), 4)  # brief decides: sigmoid(-2)
    0.1192
    >>> not_kind = ShownPrinciple("kind", "Kind", "is unkind", negated=True)
    >>> round(salmon_target([kind], {"kind": 2.0}), 4), round(salmon_target([not_kind], {"kind": 2.0}), 4)
    (0.8808, 0.1192)
    """
    decisive: ShownPrinciple | None = None
    for principle in shown:
        if principle.principle_id not in scores:
            continue
        if decisive is None or abs(scores[principle.principle_id]) > abs(scores[decisive.principle_id]):
            decisive = principle
    if decisive is None:
        raise ValueError(f"none of the shown principles {[p.principle_id for p in shown]} has a score")
    score = scores[decisive.principle_id]
    return sigmoid(-score if decisive.negated else score)


def sigmoid(x: float) -> float:
    """Numerically stable logistic function.

    >>> sigmoid(0.0), round(sigmoid(-800.0), 4), round(sigmoid(800.0), 4)
    (0.5, 0.0, 1.0)
    """
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def principles_system_message(shown: Sequence[ShownPrinciple]) -> str:
    """The system message that tells the reward model which principles to judge by.

    >>> print(principles_system_message([ShownPrinciple("kind", "Kind", "The response is kind.", False),
    ...                                  ShownPrinciple("brief", "Brief", "The response rambles.", True)]))
    Judge the assistant's response by these principles:
    1. Kind: The response is kind.
    2. Not Brief: The response rambles.
    """
    lines = ["Judge the assistant's response by these principles:"]
    for number, principle in enumerate(shown, start=1):
        name = f"Not {principle.dimension}" if principle.negated else principle.dimension
        lines.append(f"{number}. {name}: {principle.text}")
    return "\n".join(lines)


def with_principles(messages: Sequence[Message], shown: Sequence[ShownPrinciple]) -> tuple[Message, ...]:
    """The prompt messages with the principles in front: a new system message, or prepended to an existing one.

    >>> shown = [ShownPrinciple("kind", "Kind", "is kind", False)]
    >>> [m.role for m in with_principles([Message(role="user", content="hi")], shown)]
    ['system', 'user']
    >>> with_principles([Message(role="system", content="Be terse.")], shown)[0].content.endswith("Be terse.")
    True
    """
    header = principles_system_message(shown)
    if messages and messages[0].role == "system":
        return (Message(role="system", content=f"{header}\n\n{messages[0].content}"), *messages[1:])
    return (Message(role="system", content=header), *messages)
