"""Tests of the trust-region pieces: conjugate gradient, Fisher-vector products, line search."""

from __future__ import annotations

import math

import pytest
import torch

from policygrad.distributions import Categorical
from policygrad.errors import InputError
from policygrad.trust_region import conjugate_gradient, fisher_vector_product, line_search, natural_step


def _spd(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    return m @ m.T + 0.5 * torch.eye(n, dtype=torch.float64)


def test_conjugate_gradient_solves_an_spd_system_to_tolerance():
    a = _spd(20, 0)
    b = torch.randn(20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=100, residual_tol=1e-24)
    assert torch.allclose(a @ x, b, atol=1e-9)
    assert torch.allclose(x, torch.linalg.solve(a, b), atol=1e-8)


def test_conjugate_gradient_is_exact_in_n_steps_and_stops_on_zero_rhs():
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    # Three distinct eigenvalues: CG is exact after three iterations.
    x = conjugate_gradient(lambda v: a @ v, b, iters=3, residual_tol=0.0)
    assert torch.allclose(x, torch.tensor([1.0, 1 / 2, 1 / 3], dtype=torch.float64), atol=1e-12)
    calls = []
    zero = conjugate_gradient(lambda v: calls.append(v) or a @ v, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(zero, torch.zeros(3, dtype=torch.float64)) and not calls


def test_conjugate_gradient_rejects_bad_input():
    with pytest.raises(InputError, match="flat vector"):
        conjugate_gradient(lambda v: v, torch.ones(2, 2))
    with pytest.raises(InputError, match="iters"):
        conjugate_gradient(lambda v: v, torch.ones(2), iters=0)


def _tiny_categorical_policy():
    """Logits z(s) = W s for 5 states in R^3 and 4 actions; θ = vec(W), float64."""
    g = torch.Generator().manual_seed(3)
    states = torch.randn(5, 3, generator=g, dtype=torch.float64)
    w_old = torch.randn(4, 3, generator=g, dtype=torch.float64)
    return states, w_old


def _mean_kl(states, w_old, w):
    old = Categorical(states @ w_old.detach().T)
    return old.kl(Categorical(states @ w.T)).mean()


@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_fisher_vector_product_equals_the_explicit_kl_hessian_times_v(damping):
    states, w_old = _tiny_categorical_policy()
    w = w_old.clone().requires_grad_(True)
    fvp = fisher_vector_product(_mean_kl(states, w_old, w), [w], damping)
    hessian = torch.autograd.functional.hessian(
        lambda flat: _mean_kl(states, w_old, flat.reshape(4, 3)), w_old.reshape(-1).clone()
    )  # [12, 12]
    for seed in range(3):
        v = torch.randn(12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert torch.allclose(fvp(v), hessian @ v + damping * v, atol=1e-12)


def test_kl_hessian_at_theta_old_is_the_fisher_information():
    # F = mean_s Σ_a π(a|s) ∇log π(a|s) ∇log π(a|s)ᵀ, summed exactly over the 4 actions.
    states, w_old = _tiny_categorical_policy()
    w = w_old.clone().requires_grad_(True)
    fvp = fisher_vector_product(_mean_kl(states, w_old, w), [w], 0.0)
    fisher = torch.zeros(12, 12, dtype=torch.float64)
    for s in states:
        log_probs = torch.log_softmax(w @ s, dim=-1)
        for a in range(4):
            (score,) = torch.autograd.grad(log_probs[a], w, retain_graph=True)
            fisher += log_probs[a].exp().detach() * torch.outer(score.reshape(-1), score.reshape(-1))
    fisher /= len(states)
    v = torch.randn(12, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.allclose(fvp(v), fisher @ v, atol=1e-12)


def test_natural_step_has_the_requested_quadratic_kl():
    f = _spd(6, 4)
    g = torch.randn(6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    step, expected = natural_step(lambda v: f @ v, g, max_kl=0.02, cg_iters=50)
    assert math.isclose(float(0.5 * step @ f @ step), 0.02, rel_tol=1e-6)
    assert torch.allclose(step / step.norm(), torch.linalg.solve(f, g) / torch.linalg.solve(f, g).norm(), atol=1e-6)
    assert math.isclose(float(expected), float(g @ step), rel_tol=1e-12) and float(expected) > 0
    zero, zero_expected = natural_step(lambda v: f @ v, torch.zeros(6, dtype=torch.float64), max_kl=0.02)
    assert torch.equal(zero, torch.zeros(6, dtype=torch.float64)) and float(zero_expected) == 0.0


def _problem(curvature: float):
    """Loss L(x) = −g·x + ½ c|x|², KL(x) = ½|x|² + |x|³ (the quadratic model underestimates it)."""
    g = torch.tensor([1.0, 2.0], dtype=torch.float64)

    def evaluate(x):
        loss = float(-(g @ x) + 0.5 * curvature * (x @ x))
        kl = float(0.5 * (x @ x) + (x @ x) ** 1.5)
        return loss, kl

    return g, evaluate


def test_line_search_backtracks_into_the_trust_region_and_improves():
    g, evaluate = _problem(curvature=0.0)
    x0 = torch.zeros(2, dtype=torch.float64)
    max_kl = 0.05
    full = math.sqrt(2 * max_kl) * g / g.norm()  # quadratic KL exactly max_kl, true KL larger
    assert evaluate(full)[1] > max_kl
    result = line_search(evaluate, x0, full, float(g @ full), max_kl)
    loss, kl = evaluate(result.params)
    assert result.accepted and 0 < result.step_fraction < 1
    assert kl <= max_kl and loss < evaluate(x0)[0]
    assert math.isclose(result.kl, kl) and math.isclose(result.loss, loss)


def test_line_search_never_returns_a_step_that_worsens_the_surrogate():
    g, evaluate = _problem(curvature=0.0)
    x0 = torch.tensor([0.3, -0.1], dtype=torch.float64)
    uphill = -0.1 * g  # increases the loss at every fraction
    result = line_search(evaluate, x0, uphill, float(g @ g) * 0.1, max_kl=10.0)
    assert not result.accepted and result.step_fraction == 0.0
    assert torch.equal(result.params, x0)
    # A step that overshoots so far that the loss rises until it is shrunk enough.
    g2, evaluate2 = _problem(curvature=50.0)
    result2 = line_search(evaluate2, torch.zeros(2, dtype=torch.float64), g2, float(g2 @ g2), max_kl=100.0)
    assert result2.accepted and result2.loss < 0.0
    assert result2.step_fraction < 1.0


def test_line_search_takes_the_full_step_when_it_is_good():
    g, evaluate = _problem(curvature=0.0)
    full = 0.01 * g
    result = line_search(evaluate, torch.zeros(2, dtype=torch.float64), full, float(g @ full), max_kl=1.0)
    assert result.accepted and result.step_fraction == 1.0


def test_line_search_rejects_bad_settings():
    _, evaluate = _problem(0.0)
    x = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(InputError, match="max_kl"):
        line_search(evaluate, x, x, 0.0, max_kl=0.0)
    with pytest.raises(InputError, match="backtrack_coef"):
        line_search(evaluate, x, x, 0.0, max_kl=0.1, backtrack_coef=1.0)


def test_a_kl_averaged_over_action_dimensions_is_max_kl_and_damping_scaled_by_the_dimension():
    """Stable-Baselines3's TRPO averages a diagonal Gaussian's KL over the D action dimensions as
    well as the states. Its natural step with (δ, λ) is exactly policygrad's, whose KL sums over the
    dimensions (the KL of the action distributions), with (D·δ, D·λ): the presets convert with this."""
    from policygrad.distributions import DiagGaussian

    D, delta, lam = 3, 0.01, 0.1
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(D, 5, generator=g, dtype=torch.float64, requires_grad=True)
    log_std = (0.3 * torch.randn(D, generator=g, dtype=torch.float64)).requires_grad_(True)
    obs = torch.randn(64, 5, generator=g, dtype=torch.float64)
    actions = torch.randn(64, D, generator=g, dtype=torch.float64)
    advantages = torch.randn(64, generator=g, dtype=torch.float64)
    params = [weight, log_std]

    def dist():
        return DiagGaussian(obs @ weight.T, log_std)

    old = DiagGaussian((obs @ weight.T).detach(), log_std.detach())
    objective = (dist().log_prob(actions) * advantages).mean()
    gradient = torch.cat([x.reshape(-1) for x in torch.autograd.grad(objective, params)])
    kl_sum = old.kl(dist()).mean()  # policygrad: the KL of the action distributions, mean over states
    ours, ours_expected = natural_step(fisher_vector_product(kl_sum, params, D * lam), gradient, D * delta, 100)
    per_dimension = old.kl(dist()).mean() / D  # Stable-Baselines3: the mean over states and dimensions
    theirs, theirs_expected = natural_step(fisher_vector_product(per_dimension, params, lam), gradient, delta, 100)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours_expected, theirs_expected, rtol=1e-9, atol=1e-12)
