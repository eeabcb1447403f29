"""A/B judging of pairs in both orders: render → one batched engine call → pure soft-label math.

For each pair and each principle it is judged under, the judge sees the pair twice: response_a as
option A (the `ab` order) and response_b as option A (the `ba` order). Requests are ordered pair by
pair and order by order, so every principle asked about the same pair and order shares the rendered
conversation and responses as a prefix (vLLM's prefix cache computes that part once).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labeler.core.errors import InputError
from labeler.core.records import PreferenceRecord, PrincipleScore, conversation_columns
from labeler.core.sampling import rng_for, weighted_sample
from labeler.core.soft_label import Aggregation, OrderedJudgment, aggregate, judgment
from labeler.engine import ChoiceRequest, Engine, GenerationParams, Message
from labeler.inputs.constitution import Constitution, Principle
from labeler.inputs.constitution.schema import JudgeDemo
from labeler.inputs.templates import Templates
from labeler.stages.pairs import Pair, unordered_pair_key

CHOICES = ("A", "B")
COT_STOP = "Therefore, the better response is"
# Content-free stand-ins for the conversation and both replies (Zhao et al. 2021, "Calibrate Before Use"):
# what the judge answers to them is its prior for each position, whatever the content.
CONTENT_FREE = ("N/A", "[MASK]", "None")


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
    aggregate: Aggregation = Field(
        "prob",
        description="How the principles a pair is judged under combine, per order: prob (mean probability, "
        "as in CAI) or logodds (mean log-odds: a confident principle outweighs unsure ones).",
    )
    calibrate: bool = Field(
        False,
        description="Contextual calibration: remove the judge's prior for each position, measured on "
        "content-free pairs once per principle, from each order's log-odds before the orders combine.",
    )
    few_shot: int = Field(
        0, ge=0, description="Show this many judging demonstrations before each question (positions alternate)."
    )
    few_shot_file: Path | None = Field(
        None,
        description="Demonstrations for ‹few_shot›: {conversation, better, worse} entries or the CAI feedback "
        'few-shot format ({"prompt", "corrects", "incorrects"}); default: the constitution\'s judge_few_shot.',
    )
    decide: Literal["judge", "salmon"] = Field(
        "judge",
        description="What sets p_a: the judge questions, or SALMON (every principle's definition scored; p_a "
        "is the logistic of the weight-averaged per-principle scores).",
    )
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

    @model_validator(mode="after")
    def _compatible(self) -> JudgeOptions:
        if self.cot and self.few_shot:
            raise ValueError("few-shot demonstrations carry no rationale: use few_shot or cot, not both")
        if self.cot and self.calibrate:
            raise ValueError("calibrate measures the prior of a plain answer: use calibrate or cot, not both")
        if self.cot and self.decide == "salmon":
            raise ValueError("decide: salmon scores definitions without a rationale: leave cot off")
        if self.cot_clamp is not None and not self.cot:
            # InputError passes through pydantic unchanged: the message names the option, not the whole section.
            raise InputError("is given but cot is off: the clamp bounds the soft label of a rationale (‹cot›)",
                             field="cot_clamp", where="(cot_clamp)")
        if self.few_shot_file is not None and self.few_shot == 0:
            raise ValueError("few_shot_file is given but few_shot is 0: say how many demonstrations to show")
        return self


@dataclass(frozen=True)
class Panel:
    """The principles a judge run uses: questions for p_a and definitions for SALMON scores, and the
    judging demonstrations shown before each question."""

    judge: tuple[Principle, ...]
    salmon: tuple[Principle, ...]
    demos: tuple[JudgeDemo, ...] = ()


def panel_for(constitution: Constitution, options: JudgeOptions, where: str) -> Panel:
    """The principles and demonstrations `options` ask for; `InputError` (naming `where`) when the
    constitution (or the demonstrations file) cannot give them."""
    from labeler.inputs.constitution.judge_demos import read_judge_demos

    definitions = constitution.for_stage("salmon")
    judge = constitution.for_stage("judge") if options.decide == "judge" else ()
    salmon = definitions if options.salmon or options.decide == "salmon" or not judge else ()
    if (options.salmon or options.decide == "salmon") and not definitions:
        flag = "‹salmon›" if options.salmon else "‹decide› salmon"
        raise InputError(f"{flag} needs principles with a definition; this constitution has none", file=where)
    if not judge and not salmon:
        raise InputError("no principle has a judge question or a definition, so nothing can judge pairs", file=where)
    asked = int(options.principles.split(":")[1]) if options.principles.startswith("sample:") else 0
    if judge and asked > len(judge):
        raise InputError(f"‹principles› {options.principles} asks for {asked} principles per pair; the constitution "
                         f"has {len(judge)} with a judge question", file=where)
    demos: tuple[JudgeDemo, ...] = ()
    if options.few_shot:
        source = options.few_shot_file
        demos = read_judge_demos(source) if source is not None else constitution.judge_few_shot
        if len(demos) < options.few_shot:
            holder = f"{source} holds" if source is not None else "the constitution's judge_few_shot holds"
            raise InputError(f"‹few_shot› {options.few_shot} asks for more demonstrations than {holder} "
                             f"({len(demos)})", file=source or where)
        demos = demos[: options.few_shot]
    return Panel(judge, salmon, demos)


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
    priors: Mapping[str, float] | None = None,
    *,
    share_prefixes: bool = False,
) -> list[PreferenceRecord]:
    """Judge a batch of pairs in both orders; one preference record per pair.

    `priors`: what `position_priors` measured, for `options.calibrate` (measured here when not given;
    a caller judging many batches measures them once). `share_prefixes`: the pairs hold several responses
    to one conversation (a ranking's tournament); their requests are sent conversation by conversation,
    and within one by the response shown first, so each request follows those it shares the longest
    prefix with. The labels are the same either way; only the engine's work differs.
    """
    if not pairs:
        return []
    if options.calibrate and priors is None:
        priors = position_priors(engine, templates, panel, options)
    asks: list[_Ask] = []
    for index, pair in enumerate(pairs):
        asks += [_Ask(index, p, False) for p in principles_for_pair(panel, options, pair)]
        asks += [_Ask(index, p, True) for p in panel.salmon]

    # Requests: pair by pair, order by order, so questions on the same pair+order share a prefix
    # (with share_prefixes, conversation by conversation, then by the response shown first).
    requests: list[ChoiceRequest] = []
    slots: list[tuple[int, int]] = []  # (ask index, order: 0 = ab, 1 = ba)
    user_turns: list[str] = []
    for order in (0, 1):
        for ask_index, ask in enumerate(asks):
            pair = pairs[ask.pair]
            first, second = (pair.response_a, pair.response_b) if order == 0 else (pair.response_b, pair.response_a)
            user_turns.append(_question(templates, options, ask.principle, ask.salmon, pair.messages, first, second))
            slots.append((ask_index, order))
    group: dict[tuple[Message, ...], int] = {}
    for index, pair in enumerate(pairs):
        group.setdefault(pair.messages, index)

    def order_key(slot: int) -> tuple[int, str, int, int, int]:
        ask_index, order = slots[slot]
        pair = pairs[asks[ask_index].pair]
        if not share_prefixes:
            return (asks[ask_index].pair, "", 0, order, ask_index)
        first = pair.response_a if order == 0 else pair.response_b
        return (group[pair.messages], first, asks[ask_index].pair, order, ask_index)

    sending = sorted(range(len(slots)), key=order_key)
    slots = [slots[i] for i in sending]
    user_turns = [user_turns[i] for i in sending]

    prefixes = _answer_prefixes(engine, templates, options, asks, slots, user_turns)
    demo_turns: dict[str, tuple[Message, ...]] = {}
    for (ask_index, _), turn, prefix in zip(slots, user_turns, prefixes):
        ask = asks[ask_index]
        shown = () if ask.salmon else demo_turns.setdefault(
            ask.principle.id, demonstration_turns(templates, panel.demos, ask.principle.judge or "")
        )
        requests.append(ChoiceRequest((*shown, Message(role="user", content=turn)), prefix))
    scores = engine.choice_logprobs(requests, CHOICES)

    raw = dict(zip(slots, scores))
    judgments = [
        judgment(raw[(i, 0)].logprobs, raw[(i, 1)].logprobs,
                 bounded=raw[(i, 0)].any_bounded or raw[(i, 1)].any_bounded,
                 position_prior=(priors or {}).get(prior_key(ask.principle, ask.salmon), 0.0))
        for i, ask in enumerate(asks)
    ]

    records = []
    for index, pair in enumerate(pairs):
        mine = [(ask, j) for ask, j in zip(asks, judgments) if ask.pair == index]
        records.append(_record(pair, mine, options, engine))
    return records


def _question(
    templates: Templates,
    options: JudgeOptions,
    principle: Principle,
    salmon: bool,
    conversation: Sequence[Message],
    first: str,
    second: str,
) -> str:
    """The user turn asking one principle's question about two replies, in the order given."""
    if salmon:
        return templates.salmon(conversation, first, second, principle.dimension or principle.id,
                                principle.definition or "")
    if options.cot:
        return templates.judge_cot(conversation, first, second, principle.judge or "")
    return templates.judge(conversation, first, second, principle.judge or "")


def longest_requests(
    templates: Templates, panel: Panel, options: JudgeOptions, pair: Pair
) -> list[tuple[Message, ...]]:
    """In each presentation order, the longest request (in characters) judging `pair` sends, with its
    demonstrations, and the opening of the answer as an assistant turn (a few tokens more than sent):
    what a length check measures before judging. With `cot`, the rationale comes on top of it."""
    asks = [(p, False) for p in principles_for_pair(panel, options, pair)] + [(p, True) for p in panel.salmon]
    opening = templates.judge_cot_answer("") if options.cot else templates.judge_answer()
    longest = []
    for first, second in ((pair.response_a, pair.response_b), (pair.response_b, pair.response_a)):
        requests = []
        for principle, salmon in asks:
            shown = () if salmon else demonstration_turns(templates, panel.demos, principle.judge or "")
            turn = _question(templates, options, principle, salmon, pair.messages, first, second)
            requests.append((*shown, Message(role="user", content=turn), Message(role="assistant", content=opening)))
        longest.append(max(requests, key=lambda request: sum(len(m.content) for m in request)))
    return longest


def demonstration_turns(templates: Templates, demos: Sequence[JudgeDemo], question: str) -> tuple[Message, ...]:
    """The judging demonstrations as earlier turns: each asks `question` about its pair and answers it.

    The better reply is option A in even-numbered demonstrations and option B in odd ones, so the
    demonstrations themselves teach no position.
    """
    turns: list[Message] = []
    for index, demo in enumerate(demos):
        first, second, letter = (demo.better, demo.worse, "A") if index % 2 == 0 else (demo.worse, demo.better, "B")
        turns.append(Message(role="user", content=templates.judge(demo.conversation, first, second, question)))
        turns.append(Message(role="assistant", content=f"{templates.judge_answer()}{letter})"))
    return tuple(turns)


def prior_key(principle: Principle, salmon: bool) -> str:
    """Which position prior a question uses: one per principle and kind of question."""
    return f"{'salmon' if salmon else 'judge'}:{principle.id}"


def position_priors(engine: Engine, templates: Templates, panel: Panel, options: JudgeOptions) -> dict[str, float]:
    """The judge's log-odds for the first position on content-free pairs, per principle and kind of question
    (contextual calibration): the mean over `CONTENT_FREE` stand-ins of log P(A) − log P(B), the
    conversation and both replies being the stand-in, after the same demonstrations as real questions."""
    questions = [(p, False) for p in panel.judge] + [(p, True) for p in panel.salmon]
    requests = []
    for principle, salmon in questions:
        shown = () if salmon else demonstration_turns(templates, panel.demos, principle.judge or "")
        for text in CONTENT_FREE:
            turn = _question(templates, options, principle, salmon, [Message(role="user", content=text)], text, text)
            requests.append(ChoiceRequest((*shown, Message(role="user", content=turn)), templates.judge_answer()))
    scores = engine.choice_logprobs(requests, CHOICES)
    n = len(CONTENT_FREE)
    priors = {}
    for index, (principle, salmon) in enumerate(questions):
        mine = scores[index * n : (index + 1) * n]
        priors[prior_key(principle, salmon)] = sum(s.logprobs[0] - s.logprobs[1] for s in mine) / n
    return priors


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


def deciding_weights(principles: Sequence[Principle], *, sampled: bool) -> list[float] | None:
    """The weights that the principles deciding p_a are averaged with: the constitution's (SALMON's
    published integer weights, a weighted list of judge questions), or None for an equal mean.

    Principles drawn for this pair by weight (`principles: sample:K`) are averaged equally: the draw has
    weighed them already, as in CAI. Equal weights give None, so the mean is computed as it always was.

    >>> from labeler.inputs.constitution.schema import Principle
    >>> a, b = Principle(id="a", judge="A?", weight=3), Principle(id="b", judge="B?")
    >>> deciding_weights([a, b], sampled=False), deciding_weights([a, b], sampled=True)
    ([3.0, 1.0], None)
    >>> deciding_weights([b, b.model_copy(update={"id": "c"})], sampled=False) is None
    True
    """
    weights = [float(p.weight) for p in principles]
    if sampled or len(set(weights)) <= 1:
        return None
    return weights


def _record(
    pair: Pair, asked: Sequence[tuple[_Ask, OrderedJudgment]], options: JudgeOptions, engine: Engine
) -> PreferenceRecord:
    judge_part = [j for ask, j in asked if not ask.salmon]
    salmon_part = [(ask, j) for ask, j in asked if ask.salmon]
    # p_a comes from the judge questions (a constitution of definitions only is judged by all of them);
    # with `decide: salmon`, from every definition's score, weighted as the constitution says (SALMON).
    if options.decide == "salmon":
        label = aggregate([j for _, j in salmon_part], low_mass=options.low_mass, how="logodds",
                          weights=[a.principle.weight for a, _ in salmon_part])
    else:
        deciders = [(a, j) for a, j in asked if not a.salmon] or salmon_part
        clamp_range = options.cot_clamp if options.cot and judge_part else None
        weights = deciding_weights([a.principle for a, _ in deciders], sampled=bool(judge_part)
                                   and options.principles != "all")
        label = aggregate([j for _, j in deciders], low_mass=options.low_mass, clamp_range=clamp_range,
                          also_scored=[j for _, j in salmon_part], how=options.aggregate, weights=weights)
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
        input_chosen=pair.input_chosen,
    )
