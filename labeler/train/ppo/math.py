"""The arithmetic of PPO for language models, as small pure functions on tensors.

Conventions for every function here: B sequences of T response tokens, right-padded. `mask` is 1.0 on
the tokens the policy generated (up to and including its EOS) and 0.0 on the padding after them. Token t
of a response was sampled from the policy's distribution given the prompt and tokens 0..t-1; the value
at t estimates the return from that same state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from labeler.core.padding import last_token_index
from labeler.train.ppo.config import KLEstimator

# ---------------------------------------------------------------------------------------------------
# Where a response ends, and where its reward goes
# ---------------------------------------------------------------------------------------------------


def response_lengths(responses: Tensor, eos_token_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Tokens generated up to and including the first EOS, and whether an EOS was generated at all.

    `responses` (B, T) holds only the generated tokens (the prompt, whose chat template has EOS-like
    tokens of its own, is not part of it). A response without EOS ran to the token limit: its length is
    T. Everything after the first EOS is padding, even when the pad token is the EOS token itself.

    >>> response_lengths(torch.tensor([[5, 2, 2, 2], [5, 6, 7, 8], [2, 9, 2, 2]]), eos_token_ids=[2])
    (tensor([2, 4, 1]), tensor([ True, False,  True]))
    """
    is_eos = torch.isin(responses, torch.tensor(list(eos_token_ids), device=responses.device))
    has_eos = is_eos.any(dim=1)
    first_eos = is_eos.int().argmax(dim=1)  # argmax returns the first of equal maxima
    lengths = torch.where(has_eos, first_eos + 1, torch.full_like(first_eos, responses.shape[1]))
    return lengths, has_eos


def length_mask(lengths: Tensor, width: int) -> Tensor:
    """(B, width) float mask: 1.0 on the first `lengths[b]` tokens of row b, 0.0 after them.

    >>> length_mask(torch.tensor([2, 4, 1]), 4)
    tensor([[1., 1., 0., 0.],
            [1., 1., 1., 1.],
            [1., 0., 0., 0.]])
    """
    positions = torch.arange(width, device=lengths.device)
    return (positions[None, :] < lengths[:, None]).float()


def place_scores(scores: Tensor, mask: Tensor) -> Tensor:
    """(B, T) rewards that are zero everywhere except `scores[b]` on row b's last generated token.

    The sequence-level reward is earned when the response ends, so it goes on the EOS (or on the last
    token of a response cut at the limit), never on the padding after it.

    >>> place_scores(torch.tensor([0.5, -1.0]), torch.tensor([[1., 1., 0.], [1., 1., 1.]]))
    tensor([[ 0.0000,  0.5000,  0.0000],
            [ 0.0000,  0.0000, -1.0000]])
    """
    rewards = torch.zeros_like(mask, dtype=scores.dtype)
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows, last_token_index(mask)] = scores
    return rewards


# ---------------------------------------------------------------------------------------------------
# Log-probabilities, entropy, KL to the reference
# ---------------------------------------------------------------------------------------------------


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """Log-probability of each token under the logits that predicted it: (B, T, V), (B, T) -> (B, T).

    >>> token_logprobs(torch.tensor([[[0.0, 0.0], [2.0, 0.0]]]), torch.tensor([[1, 0]])).round(decimals=4)
    tensor([[-0.6931, -0.1269]])
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return torch.gather(logprobs, -1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of each next-token distribution: (..., V) -> (...).

    >>> entropy_from_logits(torch.tensor([[0.0, 0.0], [100.0, 0.0]])).round(decimals=4)
    tensor([0.6931, 0.0000])
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def kl_k1(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """k1 estimate of KL(policy || reference) from tokens sampled by the policy: log p − log p_ref.

    Unbiased, but a single sample can be negative.

    >>> kl_k1(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0]))
    tensor([ 0.5000, -1.0000])
    """
    return logp - logp_ref


def kl_k3(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """k3 estimate of KL(policy || reference): (r − 1) − log r with r = p_ref / p.

    Unbiased and never negative (http://joschu.net/blog/kl-approx.html).

    >>> kl_k3(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])).round(decimals=4)
    tensor([0.1065, 0.7183])
    """
    log_ratio = logp_ref - logp
    return torch.expm1(log_ratio) - log_ratio


def kl_per_token(logp: Tensor, logp_ref: Tensor, estimator: KLEstimator) -> Tensor:
    """The chosen KL estimator, token by token.

    >>> kl_per_token(torch.tensor([-1.0]), torch.tensor([-1.0]), "k3")
    tensor([0.])
    """
    if estimator == "k1":
        return kl_k1(logp, logp_ref)
    if estimator == "k3":
        return kl_k3(logp, logp_ref)
    raise ValueError(f"unknown KL estimator {estimator!r}: expected 'k1' or 'k3'")


def token_rewards(scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token rewards: a KL penalty on every generated token plus the score on the last one.

    >>> token_rewards(torch.tensor([1.0]), torch.tensor([[0.5, 0.5, 9.0]]), torch.tensor([[1., 1., 0.]]), 0.1)
    tensor([[-0.0500,  0.9500,  0.0000]])
    """
    return -kl_coef * kl * mask + place_scores(scores, mask)


# ---------------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------------


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over the entries where `mask` is 1.

    >>> masked_mean(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1., 1., 0.]]))
    tensor(2.)
    """
    if dim is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(dim=dim) / mask.sum(dim=dim)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance over the entries where `mask` is 1 (with Bessel's correction when `unbiased`).

    >>> masked_var(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1., 1., 0.]]))
    tensor(2.)
    """
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = mask.sum()
        if count < 2:
            raise ValueError("the unbiased variance needs at least two unmasked entries")
        variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Scale to unit variance (and zero mean, when `shift_mean`) using only unmasked entries; padding → 0.

    >>> masked_whiten(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1., 1., 0.]])).round(decimals=4)
    tensor([[-0.7071,  0.7071,  0.0000]])
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over right-padded responses; returns (advantages, returns).

    A response ends at its last unmasked token: nothing is bootstrapped from the padding after it.
    Advantages and returns are 0 on padding.

    >>> advantages, returns = gae(torch.tensor([[0.0, 1.0, 5.0]]), torch.tensor([[0.5, 0.5, 5.0]]),
    ...                           torch.tensor([[1., 1., 0.]]), gamma=1.0, lam=1.0)
    >>> advantages, returns
    (tensor([[0.5000, 0.5000, 0.0000]]), tensor([[1., 1., 0.]]))
    """
    values = values * mask
    rewards = rewards * mask
    width = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(width)):
        # The next state exists only if token t+1 was generated.
        next_mask = mask[:, t + 1] if t + 1 < width else torch.zeros_like(mask[:, 0])
        next_value = values[:, t + 1] if t + 1 < width else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        last_advantage = delta + gamma * lam * next_mask * last_advantage
        advantages[:, t] = last_advantage
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


# ---------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------


def clipped_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate loss (to minimise) and the fraction of tokens where the clip was active.

    >>> loss, clip_frac = clipped_policy_loss(torch.log(torch.tensor([[1.5, 1.0]])), torch.zeros(1, 2),
    ...                                       torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), clip_range=0.2)
    >>> loss.round(decimals=4), clip_frac
    (tensor(-0.1000), tensor(0.5000))
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_frac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_frac


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, Tensor]:
    """Clipped value loss, ½·max((v − R)², (v_clip − R)²), and the fraction of tokens where the clip won.

    `v_clip` keeps the new value within `clip_range` of the value seen when the rollout was made.

    >>> loss, clip_frac = clipped_value_loss(torch.tensor([[1.0, 0.1]]), torch.zeros(1, 2),
    ...                                      torch.tensor([[1.0, 0.0]]), torch.ones(1, 2), clip_range=0.2)
    >>> loss.round(decimals=4), clip_frac
    (tensor(0.1625), tensor(0.5000))
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    clip_frac = masked_mean((clipped_error > unclipped_error).float(), mask)
    return loss, clip_frac
