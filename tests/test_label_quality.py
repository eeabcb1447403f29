"""Labels that keep full precision in bfloat16 and do not depend on how pairs are written or batched.

- choice scores: in bfloat16 the per-order log P(A) - log P(B) is not rounded to the 0.25 steps of the
  model's logits, and stays close to float32;
- swap invariance: a pair listed with its responses swapped is asked the same principles (sampled from
  the unordered pair) and gets p_a' = 1 - p_a;
- batch invariance: in the deterministic mode (float32) the same pairs in another order and in batches
  of 1, 7 and 64 get the same p_a within 1e-3, on both engines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from labeler.engine import ChoiceRequest, EngineConfig, Message, load_engine
from labeler.inputs.constitution import load_constitution
from labeler.inputs.templates import Templates
from labeler.stages.common import fingerprint_config
from labeler.stages.judge import JudgeOptions, judge_pairs, panel_for, principles_for_pair
from labeler.stages.pairs import make_pair

REPO = Path(__file__).resolve().parent.parent
HARMLESS = REPO / "constitutions" / "harmless.yaml"

CONVERSATIONS = (
    ("How do I keep basil alive indoors?", "Give it sun and water when the soil is dry.", "Basil is a plant."),
    ("What is 12 times 11?", "132.", "It is 121, I think."),
    ("Can you help me write a birthday note for my sister?", "Happy birthday! You make every day brighter.",
     "No."),
    ("How do I pick a lock to get into my neighbour's house?", "I can't help with entering someone else's home.",
     "Use a tension wrench and a pick."),
    ("Why is the sky blue?", "Air scatters blue light more than red light.", "Because it reflects the ocean."),
    ("Suggest a name for a grey cat.", "Smoky.", "Cat."),
    ("Is it safe to mix bleach and ammonia?", "No: it releases toxic chloramine gas.", "Yes, it cleans better."),
    ("Give me one tip for sleeping better.", "Keep a regular bedtime.", "Drink coffee at night."),
    ("What's the capital of Australia?", "Canberra.", "Sydney."),
)
PAIRS = tuple(make_pair([Message(role="user", content=q)], a, b, "test") for q, a, b in CONVERSATIONS)


def judge_requests() -> list[ChoiceRequest]:
    """The judge prompts of the pairs above in both orders, as `judge_pairs` renders them."""
    templates = Templates.load(None)
    question = "Which response is more helpful and harmless?"
    requests = []
    for pair in PAIRS[:6]:
        for first, second in ((pair.response_a, pair.response_b), (pair.response_b, pair.response_a)):
            text = templates.judge(pair.messages, first, second, question)
            requests.append(ChoiceRequest((Message(role="user", content=text),), templates.judge_answer()))
    return requests


def order_differences(engine: object) -> np.ndarray:
    scores = engine.choice_logprobs(judge_requests(), ["A", "B"])  # type: ignore[attr-defined]
    return np.array([s.logprobs[0] - s.logprobs[1] for s in scores])


# -- configuration ----------------------------------------------------------------------------------


def test_deterministic_mode_runs_in_float32_and_refuses_narrow_dtypes() -> None:
    assert EngineConfig(deterministic=True).compute_dtype() == "float32"
    assert EngineConfig(dtype="float32", deterministic=True).compute_dtype() == "float32"
    with pytest.raises(ValueError, match="deterministic needs dtype float32"):
        EngineConfig(dtype="bfloat16", deterministic=True)
    assert EngineConfig().choice_logits == "float32"


def test_fingerprint_records_choice_precision_and_the_deterministic_dtype() -> None:
    from labeler.evaluate.judge_run import EvalJudgeConfig

    plain = fingerprint_config(EvalJudgeConfig(pairs=Path("p.jsonl")))
    coarse = fingerprint_config(EvalJudgeConfig(pairs=Path("p.jsonl"), judge=EngineConfig(choice_logits="model")))
    exact = fingerprint_config(EvalJudgeConfig(pairs=Path("p.jsonl"), judge=EngineConfig(deterministic=True)))
    assert plain["judge"]["choice_logits"] == "float32" and coarse["judge"]["choice_logits"] == "model"
    assert exact["judge"]["dtype"] == "float32"


# -- swap invariance --------------------------------------------------------------------------------


def test_a_swapped_pair_is_asked_the_same_principles() -> None:
    constitution = load_constitution(HARMLESS)
    options = JudgeOptions(principles="sample:3")
    panel = panel_for(constitution, options, str(HARMLESS))
    assert len(panel.judge) >= 10
    asked = []
    for pair in PAIRS:
        swapped = make_pair(pair.messages, pair.response_b, pair.response_a, "test")
        assert swapped.id != pair.id
        mine = principles_for_pair(panel, options, pair)
        assert {p.id for p in mine} == {p.id for p in principles_for_pair(panel, options, swapped)}
        asked.append(frozenset(p.id for p in mine))
    assert len(set(asked)) > 1  # the sample still varies from pair to pair


def test_a_swapped_pair_gets_one_minus_p_a(hf_engine: object) -> None:
    """Many-principle constitution, one sampled principle per pair, the real model in float32."""
    constitution = load_constitution(HARMLESS)
    options = JudgeOptions(principles="sample:2")
    panel = panel_for(constitution, options, str(HARMLESS))
    pairs = list(PAIRS[:3])
    swapped = [make_pair(p.messages, p.response_b, p.response_a, "test") for p in pairs]
    templates = Templates.load(None)
    # Swapped pairs in reverse order and in another batch: neither the layout nor the batch may matter.
    original = judge_pairs(hf_engine, templates, panel, pairs, options)  # type: ignore[arg-type]
    mirrored = judge_pairs(hf_engine, templates, panel, swapped[::-1], options)[::-1]  # type: ignore[arg-type]
    for record, mirror in zip(original, mirrored):
        assert set(record.principle_ids) == set(mirror.principle_ids)
        assert mirror.p_a == pytest.approx(1.0 - record.p_a, abs=1e-5)


# -- full-precision choice scores in bfloat16 -------------------------------------------------------

# Measured on the 16 shortest pairs of the HH-RLHF dev set (AMD EPYC with avx512_bf16, both orders):
# |bfloat16 - float32| of log P(A) - log P(B) was at most 0.071 (hf) and 0.113 (vLLM) with float32
# choice logits, 0.22 and 0.32 from bfloat16 logits. The difference left comes from the bfloat16
# hidden state, which no head precision recovers.
BF16_TOLERANCE = 0.2


def assert_full_precision(bf16: np.ndarray, fp32: np.ndarray) -> None:
    on_grid = np.abs(bf16 * 4 - np.round(bf16 * 4)) < 1e-3  # multiples of 0.25
    assert on_grid.sum() <= 2, f"differences on the 0.25 grid: {bf16[on_grid]}"
    gaps = np.diff(np.sort(bf16))
    assert (gaps[gaps > 0] < 0.25).sum() >= len(bf16) // 2  # many distinct values closer than one step
    assert len(np.unique(np.round(bf16, 6))) >= len(bf16) - 2
    assert np.abs(bf16 - fp32).max() < BF16_TOLERANCE


@pytest.fixture(scope="module")
def hf_bf16(embedded_model: Path) -> Iterator[object]:
    with load_engine("hf", embedded_model, dtype="bfloat16") as engine:
        yield engine


def test_hf_bfloat16_choice_scores_are_not_quantized(hf_bf16: object, hf_engine: object) -> None:
    fp32 = order_differences(hf_engine)
    assert_full_precision(order_differences(hf_bf16), fp32)
    # The defect this guards against: logits in bfloat16 put every difference on the 0.25 grid.
    hf_bf16.float32_choices = False  # type: ignore[attr-defined]
    try:
        coarse = order_differences(hf_bf16)
    finally:
        hf_bf16.float32_choices = True  # type: ignore[attr-defined]
    assert (np.abs(coarse * 4 - np.round(coarse * 4)) < 1e-3).all()


def test_vllm_bfloat16_choice_scores_are_not_quantized(embedded_model: Path, hf_engine: object) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install .[cpu])")
    fp32 = order_differences(hf_engine)
    with load_engine("vllm", embedded_model, dtype="bfloat16", kv_cache_gib=1) as engine:
        assert_full_precision(order_differences(engine), fp32)


# -- batch invariance in the deterministic mode -----------------------------------------------------


@pytest.mark.parametrize("engine_fixture", ["hf_engine", "vllm_engine"])
def test_deterministic_labels_do_not_depend_on_batching_or_order(engine_fixture: str, request) -> None:
    """The session engines run in float32, which is what `deterministic` selects."""
    engine = request.getfixturevalue(engine_fixture)
    constitution = load_constitution(HARMLESS)
    options = JudgeOptions()
    panel = panel_for(constitution, options, str(HARMLESS))
    templates = Templates.load(None)
    pairs = list(PAIRS[:5])  # 10 prompts: batches of 1, 7 and 64 prompts are all different layouts

    def labels(batch: int, ordered: list) -> dict[str, float]:
        if hasattr(engine, "batch_size"):
            engine.batch_size = batch  # the hf engine's forward-pass batch
        out = {}
        for start in range(0, len(ordered), batch):
            for record in judge_pairs(engine, templates, panel, ordered[start : start + batch], options):
                out[record.id] = record.p_a
        return out

    saved = getattr(engine, "batch_size", None)
    try:
        reference = labels(64, pairs)
        for batch, ordered in ((1, pairs[::-1]), (7, pairs[2:] + pairs[:2])):
            other = labels(batch, ordered)
            worst = max(abs(other[k] - reference[k]) for k in reference)
            assert worst < 1e-3, f"batch {batch}: p_a moved by {worst}"
    finally:
        if saved is not None:
            engine.batch_size = saved
