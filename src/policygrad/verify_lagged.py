"""Off-policy estimators against exact gradients: data from a behaviour policy that lags the target.

An actor that samples with last round's weights hands the learner data from a behaviour policy μ
that is K updates behind the target π. On a finite MDP both the gradient the learner wants, ∇J(π),
and what an off-policy estimator converges to are computable, so each estimator can be checked:

- μ = softmax(θ₀) with θ₀ the MDP's ``theta``; π = softmax(θ_K) with θ_{k+1} = θ_k + α ∇J(θ_k),
  each ∇J exact (:func:`policygrad.tabular.exact_solution`).
- Episodes are sampled from μ in the ``discounted`` setting (s_0 ~ μ0, cut where γ^H ≤ 1e-8), and
  every estimator is the score-function sum Σ_t γ^t Ψ_t ∇ log π(a_t|s_t) of :mod:`policygrad.verify`.

Estimators (ratios r_t = π(a_t|s_t) / μ(a_t|s_t)):

- ``per_decision_is``: Ψ_t = (Π_{i<t} r_i) · r_t (r_t + γ v̂_{t+1} − V^π(s_t)), v̂ the untruncated
  V-trace target with the exact V^π as control variate (per-decision importance sampling, Precup
  et al. 2000). The product corrects the state distribution, r_t the action, and E[v̂ | s] = V^π(s);
  hence unbiased for ∇J(π).
- ``vtrace``: Ψ_t = the V-trace advantage ρ_t (r_t + γ v_{t+1} − V(s_t)) of
  :func:`policygrad.returns.vtrace` with ρ_t = min(ρ̄, r_t), c_t = min(c̄, r_t) and the critic at
  its fixed point V = V^{π_ρ̄}, π_ρ̄ ∝ min(ρ̄ μ, π) (Espeholt et al. 2018, Theorem 1). No product
  of past ratios: the states come from μ. At the fixed point E[ρ_k δ_k | s_k] = 0 for every later
  step k, so E[v_{t+1} | s_{t+1}] = V(s_{t+1}) whatever c̄ and λ, and the expected estimate is, in
  closed form,

      g_vt(s, b) = d^μ(s) Σ_a min(ρ̄ μ, π)(a|s) (1{a = b} − π(b|s)) (Q^{π_ρ̄}(s, a) − V^{π_ρ̄}(s)),

  with d^μ(s) = Σ_t γ^t Pr_μ(s_t = s) from μ0 (unnormalised, the γ^t of the steps' weights, as
  the exact gradient's d) and Q^{π_ρ̄}, V^{π_ρ̄} the exact values of π_ρ̄. It equals ∇J(π) on
  policy (K = 0, ρ̄ ≥ 1) and differs from it otherwise: the bias of V-trace.

Each estimator's sampled mean is tested against its predicted expectation (``max_abs_z``), and
the predicted expectation is compared with ∇J(π) (``predicted_relative_error``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from policygrad.errors import InputError, shown
from policygrad.returns import vtrace
from policygrad.verify import (
    EstimatorResult,
    Samples,
    check_verify_inputs,
    default_horizon,
    per_episode_gradients,
    sample_episodes,
    sample_limit,
    summarise,
)

if TYPE_CHECKING:
    from policygrad.tabular import FiniteMDP

LAG_STEP = 0.1
"""α of the exact gradient steps between the behaviour and the target policy (``--lag-step``)."""

MAX_LAG = 10_000
"""Most exact gradient steps between the behaviour and the target policy (each solves the MDP)."""


def lagged_example_mdp() -> FiniteMDP:
    """The MDP of ``policygrad verify --lag`` without ``--mdp``: ``random_mdp(6, 3, seed=0,
    setting="discounted", gamma=0.9)``. (The built-in discounted example's gradient is large enough
    that a few steps of α = 0.1 make π nearly deterministic, where products of ratios have no
    useful variance.)"""
    from policygrad.tabular import random_mdp

    return random_mdp(6, 3, seed=0, setting="discounted", gamma=0.9)


@dataclass(frozen=True)
class LaggedEstimatorResult:
    """One off-policy estimator: its samples against its predicted expectation and against ∇J(π)."""

    against_predicted: EstimatorResult  # statistics against the predicted expectation
    against_exact: EstimatorResult  # the same samples against ∇J(π)
    predicted: np.ndarray  # [S, A] the estimator's expectation in closed form
    predicted_relative_error: float  # ‖predicted − ∇J(π)‖ / ‖∇J(π)‖

    def to_json(self) -> dict:
        out = self.against_exact.to_json()  # mean, stderr, cosine and relative_error against ∇J(π)
        out.update({
            "max_abs_z": self.against_predicted.max_abs_z,
            "max_abs_z_exact": self.against_exact.max_abs_z,
            "predicted": self.predicted.tolist(),
            "predicted_relative_error": self.predicted_relative_error,
        })
        return out


@dataclass(frozen=True)
class LaggedVerifyReport:
    setting: str
    objective: float  # J(π)
    behaviour_objective: float  # J(μ)
    exact_gradient: np.ndarray  # [S, A] ∇J(π)
    estimators: dict[str, LaggedEstimatorResult]
    episodes: int
    horizon: int
    seed: int
    lag: int
    lag_step: float
    rho_bar: float
    c_bar: float
    lam: float

    def to_json(self) -> dict:
        return {
            "setting": self.setting,
            "objective": self.objective,
            "behaviour_objective": self.behaviour_objective,
            "exact_gradient": self.exact_gradient.tolist(),
            "estimators": {name: r.to_json() for name, r in self.estimators.items()},
            "episodes": self.episodes,
            "horizon": self.horizon,
            "seed": self.seed,
            "lag": self.lag,
            "lag_step": self.lag_step,
            "rho_bar": _json_bound(self.rho_bar),
            "c_bar": _json_bound(self.c_bar),
            "lam": self.lam,
        }


def _json_bound(value: float) -> float | str:
    """An infinite bound as the string ``"inf"`` (as ``--rho-bar inf`` spells it): JSON has no infinity."""
    return "inf" if math.isinf(value) else value


def lagged_logits(mdp: FiniteMDP, theta: np.ndarray, lag: int, lag_step: float) -> np.ndarray:
    """θ_K after ``lag`` exact gradient-ascent steps θ_{k+1} = θ_k + α ∇J(θ_k) (discounted).

    Args:
        mdp: a finite MDP valid for the discounted setting.
        theta: ``[S, A]`` θ₀.
        lag: K ≥ 0.
        lag_step: α > 0.

    Returns:
        ``[S, A]`` θ_K (a new array).
    """
    from policygrad.tabular import exact_solution

    theta = np.array(theta, dtype=np.float64)
    for _ in range(lag):
        theta = theta + lag_step * exact_solution(mdp, theta, "discounted").gradient
    return theta


def truncated_target(mu: np.ndarray, pi: np.ndarray, rho_bar: float) -> np.ndarray:
    """π_ρ̄(a|s) ∝ min(ρ̄ μ(a|s), π(a|s)), the policy whose values V-trace converges to.

    Args:
        mu: ``[S, A]`` behaviour probabilities.
        pi: ``[S, A]`` target probabilities.
        rho_bar: ρ̄ > 0 (``math.inf``: π itself).

    Returns:
        ``[S, A]`` π_ρ̄.
    """
    weights = pi if math.isinf(rho_bar) else np.minimum(rho_bar * mu, pi)
    return weights / weights.sum(axis=1, keepdims=True)


def vtrace_expected_gradient(mdp: FiniteMDP, mu: np.ndarray, pi: np.ndarray, rho_bar: float) -> np.ndarray:
    """The expectation of the sampled V-trace policy gradient at the critic's fixed point.

        g_vt(s, b) = d^μ(s) Σ_a w(a|s) (1{a = b} − π(b|s)) (Q^{π_ρ̄}(s, a) − V^{π_ρ̄}(s)),
        w = min(ρ̄ μ, π),

    d^μ(s) = Σ_t γ^t Pr_μ(s_t = s) from μ0 (discounted visitation of μ, unnormalised): the states
    come from μ and step t carries the weight γ^t. ``1{a = b} − π(b|s)`` is ∂ log π(a|s) / ∂θ(s, b)
    of the tabular softmax. Since Σ_a π_ρ̄ (Q^{π_ρ̄} − V^{π_ρ̄}) = 0, the second term vanishes and
    g_vt(s, b) = d^μ(s) w(b|s) (Q^{π_ρ̄}(s, b) − V^{π_ρ̄}(s)); the sum is kept as written.
    Reference: Espeholt et al. (2018), Theorem 1 and section 4.2.

    Args:
        mdp: a finite MDP valid for the discounted setting.
        mu: ``[S, A]`` behaviour probabilities.
        pi: ``[S, A]`` target probabilities (π = softmax(θ), the policy being differentiated).
        rho_bar: ρ̄ > 0 (``math.inf`` allowed).

    Returns:
        ``[S, A]`` g_vt.
    """
    from policygrad.tabular import evaluate_policy

    weights = pi if math.isinf(rho_bar) else np.minimum(rho_bar * mu, pi)  # [S, A] w
    fixed_point = evaluate_policy(mdp, truncated_target(mu, pi, rho_bar), "discounted")
    d_mu = evaluate_policy(mdp, mu, "discounted").d  # [S]
    reached = d_mu > 0
    advantage = np.where(reached[:, None], fixed_point.Q - fixed_point.V[:, None], 0.0)  # [S, A]
    weighted = weights * advantage  # [S, A] w(a|s) A(s, a)
    per_state = weighted - pi * weighted.sum(axis=1, keepdims=True)  # Σ_a w A (1{a=b} − π(b|s))
    return np.where(reached[:, None], d_mu[:, None] * per_state, 0.0)


def check_lag_arguments(lag: int, lag_step: float, rho_bar: float, c_bar: float) -> None:
    """InputError naming the flag unless K is an integer in [0, MAX_LAG], α is finite and positive,
    and ρ̄, c̄ are positive (infinity allowed, NaN not)."""
    if isinstance(lag, bool) or not isinstance(lag, int) or not 0 <= lag <= MAX_LAG:
        raise InputError(f"--lag must be an integer in [0, {MAX_LAG:,}], got {shown(lag)}")
    if not (math.isfinite(lag_step) and lag_step > 0.0):
        raise InputError(f"--lag-step must be a finite positive step size, got {shown(lag_step)}")
    for flag, value in (("--rho-bar", rho_bar), ("--c-bar", c_bar)):
        if not value > 0.0:  # NaN fails too
            raise InputError(f"{flag} must be positive (inf for no truncation), got {shown(value)}")


def _log_ratios(samples: Samples, log_pi: torch.Tensor, log_mu: torch.Tensor) -> torch.Tensor:
    """``[H, E]`` log π(a_t|s_t) − log μ(a_t|s_t)."""
    return log_pi[samples.states, samples.actions] - log_mu[samples.states, samples.actions]


def verify_lagged(mdp: FiniteMDP, theta: np.ndarray | None = None, *, lag: int, lag_step: float = LAG_STEP,
                  rho_bar: float = 1.0, c_bar: float = 1.0, lam: float = 1.0, episodes: int = 20000,
                  horizon: int | None = None, seed: int = 0) -> LaggedVerifyReport:
    """Samples ``episodes`` episodes from μ and checks the off-policy estimators (module docstring).

    Args:
        mdp: a finite MDP valid for the discounted setting.
        theta: ``[S, A]`` θ₀, the behaviour policy's logits (default zeros: uniform).
        lag: K, exact gradient steps from μ to π.
        lag_step: α of those steps.
        rho_bar: ρ̄ of V-trace (``math.inf``: no truncation).
        c_bar: c̄ of V-trace (``math.inf``: no truncation).
        lam: λ of V-trace's trace (its expectation does not depend on it).
        episodes: sampled episodes; at least 4.
        horizon: steps per episode (default: γ^H ≤ 1e-8).
        seed: seeds the environment and μ's sampling, in [0, 2**63).

    Returns:
        A :class:`LaggedVerifyReport`.

    Raises:
        InputError: a bad argument, an MDP that does not suit the discounted setting, or samples
            beyond :data:`policygrad.verify.MAX_SAMPLE_ENTRIES`.
    """
    from policygrad.tabular import exact_solution

    check_lag_arguments(lag, lag_step, rho_bar, c_bar)
    if not 0.0 <= lam <= 1.0:
        raise InputError(f"lam must lie in [0, 1], got {lam}")
    theta0 = check_verify_inputs(mdp, theta, "discounted", episodes, horizon, seed)
    S, A = mdp.num_states, mdp.num_actions
    why = ""
    if horizon is None:
        horizon = default_horizon(mdp, "discounted")
        why = f" ({horizon:,} steps is the default for γ = {mdp.gamma:g}: γ^H ≤ 1e-8)"
    sample_limit(episodes, horizon, S, A, "discounted", why)  # refuses what would not fit

    theta_pi = lagged_logits(mdp, theta0, lag, lag_step)
    target = exact_solution(mdp, theta_pi, "discounted")
    behaviour = exact_solution(mdp, theta0, "discounted")
    mu, pi = behaviour.pi, target.pi
    gamma = float(mdp.gamma)

    samples = sample_episodes(mdp, torch.as_tensor(theta0), "discounted", episodes, horizon, seed)
    log_ratio = _log_ratios(samples, torch.log(torch.as_tensor(pi)), torch.log(torch.as_tensor(mu)))  # [H, E]
    term, trunc, r = samples.terminated, samples.truncated, samples.rewards

    # Per-decision IS: the untruncated V-trace advantage with V^π, times Π_{i<t} r_i.
    V_pi = torch.as_tensor(target.V)
    _, pd_adv = vtrace(r, V_pi[samples.states], V_pi[samples.next_states], term, trunc, log_ratio, gamma,
                       1.0, math.inf, math.inf)
    past = torch.cumsum(log_ratio, dim=0) - log_ratio  # [H, E] Σ_{i<t} log r_i (episodes start at t = 0)
    pd_psi = torch.exp(past) * pd_adv

    # V-trace with the critic at its fixed point V^{π_ρ̄}.
    fixed_point = vtrace_fixed_point(mdp, mu, pi, rho_bar)
    V_fp = torch.as_tensor(fixed_point)
    _, vt_psi = vtrace(r, V_fp[samples.states], V_fp[samples.next_states], term, trunc, log_ratio, gamma,
                       lam, rho_bar, c_bar)

    predicted = {
        "per_decision_is": np.asarray(target.gradient),
        "vtrace": vtrace_expected_gradient(mdp, mu, pi, rho_bar),
    }
    weights = {
        "per_decision_is": (pd_psi, True, "Π_{i<t} r_i · r_t (r_t + γ v̂_{t+1} − V^π(s_t)), v̂ untruncated "
                                          "V-trace: per-decision IS, γ^t-weighted"),
        "vtrace": (vt_psi, False, f"V-trace advantage (ρ̄ = {rho_bar:g}, c̄ = {c_bar:g}, λ = {lam:g}) with "
                                  "V^{π_ρ̄}, states from μ, γ^t-weighted"),
    }
    theta_t = torch.as_tensor(theta_pi)
    exact_norm = float(np.linalg.norm(target.gradient))
    results: dict[str, LaggedEstimatorResult] = {}
    reference_variance = None
    for name, (psi, unbiased, description) in weights.items():
        grads = per_episode_gradients(theta_t, samples, psi, gamma, 1.0)
        against_exact = summarise(name, grads, np.asarray(target.gradient), unbiased, description, reference_variance)
        if reference_variance is None:  # variances relative to the per-decision IS estimator's
            reference_variance = against_exact.total_variance
            against_exact = dataclasses.replace(against_exact, variance_ratio=1.0)
        against_predicted = summarise(name, grads, predicted[name], unbiased, description, reference_variance)
        error = float(np.linalg.norm(predicted[name] - target.gradient) / exact_norm) if exact_norm else float("nan")
        results[name] = LaggedEstimatorResult(
            against_predicted=against_predicted,
            against_exact=against_exact,
            predicted=predicted[name],
            predicted_relative_error=error,
        )
    return LaggedVerifyReport(
        setting="discounted",
        objective=float(target.objective),
        behaviour_objective=float(behaviour.objective),
        exact_gradient=np.asarray(target.gradient),
        estimators=results,
        episodes=episodes,
        horizon=int(samples.states.shape[0]),
        seed=seed,
        lag=lag,
        lag_step=float(lag_step),
        rho_bar=float(rho_bar),
        c_bar=float(c_bar),
        lam=float(lam),
    )


def vtrace_fixed_point(mdp: FiniteMDP, mu: np.ndarray, pi: np.ndarray, rho_bar: float) -> np.ndarray:
    """``[S]`` V^{π_ρ̄}, the fixed point of the V-trace critic (0 at terminal states)."""
    from policygrad.tabular import evaluate_policy

    return np.asarray(evaluate_policy(mdp, truncated_target(mu, pi, rho_bar), "discounted").V)


def format_lagged_report(report: LaggedVerifyReport) -> str:
    """A readable table of one lagged report."""
    lines = [
        f"setting: {report.setting} (behaviour μ lags target π by {report.lag} exact steps of "
        f"{report.lag_step:g})   J(π) = {report.objective:.6g}   J(μ) = {report.behaviour_objective:.6g}",
        f"episodes from μ: {report.episodes}   steps: {report.horizon}   seed: {report.seed}   "
        f"ρ̄ = {report.rho_bar:g}   c̄ = {report.c_bar:g}   λ = {report.lam:g}",
        f"exact gradient ∇J(π) norm: {np.linalg.norm(report.exact_gradient):.6g}",
        "",
    ]
    header = (f"{'estimator':<16} {'max|z|':>8} {'pred.err':>9} {'max|z| ∇J':>10} {'cosine':>8} {'rel.err':>8} "
              f"{'variance':>10}  verdict")
    lines += [header, "-" * len(header)]
    for name, r in report.estimators.items():
        z = r.against_predicted.max_abs_z
        verdict = "agrees with its prediction" if z < 4 else "DISAGREES with its prediction"
        e = r.against_exact
        lines.append(
            f"{name:<16} {z:>8.2f} {r.predicted_relative_error:>9.4f} {e.max_abs_z:>10.2f} {e.cosine:>8.4f} "
            f"{e.relative_error:>8.4f} {e.total_variance:>10.4g}  {verdict}"
        )
    return "\n".join(lines)
