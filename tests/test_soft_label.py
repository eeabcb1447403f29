"""Soft-label math against slow, obvious references."""

from __future__ import annotations

import math
import random

import pytest

from labeler.core.soft_label import aggregate, clamp, judgment, p_first, principle_score, unswap


def slow_p_first(a: float, b: float) -> float:
    pa, pb = math.exp(a), math.exp(b)
    return pa / (pa + pb)


def slow_label(pairs: list[tuple[list[float], list[float]]]) -> float:
    """p_a by the definition: per order normalise, map the swapped order back, average everything."""
    ab, ba = [], []
    for lp_ab, lp_ba_raw in pairs:
        ab.append(math.exp(lp_ab[0]) / (math.exp(lp_ab[0]) + math.exp(lp_ab[1])))
        # in the swapped order, option B is response_a
        ba.append(math.exp(lp_ba_raw[1]) / (math.exp(lp_ba_raw[0]) + math.exp(lp_ba_raw[1])))
    return (sum(ab) / len(ab) + sum(ba) / len(ba)) / 2


def random_logprobs(rng: random.Random) -> list[float]:
    return [math.log(rng.uniform(1e-4, 0.5)), math.log(rng.uniform(1e-4, 0.5))]


def test_p_first_matches_reference_and_is_stable():
    rng = random.Random(0)
    for _ in range(200):
        a, b = random_logprobs(rng)
        assert p_first(a, b) == pytest.approx(slow_p_first(a, b), abs=1e-12)
    assert p_first(-1e4, 0.0) == pytest.approx(0.0) and p_first(0.0, -1e4) == pytest.approx(1.0)
    assert p_first(-800.0, -800.0) == 0.5  # exp underflows in the slow form; not here


def test_aggregate_matches_reference():
    rng = random.Random(1)
    for _ in range(100):
        k = rng.randint(1, 4)
        pairs = [(random_logprobs(rng), random_logprobs(rng)) for _ in range(k)]
        label = aggregate([judgment(ab, ba) for ab, ba in pairs], low_mass=0.0)
        assert label.p_a == pytest.approx(slow_label(pairs), abs=1e-12)


def test_swapping_the_pair_gives_one_minus_p_a():
    rng = random.Random(2)
    for _ in range(50):
        ab, ba = random_logprobs(rng), random_logprobs(rng)
        forward = aggregate([judgment(ab, ba)], low_mass=0.0)
        # the same judge outputs seen from the other response: the orders trade places
        backward = aggregate([judgment(ba, ab)], low_mass=0.0)
        assert backward.p_a == pytest.approx(1 - forward.p_a, abs=1e-12)


def test_principle_score_is_mean_log_odds_of_both_orders():
    ab, ba_raw = [-0.2, -1.9], [-0.7, -1.1]
    ba = unswap(ba_raw)
    slow = ((ab[0] - ab[1]) + (ba_raw[1] - ba_raw[0])) / 2
    assert principle_score(ab, ba) == pytest.approx(slow)
    assert judgment(ab, ba_raw).score == pytest.approx(slow)


def test_flags_and_consistency():
    strong_a = [math.log(0.9), math.log(0.05)]
    strong_first = [math.log(0.9), math.log(0.05)]  # ba order: the judge picks the first shown = response_b
    flip = aggregate([judgment(strong_a, strong_first)], low_mass=0.5)
    assert not flip.consistent and "order_flip" in flip.flags
    agree = aggregate([judgment(strong_a, [math.log(0.05), math.log(0.9)])], low_mass=0.5)
    assert agree.consistent and agree.flags == () and agree.p_a > 0.9 and agree.a_wins
    faint = aggregate([judgment([math.log(0.01), math.log(0.02)], [math.log(0.02), math.log(0.01)])], low_mass=0.5)
    assert "low_mass" in faint.flags and faint.mass_ab == pytest.approx(0.03)
    tie = aggregate([judgment([-1.0, -1.0], [-1.0, -1.0])], low_mass=0.0)
    assert tie.p_a == 0.5 and "tie" in tie.flags and tie.margin == 0.0


def test_clamp():
    assert clamp(0.99, 0.4, 0.6) == 0.6 and clamp(0.01, 0.4, 0.6) == 0.4 and clamp(0.45, 0.4, 0.6) == 0.45
    with pytest.raises(ValueError):
        clamp(0.5, 0.7, 0.6)
    label = aggregate([judgment([0.0, -9.0], [-9.0, 0.0])], low_mass=0.0, clamp_range=(0.4, 0.6))
    assert label.p_a == pytest.approx(0.6)


def test_a_bounded_choice_flags_the_pair_and_keeps_its_numbers():
    ab, ba = [math.log(0.8), math.log(0.01)], [math.log(0.01), math.log(0.8)]
    exact = aggregate([judgment(ab, ba)], low_mass=0.5)
    bounded = aggregate([judgment(ab, ba, bounded=True)], low_mass=0.5)
    assert "choice_outside_topk" not in exact.flags and bounded.flags == ("choice_outside_topk",)
    assert (bounded.p_a, bounded.mass_ab, bounded.mass_ba) == (exact.p_a, exact.mass_ab, exact.mass_ba)
    # a bounded judgment that does not decide p_a (a SALMON score kept with the pair) flags it too
    salmon = aggregate([judgment(ab, ba)], low_mass=0.5, also_scored=[judgment(ab, ba, bounded=True)])
    assert salmon.flags == ("choice_outside_topk",) and salmon.p_a == exact.p_a
