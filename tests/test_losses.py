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


def test_approx_kl_is_unbiased_for_categorical_kl():
    gen = torch.Generator().manual_seed(0)
    p_old = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    p_new = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    exact = (p_old * (p_old / p_new).log()).sum()
    a = torch.multinomial(p_old, 200_000, replacement=True, generator=gen)
    k3 = torch.expm1(p_new.log()[a] - p_old.log()[a]) - (p_new.log()[a] - p_old.log()[a])
    se = k3.std() / math.sqrt(len(a))
    est = approx_kl(p_new.log()[a], p_old.log()[a])
    assert abs(est - exact) < 4 * se


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
