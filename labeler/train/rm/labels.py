"""Label kinds: how a judged pair becomes a training example, each kind owning its target.

- `SoftLabels`: Bradley-Terry against the judge's soft label `p_a`;
- `HardLabels`: against its hard version, p_a >= 0.5 (TRL's chosen/rejected);
- `PrincipleLabels` (SALMON): a few principles shown in a system message, the target from the most
  decisive shown principle's `principle_scores` entry.

Adding a kind is adding one class with `usable` and `example`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from labeler.core.chat import Message
from labeler.core.records import PreferenceRecord
from labeler.train.rm.losses import hard_target
from labeler.train.rm.salmon import (
    SalmonPrinciple,
    ShownPrinciple,
    salmon_target,
    sample_shown_principles,
    with_principles,
)


@dataclass(frozen=True)
class TrainingExample:
    """Two full conversations (prompt + one response each) and the probability that A is better."""

    conversation_a: tuple[Message, ...]
    conversation_b: tuple[Message, ...]
    target_a: float
    margin: float  # TRL-style: how much the chosen response should win by (0 when unused)


class LabelKind(Protocol):
    """Turns a judged pair into a training example."""

    def usable(self, pair: PreferenceRecord) -> bool:
        """Whether this kind can make a target from the pair."""
        ...

    def example(self, pair: PreferenceRecord, *, epoch: int) -> TrainingExample: ...


def _conversations(messages: Sequence[Message], pair: PreferenceRecord) -> tuple[tuple[Message, ...], ...]:
    return tuple(
        (*messages, Message(role="assistant", content=response)) for response in (pair.response_a, pair.response_b)
    )


@dataclass(frozen=True)
class SoftLabels:
    """The judge's probability that response A is better, as it is."""

    def usable(self, pair: PreferenceRecord) -> bool:
        return True

    def example(self, pair: PreferenceRecord, *, epoch: int) -> TrainingExample:
        a, b = _conversations(pair.prompt, pair)
        return TrainingExample(a, b, target_a=pair.p_a, margin=pair.margin)


@dataclass(frozen=True)
class HardLabels:
    """The judge's preferred response as a certainty: 1 when p_a >= 0.5, else 0."""

    def usable(self, pair: PreferenceRecord) -> bool:
        return True

    def example(self, pair: PreferenceRecord, *, epoch: int) -> TrainingExample:
        a, b = _conversations(pair.prompt, pair)
        return TrainingExample(a, b, target_a=hard_target(pair.p_a), margin=pair.margin)


@dataclass(frozen=True)
class PrincipleLabels:
    """SALMON: a few principles in a system message, the target from the most decisive shown principle.

    The principles shown are drawn anew for each (seed, epoch, pair id), so every epoch shows a pair
    under another mix, and a rerun draws the same mixes.
    """

    principles: tuple[SalmonPrinciple, ...]
    count: int
    negate_probability: float
    seed: int
    hard: bool = False

    def scores(self, pair: PreferenceRecord) -> dict[str, float]:
        return {s.principle_id: s.score for s in pair.principle_scores}

    def shown_for(self, pair: PreferenceRecord, *, epoch: int) -> tuple[ShownPrinciple, ...]:
        rng = random.Random(f"{self.seed}:{epoch}:{pair.id}")
        return sample_shown_principles(
            self.principles,
            self.scores(pair).keys(),
            count=self.count,
            negate_probability=self.negate_probability,
            rng=rng,
        )

    def usable(self, pair: PreferenceRecord) -> bool:
        """Whether the judge scored at least one of the constitution's salmon principles for this pair."""
        ids = {p.id for p in self.principles}
        return any(s.principle_id in ids for s in pair.principle_scores)

    def example(self, pair: PreferenceRecord, *, epoch: int) -> TrainingExample:
        shown = self.shown_for(pair, epoch=epoch)
        target = salmon_target(shown, self.scores(pair))
        if self.hard:
            target = hard_target(target)
        a, b = _conversations(with_principles(pair.prompt, shown), pair)
        return TrainingExample(a, b, target_a=target, margin=0.0)
