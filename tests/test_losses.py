"""Surrogate losses: hand values, and that each gradient is the estimator it documents."""

import math

import pytest
import torch

from policygrad.errors import InputError
from policygrad.losses import (
    approx_kl,
    clip_fraction,
    clipped_surrogate,
    entropy_bonus,
    importance_surrogate,
    kl_penalty,
    score_function_loss,
    value_loss,
)


def _categorical_setup(seed=0, T=5, A=4):
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(T, A, generator=gen, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(A, (T,), generator=gen)
    psi = torch.randn(T, generator=gen, dtype=torch.float64)
    log_prob = torch.log_softmax(theta, -1).gather(-1, actions[:, None]).squeeze(-1)
    return theta, actions, psi, log_prob


def test_score_function_loss_gradient_is_the_estimator():
    theta, actions, psi, log_prob = _categorical_setup()
    (grad,) = torch.autograd.grad(score_function_loss(log_prob, psi), theta)
    # ∇θ log softmax(θ_t)[a_t] = e_{a_t} − π_t  (row t only)
    pi = torch.softmax(theta.detach(), -1)
    score = torch.nn.functional.one_hot(actions, 4).double() - pi
    expected = -(psi[:, None] * score) / len(psi)
    assert torch.allclose(grad, expected, atol=1e-12)


def test_score_function_loss_gamma_t_factor_and_sum():
    theta, actions, psi, log_prob = _categorical_setup(seed=1, T=3)
    step = torch.tensor([0, 1, 2])
    (grad,) = torch.autograd.grad(
        score_function_loss(log_prob, psi, gamma=0.5, episode_step=step, reduction="sum"), theta
    )
    pi = torch.softmax(theta.detach(), -1)
    score = torch.nn.functional.one_hot(actions, 4).double() - pi
    weights = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64) * psi
    assert torch.allclose(grad, -(weights[:, None] * score), atol=1e-12)


def test_score_function_loss_detaches_weights_and_masks():
    log_prob = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    psi = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss = score_function_loss(log_prob, psi, mask=torch.tensor([True, True, False]))
    # −(1·(−1) + 2·(−2)) / 2 = 2.5
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    assert psi.grad is None
    assert torch.allclose(log_prob.grad, torch.tensor([-0.5, -1.0, 0.0]))


def test_score_function_loss_needs_both_gamma_and_step():
    with pytest.raises(InputError, match="gamma and episode_step"):
        score_function_loss(torch.zeros(3), torch.zeros(3), gamma=0.9)


def test_clipped_surrogate_by_hand():
    # ratio 1.5, ε = 0.2: A = +1 → min(1.5, 1.2) = 1.2, no gradient (clipped);
    #                     A = −1 → min(−1.5, −1.2) = −1.5, gradient of −ratio·A = ratio = 1.5.
    log_prob = torch.full((2,), math.log(1.5), requires_grad=True)
    old = torch.zeros(2)
    adv = torch.tensor([1.0, -1.0])
    loss = clipped_surrogate(log_prob, old, adv, 0.2)
    assert loss.item() == pytest.approx(-(1.2 - 1.5) / 2)
    loss.backward()
    assert torch.allclose(log_prob.grad, torch.tensor([0.0, 1.5 / 2]))


def test_surrogates_match_score_function_gradient_at_old_policy():
    theta, actions, psi, log_prob = _categorical_setup(seed=2)
    old = log_prob.detach()
    (g_sf,) = torch.autograd.grad(score_function_loss(log_prob, psi), theta, retain_graph=True)
    (g_is,) = torch.autograd.grad(importance_surrogate(log_prob, old, psi), theta, retain_graph=True)
    (g_clip,) = torch.autograd.grad(clipped_surrogate(log_prob, old, psi, 0.2), theta, retain_graph=True)
    (g_kl,) = torch.autograd.grad(kl_penalty(log_prob, old, 3.0), theta)
    assert torch.allclose(g_sf, g_is, atol=1e-12)
    assert torch.allclose(g_sf, g_clip, atol=1e-12)
    assert torch.allclose(g_kl, torch.zeros_like(g_kl), atol=1e-12)


def _mean_and_stderr(log_prob, old_log_prob, chunks=100):
    """approx_kl over all samples, and its standard error from the spread of the chunk means."""
    per_chunk = torch.stack([approx_kl(lp, old) for lp, old in zip(log_prob.chunk(chunks), old_log_prob.chunk(chunks))])
    return approx_kl(log_prob, old_log_prob), per_chunk.std() / math.sqrt(chunks)


def test_approx_kl_matches_the_exact_categorical_kl_under_old_samples():
    # p_old = (0.5, 0.3, 0.2), p_new = (0.1, 0.3, 0.6):
    # KL(p_old ‖ p_new) = 0.5·log 5 + 0.3·log 1 + 0.2·log(1/3) ≈ 0.8047 − 0.2197 = 0.5850;
    # the reverse KL(p_new ‖ p_old) = 0.1·log 0.2 + 0.6·log 3 ≈ −0.1609 + 0.6592 = 0.4982.
    gen = torch.Generator().manual_seed(0)
    p_old = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    p_new = torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)
    exact = 0.5 * math.log(5) + 0.2 * math.log(1 / 3)
    reverse = 0.1 * math.log(0.2) + 0.6 * math.log(3)
    assert exact == pytest.approx(0.5850, abs=1e-4) and reverse == pytest.approx(0.4982, abs=1e-4)
    a = torch.multinomial(p_old, 200_000, replacement=True, generator=gen)
    est, se = _mean_and_stderr(p_new.log()[a], p_old.log()[a])
    assert 0 < se < 0.01 * exact
    assert abs(est - exact) < 4 * se
    assert abs(est - reverse) > 20 * se  # the estimate is of KL(π_old ‖ π), not of the reverse


def test_approx_kl_matches_the_exact_gaussian_kl_under_old_samples():
    # π_old = N(0, 1), π = N(μ, σ²): KL(π_old ‖ π) = log σ + (1 + μ²) / (2σ²) − ½
    # μ = 0.5, σ = 1.5: log 1.5 + 1.25 / 4.5 − 0.5 ≈ 0.18324
    gen = torch.Generator().manual_seed(1)
    mu, sigma = 0.5, 1.5
    exact = math.log(sigma) + (1 + mu**2) / (2 * sigma**2) - 0.5
    x = torch.randn(200_000, generator=gen, dtype=torch.float64)
    old_log_prob = torch.distributions.Normal(0.0, 1.0).log_prob(x)
    log_prob = torch.distributions.Normal(mu, sigma).log_prob(x)
    est, se = _mean_and_stderr(log_prob, old_log_prob)
    assert exact == pytest.approx(0.18324, abs=1e-5)
    assert 0 < se < 0.05 * exact
    assert abs(est - exact) < 4 * se


def test_approx_kl_by_hand_and_zero_where_the_ratio_is_one():
    log_prob = torch.tensor([-0.3, -1.7, -2.2], dtype=torch.float64)
    assert approx_kl(log_prob, log_prob).item() == 0.0
    # ρ = (1, 2): ((1 − 1) − log 1 + (2 − 1) − log 2) / 2 = (1 − log 2) / 2 ≈ 0.1534
    lp = torch.tensor([0.0, math.log(2.0)], dtype=torch.float64)
    assert approx_kl(lp, torch.zeros(2, dtype=torch.float64)).item() == pytest.approx((1 - math.log(2)) / 2, abs=1e-12)
    # ρ = ½: (½ − 1) − log ½ = log 2 − ½ ≈ 0.1931 (not the same as ρ = 2: k3 is not symmetric in log ρ)
    assert approx_kl(torch.tensor([-math.log(2.0)]), torch.zeros(1)).item() == pytest.approx(math.log(2) - 0.5)


def test_clip_fraction_and_entropy_bonus_and_value_loss():
    lp = torch.log(torch.tensor([1.0, 1.1, 1.3, 0.7]))
    assert clip_fraction(lp, torch.zeros(4), 0.2).item() == pytest.approx(0.5)
    assert entropy_bonus(torch.tensor([1.0, 3.0]), 0.1).item() == pytest.approx(-0.2)
    # ½·mean((1−0)², (2−4)²) = ½·(1 + 4)/2 = 1.25
    assert value_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])).item() == pytest.approx(1.25)
    # clipped: old (0, 3), ε = 0.5 → clipped preds (0.5, 2.5); squared (0.25, 2.25); max with (1, 4) = (1, 4)
    v = value_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]), torch.tensor([0.0, 3.0]), 0.5)
    assert v.item() == pytest.approx(1.25)
    # a case where the clipped error is larger: old 0, pred 1, target 1, ε = 0.2 → max(0, 0.64) = 0.64
    v = value_loss(torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([0.0]), 0.2)
    assert v.item() == pytest.approx(0.5 * 0.64)


def test_loss_shape_errors():
    with pytest.raises(InputError, match="advantages has shape"):
        clipped_surrogate(torch.zeros(3), torch.zeros(3), torch.zeros(4), 0.2)
    with pytest.raises(InputError, match="clip_eps"):
        clipped_surrogate(torch.zeros(3), torch.zeros(3), torch.zeros(3), 0.0)
    with pytest.raises(InputError, match="old_values"):
        value_loss(torch.zeros(3), torch.zeros(3), clip_eps=0.2)
