"""DPO math: the soft-label loss, hard DPO, IPO, and the metrics logged while training.

Every function takes 1-D tensors of shape (B,), one entry per pair, oriented "A versus B". The margin
`h` is the policy-versus-reference log-ratio of response A minus that of response B:

    h = (log pi(a|x) - log pi_ref(a|x)) - (log pi(b|x) - log pi_ref(b|x))

and `beta * h` is the implicit reward margin of A over B. `p_a` is the judge's probability that A is
better (soft), or 1/0 (hard). Shapes are checked, never broadcast (see `check_pair_shapes`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from labeler.train.rm.losses import a_chosen, check_pair_shapes


def log_ratio_margin(
    policy_a: torch.Tensor, policy_b: torch.Tensor, reference_a: torch.Tensor, reference_b: torch.Tensor
) -> torch.Tensor:
    """h: how much more the policy raised A's log-probability over the reference's than B's, (B,).

    >>> log_ratio_margin(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))
    tensor([2.])
    """
    check_pair_shapes(policy_a=policy_a, policy_b=policy_b, reference_a=reference_a, reference_b=reference_b)
    return (policy_a - reference_a) - (policy_b - reference_b)


def soft_dpo_loss(h: torch.Tensor, p_a: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over pairs of -(p log sigmoid(beta h) + (1 - p) log sigmoid(-beta h)): DPO against a soft label.

    The conservative (label-smoothed) DPO form with each pair's own p. At p = 0.5 its gradient in h
    is zero at h = 0: an undecided pair asks for no preference at all.

    >>> round(soft_dpo_loss(torch.tensor([0.0]), torch.tensor([0.9]), beta=0.1).item(), 4)  # log 2
    0.6931
    >>> round(soft_dpo_loss(torch.tensor([10.0]), torch.tensor([1.0]), beta=0.1).item(), 4)
    0.3133
    """
    check_pair_shapes(h=h, p_a=p_a)
    z = beta * h
    return -(p_a * F.logsigmoid(z) + (1.0 - p_a) * F.logsigmoid(-z)).mean()


def hard_dpo_loss(h: torch.Tensor, p_a: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over pairs of -log sigmoid(beta h_chosen): today's DPO on the chosen response (p_a >= 0.5 is A).

    >>> round(hard_dpo_loss(torch.tensor([10.0, -10.0]), torch.tensor([0.6, 0.2]), beta=0.1).item(), 4)
    0.3133
    """
    check_pair_shapes(h=h, p_a=p_a)
    sign = torch.where(a_chosen(p_a), 1.0, -1.0).to(h.dtype)
    return -F.logsigmoid(beta * sign * h).mean()


def ipo_loss(h: torch.Tensor, p_a: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO with a soft label: mean of p (h - 1/(2 beta))^2 + (1 - p) (h + 1/(2 beta))^2.

    With p = 1 it is IPO's (h - 1/(2 beta))^2; in general it is smallest at h = (2p - 1)/(2 beta), so a
    pair at p = 0.5 pulls h to 0. Pass h from per-token mean log-probabilities (as TRL's IPO does) to
    keep beta comparable across response lengths.

    >>> ipo_loss(torch.tensor([5.0]), torch.tensor([1.0]), beta=0.1).item()
    0.0
    >>> ipo_loss(torch.tensor([0.0]), torch.tensor([0.5]), beta=0.5).item()
    1.0
    """
    check_pair_shapes(h=h, p_a=p_a)
    tau = 1.0 / (2.0 * beta)
    return (p_a * (h - tau) ** 2 + (1.0 - p_a) * (h + tau) ** 2).mean()


LOSSES = {"soft": soft_dpo_loss, "hard": hard_dpo_loss, "ipo": ipo_loss}


def chosen_reward_margin(h: torch.Tensor, p_a: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean implicit reward margin of the chosen response over the rejected one, beta h_chosen (TRL's
    `rewards/margins`).

    >>> chosen_reward_margin(torch.tensor([2.0, 4.0]), torch.tensor([0.9, 0.1]), beta=0.5)
    tensor(-0.5000)
    """
    check_pair_shapes(h=h, p_a=p_a)
    sign = torch.where(a_chosen(p_a), 1.0, -1.0).to(h.dtype)
    return (beta * sign * h).mean()


def implicit_accuracy(h: torch.Tensor, p_a: torch.Tensor) -> torch.Tensor:
    """Share of decided pairs (p_a != 0.5) whose implicit reward ranks the judge's preferred response first;
    a tie in h counts half. NaN when no pair is decided.

    >>> implicit_accuracy(torch.tensor([1.0, -1.0, 0.0, 3.0]), torch.tensor([0.9, 0.8, 0.7, 0.5]))
    tensor(0.5000)
    """
    check_pair_shapes(h=h, p_a=p_a)
    decided = p_a != 0.5
    agree = torch.where(h == 0, 0.5, ((h > 0) == (p_a > 0.5)).to(h.dtype))
    return agree[decided].mean()


def sequence_kl(logits: torch.Tensor, reference_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) over the next-token distributions at the masked positions, summed per row: (N, T, V) -> (N,).

    Exact at each position (the whole vocabulary), on the contexts of the given responses.

    >>> same = torch.randn(1, 3, 5)
    >>> sequence_kl(same, same, torch.ones(1, 3)).abs().max().item() < 1e-6
    True
    """
    log_p = F.log_softmax(logits.float(), dim=-1)
    log_q = F.log_softmax(reference_logits.float(), dim=-1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (N, T)
    return (per_token * mask).sum(dim=-1)


def response_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Sum of log pi(token | tokens before it) over the response tokens of each row: (N, T, V) -> (N,).

    `logits[:, t]` predicts `input_ids[:, t + 1]`; `response_mask` (N, T) is 1 on response tokens and 0
    on prompt tokens and padding, so neither contributes, whatever their logits.

    >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens
    >>> round(response_logprobs(logits, torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 1]])).item(), 4)  # 2 log(1/4)
    -2.7726
    """
    targets = input_ids[:, 1:]  # (N, T-1): the token each position predicts
    logits = logits[:, :-1].float()  # (N, T-1, V)
    token_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N, T-1)
    token_logprobs = token_logits - logits.logsumexp(dim=-1)  # (N, T-1)
    return (token_logprobs * response_mask[:, 1:].to(token_logprobs.dtype)).sum(dim=-1)
