"""DPO math against slow, obvious references (python loops with math.log/exp)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from labeler.train.dpo.losses import (
    chosen_reward_margin,
    hard_dpo_loss,
    implicit_accuracy,
    ipo_loss,
    log_ratio_margin,
    sequence_kl,
    soft_dpo_loss,
)


def ref_log_sigmoid(x: float) -> float:
    return -math.log(1.0 + math.exp(-x)) if x >= 0 else x - math.log(1.0 + math.exp(x))


def ref_soft(h: list[float], p: list[float], beta: float) -> float:
    losses = [-(pi * ref_log_sigmoid(beta * hi) + (1 - pi) * ref_log_sigmoid(-beta * hi)) for hi, pi in zip(h, p)]
    return sum(losses) / len(h)


def ref_hard(h: list[float], p: list[float], beta: float) -> float:
    """-log σ(β (logratio_chosen − logratio_rejected)), one pair at a time."""
    total = 0.0
    for hi, pi in zip(h, p):
        chosen_minus_rejected = hi if pi >= 0.5 else -hi
        total += -ref_log_sigmoid(beta * chosen_minus_rejected)
    return total / len(h)


def ref_ipo(h: list[float], p: list[float], beta: float) -> float:
    tau = 1 / (2 * beta)
    return sum(pi * (hi - tau) ** 2 + (1 - pi) * (hi + tau) ** 2 for hi, pi in zip(h, p)) / len(h)


def random_batch(seed: int, n: int = 7) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    return [rng.uniform(-30, 30) for _ in range(n)], [rng.choice([0.0, 1.0, 0.5, rng.random()]) for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("beta", [0.05, 0.5, 2.0])
def test_losses_match_slow_references(seed: int, beta: float) -> None:
    h, p = random_batch(seed)
    th, tp = torch.tensor(h, dtype=torch.float64), torch.tensor(p, dtype=torch.float64)
    assert soft_dpo_loss(th, tp, beta).item() == pytest.approx(ref_soft(h, p, beta), rel=1e-9, abs=1e-12)
    assert hard_dpo_loss(th, tp, beta).item() == pytest.approx(ref_hard(h, p, beta), rel=1e-9, abs=1e-12)
    assert ipo_loss(th, tp, beta).item() == pytest.approx(ref_ipo(h, p, beta), rel=1e-9)


def test_margin_is_the_difference_of_log_ratios() -> None:
    pa, pb, ra, rb = (torch.tensor([v]) for v in (-5.0, -7.0, -6.0, -6.5))
    assert log_ratio_margin(pa, pb, ra, rb).item() == pytest.approx((-5.0 + 6.0) - (-7.0 + 6.5))
    with pytest.raises(ValueError, match="shape"):
        log_ratio_margin(pa, pb, ra, torch.zeros(1, 1))


@pytest.mark.parametrize("seed", range(3))
def test_soft_loss_with_certain_labels_is_hard_dpo(seed: int) -> None:
    h, _ = random_batch(seed)
    p = [1.0 if i % 2 else 0.0 for i in range(len(h))]
    th, tp = torch.tensor(h, dtype=torch.float64), torch.tensor(p, dtype=torch.float64)
    assert soft_dpo_loss(th, tp, 0.3).item() == pytest.approx(hard_dpo_loss(th, tp, 0.3).item(), rel=1e-12)


def test_an_undecided_pair_pulls_nowhere_at_zero_margin() -> None:
    """p = 0.5: zero gradient at h = 0 (soft and IPO); a decided pair pulls towards its preferred side."""
    for loss in (soft_dpo_loss, ipo_loss):
        h = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        loss(h, torch.full((3,), 0.5, dtype=torch.float64), 0.1).backward()
        assert h.grad is not None and h.grad.abs().max().item() < 1e-12
        h = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        loss(h, torch.tensor([0.9], dtype=torch.float64), 0.1).backward()
        assert h.grad is not None and h.grad.item() < 0  # descending raises h: A gains
    # ... whereas hard DPO pushes an undecided pair to A all the same
    h = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    hard_dpo_loss(h, torch.tensor([0.5], dtype=torch.float64), 0.1).backward()
    assert h.grad is not None and h.grad.item() < 0


def test_soft_gradient_is_beta_times_label_minus_sigmoid() -> None:
    """d loss / d h = -beta (p - σ(beta h)): a confident label pulls harder than one near 0.5."""
    beta = 0.5
    for p in (0.55, 0.9, 1.0):
        h = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
        soft_dpo_loss(h, torch.tensor([p], dtype=torch.float64), beta).backward()
        sigmoid = 1 / (1 + math.exp(-beta * 0.3))
        assert h.grad is not None and h.grad.item() == pytest.approx(-beta * (p - sigmoid), rel=1e-9)


def test_metrics() -> None:
    h, p = torch.tensor([1.0, -2.0, 0.0, 3.0]), torch.tensor([0.9, 0.8, 0.2, 0.5])
    assert implicit_accuracy(h, p).item() == pytest.approx((1 + 0 + 0.5) / 3)
    expected = sum(0.5 * (hi if pi >= 0.5 else -hi) for hi, pi in zip([1.0, -2.0, 0.0, 3.0], [0.9, 0.8, 0.2, 0.5])) / 4
    assert chosen_reward_margin(h, p, 0.5).item() == pytest.approx(expected)


def test_sequence_kl_matches_a_loop_and_skips_masked_positions() -> None:
    torch.manual_seed(0)
    logits, ref = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    expected = []
    for n in range(2):
        total = 0.0
        for t in range(3):
            if mask[n, t]:
                p = torch.softmax(logits[n, t], -1).tolist()
                q = torch.softmax(ref[n, t], -1).tolist()
                total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        expected.append(total)
    assert sequence_kl(logits, ref, mask).tolist() == pytest.approx(expected, rel=1e-5)
