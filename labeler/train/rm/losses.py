"""Reward-model math: Bradley-Terry with soft or hard targets, and the metrics logged while training.

Every function takes rewards as 1-D tensors of shape (B,), one entry per pair, oriented "A versus B":
`target_a` is the probability that response A is better (the `p_a` column, or 0/1 for hard labels).
Shapes are checked, never broadcast: a (B,) reward minus a (B, 1) reward silently becomes a (B, B)
matrix, and the mean of that matrix is a loss that trains nothing useful.
"""

from __future__ import annotations

from typing import overload

import torch
import torch.nn.functional as F


def check_pair_shapes(**tensors: torch.Tensor | None) -> None:
    """Raise ValueError unless every given tensor has the same 1-D shape (B,).

    >>> check_pair_shapes(reward_a=torch.zeros(3), reward_b=torch.zeros(3))
    >>> check_pair_shapes(reward_a=torch.zeros(3), reward_b=torch.zeros(3, 1))
    Traceback (most recent call last):
    ...
    ValueError: reward_b has shape (3, 1) but reward_a has shape (3,): pass 1-D tensors of shape (B,)
    """
    present = {name: t for name, t in tensors.items() if t is not None}
    first_name, first = next(iter(present.items()))
    if first.dim() != 1:
        raise ValueError(f"{first_name} has shape {tuple(first.shape)}: pass 1-D tensors of shape (B,)")
    for name, tensor in present.items():
        if tensor.shape != first.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but {first_name} has shape {tuple(first.shape)}: "
                "pass 1-D tensors of shape (B,)"
            )


@overload
def a_chosen(p_a: float) -> bool: ...
@overload
def a_chosen(p_a: torch.Tensor) -> torch.Tensor: ...
def a_chosen(p_a: float | torch.Tensor) -> bool | torch.Tensor:
    """Whether response A is the chosen one: p_a >= 0.5, so a tie goes to A. For one pair or a (B,) batch.

    >>> a_chosen(0.5), a_chosen(torch.tensor([0.9, 0.5, 0.2]))
    (True, tensor([ True,  True, False]))
    """
    return p_a >= 0.5


def hard_target(p_a: float) -> float:
    """A pair's hard label from its soft one: 1.0 where A is chosen (p_a >= 0.5), else 0.0.

    >>> [hard_target(p) for p in (0.9, 0.5, 0.2)]
    [1.0, 1.0, 0.0]
    """
    return 1.0 if a_chosen(p_a) else 0.0


def oriented_margin(margin: torch.Tensor, target_a: torch.Tensor) -> torch.Tensor:
    """Turn a TRL-style margin (how much the chosen response should win by) into a margin for A.

    The chosen response is A where target_a >= 0.5, so the margin keeps its sign there and flips
    where B is chosen; `bradley_terry_loss` then subtracts it from r_a − r_b.

    >>> oriented_margin(torch.tensor([1.0, 2.0]), torch.tensor([0.8, 0.1]))
    tensor([ 1., -2.])
    """
    check_pair_shapes(margin=margin, target_a=target_a)
    return torch.where(a_chosen(target_a), margin, -margin)


def bradley_terry_loss(
    reward_a: torch.Tensor,
    reward_b: torch.Tensor,
    target_a: torch.Tensor,
    margin_a: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean Bradley-Terry loss: BCE-with-logits(r_a − r_b − margin_a, target_a).

    P(A better) = sigmoid(r_a − r_b). With target_a = 1 this is TRL's −log σ(r_chosen − r_rejected);
    with soft targets it is the cross-entropy against the judge's probability, whose minimum sits at
    r_a − r_b = logit(target_a) rather than at infinity. `margin_a` (see `oriented_margin`) asks the
    preferred response to win by at least that much.

    >>> loss = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([1.0]))
    >>> round(loss.item(), 4)  # -log(sigmoid(2))
    0.1269
    >>> round(bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.5])).item(), 4)
    0.6931
    >>> bradley_terry_loss(torch.zeros(2), torch.zeros(2, 1), torch.ones(2))
    Traceback (most recent call last):
    ...
    ValueError: reward_b has shape (2, 1) but reward_a has shape (2,): pass 1-D tensors of shape (B,)
    """
    check_pair_shapes(reward_a=reward_a, reward_b=reward_b, target_a=target_a, margin_a=margin_a)
    logits = reward_a - reward_b  # (B,)
    if margin_a is not None:
        logits = logits - margin_a
    return F.binary_cross_entropy_with_logits(logits, target_a.to(logits.dtype))


def pairwise_accuracy(reward_a: torch.Tensor, reward_b: torch.Tensor, target_a: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs where the reward model prefers the labelled winner (a tie counts as wrong).

    >>> pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0]))
    tensor(0.3333)
    """
    check_pair_shapes(reward_a=reward_a, reward_b=reward_b, target_a=target_a)
    reward_chosen, reward_rejected = chosen_rejected(reward_a, reward_b, target_a)
    return (reward_chosen > reward_rejected).float().mean()


def mean_chosen_margin(reward_a: torch.Tensor, reward_b: torch.Tensor, target_a: torch.Tensor) -> torch.Tensor:
    """Mean of r_chosen − r_rejected, the chosen response being A where target_a >= 0.5.

    >>> mean_chosen_margin(torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.9, 0.2]))
    tensor(1.5000)
    """
    check_pair_shapes(reward_a=reward_a, reward_b=reward_b, target_a=target_a)
    reward_chosen, reward_rejected = chosen_rejected(reward_a, reward_b, target_a)
    return (reward_chosen - reward_rejected).mean()


def chosen_rejected(
    reward_a: torch.Tensor, reward_b: torch.Tensor, target_a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder (r_a, r_b) into (r_chosen, r_rejected) using the hard label of `target_a`.

    >>> chosen_rejected(torch.tensor([3.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]))
    (tensor([3., 1.]), tensor([1., 0.]))
    """
    chosen_is_a = a_chosen(target_a)  # (B,) bool
    return torch.where(chosen_is_a, reward_a, reward_b), torch.where(chosen_is_a, reward_b, reward_a)


def multi_head_bradley_terry_loss(
    reward_a: torch.Tensor,
    reward_b: torch.Tensor,
    target_a: torch.Tensor,
    mask: torch.Tensor,
    head_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bradley-Terry loss of K reward heads at once, each head only on the pairs that have its label.

    `reward_a`, `reward_b`, `target_a`, `mask` are (B, K): head k's rewards, its soft label, and whether
    pair i has a label for head k (a pair without a score for a principle does not train that head).
    Each head's loss is the mean BCE-with-logits over its labelled pairs; the result is the
    `head_weights`-weighted mean (default: equal) over the heads that have a labelled pair in the batch.
    With K = 1 and every pair labelled it is `bradley_terry_loss`.

    >>> ra, rb = torch.tensor([[2.0, 0.0], [0.0, 5.0]]), torch.zeros(2, 2)
    >>> target, mask = torch.tensor([[1.0, 0.5], [1.0, 1.0]]), torch.tensor([[True, False], [True, True]])
    >>> round(multi_head_bradley_terry_loss(ra, rb, target, mask).item(), 4)  # ((0.1269 + 0.6931) / 2 + 0.0067) / 2
    0.2084
    >>> round(multi_head_bradley_terry_loss(ra[:, :1], rb[:, :1], target[:, :1], mask[:, :1]).item(), 4)
    0.41
    """
    if reward_a.dim() != 2:
        raise ValueError(f"reward_a has shape {tuple(reward_a.shape)}: pass (B, K) tensors, one column per head")
    for name, tensor in (("reward_b", reward_b), ("target_a", target_a), ("mask", mask)):
        if tensor.shape != reward_a.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but reward_a has shape {tuple(reward_a.shape)}"
            )
    weights = torch.ones(reward_a.shape[1], device=reward_a.device) if head_weights is None else head_weights
    if weights.shape != (reward_a.shape[1],):
        raise ValueError(
            f"head_weights has shape {tuple(weights.shape)}: pass one weight per head ({reward_a.shape[1]},)"
        )
    logits = reward_a - reward_b  # (B, K)
    per_pair = F.binary_cross_entropy_with_logits(logits, target_a.to(logits.dtype), reduction="none")  # (B, K)
    labelled = mask.to(logits.dtype)  # (B, K)
    counts = labelled.sum(dim=0)  # (K,) labelled pairs per head
    per_head = (per_pair * labelled).sum(dim=0) / counts.clamp(min=1.0)  # (K,)
    present = weights.to(logits.dtype) * (counts > 0).to(logits.dtype)  # (K,) heads with a label in the batch
    return (per_head * present).sum() / present.sum().clamp(min=torch.finfo(logits.dtype).tiny)


def head_accuracy(
    reward_a: torch.Tensor, reward_b: torch.Tensor, target_a: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head: how many labelled pairs it orders as its label does (a tie is wrong), and how many it has.

    (B, K) inputs as in `multi_head_bradley_terry_loss`; returns two (K,) tensors (correct, labelled).

    >>> correct, labelled = head_accuracy(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2), torch.tensor([[0.9, 0.9]]),
    ...                                   torch.tensor([[True, False]]))
    >>> correct.tolist(), labelled.tolist()
    ([1.0, 0.0], [1.0, 0.0])
    """
    right = torch.where(a_chosen(target_a), reward_a > reward_b, reward_b > reward_a)  # (B, K)
    labelled = mask.to(torch.float32)
    return (right.to(torch.float32) * labelled).sum(dim=0), labelled.sum(dim=0)
