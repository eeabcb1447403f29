"""Reward-model math against slow, obvious references (python loops with math.log/exp), plus the pure
data functions the trainer relies on (split, batching, labels, learning rate)."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch

from labeler.core.chat import Message
from labeler.core.records import PreferenceRecord, PrincipleScore, conversation_columns
from labeler.train.rm.labels import HardLabels, PrincipleLabels, SoftLabels
from labeler.train.rm.losses import (
    a_chosen,
    bradley_terry_loss,
    hard_target,
    mean_chosen_margin,
    oriented_margin,
    pairwise_accuracy,
)
from labeler.train.rm.pairs import epoch_batches, split_train_eval
from labeler.train.rm.salmon import ShownPrinciple, salmon_target, sample_shown_principles, with_principles
from labeler.train.rm.train import learning_rate_at

# --- slow references ------------------------------------------------------------------------------


def ref_log_sigmoid(x: float) -> float:
    return -math.log(1.0 + math.exp(-x)) if x >= 0 else x - math.log(1.0 + math.exp(x))


def ref_bt_loss(ra: list[float], rb: list[float], target: list[float], margin: list[float] | None) -> float:
    """-[t log σ(d) + (1 − t) log(1 − σ(d))] with d = r_a − r_b − m_a, m_a oriented toward the chosen side."""
    total = 0.0
    for i in range(len(ra)):
        m = 0.0
        if margin is not None:
            m = margin[i] if target[i] >= 0.5 else -margin[i]
        d = ra[i] - rb[i] - m
        total += -(target[i] * ref_log_sigmoid(d) + (1.0 - target[i]) * ref_log_sigmoid(-d))
    return total / len(ra)


def random_batch(seed: int, n: int = 17) -> tuple[list[float], list[float], list[float], list[float]]:
    rng = random.Random(seed)
    ra = [rng.gauss(0, 3) for _ in range(n)]
    rb = [rng.gauss(0, 3) for _ in range(n)]
    target = [rng.random() for _ in range(n)]
    margin = [rng.uniform(0, 2) for _ in range(n)]
    return ra, rb, target, margin


def t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# --- Bradley-Terry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("use_margin", [False, True])
def test_soft_bt_loss_matches_reference(seed: int, use_margin: bool) -> None:
    ra, rb, target, margin = random_batch(seed)
    margin_a = oriented_margin(t(margin), t(target)) if use_margin else None
    fast = bradley_terry_loss(t(ra), t(rb), t(target), margin_a).item()
    assert fast == pytest.approx(ref_bt_loss(ra, rb, target, margin if use_margin else None), rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_hard_bt_loss_with_margin_is_trl_loss(seed: int) -> None:
    """Hard labels + margin equal TRL's −log σ(r_chosen − r_rejected − margin), written out by hand."""
    ra, rb, p_a, margin = random_batch(seed)
    target = t([hard_target(p) for p in p_a])
    fast = bradley_terry_loss(t(ra), t(rb), target, oriented_margin(t(margin), target)).item()
    trl = 0.0
    for i in range(len(ra)):
        chosen, rejected = (ra[i], rb[i]) if p_a[i] >= 0.5 else (rb[i], ra[i])
        trl += -ref_log_sigmoid(chosen - rejected - margin[i])
    assert fast == pytest.approx(trl / len(ra), rel=1e-9)


def test_soft_loss_is_minimal_at_the_logit_of_the_target() -> None:
    target = torch.tensor([0.8])
    best = math.log(0.8 / 0.2)
    at_best = bradley_terry_loss(torch.tensor([best]), torch.zeros(1), target)
    for delta in (-0.5, 0.5, 5.0):
        assert bradley_terry_loss(torch.tensor([best + delta]), torch.zeros(1), target) > at_best


def test_extreme_rewards_stay_finite() -> None:
    loss = bradley_terry_loss(torch.tensor([1e4, -1e4]), torch.zeros(2), torch.tensor([0.0, 1.0]))
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(1e4, rel=1e-6)


@pytest.mark.parametrize(
    ("shape_a", "shape_b", "shape_t"),
    [((4,), (4, 1), (4,)), ((4, 1), (4,), (4,)), ((4,), (4,), (4, 1)), ((4, 1), (4, 1), (4, 1)), ((4,), (3,), (4,))],
)
def test_mismatched_shapes_raise_instead_of_broadcasting(shape_a, shape_b, shape_t) -> None:
    # (B,) − (B, 1) would broadcast to (B, B) and silently train on every cross pair.
    with pytest.raises(ValueError, match="shape"):
        bradley_terry_loss(torch.zeros(shape_a), torch.zeros(shape_b), torch.ones(shape_t))


def test_margin_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="margin_a"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(3), torch.ones(3), torch.zeros(3, 1))


def test_loss_gradient_matches_reference() -> None:
    """d loss / d r_a = (σ(d) − t) / B: the soft target pulls r_a − r_b toward logit(t), not to infinity."""
    ra, rb, target, _ = random_batch(7, n=5)
    reward_a = t(ra).requires_grad_()
    bradley_terry_loss(reward_a, t(rb), t(target)).backward()
    for i in range(5):
        d = ra[i] - rb[i]
        expected = (1.0 / (1.0 + math.exp(-d)) - target[i]) / 5
        assert reward_a.grad[i].item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_accuracy_and_margin_match_reference(seed: int) -> None:
    ra, rb, target, _ = random_batch(seed)
    ra[0] = rb[0]  # a tie counts as wrong
    correct, margins = 0, []
    for i in range(len(ra)):
        chosen, rejected = (ra[i], rb[i]) if target[i] >= 0.5 else (rb[i], ra[i])
        correct += chosen > rejected
        margins.append(chosen - rejected)
    assert pairwise_accuracy(t(ra), t(rb), t(target)).item() == pytest.approx(correct / len(ra))
    assert mean_chosen_margin(t(ra), t(rb), t(target)).item() == pytest.approx(sum(margins) / len(margins))


def test_hard_targets_threshold_at_one_half() -> None:
    assert [hard_target(p) for p in [0.0, 0.49, 0.5, 0.51, 1.0]] == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_the_chosen_side_is_the_same_for_one_pair_and_a_batch() -> None:
    p_a = [0.0, 0.49, 0.5, 0.51, 1.0]
    assert a_chosen(torch.tensor(p_a)).tolist() == [a_chosen(p) for p in p_a] == [False, False, True, True, True]


# --- SALMON targets ---------------------------------------------------------------------------------


def ref_salmon_target(shown: list[tuple[str, bool]], scores: dict[str, float]) -> float:
    best_id, best_negated, best_abs = None, False, -1.0
    for pid, negated in shown:
        if pid in scores and abs(scores[pid]) > best_abs:
            best_id, best_negated, best_abs = pid, negated, abs(scores[pid])
    score = scores[best_id]
    if best_negated:
        score = -score
    return 1.0 / (1.0 + math.exp(-score))


@pytest.mark.parametrize("seed", range(20))
def test_salmon_target_matches_reference(seed: int) -> None:
    rng = random.Random(seed)
    ids = [f"p{i}" for i in range(6)]
    scores = {pid: rng.gauss(0, 2) for pid in rng.sample(ids, 4)}
    shown_ids = rng.sample(sorted(scores), rng.randint(1, 4))
    shown = [ShownPrinciple(pid, pid, "text", negated=rng.random() < 0.5) for pid in shown_ids]
    expected = ref_salmon_target([(p.principle_id, p.negated) for p in shown], scores)
    assert salmon_target(shown, scores) == pytest.approx(expected, rel=1e-12)


def test_salmon_target_negation_flips_and_largest_score_decides() -> None:
    kind = ShownPrinciple("kind", "Kind", "is kind", negated=False)
    brief = ShownPrinciple("brief", "Brief", "is brief", negated=False)
    scores = {"kind": 0.3, "brief": -4.0}
    assert salmon_target([kind, brief], scores) < 0.05  # brief decides: B is far briefer
    not_brief = ShownPrinciple("brief", "Brief", "rambles", negated=True)
    assert salmon_target([kind, not_brief], scores) > 0.95  # asked for rambling: A wins
    assert salmon_target([kind], scores) == pytest.approx(1 / (1 + math.exp(-0.3)))
    with pytest.raises(ValueError, match="has a score"):
        salmon_target([kind], {"brief": 1.0})


def principle(pid: str, negative: str | None = "opposite") -> SimpleNamespace:
    return SimpleNamespace(id=pid, dimension=pid.title(), definition=f"{pid} def", negative_definition=negative)


def test_sample_shown_principles_is_seeded_and_draws_only_scored() -> None:
    pool = [principle("a"), principle("b"), principle("c", negative=None), principle("d")]

    def draw(seed: int) -> tuple[ShownPrinciple, ...]:
        return sample_shown_principles(pool, {"a", "b", "c"}, count=2, negate_probability=0.5, rng=random.Random(seed))

    assert draw(3) == draw(3)
    draws = [draw(seed) for seed in range(200)]
    assert all(len(d) == 2 and {p.principle_id for p in d} <= {"a", "b", "c"} for d in draws)
    shown_c = [p for d in draws for p in d if p.principle_id == "c"]
    assert shown_c and not any(p.negated for p in shown_c)  # no negative definition: never negated
    negated = [p for d in draws for p in d if p.negated]
    assert negated and all(p.text == "opposite" for p in negated)
    assert 0.3 < len(negated) / sum(p.principle_id != "c" for d in draws for p in d) < 0.7


def test_with_principles_keeps_an_existing_system_message() -> None:
    shown = [ShownPrinciple("kind", "Kind", "The response is kind.", negated=False)]
    merged = with_principles([Message(role="system", content="Be terse."), Message(role="user", content="hi")], shown)
    assert [m.role for m in merged] == ["system", "user"]
    assert "1. Kind: The response is kind." in merged[0].content and merged[0].content.endswith("Be terse.")


def judged(p_a: float, margin: float = 0.0, scores: dict[str, float] | None = None) -> PreferenceRecord:
    """A judged pair of "a" and "b" answering "hi"."""
    chosen, rejected = ("a", "b") if p_a >= 0.5 else ("b", "a")
    return PreferenceRecord(
        id="x", **conversation_columns([Message(role="user", content="hi")], chosen, rejected), response_a="a",
        response_b="b", p_a=p_a, p_a_ab=p_a, p_a_ba=p_a, mass_ab=1.0, mass_ba=1.0,
        logprobs_ab=(-0.1, -2.0), logprobs_ba=(-0.1, -2.0), consistent=True, principle_ids=(),
        principle_scores=tuple(PrincipleScore(principle_id=k, score=v) for k, v in (scores or {}).items()),
        margin=margin, judge_model="m", source="test", flags=(),
    )  # fmt: skip


def test_principle_labels_target_follows_the_shown_principles() -> None:
    pool = (principle("kind"), principle("brief"))
    scores = {"kind": 2.0, "brief": -1.0}
    pair = judged(0.5, scores=scores)
    labels = PrincipleLabels(principles=pool, count=2, negate_probability=0.5, seed=0)
    assert labels.usable(pair) and not labels.usable(judged(0.5))
    for epoch in range(10):
        example = labels.example(pair, epoch=epoch)
        shown = labels.shown_for(pair, epoch=epoch)
        assert example.target_a == pytest.approx(salmon_target(shown, scores))
        system = example.conversation_a[0]
        assert system.role == "system" and all(p.text in system.content for p in shown)
        assert example.conversation_a[-1] == Message(role="assistant", content="a")
    hard = PrincipleLabels(principles=pool, count=2, negate_probability=0.5, seed=0, hard=True)
    assert {hard.example(pair, epoch=e).target_a for e in range(10)} <= {0.0, 1.0}


def test_pair_labels_soft_and_hard() -> None:
    pair = judged(0.7, margin=1.5)
    soft, hard = SoftLabels().example(pair, epoch=0), HardLabels().example(pair, epoch=0)
    assert (soft.target_a, hard.target_a, soft.margin) == (0.7, 1.0, 1.5)
    assert soft.conversation_b == (Message(role="user", content="hi"), Message(role="assistant", content="b"))


# --- split, batches, learning rate ------------------------------------------------------------------


def test_split_is_seeded_disjoint_and_keeps_duplicates_together() -> None:
    ids = [f"id{i}" for i in range(400)] + ["id5", "id7"]
    train_rows, eval_rows = split_train_eval(ids, 0.1, seed=1)
    assert sorted(train_rows + eval_rows) == list(range(len(ids)))
    assert 20 <= len(eval_rows) <= 60
    assert split_train_eval(ids, 0.1, seed=1) == (train_rows, eval_rows)
    assert split_train_eval(ids, 0.1, seed=2) != (train_rows, eval_rows)
    eval_ids = {ids[i] for i in eval_rows}
    assert eval_ids.isdisjoint(ids[i] for i in train_rows)
    # adding rows never moves an existing id across the split
    more = ids + [f"new{i}" for i in range(100)]
    _, more_eval = split_train_eval(more, 0.1, seed=1)
    assert {more[i] for i in more_eval} & set(ids) == eval_ids


def test_split_keeps_both_sides_on_tiny_data() -> None:
    for n in range(2, 6):
        train_rows, eval_rows = split_train_eval([f"id{i}" for i in range(n)], 0.01, seed=0)
        assert train_rows and eval_rows
        train_rows, eval_rows = split_train_eval([f"id{i}" for i in range(n)], 0.99, seed=0)
        assert train_rows and eval_rows


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_epoch_batches_cover_each_example_once_and_keep_processes_in_step(world_size: int) -> None:
    per_rank = [epoch_batches(23, 4, seed=0, epoch=1, rank=r, world_size=world_size) for r in range(world_size)]
    assert len({len(batches) for batches in per_rank}) == 1
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert len(seen) == len(set(seen)) == 23 - 23 % world_size
    assert epoch_batches(23, 4, seed=0, epoch=1) != epoch_batches(23, 4, seed=0, epoch=2)


def test_learning_rate_warms_up_then_decays_to_near_zero() -> None:
    lrs = [learning_rate_at(s, peak=1e-3, warmup_steps=5, total_steps=50, schedule="linear") for s in range(50)]
    assert lrs[4] == pytest.approx(1e-3) and max(lrs) == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(lrs[:5], lrs[1:5], strict=False))
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:], strict=False)) and 0 < lrs[-1] < 1e-4
