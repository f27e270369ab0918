"""Returns and advantages against hand-derived values and identities between the functions."""

import math

import pytest
import torch

from policygrad.errors import InputError
from policygrad.returns import (
    differential_gae,
    differential_returns,
    discount_weights,
    discounted_returns,
    gae,
    td_errors,
    vtrace,
)

F, T_ = False, True


def col(*xs, dtype=torch.float64):
    """A [T, 1] column."""
    return torch.tensor(xs, dtype=dtype).unsqueeze(1)


def flags(*xs):
    return torch.tensor(xs, dtype=torch.bool).unsqueeze(1)


# γ = 0.5, T = 3, rewards (1, 2, 4).
# Termination after the last step:  G_2 = 4;  G_1 = 2 + 0.5·4 = 4;  G_0 = 1 + 0.5·4 = 3.
# next_values at the terminated step holds 99 and must be ignored.
def test_discounted_returns_by_hand_termination():
    g = discounted_returns(col(1, 2, 4), col(10, 20, 99), flags(F, F, T_), flags(F, F, F), 0.5)
    assert torch.allclose(g, col(3, 4, 4))


# Truncation after step 1, rollout ends after step 2 (both bootstrap):
#   G_2 = 4 + 0.5·30 = 19;  G_1 = 2 + 0.5·20 = 12 (cut: G_2 belongs to a new episode);
#   G_0 = 1 + 0.5·12 = 7.
def test_discounted_returns_by_hand_truncation_and_rollout_end():
    g = discounted_returns(col(1, 2, 4), col(10, 20, 30), flags(F, F, F), flags(F, T_, F), 0.5)
    assert torch.allclose(g, col(7, 12, 19))


# γ = 0.5, λ = 0.5 (γλ = 0.25), values (1, 2, 3), next_values (2, 3, 99), terminal at t = 2:
#   δ_0 = 1 + 0.5·2 − 1 = 1;  δ_1 = 2 + 0.5·3 − 2 = 1.5;  δ_2 = 4 + 0 − 3 = 1
#   A_2 = 1;  A_1 = 1.5 + 0.25·1 = 1.75;  A_0 = 1 + 0.25·1.75 = 1.4375
def test_gae_by_hand_termination():
    a = gae(col(1, 2, 4), col(1, 2, 3), col(2, 3, 99), flags(F, F, T_), flags(F, F, F), 0.5, 0.5)
    assert torch.allclose(a, col(1.4375, 1.75, 1.0))


# Truncation after t = 1 with next_values (2, 20, 30):
#   δ_0 = 1 + 1 − 1 = 1;  δ_1 = 2 + 10 − 2 = 10 (bootstrap kept);  δ_2 = 4 + 15 − 3 = 16
#   A_2 = 16;  A_1 = 10 (trace cut);  A_0 = 1 + 0.25·10 = 3.5
def test_gae_by_hand_truncation_keeps_bootstrap_cuts_trace():
    a = gae(col(1, 2, 4), col(1, 2, 3), col(2, 20, 30), flags(F, F, F), flags(F, T_, F), 0.5, 0.5)
    assert torch.allclose(a, col(3.5, 10.0, 16.0))


def test_terminated_next_values_ignored_even_if_nan():
    nv = col(2, 3, float("nan"))
    a = gae(col(1, 2, 4), col(1, 2, 3), nv, flags(F, F, T_), flags(F, F, F), 0.5, 0.5)
    g = discounted_returns(col(1, 2, 4), nv, flags(F, F, T_), flags(F, F, F), 0.5)
    assert torch.isfinite(a).all() and torch.isfinite(g).all()


def _random_batch(T=40, N=6, seed=0, p_term=0.08, p_trunc=0.05):
    """A random rollout whose next_values are consistent: next_values[t] = values[t+1] unless the
    episode ended at t (then an arbitrary number, as after an auto-reset)."""
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=gen, dtype=torch.float64)
    values = torch.randn(T, N, generator=gen, dtype=torch.float64)
    terminated = torch.rand(T, N, generator=gen) < p_term
    truncated = (torch.rand(T, N, generator=gen) < p_trunc) & ~terminated
    next_values = torch.empty_like(values)
    next_values[:-1] = values[1:]
    next_values[-1] = torch.randn(N, generator=gen, dtype=torch.float64)
    ended = terminated | truncated
    next_values[ended] = torch.randn(int(ended.sum()), generator=gen, dtype=torch.float64)
    return rewards, values, next_values, terminated, truncated


@pytest.mark.parametrize("gamma", [0.5, 0.99, 1.0])
def test_gae_lambda_one_plus_values_is_bootstrapped_return(gamma):
    r, v, nv, term, trunc = _random_batch()
    a = gae(r, v, nv, term, trunc, gamma, 1.0)
    g = discounted_returns(r, nv, term, trunc, gamma)
    assert torch.allclose(a + v, g, atol=1e-10)


def test_gae_lambda_zero_is_td_error():
    r, v, nv, term, trunc = _random_batch(seed=1)
    assert torch.allclose(gae(r, v, nv, term, trunc, 0.9, 0.0), td_errors(r, v, nv, term, 0.9))


def test_gae_equals_sum_of_discounted_td_errors_within_episode():
    # A_t = Σ_{l=0}^{L} (γλ)^l δ_{t+l}, L the steps left in the episode (or rollout).
    r, v, nv, term, trunc = _random_batch(T=25, N=3, seed=2)
    gamma, lam = 0.9, 0.8
    a = gae(r, v, nv, term, trunc, gamma, lam)
    delta = td_errors(r, v, nv, term, gamma)
    done = term | trunc
    T, N = r.shape
    for n in range(N):
        for t in range(T):
            total, k = 0.0, t
            while k < T:
                total += (gamma * lam) ** (k - t) * delta[k, n].item()
                if done[k, n]:
                    break
                k += 1
            assert abs(a[t, n].item() - total) < 1e-10


def test_splitting_at_a_termination_changes_nothing():
    r, v, nv, term, trunc = _random_batch(T=30, N=1, seed=3, p_term=0.0, p_trunc=0.0)
    term[11] = True
    whole_a = gae(r, v, nv, term, trunc, 0.95, 0.9)
    whole_g = discounted_returns(r, nv, term, trunc, 0.95)
    parts = [slice(0, 12), slice(12, 30)]
    split_a = torch.cat([gae(r[s], v[s], nv[s], term[s], trunc[s], 0.95, 0.9) for s in parts])
    split_g = torch.cat([discounted_returns(r[s], nv[s], term[s], trunc[s], 0.95) for s in parts])
    assert torch.allclose(whole_a, split_a, atol=1e-12)
    assert torch.allclose(whole_g, split_g, atol=1e-12)


def test_splitting_at_a_truncation_changes_nothing():
    # A rollout boundary bootstraps like a truncation, so cutting there is exact too.
    r, v, nv, term, trunc = _random_batch(T=30, N=1, seed=4, p_term=0.0, p_trunc=0.0)
    trunc[14] = True
    whole = gae(r, v, nv, term, trunc, 0.95, 0.9)
    split = torch.cat(
        [gae(r[s], v[s], nv[s], term[s], trunc[s], 0.95, 0.9) for s in (slice(0, 15), slice(15, 30))]
    )
    assert torch.allclose(whole, split, atol=1e-12)


def test_vectorized_over_envs_equals_one_env_at_a_time():
    r, v, nv, term, trunc = _random_batch(T=20, N=5, seed=5)
    a = gae(r, v, nv, term, trunc, 0.97, 0.95)
    g = discounted_returns(r, nv, term, trunc, 0.97)
    for n in range(5):
        s = slice(n, n + 1)
        assert torch.allclose(a[:, s], gae(r[:, s], v[:, s], nv[:, s], term[:, s], trunc[:, s], 0.97, 0.95))
        assert torch.allclose(g[:, s], discounted_returns(r[:, s], nv[:, s], term[:, s], trunc[:, s], 0.97))


def test_differential_forms_are_the_undiscounted_forms_of_centred_rewards():
    r, v, nv, term, trunc = _random_batch(seed=6, p_term=0.0)
    rho = 0.37
    # Hand check, T = 2, ρ = 1: rewards (3, 2), v = (0, 5), next v = (5, 7), no ends:
    # δ_0 = 3 − 1 + 5 − 0 = 7; δ_1 = 2 − 1 + 7 − 5 = 3; λ = 0.5: A_1 = 3, A_0 = 7 + 0.5·3 = 8.5
    a = differential_gae(col(3, 2), col(0, 5), col(5, 7), flags(F, F), flags(F, F), 1.0, 0.5)
    assert torch.allclose(a, col(8.5, 3.0))
    # G_1 = (2 − 1) + 7 = 8; G_0 = (3 − 1) + 8 = 10
    g = differential_returns(col(3, 2), col(5, 7), flags(F, F), flags(F, F), 1.0)
    assert torch.allclose(g, col(10.0, 8.0))
    assert torch.allclose(
        differential_gae(r, v, nv, term, trunc, rho, 1.0) + v,
        differential_returns(r, nv, term, trunc, rho),
        atol=1e-10,
    )


def test_discount_weights():
    w = discount_weights(torch.tensor([[0, 1], [2, 0]]), 0.5)
    assert torch.allclose(w, torch.tensor([[1.0, 0.5], [0.25, 1.0]], dtype=torch.float64))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(InputError, match="values has shape"):
        gae(torch.zeros(3, 2), torch.zeros(3, 3), torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool),
            torch.zeros(3, 2, dtype=torch.bool), 0.9, 0.9)
    with pytest.raises(InputError, match="T >= 1"):
        discounted_returns(torch.zeros(0, 2), torch.zeros(0, 2), torch.zeros(0, 2, dtype=torch.bool),
                           torch.zeros(0, 2, dtype=torch.bool), 0.9)


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.5, float("nan")])
def test_invalid_gamma(gamma):
    z = torch.zeros(2, 1)
    with pytest.raises(InputError, match="gamma"):
        discounted_returns(z, z, z.bool(), z.bool(), gamma)


def test_invalid_lambda():
    z = torch.zeros(2, 1)
    with pytest.raises(InputError, match="lam"):
        gae(z, z, z, z.bool(), z.bool(), 0.9, 1.1)


# --- V-trace ------------------------------------------------------------------------------------

LOG_RATIOS = col(math.log(2.0), math.log(0.5), 0.0)  # π/μ = (2, 0.5, 1)


# γ = 0.5, λ = 1, ρ̄ = c̄ = 1, rewards (1, 2, 4), values (1, 2, 3), π/μ = (2, 0.5, 1): ρ = c = (1, 0.5, 1).
# The rollout ends after step 2 (bootstrap from next_values[2] = 5):
#   TD errors r + γV' − V: 1 + 1 − 1 = 1;  2 + 1.5 − 2 = 1.5;  4 + 2.5 − 3 = 3.5;  δ = ρ·TD = (1, 0.75, 3.5)
#   v_2 − V_2 = 3.5;  v_1 − V_1 = 0.75 + 0.5·0.5·3.5 = 1.625;  v_0 − V_0 = 1 + 0.5·1·1.625 = 1.8125
#   vs = (2.8125, 3.625, 6.5)
#   A_2 = 1·(4 + 0.5·5 − 3) = 3.5;  A_1 = 0.5·(2 + 0.5·6.5 − 2) = 1.625;  A_0 = 1·(1 + 0.5·3.625 − 1) = 1.8125
def test_vtrace_by_hand_rollout_end():
    vs, adv = vtrace(col(1, 2, 4), col(1, 2, 3), col(2, 3, 5), flags(F, F, F), flags(F, F, F), LOG_RATIOS,
                     0.5, 1.0, 1.0, 1.0)
    assert torch.allclose(vs, col(2.8125, 3.625, 6.5))
    assert torch.allclose(adv, col(1.8125, 1.625, 3.5))


# Terminated after step 2 (next_values[2] = 99 ignored): TD_2 = 4 − 3 = 1, δ = (1, 0.75, 1)
#   v_2 − V_2 = 1;  v_1 − V_1 = 0.75 + 0.25·1 = 1;  v_0 − V_0 = 1 + 0.5·1 = 1.5;  vs = (2.5, 3, 4)
#   A_2 = 4 − 3 = 1;  A_1 = 0.5·(2 + 0.5·4 − 2) = 1;  A_0 = 1 + 0.5·3 − 1 = 1.5
def test_vtrace_by_hand_termination():
    vs, adv = vtrace(col(1, 2, 4), col(1, 2, 3), col(2, 3, 99), flags(F, F, T_), flags(F, F, F), LOG_RATIOS,
                     0.5, 1.0, 1.0, 1.0)
    assert torch.allclose(vs, col(2.5, 3.0, 4.0))
    assert torch.allclose(adv, col(1.5, 1.0, 1.0))


# Truncated after step 1, next_values (2, 20, 30): TD = (1, 2 + 10 − 2 = 10, 4 + 15 − 3 = 16), δ = (1, 5, 16)
#   v_2 − V_2 = 16;  v_1 − V_1 = 5 (trace cut);  v_0 − V_0 = 1 + 0.5·1·5 = 3.5;  vs = (4.5, 7, 19)
#   A_2 = 16;  A_1 = 0.5·(2 + 0.5·20 − 2) = 5 (bootstrap from next_values);  A_0 = 1 + 0.5·7 − 1 = 3.5
def test_vtrace_by_hand_truncation_keeps_bootstrap_cuts_trace():
    vs, adv = vtrace(col(1, 2, 4), col(1, 2, 3), col(2, 20, 30), flags(F, F, F), flags(F, T_, F), LOG_RATIOS,
                     0.5, 1.0, 1.0, 1.0)
    assert torch.allclose(vs, col(4.5, 7.0, 19.0))
    assert torch.allclose(adv, col(3.5, 5.0, 16.0))


def _vtrace_loop(r, v, nv, term, trunc, log_ratio, gamma, lam, rho_bar, c_bar):
    """Espeholt et al.'s definition read literally, one element at a time:
    v_s = V(x_s) + Σ_{t=s}^{e} γ^{t−s} (Π_{i=s}^{t−1} c_i) δ_t, e the last step of s's episode in the rollout;
    A_s = ρ_s (r_s + γ v_{s+1} − V(x_s)) with v_{s+1} = V(x_{s+1}) after a cut and 0 after a termination."""
    T, N = r.shape
    vs = torch.empty_like(r)
    adv = torch.empty_like(r)
    ratio = torch.exp(log_ratio)
    for n in range(N):
        rho = [min(rho_bar, ratio[t, n].item()) for t in range(T)]
        c = [lam * min(c_bar, ratio[t, n].item()) for t in range(T)]
        delta = [rho[t] * (r[t, n].item() + (0.0 if term[t, n] else gamma * nv[t, n].item()) - v[t, n].item())
                 for t in range(T)]
        for s in range(T):
            total, trace, t = 0.0, 1.0, s
            while True:
                total += gamma ** (t - s) * trace * delta[t]
                if term[t, n] or trunc[t, n] or t == T - 1:
                    break
                trace *= c[t]
                t += 1
            vs[s, n] = v[s, n].item() + total
        for s in range(T):
            if term[s, n]:
                following = 0.0
            elif trunc[s, n] or s == T - 1:
                following = nv[s, n].item()
            else:
                following = vs[s + 1, n].item()
            adv[s, n] = rho[s] * (r[s, n].item() + gamma * following - v[s, n].item())
    return vs, adv


def _random_log_ratio(shape, seed):
    return 0.7 * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("gamma, lam, rho_bar, c_bar", [
    (0.9, 1.0, 1.0, 1.0), (0.97, 0.8, 1.0, 0.5), (0.5, 1.0, math.inf, math.inf), (1.0, 0.9, 2.0, 0.0),
])
def test_vtrace_matches_the_loop(gamma, lam, rho_bar, c_bar):
    r, v, nv, term, trunc = _random_batch(T=25, N=4, seed=7)
    log_ratio = _random_log_ratio(r.shape, 8)
    vs, adv = vtrace(r, v, nv, term, trunc, log_ratio, gamma, lam, rho_bar, c_bar)
    ref_vs, ref_adv = _vtrace_loop(r, v, nv, term, trunc, log_ratio, gamma, lam, rho_bar, c_bar)
    assert torch.allclose(vs, ref_vs, atol=1e-10)
    assert torch.allclose(adv, ref_adv, atol=1e-10)


@pytest.mark.parametrize("rho_bar, c_bar", [(1.0, 1.0), (math.inf, math.inf), (3.0, 1.5)])
@pytest.mark.parametrize("lam", [1.0, 0.7])
def test_vtrace_on_policy_is_gae(rho_bar, c_bar, lam):
    # π = μ and ρ̄, c̄ ≥ 1: v_t − V(s_t) is GAE(λ); with λ = 1, v_t is the bootstrapped return G_t
    # and A_t = G_t − V(s_t).
    r, v, nv, term, trunc = _random_batch(seed=9)
    vs, adv = vtrace(r, v, nv, term, trunc, torch.zeros_like(r), 0.95, lam, rho_bar, c_bar)
    assert torch.allclose(vs - v, gae(r, v, nv, term, trunc, 0.95, lam), atol=1e-10)
    if lam == 1.0:
        g = discounted_returns(r, nv, term, trunc, 0.95)
        assert torch.allclose(vs, g, atol=1e-10)
        assert torch.allclose(adv, g - v, atol=1e-10)


def test_vtrace_c_bar_zero_is_one_step():
    # c̄ = 0 cuts every trace: v_t = V(s_t) + ρ_t δ_t, and A_t bootstraps from the next one-step target.
    r, v, nv, term, trunc = _random_batch(seed=10)
    log_ratio = _random_log_ratio(r.shape, 11)
    rho = torch.exp(log_ratio).clamp(max=1.0)
    vs, adv = vtrace(r, v, nv, term, trunc, log_ratio, 0.9, 1.0, 1.0, 0.0)
    assert torch.allclose(vs, v + rho * td_errors(r, v, nv, term, 0.9), atol=1e-12)
    inside = ~(term | trunc)
    inside[-1] = False
    following = torch.where(inside, torch.cat([vs[1:], vs[-1:]]), nv)
    assert torch.allclose(adv, rho * td_errors(r, v, following, term, 0.9), atol=1e-12)


def test_vtrace_splitting_at_a_termination_or_truncation_changes_nothing():
    r, v, nv, term, trunc = _random_batch(T=30, N=1, seed=12, p_term=0.0, p_trunc=0.0)
    log_ratio = _random_log_ratio(r.shape, 13)
    term[9] = True
    trunc[19] = True
    whole = vtrace(r, v, nv, term, trunc, log_ratio, 0.95, 0.9, 1.0, 1.0)
    parts = [slice(0, 10), slice(10, 20), slice(20, 30)]
    split = [vtrace(r[s], v[s], nv[s], term[s], trunc[s], log_ratio[s], 0.95, 0.9, 1.0, 1.0) for s in parts]
    for i in range(2):
        assert torch.allclose(whole[i], torch.cat([p[i] for p in split]), atol=1e-12)


def test_vtrace_numpy_and_torch_paths_agree_and_carry_no_gradient():
    r, v, nv, term, trunc = _random_batch(seed=14)
    log_ratio = _random_log_ratio(r.shape, 15)
    fast = vtrace(r, v, nv, term, trunc, log_ratio, 0.9, 0.9, 1.0, 1.0)
    graph = vtrace(r, v.clone().requires_grad_(True), nv, term, trunc, log_ratio.clone().requires_grad_(True),
                   0.9, 0.9, 1.0, 1.0)
    for a, b in zip(fast, graph):
        assert not b.requires_grad
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"rho_bar": 0.0}, "rho_bar"), ({"rho_bar": float("nan")}, "rho_bar"), ({"c_bar": -1.0}, "c_bar"),
    ({"c_bar": float("nan")}, "c_bar"), ({"lam": 1.5}, "lam"), ({"gamma": 0.0}, "gamma"),
])
def test_vtrace_bad_arguments(kwargs, match):
    z = torch.zeros(2, 1, dtype=torch.float64)
    args = {"gamma": 0.9, "lam": 1.0, "rho_bar": 1.0, "c_bar": 1.0, **kwargs}
    with pytest.raises(InputError, match=match):
        vtrace(z, z, z, z.bool(), z.bool(), z, **args)
    with pytest.raises(InputError, match="log_ratio has shape"):
        vtrace(z, z, z, z.bool(), z.bool(), torch.zeros(3, 1, dtype=torch.float64), 0.9)
