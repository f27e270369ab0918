"""Exact J, V, Q, d and ∇J of a tabular softmax policy, and optimal values, for finite MDPs.

The policy is π(a|s) = softmax(θ[s])_a with logits θ of shape ``[S, A]``. Everything is computed
in float64 by solving linear systems (``np.linalg.solve``), so it serves as ground truth for
sampled estimators.

Symbols and shapes (S states, A actions; P, r with terminal states made absorbing, zero reward):

==========  ======  ===================================================================================
name        shape   meaning
==========  ======  ===================================================================================
pi          [S, A]  π(a|s)
V           [S]     V(s) = Σ_a π(a|s) Q(s, a); 0 at terminal states; differential h(s) for average
Q           [S, A]  Q(s, a) = r(s, a) + γ Σ_s' P(s'|s, a) V(s')   (average: r(s, a) − ρ + Σ_s' P h)
d           [S]     episodic/discounted: Σ_t γ^t Pr(s_t = s) from μ0, 0 at terminal states;
                    average: the stationary distribution of P_π
rho         scalar  average reward ρ(θ) = Σ_s d(s) Σ_a π(a|s) r(s, a) (average setting only)
gradient    [S, A]  ∇θ J = Σ_s d(s) Σ_a ∇θ π(a|s) Q(s, a)  (Policy Gradient Theorem)
==========  ======  ===================================================================================

References:
    Sutton, McAllester, Singh & Mansour (1999), Policy gradient methods for reinforcement learning
    with function approximation, NeurIPS (Theorem 1, both the start-state and the average-reward
    formulations).
    Puterman (1994), Markov Decision Processes, Wiley (§6.3 value iteration, §8.2 the Poisson
    equation, §8.5.5 relative value iteration and the aperiodicity transformation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from policygrad.errors import InputError
from policygrad.tabular.graph import avoidable_termination, certain_termination, closed_classes, reachability
from policygrad.tabular.mdp import FiniteMDP, union_support, validate_setting, validate_theta

__all__ = [
    "PolicyValues",
    "ExactSolution",
    "softmax_policy",
    "evaluate_policy",
    "exact_solution",
    "objective",
    "value_iteration",
    "relative_value_iteration",
]


@dataclass(frozen=True, eq=False)
class PolicyValues:
    """Exact quantities of one stationary policy under one criterion (numpy float64)."""

    setting: str
    """``"episodic"``, ``"discounted"`` or ``"average"``."""
    objective: float
    """J = μ0 · V (episodic, discounted) or ρ (average)."""
    pi: np.ndarray
    """``[S, A]`` π(a|s)."""
    V: np.ndarray
    """``[S]`` state values (differential values with d · V = 0 for average; 0 at terminal states)."""
    Q: np.ndarray
    """``[S, A]`` action values (differential for average; 0 at terminal states)."""
    d: np.ndarray
    """``[S]`` discounted visitation Σ_t γ^t Pr(s_t = s) (0 at terminal states), or the stationary
    distribution for average."""
    rho: float | None
    """Average reward ρ (average setting only, else None)."""


@dataclass(frozen=True, eq=False)
class ExactSolution(PolicyValues):
    """:class:`PolicyValues` of the softmax policy π = softmax(θ) plus the exact gradient ∇θ J."""

    gradient: np.ndarray
    """``[S, A]`` ∇θ J(θ) = d(s) π(a|s) (Q(s, a) − V(s)) (Policy Gradient Theorem, softmax)."""


def softmax_policy(theta: np.ndarray) -> np.ndarray:
    """π(a|s) = exp θ[s, a] / Σ_b exp θ[s, b], computed stably.

    Args:
        theta: ``[S, A]`` logits.

    Returns:
        ``[S, A]`` probabilities.
    """
    z = theta - theta.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_policy(mdp: FiniteMDP, pi: Any) -> np.ndarray:
    expected = f"(S, A) = ({mdp.num_states}, {mdp.num_actions})"
    try:
        pi = np.array(pi, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"policy must be a numeric array of shape {expected}: {exc}") from None
    if pi.shape != (mdp.num_states, mdp.num_actions):
        raise InputError(f"policy has shape {pi.shape}, expected {expected}")
    if not np.isfinite(pi).all() or (pi < 0).any():
        raise InputError("policy must hold finite, non-negative probabilities")
    sums = pi.sum(axis=1)
    if (np.abs(sums - 1.0) > 1e-8).any():
        s = int(np.argmax(np.abs(sums - 1.0)))
        raise InputError(f"policy row {s} sums to {sums[s]:.12g}, expected 1")
    return pi


def _policy_support(mdp: FiniteMDP, pi: np.ndarray) -> np.ndarray:
    """``[S, S]`` bool one-step support of the chain P_π."""
    return ((pi[:, :, None] > 0) & (mdp.effective_transitions > 0)).any(axis=1)


def _evaluate(mdp: FiniteMDP, pi: np.ndarray, setting: str) -> PolicyValues:
    """Solves for V, Q, d of π; the caller has validated ``mdp`` for ``setting``."""
    P = mdp.effective_transitions  # [S, A, S]
    r = mdp.effective_rewards  # [S, A]
    P_pi = np.einsum("sa,sat->st", pi, P)  # [S, S]
    r_pi = (pi * r).sum(axis=1)  # [S]
    num_states = mdp.num_states
    if setting == "average":
        classes = closed_classes(_policy_support(mdp, pi))
        if len(classes) != 1:
            raise InputError(
                f"average-reward evaluation needs a unichain policy, but the policy's chain has "
                f"{len(classes)} closed classes"
            )
        # Stationary d: d (I − P_π) = 0 and d · 1 = 1  ⇔  d (I − P_π + 1 1ᵀ) = 1ᵀ (invertible for a
        # unichain P_π).
        ones = np.ones((num_states, num_states))
        d = np.linalg.solve((np.eye(num_states) - P_pi + ones).T, np.ones(num_states))
        # Transient states have d = 0 exactly; dropping round-off keeps d a valid distribution.
        recurrent = np.zeros(num_states, dtype=bool)
        recurrent[list(classes[0])] = True
        d = np.where(recurrent, np.maximum(d, 0.0), 0.0)
        d /= d.sum()
        rho = float(d @ r_pi)
        # Poisson equation h + ρ = r_π + P_π h with d · h = 0  ⇔  (I − P_π + 1 dᵀ) h = r_π − ρ.
        h = np.linalg.solve(np.eye(num_states) - P_pi + np.outer(np.ones(num_states), d), r_pi - rho)
        Q = r - rho + P @ h  # [S, A]
        return PolicyValues(setting=setting, objective=rho, pi=pi, V=h, Q=Q, d=d, rho=rho)

    gamma = mdp.gamma
    terminal = mdp.terminal_mask
    if gamma < 1.0:
        solvable = ~terminal
    else:
        # With γ = 1 the values are finite only where π terminates with probability 1; validation
        # guarantees that on every state reachable from μ0. Elsewhere V is left NaN.
        solvable = certain_termination(_policy_support(mdp, pi), terminal)
    idx = np.flatnonzero(solvable)
    # V = r_π + γ P_π V on the non-terminal states (V = 0 at terminal states);
    # d = μ0 + γ P_πᵀ d, i.e. d = μ0 (I − γ P_π)^{-1}.
    M = np.eye(idx.size) - gamma * P_pi[np.ix_(idx, idx)]
    V = np.full(num_states, np.nan)
    V[terminal] = 0.0
    V[idx] = np.linalg.solve(M, r_pi[idx])
    d = np.zeros(num_states)
    d[idx] = np.linalg.solve(M.T, mdp.initial[idx])
    # d is a sum of non-negative terms: exactly 0 where π cannot reach from μ0, never negative.
    reachable = reachability(_policy_support(mdp, pi))[mdp.initial > 0].any(axis=0)
    d = np.where(reachable & solvable, np.maximum(d, 0.0), 0.0)
    known = ~np.isnan(V)
    Q = r + gamma * P[:, :, known] @ V[known]  # [S, A]
    Q[(P[:, :, ~known] > 0).any(axis=-1)] = np.nan  # an action that may lead where V is undefined
    Q[terminal] = 0.0
    objective = float(mdp.initial[idx] @ V[idx])
    return PolicyValues(setting=setting, objective=objective, pi=pi, V=V, Q=Q, d=d, rho=None)


def evaluate_policy(mdp: FiniteMDP, pi: Any, setting: str) -> PolicyValues:
    """Exact V, Q, d and objective of any stationary policy π (deterministic policies included).

    Episodic and discounted (terminal states absorbing, V = 0 there):

        V_N = (I − γ P_π[N, N])^{-1} r_π[N],   d_N = μ0[N] (I − γ P_π[N, N])^{-1},   J = μ0 · V

    over the non-terminal states N (for γ = 1, the states from which π terminates surely; V and Q
    are NaN elsewhere, which validation keeps unreachable from μ0). Average reward (Puterman 1994,
    §8.2): d P_π = d, ρ = d · r_π, and the Poisson equation h + ρ = r_π + P_π h with d · h = 0.

    Args:
        mdp: the MDP.
        pi: ``[S, A]`` action probabilities (rows sum to 1).
        setting: ``"episodic"``, ``"discounted"`` or ``"average"``.

    Returns:
        :class:`PolicyValues`.

    Raises:
        InputError: the MDP does not suit ``setting``, π is not a policy, or (average) π's chain has
            more than one closed class.
    """
    validate_setting(mdp, setting)
    return _evaluate(mdp, _check_policy(mdp, pi), setting)


def exact_solution(mdp: FiniteMDP, theta: Any, setting: str) -> ExactSolution:
    """Exact J(θ), V, Q, d and ∇θ J for the softmax policy π = softmax(θ).

    Policy Gradient Theorem (Sutton et al. 1999, Theorem 1):

        ∇θ J = Σ_s d(s) Σ_a ∇θ π(a|s) Q(s, a)

    with d the unnormalised discounted visitation Σ_t γ^t Pr(s_t = s) from μ0 (episodic,
    discounted) or the stationary distribution with differential Q (average reward). For the
    tabular softmax, ∂π(b|s)/∂θ(s, a) = π(b|s) (1{a = b} − π(a|s)), hence

        ∂J/∂θ(s, a) = d(s) π(a|s) (Q(s, a) − V(s)).

    Args:
        mdp: the MDP.
        theta: ``[S, A]`` logits.
        setting: ``"episodic"``, ``"discounted"`` or ``"average"``.

    Returns:
        :class:`ExactSolution`; ``gradient`` is ∇θ J(θ), shape ``[S, A]``.

    Raises:
        InputError: θ is not a finite ``[S, A]`` array or the MDP does not suit ``setting``.
    """
    validate_setting(mdp, setting, theta)
    theta = validate_theta(mdp, theta)
    values = _evaluate(mdp, softmax_policy(theta), setting)
    advantage = values.Q - values.V[:, None]  # [S, A]
    reached = values.d > 0
    gradient = np.zeros_like(theta)
    gradient[reached] = values.d[reached, None] * values.pi[reached] * advantage[reached]
    return ExactSolution(
        setting=values.setting, objective=values.objective, pi=values.pi, V=values.V, Q=values.Q,
        d=values.d, rho=values.rho, gradient=gradient,
    )


def objective(mdp: FiniteMDP, theta: Any, setting: str) -> float:
    """J(θ) = μ0 · V (episodic, discounted) or ρ(θ) (average) of π = softmax(θ).

    Args:
        mdp: the MDP.
        theta: ``[S, A]`` logits.
        setting: ``"episodic"``, ``"discounted"`` or ``"average"``.

    Returns:
        The objective as a Python float (for finite differences of :func:`exact_solution`'s gradient).
    """
    validate_setting(mdp, setting, theta)
    return _evaluate(mdp, softmax_policy(validate_theta(mdp, theta)), setting).objective


def value_iteration(mdp: FiniteMDP, *, tol: float = 1e-10, max_iter: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Optimal values of the episodic or discounted criterion by value iteration.

        V_{k+1}(s) = max_a [ r(s, a) + γ Σ_s' P(s'|s, a) V_k(s') ],   V = 0 at terminal states

    (Puterman 1994, §6.3). With γ < 1 the operator is a γ-contraction. With γ = 1 the MDP must be
    episodic (checked); VI then converges on the states from which every policy terminates
    (Bertsekas & Tsitsiklis 1991), which include all states reachable from μ0; V* and Q* are NaN
    on the others.

    Args:
        mdp: the MDP.
        tol: stop when max_s |V_{k+1}(s) − V_k(s)| < tol.
        max_iter: at most this many sweeps.

    Returns:
        ``(V_star [S], Q_star [S, A])``.

    Raises:
        InputError: γ = 1 without a valid episodic structure, bad ``tol``/``max_iter``, or no
            convergence within ``max_iter`` sweeps.
    """
    _check_iteration_args(tol, max_iter)
    validate_setting(mdp, "episodic" if mdp.gamma >= 1.0 else "discounted")
    P, r, gamma = mdp.effective_transitions, mdp.effective_rewards, mdp.gamma
    terminal = mdp.terminal_mask
    if gamma < 1.0:
        active = ~terminal
    else:
        trapped = avoidable_termination(mdp.transitions, terminal)
        can_be_trapped = reachability(union_support(mdp))[:, trapped].any(axis=1)
        active = ~terminal & ~can_be_trapped  # every policy terminates from here
    P_active = P[:, :, active]  # successors of active states are active (or terminal)
    V = np.zeros(mdp.num_states)
    for _ in range(max_iter):
        Q = r + gamma * P_active @ V[active]
        V_new = np.where(active, Q.max(axis=1), 0.0)
        change = float(np.abs(V_new - V).max())
        V = V_new
        if change < tol:
            break
    else:
        raise InputError(
            f"value iteration did not converge within max_iter={max_iter} sweeps (last change {change:.3g})"
        )
    Q = r + gamma * P_active @ V[active]
    Q[terminal] = 0.0
    inactive = ~terminal & ~active
    V[inactive] = np.nan
    Q[inactive] = np.nan
    return V, Q


def relative_value_iteration(mdp: FiniteMDP, *, tol: float = 1e-10, max_iter: int = 100_000,
                             tau: float = 0.5, reference_state: int = 0) -> tuple[float, np.ndarray]:
    """Optimal average reward ρ* and a bias vector h of a unichain MDP by relative value iteration.

    Runs on the aperiodicity transform P' = τ P + (1 − τ) I, which has the same gain for every
    policy and bias h' = h / τ, and converges on periodic chains too (Puterman 1994, §8.5.5):

        w_{k+1} = T' h_k,   h_{k+1} = w_{k+1} − w_{k+1}(s_ref),   T' h = max_a [ r + P'_a h ]

    stopping when the span of T' h_k − h_k falls below ``tol``; ρ* is the midpoint of its range
    (which brackets ρ*). The returned h (rescaled by τ) satisfies the optimality equation
    h(s) + ρ* = max_a [ r(s, a) + Σ_s' P(s'|s, a) h(s') ] to within about tol, with h(s_ref) = 0.

    Args:
        mdp: an MDP valid for the average-reward criterion.
        tol: stop when max(T'h − h) − min(T'h − h) < tol.
        max_iter: at most this many sweeps.
        tau: τ in (0, 1) of the aperiodicity transform.
        reference_state: s_ref, where h is pinned to 0.

    Returns:
        ``(rho_star, h [S])``.

    Raises:
        InputError: the MDP is not a continuing unichain task, bad arguments, or no convergence
            within ``max_iter`` sweeps (as when the optimal gain depends on the start state).
    """
    _check_iteration_args(tol, max_iter)
    if not 0.0 < tau < 1.0:
        raise InputError(f"tau must lie in (0, 1), got {tau}")
    if not 0 <= reference_state < mdp.num_states:
        raise InputError(f"reference_state {reference_state} is out of range for {mdp.num_states} states")
    validate_setting(mdp, "average")
    P, r = mdp.transitions, mdp.rewards
    h = np.zeros(mdp.num_states)
    span = np.inf
    for _ in range(max_iter):
        w = (r + tau * (P @ h)).max(axis=1) + (1.0 - tau) * h  # [S], T' h
        diff = w - h
        span = float(diff.max() - diff.min())
        h = w - w[reference_state]
        if span < tol:
            rho_star = 0.5 * float(diff.max() + diff.min())
            return rho_star, tau * h
    raise InputError(
        f"relative value iteration did not converge within max_iter={max_iter} sweeps (span {span:.3g}); "
        "the optimal average reward may depend on the start state"
    )


def _check_iteration_args(tol: float, max_iter: int) -> None:
    if not tol > 0:
        raise InputError(f"tol must be positive, got {tol}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise InputError(f"max_iter must be a positive integer, got {max_iter}")
