"""PPO's math against slow, obvious references written with Python loops (cleanrl's test_gae style)."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

import labeler.train.ppo.math as ppo

GAMMA_LAMBDA = [(1.0, 0.95), (0.99, 0.9), (0.9, 1.0), (1.0, 0.0)]


def random_right_padded(batch: int, width: int, seed: int) -> tuple[torch.Tensor, list[int]]:
    """A (batch, width) float mask with a random length in 1..width per row, and those lengths."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (batch,), generator=generator).tolist()
    mask = torch.zeros(batch, width)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1.0
    return mask, lengths


# ---------------------------------------------------------------------------------------------------
# Where responses end, where the reward goes
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_response_lengths_match_a_scan_for_the_first_eos(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    eos_ids = [2, 7]
    responses = torch.randint(0, 10, (16, 9), generator=generator)
    lengths, has_eos = ppo.response_lengths(responses, eos_ids)
    for row in range(responses.shape[0]):
        tokens = responses[row].tolist()
        first = next((i for i, token in enumerate(tokens) if token in eos_ids), None)
        assert bool(has_eos[row]) == (first is not None)
        assert int(lengths[row]) == (first + 1 if first is not None else len(tokens))


def test_padding_equal_to_eos_is_not_a_second_end() -> None:
    # SmolLM2 pads with its EOS id: the response ends at the first one, whatever follows.
    lengths, has_eos = ppo.response_lengths(torch.tensor([[11, 12, 2, 2, 2]]), eos_token_ids=[2])
    assert lengths.tolist() == [3] and has_eos.tolist() == [True]


@pytest.mark.parametrize("seed", range(3))
def test_scores_land_on_the_last_generated_token(seed: int) -> None:
    mask, lengths = random_right_padded(12, 7, seed)
    scores = torch.randn(12, generator=torch.Generator().manual_seed(seed))
    rewards = ppo.place_scores(scores, mask)
    assert ppo.length_mask(torch.tensor(lengths), 7).equal(mask)
    for row, length in enumerate(lengths):
        assert int(ppo.last_token_index(mask)[row]) == length - 1
        for t in range(7):
            expected = float(scores[row]) if t == length - 1 else 0.0
            assert float(rewards[row, t]) == pytest.approx(expected)


def test_token_rewards_are_kl_penalty_plus_score_at_eos() -> None:
    mask, lengths = random_right_padded(6, 5, seed=3)
    generator = torch.Generator().manual_seed(4)
    scores, kl = torch.randn(6, generator=generator), torch.randn(6, 5, generator=generator)
    rewards = ppo.token_rewards(scores, kl, mask, kl_coef=0.3)
    for row, length in enumerate(lengths):
        for t in range(5):
            expected = 0.0 if t >= length else -0.3 * float(kl[row, t])
            if t == length - 1:
                expected += float(scores[row])
            assert float(rewards[row, t]) == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------------------------------------------
# Log-probabilities, entropy, KL
# ---------------------------------------------------------------------------------------------------


def test_token_logprobs_and_entropy_match_a_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 6, generator=generator) * 3
    tokens = torch.randint(0, 6, (3, 4), generator=generator)
    logprobs, entropy = ppo.token_logprobs(logits, tokens), ppo.entropy_from_logits(logits)
    for b in range(3):
        for t in range(4):
            row = logits[b, t].tolist()
            log_total = math.log(sum(math.exp(x) for x in row))
            assert float(logprobs[b, t]) == pytest.approx(row[int(tokens[b, t])] - log_total, abs=1e-5)
            probs = [math.exp(x - log_total) for x in row]
            assert float(entropy[b, t]) == pytest.approx(-sum(p * math.log(p) for p in probs), abs=1e-5)


def test_kl_estimators_match_their_formulas() -> None:
    generator = torch.Generator().manual_seed(1)
    logp, logp_ref = -torch.rand(50, generator=generator) * 5, -torch.rand(50, generator=generator) * 5
    k1, k3 = ppo.kl_per_token(logp, logp_ref, "k1"), ppo.kl_per_token(logp, logp_ref, "k3")
    for i in range(50):
        p, p_ref = math.exp(float(logp[i])), math.exp(float(logp_ref[i]))
        r = p_ref / p
        assert float(k1[i]) == pytest.approx(math.log(p) - math.log(p_ref), abs=1e-5)
        assert float(k3[i]) == pytest.approx((r - 1) - math.log(r), rel=1e-4, abs=1e-5)
        assert float(k3[i]) >= 0.0
    with pytest.raises(ValueError, match="k2"):
        ppo.kl_per_token(logp, logp_ref, "k2")  # type: ignore[arg-type]


def test_both_estimators_are_unbiased_for_the_exact_kl() -> None:
    """Sampled from the policy, both estimators average to KL(policy || reference)."""
    policy = torch.tensor([0.5, 0.3, 0.15, 0.05])
    reference = torch.tensor([0.25, 0.25, 0.25, 0.25])
    exact = sum(p * math.log(p / q) for p, q in zip(policy.tolist(), reference.tolist()))
    samples = torch.multinomial(policy, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, logp_ref = policy.log()[samples], reference.log()[samples]
    assert float(ppo.kl_k1(logp, logp_ref).mean()) == pytest.approx(exact, rel=0.03)
    assert float(ppo.kl_k3(logp, logp_ref).mean()) == pytest.approx(exact, rel=0.03)


# ---------------------------------------------------------------------------------------------------
# Masked statistics and whitening
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_masked_mean_var_whiten_match_statistics(seed: int) -> None:
    mask, lengths = random_right_padded(5, 6, seed)
    values = torch.randn(5, 6, generator=torch.Generator().manual_seed(seed)) * 4 + 2
    kept = [float(values[row, t]) for row, length in enumerate(lengths) for t in range(length)]
    assert float(ppo.masked_mean(values, mask)) == pytest.approx(statistics.fmean(kept), abs=1e-5)
    assert float(ppo.masked_var(values, mask)) == pytest.approx(statistics.variance(kept), rel=1e-4)
    assert float(ppo.masked_var(values, mask, unbiased=False)) == pytest.approx(statistics.pvariance(kept), rel=1e-4)
    whitened = ppo.masked_whiten(values, mask)
    mean, std = statistics.fmean(kept), statistics.stdev(kept)
    for row, length in enumerate(lengths):
        for t in range(6):
            expected = (float(values[row, t]) - mean) / std if t < length else 0.0
            assert float(whitened[row, t]) == pytest.approx(expected, abs=1e-4)
    unshifted = ppo.masked_whiten(values, mask, shift_mean=False)
    assert float(unshifted[0, 0]) == pytest.approx((float(values[0, 0]) - mean) / std + mean, abs=1e-4)


def test_masked_mean_along_a_dimension() -> None:
    mask, lengths = random_right_padded(4, 5, seed=9)
    values = torch.randn(4, 5, generator=torch.Generator().manual_seed(9))
    per_row = ppo.masked_mean(values, mask, dim=1)
    for row, length in enumerate(lengths):
        assert float(per_row[row]) == pytest.approx(statistics.fmean(values[row, :length].tolist()), abs=1e-6)


def test_unbiased_variance_of_one_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="two"):
        ppo.masked_var(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]]))


# ---------------------------------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------------------------------


def slow_gae(rewards: list[float], values: list[float], length: int, gamma: float, lam: float) -> list[float]:
    """A_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γ V_{t+1} − V_t, with V = 0 from the end of the response on."""
    def value(t: int) -> float:
        return values[t] if t < length else 0.0

    deltas = [rewards[t] + gamma * value(t + 1) - value(t) for t in range(length)]
    advantages = [sum((gamma * lam) ** k * deltas[t + k] for k in range(length - t)) for t in range(length)]
    return advantages + [0.0] * (len(rewards) - length)


@pytest.mark.parametrize("gamma,lam", GAMMA_LAMBDA)
@pytest.mark.parametrize("seed", range(3))
def test_gae_matches_the_explicit_sum(gamma: float, lam: float, seed: int) -> None:
    mask, lengths = random_right_padded(8, 10, seed)
    generator = torch.Generator().manual_seed(seed + 100)
    # Garbage on padding must not leak into the result.
    rewards, values = torch.randn(8, 10, generator=generator), torch.randn(8, 10, generator=generator)
    advantages, returns = ppo.gae(rewards, values, mask, gamma, lam)
    for row, length in enumerate(lengths):
        expected = slow_gae(rewards[row].tolist(), values[row].tolist(), length, gamma, lam)
        assert advantages[row].tolist() == pytest.approx(expected, abs=1e-5)
        expected_returns = [a + (float(values[row, t]) if t < length else 0.0) for t, a in enumerate(expected)]
        assert returns[row].tolist() == pytest.approx(expected_returns, abs=1e-5)


def test_gae_with_gamma_and_lambda_one_is_the_monte_carlo_return_minus_value() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.2, 0.4, 0.6, 9.0]])
    advantages, returns = ppo.gae(rewards, values, torch.tensor([[1.0, 1.0, 1.0, 0.0]]), gamma=1.0, lam=1.0)
    assert returns[0].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0])
    assert advantages[0].tolist() == pytest.approx([0.8, 0.6, 0.4, 0.0])


# ---------------------------------------------------------------------------------------------------
# Clipped losses
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_clipped_policy_loss_matches_a_loop(seed: int) -> None:
    mask, lengths = random_right_padded(6, 5, seed)
    generator = torch.Generator().manual_seed(seed)
    old = -torch.rand(6, 5, generator=generator) * 3
    new = old + torch.randn(6, 5, generator=generator) * 0.4
    advantages = torch.randn(6, 5, generator=generator)
    loss, clip_frac = ppo.clipped_policy_loss(new, old, advantages, mask, clip_range=0.2)
    terms, clipped = [], []
    for row, length in enumerate(lengths):
        for t in range(length):
            ratio = math.exp(float(new[row, t]) - float(old[row, t]))
            a = float(advantages[row, t])
            plain, bounded = -a * ratio, -a * min(max(ratio, 0.8), 1.2)
            terms.append(max(plain, bounded))
            clipped.append(1.0 if bounded > plain else 0.0)
    assert float(loss) == pytest.approx(statistics.fmean(terms), abs=1e-5)
    assert float(clip_frac) == pytest.approx(statistics.fmean(clipped), abs=1e-6)


def test_clipped_policy_loss_has_no_gradient_once_clipped() -> None:
    logp = torch.tensor([[math.log(1.5)]], requires_grad=True)
    loss, _ = ppo.clipped_policy_loss(logp, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), clip_range=0.2)
    loss.backward()
    assert logp.grad is not None and float(logp.grad) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_clipped_value_loss_matches_a_loop(seed: int) -> None:
    mask, lengths = random_right_padded(6, 5, seed)
    generator = torch.Generator().manual_seed(seed)
    old, returns = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    new = old + torch.randn(6, 5, generator=generator) * 0.5
    loss, clip_frac = ppo.clipped_value_loss(new, old, returns, mask, clip_range=0.2)
    terms, clipped = [], []
    for row, length in enumerate(lengths):
        for t in range(length):
            v, v_old, ret = float(new[row, t]), float(old[row, t]), float(returns[row, t])
            v_clip = v_old + min(max(v - v_old, -0.2), 0.2)
            plain, bounded = (v - ret) ** 2, (v_clip - ret) ** 2
            terms.append(0.5 * max(plain, bounded))
            clipped.append(1.0 if bounded > plain else 0.0)
    assert float(loss) == pytest.approx(statistics.fmean(terms), abs=1e-5)
    assert float(clip_frac) == pytest.approx(statistics.fmean(clipped), abs=1e-6)
