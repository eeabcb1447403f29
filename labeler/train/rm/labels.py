"""Label kinds: how a judged pair becomes a training example, each kind owning its target.

- `SoftLabels`: Bradley-Terry against the judge's soft label `p_a`;
- `HardLabels`: against its hard version, p_a >= 0.5 (TRL's chosen/rejected);
- `PrincipleLabels` (SALMON): a few principles shown in a system message, the target from the most
  decisive shown principle's `principle_scores` entry;
- `PrincipleHeadLabels`: one target per reward head, `p_a` for the overall head and sigmoid of each
  principle's `principle_scores` entry for that principle's head (none where the pair has no score).

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
    sigmoid,
    with_principles,
)


@dataclass(frozen=True)
class TrainingExample:
    """Two full conversations (prompt + one response each) and the probability that A is better."""

    conversation_a: tuple[Message, ...]
    conversation_b: tuple[Message, ...]
    target_a: float
    margin: float  # TRL-style: how much the chosen response should win by (0 when unused)
    head_targets: tuple[float | None, ...] = ()  # further heads' targets (None: no label, the head skips the pair)


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


OVERALL_HEAD = "overall"
"""The name of the head trained on `p_a` in a model with one head per principle."""


@dataclass(frozen=True)
class PrincipleHeadLabels:
    """One reward head per principle: the overall head learns `p_a`, principle k's head sigmoid(score_k).

    A pair without a `principle_scores` entry for a principle gives that head no target (it is masked
    out of that head's loss); the overall head trains on every pair.
    """

    principle_ids: tuple[str, ...]
    hard: bool = False

    @property
    def heads(self) -> tuple[str, ...]:
        """Head names in output order: the overall head, then one per principle."""
        return (OVERALL_HEAD, *self.principle_ids)

    def usable(self, pair: PreferenceRecord) -> bool:
        return True

    def example(self, pair: PreferenceRecord, *, epoch: int) -> TrainingExample:
        scores = {s.principle_id: s.score for s in pair.principle_scores}
        targets = principle_head_targets(self.principle_ids, scores)
        overall = pair.p_a
        if self.hard:
            overall = hard_target(overall)
            targets = tuple(None if t is None else hard_target(t) for t in targets)
        a, b = _conversations(pair.prompt, pair)
        return TrainingExample(a, b, target_a=overall, margin=0.0, head_targets=targets)


def principle_head_targets(principle_ids: Sequence[str], scores: dict[str, float]) -> tuple[float | None, ...]:
    """Each principle head's soft label: sigmoid of the pair's score for it, or None where it has none.

    >>> principle_head_targets(["kind", "brief"], {"kind": 0.0, "other": 1.0})
    (0.5, None)
    """
    return tuple(sigmoid(scores[pid]) if pid in scores else None for pid in principle_ids)
