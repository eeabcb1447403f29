"""The numbers and arrays a report shows, read from a run's verified shards.

Split-level statistics come from `labeler.store.card` (the dataset card shows the same ones), so the card
and the report cannot disagree; this module adds what only plots need: per-row arrays, per-principle
scores and their correlations, SFT lengths and principle usage.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeler.core.errors import InputError
from labeler.core.records import SPLITS
from labeler.evaluate.stats import first_position_rate
from labeler.store.card import PreferenceStatistics, SFTStatistics, preference_statistics, sft_statistics
from labeler.store.manifest import Manifest, load_manifest, manifest_path
from labeler.store.readers import read_split


@dataclass(frozen=True, eq=False)
class PrincipleSummary:
    """Scores one principle gave (log P(A) − log P(B); positive favours response_a)."""

    principle_id: str
    scores: np.ndarray  # (pairs scored under this principle,)

    @property
    def mean(self) -> float:
        return float(self.scores.mean())

    @property
    def std(self) -> float:
        return float(self.scores.std())

    @property
    def favours_a_rate(self) -> float:
        return float((self.scores > 0).mean())


@dataclass(frozen=True, eq=False)
class PreferenceData:
    """A preference split: the card's statistics plus the per-row arrays behind the plots."""

    stats: PreferenceStatistics
    p_a: np.ndarray  # (N,)
    p_a_ab: np.ndarray  # (N,)
    p_a_ba: np.ndarray  # (N,)
    consistent: np.ndarray  # (N,) bool
    principles: tuple[PrincipleSummary, ...]  # in order of first appearance
    score_matrix: np.ndarray  # (N, principles): NaN where a pair was not scored under a principle

    @property
    def mean_p_a(self) -> float | None:
        return float(self.p_a.mean()) if len(self.p_a) else None

    @property
    def first_shown_rate(self) -> float | None:
        """Mean probability the judge gave the response shown first (0.5: no position bias)."""
        return first_position_rate(self.p_a_ab, self.p_a_ba) if len(self.p_a) else None


@dataclass(frozen=True, eq=False)
class SFTData:
    """An SFT split: the card's statistics plus lengths and rounds per record."""

    stats: SFTStatistics
    initial_chars: np.ndarray  # (N,) length of the first response
    revision_chars: np.ndarray  # (N,) length of the final revision
    rounds: np.ndarray  # (N,) critique-and-revise rounds per record
    principle_usage: tuple[tuple[str, int], ...]  # rounds per principle, most used first


@dataclass(frozen=True)
class RankingSummary:
    """A rankings split in a few numbers: how far each prompt's scores spread, how often its judged pairs
    go round in a cycle."""

    prompts: int
    mean_responses: float | None
    mean_comparisons: float | None
    mean_score_spread: float | None  # highest minus lowest score of a prompt, in logits
    median_score_spread: float | None
    mean_score_error: float | None
    intransitive_rate: float | None  # prompts with at least one cyclic triple, of all prompts
    intransitive_triples: int


def ranking_summary(table: pa.Table) -> RankingSummary:
    """The summary of a rankings table.

    >>> t = pa.table({"scores": [[1.0, -1.0], [0.5, 0.0, -0.5]], "score_errors": [[1.0, 1.0], [2.0, 2.0, 2.0]],
    ...               "comparisons": [[{}], [{}, {}, {}]], "intransitive_triples": [0, 1]})
    >>> summary = ranking_summary(t)
    >>> summary.mean_score_spread, summary.intransitive_rate, summary.mean_comparisons
    (1.5, 0.5, 2.0)
    """
    scores = table.column("scores").to_pylist()
    errors = [e for row in table.column("score_errors").to_pylist() for e in row]
    cycles = table.column("intransitive_triples").to_pylist()
    spreads = np.array([max(row) - min(row) for row in scores], dtype=float)
    n = len(scores)

    def mean(values: list[int] | list[float] | np.ndarray) -> float | None:
        return float(np.mean(values)) if len(values) else None

    return RankingSummary(
        prompts=n,
        mean_responses=mean([len(row) for row in scores]),
        mean_comparisons=mean([len(row) for row in table.column("comparisons").to_pylist()]),
        mean_score_spread=mean(spreads),
        median_score_spread=float(np.median(spreads)) if n else None,
        mean_score_error=mean(errors),
        intransitive_rate=mean([c > 0 for c in cycles]),
        intransitive_triples=int(sum(cycles)),
    )


@dataclass(frozen=True, eq=False)
class RunData:
    """What a report needs of a run directory; a split the run lacks is None."""

    run_dir: Path
    manifest: Manifest
    preferences: PreferenceData | None
    sft: SFTData | None
    tables: dict[str, pa.Table] = field(default_factory=dict)  # each split the run has, as read
    rankings: RankingSummary | None = None


def pairwise_correlation(matrix: np.ndarray, min_rows: int = 2) -> np.ndarray:
    """Pearson correlation between columns over the rows where both are present (not NaN).

    NaN where fewer than `min_rows` rows have both, or where a column is constant on them.

    >>> m = np.array([[1.0, 2.0, 5.0], [2.0, 4.0, 5.0], [3.0, 6.0, np.nan], [4.0, 8.0, 1.0]])
    >>> np.round(pairwise_correlation(m), 3)
    array([[ 1.   ,  1.   , -0.945],
           [ 1.   ,  1.   , -0.945],
           [-0.945, -0.945,  1.   ]])
    """
    columns = matrix.shape[1]
    result = np.full((columns, columns), np.nan)
    for i in range(columns):
        for j in range(i, columns):
            both = ~np.isnan(matrix[:, i]) & ~np.isnan(matrix[:, j])
            if both.sum() < min_rows:
                continue
            x, y = matrix[both, i], matrix[both, j]
            x, y = x - x.mean(), y - y.mean()
            denominator = np.sqrt((x * x).sum() * (y * y).sum())
            if denominator > 0:
                result[i, j] = result[j, i] = float((x * y).sum() / denominator)
    return result


def score_matrix(principle_scores: pa.ChunkedArray | pa.Array, rows: int) -> tuple[tuple[str, ...], np.ndarray]:
    """(principle ids in order of first appearance, (rows, principles) matrix of scores, NaN if absent)."""
    if isinstance(principle_scores, pa.ChunkedArray):
        principle_scores = principle_scores.combine_chunks()
    parents = pc.list_parent_indices(principle_scores).to_numpy()
    flat = pc.list_flatten(principle_scores)
    ids = flat.field("principle_id").to_pylist()
    scores = flat.field("score").to_numpy(zero_copy_only=False)
    order = tuple(dict.fromkeys(ids))
    column = {principle: k for k, principle in enumerate(order)}
    matrix = np.full((rows, len(order)), np.nan)
    if ids:
        matrix[parents, [column[principle] for principle in ids]] = scores
    return order, matrix


def preference_data(table: pa.Table) -> PreferenceData:
    """Statistics and arrays of a preference split's table."""
    order, matrix = score_matrix(table.column("principle_scores"), table.num_rows)
    principles = tuple(
        PrincipleSummary(principle, matrix[~np.isnan(matrix[:, k]), k]) for k, principle in enumerate(order)
    )
    return PreferenceData(
        stats=preference_statistics(table),
        p_a=table.column("p_a").to_numpy(),
        p_a_ab=table.column("p_a_ab").to_numpy(),
        p_a_ba=table.column("p_a_ba").to_numpy(),
        consistent=table.column("consistent").to_numpy(zero_copy_only=False),
        principles=principles,
        score_matrix=matrix,
    )


def sft_data(table: pa.Table) -> SFTData:
    """Statistics, lengths and principle usage of an SFT split's table."""
    rounds = table.column("rounds")
    used = pc.list_flatten(rounds.combine_chunks() if isinstance(rounds, pa.ChunkedArray) else rounds)
    usage = Counter(used.field("principle_id").to_pylist())
    return SFTData(
        stats=sft_statistics(table),
        initial_chars=pc.utf8_length(table.column("initial")).to_numpy(),
        revision_chars=pc.utf8_length(table.column("revision")).to_numpy(),
        rounds=pc.list_value_length(rounds).to_numpy(),
        principle_usage=tuple(sorted(usage.items(), key=lambda item: (-item[1], item[0]))),
    )


def collect_run(run_dir: Path) -> RunData:
    """Everything a report shows of a run; `InputError` when the folder is not a run or has no split."""
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    known = [name for name in SPLITS if name in manifest.splits]
    if not known:
        raise InputError(
            "the run has no split yet (neither preferences nor sft): nothing to report",
            file=manifest_path(run_dir),
            where="splits",
        )
    # Splits still running are reported too (marked incomplete), like the dataset card does.
    tables = {name: read_split(run_dir, name, require_complete=False) for name in known}
    return RunData(
        run_dir=run_dir,
        manifest=manifest,
        preferences=preference_data(tables["preferences"]) if "preferences" in tables else None,
        sft=sft_data(tables["sft"]) if "sft" in tables else None,
        tables=tables,
        rankings=ranking_summary(tables["rankings"]) if "rankings" in tables else None,
    )
