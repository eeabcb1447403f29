"""K responses per prompt: judged pair by pair as a tournament, ranked by Bradley-Terry, then binarized.

A response set comes from K policy samples of a prompt or from a file row's `responses` list. The pairs
its design names are judged exactly as `labeler.stages.judge` judges any pair (both orders, principles,
SALMON scores, flags), all of one prompt's requests next to each other so the engine's prefix cache
computes the conversation once; the soft labels then fit one Bradley-Terry score per response. The
preference split is derived from the rankings: best vs worst, best vs a random other, or every pair,
each pair's p_a from its judged comparison or, for a pair never judged, from the fitted scores (flagged
`from_scores`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Literal

from labeler.core.batching import batches
from labeler.core.ranking import bradley_terry, comparison_design, intransitive_triples
from labeler.core.records import (
    FLAG_FROM_SCORES,
    FLAG_INTRANSITIVE,
    FLAG_TIE,
    JudgedComparison,
    PreferenceRecord,
    RankingRecord,
    conversation_columns,
    prompt_text,
    record_id,
    source_label,
)
from labeler.core.sampling import rng_for, seed_for
from labeler.engine import Engine, GenerationParams, Message
from labeler.inputs.rows import Row, is_blank, iter_rows, read_prompts, row_messages, source_id
from labeler.inputs.templates import Templates
from labeler.stages.judge import JudgeOptions, Panel, judge_pairs
from labeler.stages.pairs import SOURCE_POLICY, Pair, PairCounts, make_pair, too_long_message
from labeler.store import in_part

SOURCE_RESPONSES_FILE = "responses_file"
Binarization = Literal["best-worst", "best-random", "all-pairs"]
BINARIZATIONS: tuple[Binarization, ...] = ("best-worst", "best-random", "all-pairs")


@dataclass(frozen=True)
class ResponseSet:
    """K responses to one conversation, to be ranked."""

    id: str
    messages: tuple[Message, ...]
    responses: tuple[str, ...]
    response_ids: tuple[str, ...]
    source: str
    source_id: str | None = None
    line: int | None = None  # its line (or row) in a responses file

    @property
    def characters(self) -> int:
        """Characters of its texts: the conversation and every response."""
        return sum(len(m.content) for m in self.messages) + sum(len(r) for r in self.responses)


def ranking_id(messages: Sequence[Message], responses: Sequence[str]) -> str:
    """Stable id of a ranking: the conversation and its responses, in order.

    >>> m = [Message(role="user", content="hi")]
    >>> ranking_id(m, ["x", "y", "z"]) == ranking_id(m, ["x", "y", "z"]) != ranking_id(m, ["y", "x", "z"])
    True
    """
    conversation = json.dumps([[m.role, m.content] for m in messages], ensure_ascii=False)
    return record_id("ranking", conversation, *responses)


def parse_budget(comparisons: str) -> int | None:
    """The per-prompt budget of a `comparisons` setting: None for 'all', else the number of pairs.

    >>> parse_budget("all"), parse_budget("5")
    (None, 5)
    """
    return None if comparisons == "all" else int(comparisons)


def design_name(budget: int | None) -> str:
    return "all" if budget is None else f"round_robin:{budget}"


def is_responses_file(path: Path) -> bool:
    """Whether a pairs file holds response lists: its first row has a `responses` field."""
    for row in iter_rows(path):
        return "responses" in row.data
    return False


def response_sets_from_file(path: Path, max_chars: int | None = None) -> Iterator[ResponseSet]:
    """Rows with the conversation (`prompt` or `messages`), `responses` (a list of at least two texts,
    each text or TRL's one-assistant-message list), optional `response_ids` (distinct texts, one per
    response) and an optional `id`. A bad row names file, line and field; so does a row repeating
    another's conversation and responses, or one longer than `max_chars` characters."""
    source = source_label(SOURCE_RESPONSES_FILE, path)
    seen: dict[str, int] = {}
    for row in iter_rows(path):
        messages = row_messages(row)
        responses = _responses(row)
        ids = _response_ids(row, len(responses))
        found = ResponseSet(ranking_id(messages, responses), messages, responses, ids, source, source_id(row),
                            row.line)
        if max_chars is not None and found.characters > max_chars:
            raise row.error(too_long_message(found.characters, max_chars))
        if found.id in seen:
            raise row.error(f"the same conversation and responses as line {seen[found.id]}")
        seen[found.id] = row.line
        yield found


def _responses(row: Row) -> tuple[str, ...]:
    value = row.data.get("responses")
    if not isinstance(value, list):
        raise row.error("expected a list of responses (texts or one-assistant-message lists)", "responses")
    if len(value) < 2:
        raise row.error(f"a ranking needs at least 2 responses, got {len(value)}", "responses")
    texts: list[str] = []
    for index, item in enumerate(value):
        if isinstance(item, list):
            if len(item) != 1 or not isinstance(item[0], dict) or item[0].get("role") != "assistant":
                raise row.error(f"response {index}: expected text or a list of one {{role: assistant, content}} "
                                "message", "responses")
            item = item[0].get("content")
        if not isinstance(item, str) or is_blank(item):
            raise row.error(f"response {index} is empty or not text", "responses")
        if item in texts:
            raise row.error(f"response {index} is the same text as response {texts.index(item)}", "responses")
        texts.append(item)
    return tuple(texts)


def _response_ids(row: Row, count: int) -> tuple[str, ...]:
    value = row.data.get("response_ids")
    if value is None:
        return tuple(str(i) for i in range(count))
    if not isinstance(value, list) or len(value) != count:
        raise row.error(f"expected a list of {count} ids, one per response", "response_ids")
    ids: list[str] = []
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, str | int) or not str(item).strip():
            raise row.error(f"id {index} is not a non-empty text or whole number", "response_ids")
        if str(item) in ids:
            raise row.error(f"duplicate id {str(item)!r} (ids {ids.index(str(item))} and {index})", "response_ids")
        ids.append(str(item))
    return tuple(ids)


def response_sets_from_prompts(
    prompts_file: Path,
    policy: Engine,
    sampling: GenerationParams,
    k: int,
    seed: int,
    batch_size: int,
    counts: PairCounts,
    limit: int | None = None,
    part: tuple[int, int] | None = None,
) -> Iterator[ResponseSet]:
    """K samples per prompt from the policy (seeded by run seed and prompt id). Empty samples and repeats
    of an earlier sample are dropped (`counts.identical_dropped` counts them); a prompt left with fewer
    than two responses is dropped too (`counts.too_few_responses`). Each response keeps its sample
    number as its id."""
    params = sampling.model_copy(update={"n": k})
    source = source_label(SOURCE_POLICY, prompts_file)
    prompts = read_prompts(prompts_file)
    if limit is not None:
        prompts = islice(prompts, limit)
    selected = (prompt for prompt in prompts if part is None or in_part(prompt.id, *part))
    for batch in batches(selected, batch_size):
        seeds = [seed_for(seed, p.id, "responses") for p in batch]
        for prompt, generation in zip(batch, policy.generate([p.messages for p in batch], params, seeds)):
            kept: list[tuple[str, str]] = []
            for number, text in enumerate(t.strip() for t in generation.texts):
                if not text or any(text == other for other, _ in kept):
                    counts.identical_dropped += 1
                else:
                    kept.append((text, str(number)))
            if len(kept) < 2:
                counts.too_few_responses += 1
                continue
            responses = tuple(text for text, _ in kept)
            yield ResponseSet(ranking_id(prompt.messages, responses), prompt.messages, responses,
                              tuple(number for _, number in kept), source, prompt.source_id)


def pairs_of(found: ResponseSet, budget: int | None) -> list[tuple[int, int, Pair]]:
    """(a, b, pair) for each pair of the set's design: response a shown as A in the ab order."""
    return [
        (a, b, make_pair(found.messages, found.responses[a], found.responses[b], found.source, found.source_id))
        for a, b in comparison_design(len(found.responses), budget)
    ]


def judge_rankings(
    engine: Engine,
    templates: Templates,
    panel: Panel,
    sets: Sequence[ResponseSet],
    options: JudgeOptions,
    budget: int | None,
    priors: Mapping[str, float] | None = None,
) -> list[RankingRecord]:
    """Judge the design's pairs of every set in one batched call, and fit each set's scores."""
    designs = [pairs_of(found, budget) for found in sets]
    flat = [pair for design in designs for _, _, pair in design]
    judged = iter(judge_pairs(engine, templates, panel, flat, options, priors, share_prefixes=True))
    records = []
    for found, design in zip(sets, designs):
        comparisons = tuple(_comparison(a, b, next(judged)) for a, b, _ in design)
        records.append(ranking_record(found, comparisons, budget, engine.model_id))
    return records


def _comparison(a: int, b: int, record: PreferenceRecord) -> JudgedComparison:
    fields = {name: getattr(record, name) for name in JudgedComparison.model_fields if name not in ("a", "b")}
    return JudgedComparison(a=a, b=b, **fields)


def ranking_record(
    found: ResponseSet, comparisons: Sequence[JudgedComparison], budget: int | None, judge_model: str
) -> RankingRecord:
    """The rankings row of a set from its judged comparisons: the Bradley-Terry fit and the cycle count."""
    soft = [(c.a, c.b, c.p_a) for c in comparisons]
    fit = bradley_terry(len(found.responses), soft)
    cycles = intransitive_triples(soft)
    return RankingRecord(
        id=found.id,
        source_id=found.source_id,
        prompt=found.messages,
        prompt_text=prompt_text(found.messages),
        responses=found.responses,
        response_ids=found.response_ids,
        scores=fit.scores,
        score_errors=fit.errors,
        comparisons=tuple(comparisons),
        design=design_name(budget),
        intransitive_triples=cycles,
        flags=(FLAG_INTRANSITIVE,) if cycles else (),
        judge_model=judge_model,
        source=found.source,
    )


def binarize(ranking: RankingRecord, how: Binarization, seed: int) -> list[PreferenceRecord]:
    """The preference rows of a ranking: best vs worst, best vs one other drawn by `seed` and the ranking
    id, or every unordered pair. The best is the highest score (the first of equals), the worst the lowest
    of the others. Each row is the judged comparison of its pair as `label` would have written it, or,
    for a pair never judged, p_a = σ(s_a − s_b) of the fitted scores, flagged `from_scores`.

    Pairs are listed response a before b in the order of `responses`."""
    k = len(ranking.responses)
    best = max(range(k), key=lambda i: (ranking.scores[i], -i))
    others = [i for i in range(k) if i != best]
    if how == "all-pairs":
        chosen = [(a, b) for a in range(k) for b in range(a + 1, k)]
    elif how == "best-worst":
        worst = min(others, key=lambda i: (ranking.scores[i], i))
        chosen = [(min(best, worst), max(best, worst))]
    else:
        other = others[rng_for(seed, ranking.id, "binarize").randrange(len(others))]
        chosen = [(min(best, other), max(best, other))]
    judged = {frozenset((c.a, c.b)): c for c in ranking.comparisons}
    return [
        preference_row(ranking, judged[frozenset((a, b))]) if frozenset((a, b)) in judged
        else preference_from_scores(ranking, a, b)
        for a, b in chosen
    ]


def preference_row(ranking: RankingRecord, comparison: JudgedComparison) -> PreferenceRecord:
    """The preference row of one judged comparison: the row `label` writes for that pair."""
    a, b = ranking.responses[comparison.a], ranking.responses[comparison.b]
    pair = make_pair(ranking.prompt, a, b, ranking.source, ranking.source_id)
    chosen, rejected = (a, b) if comparison.p_a >= 0.5 else (b, a)
    fields = comparison.model_dump(exclude={"a", "b"})
    fields["principle_scores"] = comparison.principle_scores
    return PreferenceRecord(
        id=pair.id, source_id=ranking.source_id, **conversation_columns(ranking.prompt, chosen, rejected),
        response_a=a, response_b=b, judge_model=ranking.judge_model, source=ranking.source, input_chosen=None,
        **fields,
    )


def preference_from_scores(ranking: RankingRecord, index_a: int, index_b: int) -> PreferenceRecord:
    """A preference row for a pair never judged: p_a = σ(s_a − s_b), flagged `from_scores`."""
    a, b = ranking.responses[index_a], ranking.responses[index_b]
    p_a = 1.0 / (1.0 + math.exp(ranking.scores[index_b] - ranking.scores[index_a]))
    pair = make_pair(ranking.prompt, a, b, ranking.source, ranking.source_id)
    chosen, rejected = (a, b) if p_a >= 0.5 else (b, a)
    logprobs = (math.log(p_a), math.log1p(-p_a)) if 0.0 < p_a < 1.0 else (0.0, -math.inf)
    return PreferenceRecord(
        id=pair.id, source_id=ranking.source_id, **conversation_columns(ranking.prompt, chosen, rejected),
        response_a=a, response_b=b, p_a=p_a, p_a_ab=p_a, p_a_ba=p_a, mass_ab=1.0, mass_ba=1.0,
        logprobs_ab=logprobs, logprobs_ba=logprobs, consistent=True, principle_ids=(), principle_scores=(),
        margin=abs(p_a - 0.5) * 2.0, judge_model=ranking.judge_model, source=ranking.source,
        flags=(FLAG_FROM_SCORES, FLAG_TIE) if p_a == 0.5 else (FLAG_FROM_SCORES,), input_chosen=None,
    )
