"""A reward model's opinion of a run's pairs, for `labeler review --reward-model`: every pair scored once,
in a background thread, shard by shard (verified reads), kept in memory only (nothing is written).

A pair's reward model **agrees** with the judge when both prefer the same response (r(A) > r(B) and
p_a > 0.5, or both the other way) and **disagrees** when they prefer different ones; a tie on either side
(equal rewards, p_a exactly 0.5) is neither.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labeler.core.records import PreferenceRecord
from labeler.store.manifest import load_manifest
from labeler.store.readers import read_committed_shard

Conversation = list[dict[str, str]]
Scorer = Callable[[Sequence[Conversation]], list[float]]
BATCH_PAIRS = 16
RESCAN_SECONDS = 2.0  # while the split is still being written

logger = logging.getLogger(__name__)


def verdict(p_a: float, reward_a: float, reward_b: float) -> str | None:
    """ "agree", "disagree", or None when the judge or the reward model prefers neither response.

    >>> verdict(0.8, 1.0, -1.0), verdict(0.8, -1.0, 1.0), verdict(0.5, 1.0, 0.0), verdict(0.2, 0.3, 0.3)
    ('agree', 'disagree', None, None)
    """
    if p_a == 0.5 or reward_a == reward_b:
        return None
    return "agree" if (p_a > 0.5) == (reward_a > reward_b) else "disagree"


def conversations(record: PreferenceRecord) -> tuple[Conversation, Conversation]:
    """The pair's conversation ending in response A, and in response B."""
    prompt = [{"role": m.role, "content": m.content} for m in record.prompt]
    return ([*prompt, {"role": "assistant", "content": record.response_a}],
            [*prompt, {"role": "assistant", "content": record.response_b}])  # fmt: skip


def reward_model_scorer(folder: Path) -> Scorer:
    """The scorer of a reward model folder (loaded here: call it before serving, so a bad model stops)."""
    from labeler.train.rm.model import load_reward_model

    model = load_reward_model(folder, batch_size=BATCH_PAIRS * 2)

    def score(batch: Sequence[Conversation]) -> list[float]:
        return [float(value) for value in model.score(list(batch)).float().cpu().tolist()]

    return score


@dataclass
class PairRewards:
    """Rewards of response A and B per pair id, filled in by `score_run` while the pages are served."""

    name: str
    rewards: dict[str, tuple[float, float]] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    done: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ids(self, which: str) -> set[str]:
        """The pairs whose reward model agrees (`which` "agree") or disagrees with the judge."""
        with self._lock:
            return {pair for pair, said in self.verdicts.items() if said == which}

    def of(self, pair_id: str) -> tuple[float, float] | None:
        with self._lock:
            return self.rewards.get(pair_id)

    def add(self, records: Sequence[PreferenceRecord], scores: Sequence[float]) -> None:
        with self._lock:
            for record, reward_a, reward_b in zip(records, scores[0::2], scores[1::2], strict=True):
                self.rewards[record.id] = (reward_a, reward_b)
                said = verdict(record.p_a, reward_a, reward_b)
                if said is not None:
                    self.verdicts[record.id] = said

    def score_run(self, run_dir: Path, scorer: Scorer, *, stop: threading.Event | None = None) -> None:
        """Score every committed pair of the run, and those committed later while the split is still being
        written; returns once the split is complete and every pair is scored (or `stop` is set)."""
        stop = stop or threading.Event()
        try:
            while not stop.is_set():
                entry = load_manifest(run_dir).splits.get("preferences")
                for shard in entry.shards if entry is not None else ():
                    records = PreferenceRecord.from_table(read_committed_shard(run_dir, "preferences", shard))
                    todo = [record for record in records if self.of(record.id) is None]
                    for start in range(0, len(todo), BATCH_PAIRS):
                        if stop.is_set():
                            return
                        batch = todo[start : start + BATCH_PAIRS]
                        self.add(batch, scorer([text for record in batch for text in conversations(record)]))
                if entry is None or entry.status == "complete":
                    return
                stop.wait(RESCAN_SECONDS)
        except Exception as exc:  # shown on the pages: the review goes on without the reward model
            logger.exception("scoring with the reward model failed")
            self.problem = f"{type(exc).__name__}: {exc}"
        finally:
            self.done = True
