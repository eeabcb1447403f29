"""A/B judging of pairs in both orders: render → one batched engine call → pure soft-label math.

For each pair and each principle it is judged under, the judge sees the pair twice: response_a as
option A (the `ab` order) and response_b as option A (the `ba` order). Requests are ordered pair by
pair and order by order, so every principle asked about the same pair and order shares the rendered
conversation and responses as a prefix (vLLM's prefix cache computes that part once).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from labeler.constitution import Constitution, Principle
from labeler.engine import ChoiceRequest, Engine, GenerationParams, Message
from labeler.errors import InputError
from labeler.records import PreferenceRecord, PrincipleScore, conversation_columns
from labeler.sampling import rng_for, weighted_sample
from labeler.soft_label import OrderedJudgment, aggregate, judgment
from labeler.stages.pairs import Pair, unordered_pair_key
from labeler.templates import Templates

CHOICES = ("A", "B")
COT_STOP = "Therefore, the better response is"


class JudgeOptions(BaseModel):
    """How pairs are judged."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principles: str = Field(
        "sample:1",
        description="'sample:K' judges each pair under K sampled principles (seeded); 'all' under every one.",
    )
    cot: bool = Field(False, description="Generate a rationale (greedy) before scoring the choice.")
    cot_max_tokens: int = Field(128, ge=8, description="Longest rationale, in tokens.")
    cot_clamp: tuple[float, float] | None = Field(
        None, description="Clamp each order's CoT soft label into [low, high] (the CAI paper used 0.4-0.6)."
    )
    salmon: bool = Field(False, description="Score every principle with a definition: SALMON principle_scores.")
    low_mass: float = Field(0.5, ge=0.0, le=1.0, description="Flag a pair when the choice tokens get less mass.")
    seed: int = Field(0, description="Seed for principle sampling.")

    @field_validator("cot_clamp")
    @classmethod
    def _clamp_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0.0 <= value[0] <= value[1] <= 1.0:
            raise ValueError(f"expected 0 <= low <= high <= 1, got low={value[0]}, high={value[1]}")
        return value

    @field_validator("principles")
    @classmethod
    def _mode(cls, value: str) -> str:
        if not re.fullmatch(r"all|sample:[1-9][0-9]*", value):
            raise ValueError(f"expected 'all' or 'sample:K' with K >= 1, got {value!r}")
        return value


@dataclass(frozen=True)
class Panel:
    """The principles a judge run uses: questions for p_a and definitions for SALMON scores."""

    judge: tuple[Principle, ...]
    salmon: tuple[Principle, ...]


def panel_for(constitution: Constitution, options: JudgeOptions, where: str) -> Panel:
    judge = constitution.for_stage("judge")
    salmon = constitution.for_stage("salmon") if options.salmon or not judge else ()
    if not judge and not salmon:
        raise InputError("no principle has a judge question or a definition, so nothing can judge pairs", file=where)
    if options.salmon and not constitution.for_stage("salmon"):
        raise InputError("--salmon needs principles with a definition; this constitution has none", file=where)
    return Panel(judge, salmon)


def principles_for_pair(panel: Panel, options: JudgeOptions, pair: Pair) -> tuple[Principle, ...]:
    """The judge principles one pair is judged under, seeded by the run seed and the unordered pair (the
    conversation and the two responses as a set), so a pair listed with its responses swapped is asked
    the same questions and gets p_a' = 1 - p_a."""
    if not panel.judge:
        return ()
    if options.principles == "all":
        return panel.judge
    k = min(int(options.principles.split(":")[1]), len(panel.judge))
    key = unordered_pair_key(pair.messages, pair.response_a, pair.response_b)
    rng = rng_for(options.seed, key, "principles")
    return tuple(weighted_sample(panel.judge, [p.weight for p in panel.judge], k, rng))


@dataclass(frozen=True)
class _Ask:
    """One question about one pair: a judge principle or a SALMON definition, in both orders."""

    pair: int
    principle: Principle
    salmon: bool


def judge_pairs(
    engine: Engine,
    templates: Templates,
    panel: Panel,
    pairs: Sequence[Pair],
    options: JudgeOptions,
) -> list[PreferenceRecord]:
    """Judge a batch of pairs in both orders; one preference record per pair."""
    if not pairs:
        return []
    asks: list[_Ask] = []
    for index, pair in enumerate(pairs):
        asks += [_Ask(index, p, False) for p in principles_for_pair(panel, options, pair)]
        asks += [_Ask(index, p, True) for p in panel.salmon]

    # Requests: pair by pair, order by order, so questions on the same pair+order share a prefix.
    requests: list[ChoiceRequest] = []
    slots: list[tuple[int, int]] = []  # (ask index, order: 0 = ab, 1 = ba)
    user_turns: list[str] = []
    for order in (0, 1):
        for ask_index, ask in enumerate(asks):
            pair = pairs[ask.pair]
            first, second = (pair.response_a, pair.response_b) if order == 0 else (pair.response_b, pair.response_a)
            if ask.salmon:
                text = templates.salmon(pair.messages, first, second, ask.principle.dimension or ask.principle.id,
                                        ask.principle.definition or "")
            elif options.cot:
                text = templates.judge_cot(pair.messages, first, second, ask.principle.judge or "")
            else:
                text = templates.judge(pair.messages, first, second, ask.principle.judge or "")
            user_turns.append(text)
            slots.append((ask_index, order))
    order_key = sorted(range(len(slots)), key=lambda i: (asks[slots[i][0]].pair, slots[i][1], slots[i][0]))
    slots = [slots[i] for i in order_key]
    user_turns = [user_turns[i] for i in order_key]

    prefixes = _answer_prefixes(engine, templates, options, asks, slots, user_turns)
    for turn, prefix in zip(user_turns, prefixes):
        requests.append(ChoiceRequest((Message(role="user", content=turn),), prefix))
    scores = engine.choice_logprobs(requests, CHOICES)

    raw = dict(zip(slots, scores))
    judgments = [
        judgment(raw[(i, 0)].logprobs, raw[(i, 1)].logprobs,
                 bounded=raw[(i, 0)].any_bounded or raw[(i, 1)].any_bounded)
        for i in range(len(asks))
    ]

    records = []
    for index, pair in enumerate(pairs):
        mine = [(ask, j) for ask, j in zip(asks, judgments) if ask.pair == index]
        records.append(_record(pair, mine, options, engine))
    return records


def _answer_prefixes(
    engine: Engine,
    templates: Templates,
    options: JudgeOptions,
    asks: Sequence[_Ask],
    slots: Sequence[tuple[int, int]],
    user_turns: Sequence[str],
) -> list[str]:
    """The assistant text each choice is scored after: a fixed opening, or a generated rationale."""
    plain = templates.judge_answer()
    if not options.cot:
        return [plain] * len(slots)
    cot_slots = [i for i, (a, _) in enumerate(slots) if not asks[a].salmon]
    params = GenerationParams(temperature=0.0, max_tokens=options.cot_max_tokens, stop=(COT_STOP,))
    generations = engine.generate([[Message(role="user", content=user_turns[i])] for i in cot_slots], params)
    prefixes = [plain] * len(slots)
    for i, generation in zip(cot_slots, generations):
        prefixes[i] = templates.judge_cot_answer(generation.texts[0])
    return prefixes


def _record(
    pair: Pair, asked: Sequence[tuple[_Ask, OrderedJudgment]], options: JudgeOptions, engine: Engine
) -> PreferenceRecord:
    judge_part = [j for ask, j in asked if not ask.salmon]
    salmon_part = [(ask, j) for ask, j in asked if ask.salmon]
    # p_a comes from the judge questions; a constitution of definitions only is judged by all of them.
    deciding = judge_part or [j for _, j in salmon_part]
    clamp_range = options.cot_clamp if options.cot and judge_part else None
    label = aggregate(deciding, low_mass=options.low_mass, clamp_range=clamp_range,
                      also_scored=[j for _, j in salmon_part])
    if options.salmon:
        scores = tuple(PrincipleScore(principle_id=a.principle.id, score=j.score) for a, j in salmon_part)
    else:
        scores = tuple(PrincipleScore(principle_id=a.principle.id, score=j.score) for a, j in asked)
    ids = tuple(a.principle.id for a, _ in asked if not a.salmon) or tuple(a.principle.id for a, _ in salmon_part)
    chosen, rejected = (pair.response_a, pair.response_b) if label.a_wins else (pair.response_b, pair.response_a)
    return PreferenceRecord(
        id=pair.id,
        source_id=pair.source_id,
        **conversation_columns(pair.messages, chosen, rejected),
        response_a=pair.response_a,
        response_b=pair.response_b,
        p_a=label.p_a,
        p_a_ab=label.p_a_ab,
        p_a_ba=label.p_a_ba,
        mass_ab=label.mass_ab,
        mass_ba=label.mass_ba,
        logprobs_ab=label.logprobs_ab,
        logprobs_ba=label.logprobs_ba,
        consistent=label.consistent,
        principle_ids=ids,
        principle_scores=scores,
        margin=label.margin,
        judge_model=engine.model_id,
        source=pair.source,
        flags=label.flags,
    )
