"""Return and advantage estimators: the choices of Ψ_t in the Policy Gradient Theorem.

    ∇J(θ) = E[ Σ_t ∇θ log πθ(a_t | s_t) · Ψ_t ]

Every function here is pure: time-major tensors in, a tensor out, no hidden state.

Symbols and shapes (T steps, N parallel environments; any trailing dims after T are allowed
as long as all arguments agree):

| name | shape | meaning |
|---|---|---|
| rewards | [T, N] | r_t, the reward received after taking a_t in s_t |
| values | [T, N] | V(s_t) |
| next_values | [T, N] | V(s_{t+1}) of the *true* next state; at a truncated step this is the value of the final observation before the environment's auto-reset |
| terminated | [T, N] | s_{t+1} is terminal: its value is zero by definition, no bootstrap |
| truncated | [T, N] | the episode was cut (time limit) after step t: bootstrap from next_values, but the trace of later steps (a new episode) must not leak back |

The two flags stay separate everywhere: ``terminated`` stops the bootstrap, ``terminated or
truncated`` cuts the trace. The last step of a rollout is treated like a truncation (bootstrap
from ``next_values[T-1]``), so a rollout boundary never biases the estimate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from policygrad.errors import InputError

__all__ = [
    "discounted_cumsum",
    "td_errors",
    "discounted_returns",
    "gae",
    "differential_td_errors",
    "differential_returns",
    "differential_gae",
    "vtrace",
    "discount_weights",
    "episode_total_returns",
]


def _check_same_shape(**tensors: Tensor) -> torch.Size:
    """All tensors share one time-major shape ``[T, ...]`` with T ≥ 1; returns it."""
    names = list(tensors)
    shape = tensors[names[0]].shape
    if len(shape) == 0 or shape[0] == 0:
        raise InputError(f"{names[0]} must be time-major [T, N] with T >= 1, got shape {tuple(shape)}")
    for name in names[1:]:
        if tensors[name].shape != shape:
            raise InputError(
                f"{name} has shape {tuple(tensors[name].shape)}, expected {tuple(shape)} like {names[0]}"
            )
    return shape


def _check_unit_interval(name: str, value: float, *, allow_zero: bool) -> None:
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value <= 1.0):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise InputError(f"{name} must lie in {interval}, got {value}")


def _numpy_views(*tensors: Tensor) -> list[np.ndarray] | None:
    """NumPy views of ``tensors`` (flags as bool) where every one is on the CPU, the floating ones
    share a dtype and no gradient is needed; else None. The pure functions below are written once,
    for torch tensors and NumPy arrays alike: on the CPU without a graph they run on the views,
    where each small operation costs a fraction of a torch one (an update makes dozens)."""
    if any(t.device.type != "cpu" for t in tensors):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    floats = {t.dtype for t in tensors if t.is_floating_point()}
    if len(floats) != 1:
        return None
    return [t.detach().numpy() if t.is_floating_point() else t.numpy().astype(bool, copy=False) for t in tensors]


def _zero_where(condition: Any, x: Any) -> Any:
    """0 where ``condition``, else ``x`` (whatever x holds there, NaN included)."""
    if isinstance(x, np.ndarray):
        return np.where(condition, x.dtype.type(0), x)
    return torch.where(condition, torch.zeros((), dtype=x.dtype, device=x.device), x)


def _mask_times(mask: Any, value: float, like: Any) -> Any:
    """``value`` where ``mask``, else 0, in the dtype of ``like``."""
    if isinstance(like, np.ndarray):
        return mask * like.dtype.type(value)
    return mask.to(like.dtype) * value


def discounted_cumsum(x: Tensor, factors: Tensor) -> Tensor:
    """The backward recursion shared by every return and advantage estimator.

    y_t = x_t + c_t · y_{t+1},   y_T = 0.

    Args:
        x: ``[T, ...]`` per-step terms.
        factors: ``[T, ...]`` c_t, the weight with which step t+1's sum enters step t's
            (γ for a return, γλ for GAE, 0 where the trace is cut).

    Returns:
        ``[T, ...]`` y. Differentiable in ``x`` and ``factors``.
    """
    _check_same_shape(x=x, factors=factors)
    if torch.is_grad_enabled() and (x.requires_grad or factors.requires_grad):
        return _backward_recursion(x, factors, torch.empty_like(x))
    # Without a graph, the same recursion on NumPy views of CPU tensors: a NumPy operation on a
    # row costs a fraction of a torch one, which adds up over T = 2048 steps.
    if x.device.type == "cpu" and factors.device.type == "cpu" and x.dtype == factors.dtype:
        out = torch.empty_like(x)
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN pass through silently, as in torch
            _backward_recursion(x.detach().numpy(), factors.detach().numpy(), out.numpy())
        return out
    return _backward_recursion(x, factors, torch.empty_like(x))


def _backward_recursion(x: Any, factors: Any, out: Any) -> Any:
    """y_t = x_t + c_t · y_{t+1} into ``out``, on torch tensors or NumPy arrays alike."""
    if x.shape[0] == 0:
        return out
    running = x[-1]
    out[-1] = running
    for t in range(x.shape[0] - 2, -1, -1):
        running = x[t] + factors[t] * running
        out[t] = running
    return out


def td_errors(
    rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor, gamma: float
) -> Tensor:
    """One-step temporal-difference errors.

    δ_t = r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t)

    ``next_values`` at terminated steps is ignored whatever it holds (even NaN).
    Reference: Sutton & Barto (2018), eq. 6.5.

    Args:
        rewards: ``[T, N]`` rewards r_t.
        values: ``[T, N]`` V(s_t).
        next_values: ``[T, N]`` V(s_{t+1}) of the true next state (at a truncated step, the final
            observation before the auto-reset).
        terminated: ``[T, N]`` bool, the step ended its episode in a terminal state.
        gamma: discount γ in (0, 1].

    Returns:
        ``[T, N]`` δ_t.
    """
    _check_same_shape(rewards=rewards, values=values, next_values=next_values, terminated=terminated)
    _check_unit_interval("gamma", gamma, allow_zero=False)
    arrays = _numpy_views(rewards, values, next_values, terminated)
    if arrays is not None:
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN pass through, as in torch
            return torch.from_numpy(_td_errors(*arrays, gamma))
    return _td_errors(rewards, values, next_values, terminated.bool(), gamma)


def _td_errors(rewards: Any, values: Any, next_values: Any, terminated: Any, gamma: float) -> Any:
    """:func:`td_errors` on torch tensors or NumPy arrays alike (bool ``terminated``)."""
    return rewards + gamma * _zero_where(terminated, next_values) - values


def discounted_returns(
    rewards: Tensor, next_values: Tensor, terminated: Tensor, truncated: Tensor, gamma: float
) -> Tensor:
    """Bootstrapped reward-to-go G_t.

    G_t = r_t + γ · { 0                  if terminated_t
                    { V(s_{t+1})         if truncated_t or t = T − 1
                    { G_{t+1}            otherwise

    ``next_values`` is read only where an episode is truncated or the rollout ends, and never at a
    terminated step. With exact V^π this makes E[G_t | s_t, a_t] = Q^π(s_t, a_t) across
    time-limit cuts and rollout boundaries. Reference: Sutton & Barto (2018), eq. 3.9; Pardo et al.
    (2018), "Time Limits in Reinforcement Learning".

    Args:
        rewards: ``[T, N]`` rewards r_t.
        next_values: ``[T, N]`` V(s_{t+1}) of the true next state (at a truncated step, the final
            observation before the auto-reset).
        terminated: ``[T, N]`` bool, the step ended its episode in a terminal state.
        truncated: ``[T, N]`` bool, the step's episode was cut (a time limit), not terminated.
        gamma: discount γ in (0, 1].

    Returns:
        ``[T, N]`` G_t (use as regression target or as Ψ_t; it carries no gradient of its own
        unless its inputs do).
    """
    _check_same_shape(rewards=rewards, next_values=next_values, terminated=terminated, truncated=truncated)
    _check_unit_interval("gamma", gamma, allow_zero=False)
    terminated = terminated.bool()
    # Bootstrap at a truncation and at the rollout's end; never at a termination.
    cut = truncated.bool().clone()
    cut[-1] = True
    bootstrap = cut & ~terminated
    x = rewards + gamma * torch.where(bootstrap, next_values, torch.zeros_like(next_values))
    factors = gamma * (~(terminated | cut)).to(rewards.dtype)
    return discounted_cumsum(x, factors)


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    lam: float,
) -> Tensor:
    """Generalized Advantage Estimation.

    δ_t = r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t)
    A_t = δ_t + γλ (1 − (terminated_t ∨ truncated_t)) A_{t+1},   A_T = 0

    λ = 0 gives the TD error, λ = 1 gives G_t − V(s_t) with G_t from :func:`discounted_returns`.
    A truncation keeps its bootstrap inside δ_t but cuts the trace. ``next_values`` at terminated
    steps is ignored. Reference: Schulman et al. (2016), "High-Dimensional Continuous Control Using
    Generalized Advantage Estimation", eq. 16.

    Args:
        rewards: ``[T, N]`` rewards r_t.
        values: ``[T, N]`` V(s_t).
        next_values: ``[T, N]`` V(s_{t+1}) of the true next state (at a truncated step, the final
            observation before the auto-reset).
        terminated: ``[T, N]`` bool, the step ended its episode in a terminal state.
        truncated: ``[T, N]`` bool, the step's episode was cut (a time limit), not terminated.
        gamma: discount γ in (0, 1].
        lam: λ in [0, 1].

    Returns:
        ``[T, N]`` advantages A_t.
    """
    _check_same_shape(
        rewards=rewards, values=values, next_values=next_values, terminated=terminated, truncated=truncated
    )
    _check_unit_interval("lam", lam, allow_zero=True)
    _check_unit_interval("gamma", gamma, allow_zero=False)
    arrays = _numpy_views(rewards, values, next_values, terminated, truncated)
    if arrays is not None:
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN pass through, as in torch
            return torch.from_numpy(_gae(*arrays, gamma, lam))
    return _gae(rewards, values, next_values, terminated.bool(), truncated.bool(), gamma, lam)


def _gae(rewards: Any, values: Any, next_values: Any, terminated: Any, truncated: Any, gamma: float,
         lam: float) -> Any:
    """:func:`gae` on torch tensors or NumPy arrays alike (bool flags)."""
    deltas = _td_errors(rewards, values, next_values, terminated, gamma)
    factors = _mask_times(~(terminated | truncated), gamma * lam, deltas)  # γλ (1 − done)
    out = np.empty_like(deltas) if isinstance(deltas, np.ndarray) else torch.empty_like(deltas)
    return _backward_recursion(deltas, factors, out)


def differential_td_errors(
    rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor, rho: float | Tensor
) -> Tensor:
    """Differential TD errors for the average-reward criterion.

    δ_t = r_t − ρ + (1 − terminated_t) v(s_{t+1}) − v(s_t),   v the differential value function.

    Reference: Sutton & Barto (2018), eq. 10.10.

    Args:
        rewards: ``[T, N]`` rewards r_t.
        values: ``[T, N]`` v(s_t), the differential value.
        next_values: ``[T, N]`` v(s_{t+1}) of the true next state.
        terminated: ``[T, N]`` bool (continuing tasks never terminate; kept for symmetry).
        rho: the average reward ρ, a float or a 0-dim tensor.

    Returns:
        ``[T, N]`` δ_t.
    """
    return td_errors(rewards - rho, values, next_values, terminated, 1.0)


def differential_returns(
    rewards: Tensor, next_values: Tensor, terminated: Tensor, truncated: Tensor, rho: float | Tensor
) -> Tensor:
    """Differential reward-to-go: :func:`discounted_returns` of r_t − ρ with no discount.

    G_t = (r_t − ρ) + { 0 if terminated_t;  v(s_{t+1}) if truncated_t or t = T − 1;  G_{t+1} otherwise }

    With the exact differential value v and exact ρ, E[G_t | s_t, a_t] = q(s_t, a_t), the
    differential action value. Reference: Sutton & Barto (2018), section 10.3.

    Args:
        rewards: ``[T, N]`` rewards r_t.
        next_values: ``[T, N]`` v(s_{t+1}) of the true next state.
        terminated: ``[T, N]`` bool, the step ended its episode in a terminal state.
        truncated: ``[T, N]`` bool, the step's episode was cut (a time limit), not terminated.
        rho: the average reward ρ.

    Returns:
        ``[T, N]`` differential returns.
    """
    return discounted_returns(rewards - rho, next_values, terminated, truncated, 1.0)


def differential_gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    rho: float | Tensor,
    lam: float,
) -> Tensor:
    """GAE for the average-reward criterion: :func:`gae` of r_t − ρ with γ = 1.

    δ_t = r_t − ρ + (1 − terminated_t) v(s_{t+1}) − v(s_t);   A_t = δ_t + λ (1 − done_t) A_{t+1}.

    Reference: Zhang & Ross (2021), "On-Policy Deep Reinforcement Learning for the Average-Reward
    Criterion", Algorithm 1.

    Args:
        rewards: ``[T, N]`` rewards r_t.
        values: ``[T, N]`` v(s_t), the differential value.
        next_values: ``[T, N]`` v(s_{t+1}) of the true next state.
        terminated: ``[T, N]`` bool, the step ended its episode in a terminal state.
        truncated: ``[T, N]`` bool, the step's episode was cut (a time limit), not terminated.
        rho: the average reward ρ.
        lam: λ in [0, 1].

    Returns:
        ``[T, N]`` differential advantages.
    """
    return gae(rewards - rho, values, next_values, terminated, truncated, 1.0, lam)


def vtrace(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    log_ratio: Tensor,
    gamma: float,
    lam: float = 1.0,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """V-trace targets and policy-gradient advantages for data from a behaviour policy μ.

    ρ_t = min(ρ̄, π(a_t|s_t) / μ(a_t|s_t)),   c_t = λ min(c̄, π(a_t|s_t) / μ(a_t|s_t))
    δ_t = ρ_t (r_t + γ (1 − terminated_t) V(s_{t+1}) − V(s_t))
    v_t − V(s_t) = δ_t + γ c_t (1 − (terminated_t ∨ truncated_t)) (v_{t+1} − V(s_{t+1})),   v_T − V(s_T) = 0
    A_t = ρ_t (r_t + γ (1 − terminated_t) v⁺_{t+1} − V(s_t)),

    where v⁺_{t+1} is the target of the next state: v_{t+1} inside an episode, V(s_{t+1}) from
    ``next_values`` after a truncation or at the rollout's last step. As in :func:`gae`, a
    truncation keeps its bootstrap and cuts the trace, and ``next_values`` at terminated steps is
    ignored. On-policy (π = μ) with ρ̄ ≥ 1 and c̄ ≥ 1, v_t − V(s_t) is :func:`gae` with the same λ
    and A_t is the one-step advantage r_t + γ v_{t+1} − V(s_t). The fixed point of V under the
    targets is V^{π_ρ̄}, π_ρ̄ ∝ min(ρ̄ μ, π); c̄ and λ change only how fast the trace contracts.
    Reference: Espeholt et al. (2018), "IMPALA: Scalable Distributed Deep-RL with Importance
    Weighted Actor-Learner Architectures", eq. 1 and section 4.2 (λ as in their remark 5).

    Args:
        rewards: ``[T, N]`` rewards r_t.
        values: ``[T, N]`` V(s_t).
        next_values: ``[T, N]`` V(s_{t+1}) of the true next state (at a truncated step, the final
            observation before the auto-reset).
        terminated: ``[T, N]`` bool, the step ended its episode in a terminal state.
        truncated: ``[T, N]`` bool, the step's episode was cut (a time limit), not terminated.
        log_ratio: ``[T, N]`` log π(a_t|s_t) − log μ(a_t|s_t), target minus behaviour.
        gamma: discount γ in (0, 1].
        lam: λ in [0, 1], the trace's decay (multiplies c_t).
        rho_bar: ρ̄ > 0, the truncation of ρ_t (``math.inf``: none).
        c_bar: c̄ ≥ 0, the truncation of c_t (``math.inf``: none; 0: one-step targets).

    Returns:
        ``(vs, advantages)``, both ``[T, N]``: the value targets v_t and the policy-gradient
        weights A_t (Ψ_t of the actor). Both are computed from detached inputs and carry no gradient:
        they are targets.
    """
    _check_same_shape(
        rewards=rewards, values=values, next_values=next_values, terminated=terminated, truncated=truncated,
        log_ratio=log_ratio,
    )
    _check_unit_interval("gamma", gamma, allow_zero=False)
    _check_unit_interval("lam", lam, allow_zero=True)
    if not rho_bar > 0.0:
        raise InputError(f"rho_bar must be positive (math.inf for no truncation), got {rho_bar}")
    if not c_bar >= 0.0:
        raise InputError(f"c_bar must be non-negative (math.inf for no truncation), got {c_bar}")
    inputs = [t.detach() for t in (rewards, values, next_values, terminated, truncated, log_ratio)]
    arrays = _numpy_views(*inputs)
    with torch.no_grad():
        if arrays is not None:
            with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN pass through, as in torch
                vs, adv = _vtrace(*arrays, gamma, lam, rho_bar, c_bar)
            return torch.from_numpy(vs), torch.from_numpy(adv)
        r, v, nv, term, trunc, log_ratio = inputs
        return _vtrace(r, v, nv, term.bool(), trunc.bool(), log_ratio, gamma, lam, rho_bar, c_bar)


def _vtrace(rewards: Any, values: Any, next_values: Any, terminated: Any, truncated: Any, log_ratio: Any,
            gamma: float, lam: float, rho_bar: float, c_bar: float) -> tuple[Any, Any]:
    """:func:`vtrace` on torch tensors or NumPy arrays alike (bool flags)."""
    numpy = isinstance(rewards, np.ndarray)
    ratio = np.exp(log_ratio) if numpy else torch.exp(log_ratio)
    rho = np.minimum(ratio, rho_bar) if numpy else torch.clamp(ratio, max=rho_bar)
    c = np.minimum(ratio, c_bar) if numpy else torch.clamp(ratio, max=c_bar)
    deltas = rho * _td_errors(rewards, values, next_values, terminated, gamma)
    cont = ~(terminated | truncated)
    factors = _zero_where(~cont, c * (gamma * lam))  # γ c_t (1 − done_t); 0 even where c_t is inf
    out = np.empty_like(deltas) if numpy else torch.empty_like(deltas)
    corrections = _backward_recursion(deltas, factors, out)  # [T, N] v_t − V(s_t)
    # v⁺_{t+1} = V(s_{t+1}) + (v_{t+1} − V(s_{t+1})) inside an episode, V(s_{t+1}) at its cut.
    following = np.zeros_like(corrections) if numpy else torch.zeros_like(corrections)
    following[:-1] = corrections[1:]
    next_targets = next_values + _zero_where(~cont, following)
    advantages = rho * (rewards + gamma * _zero_where(terminated, next_targets) - values)
    return values + corrections, advantages


def discount_weights(episode_step: Tensor, gamma: float) -> Tensor:
    """γ^t, where t counts steps since the start of the step's episode.

    This is the factor that turns Σ_t ∇ log π(a_t|s_t) Ψ_t into the gradient of the discounted
    objective J(θ) = E[Σ_t γ^t r_t | s_0 ~ μ0] (Thomas 2014, "Bias in Natural Actor-Critic
    Algorithms"); the common form drops it.

    Args:
        episode_step: ``[T, N]`` integer step index within the episode (0 at a reset).
        gamma: γ in (0, 1].

    Returns:
        ``[T, N]`` float64 weights γ^t.
    """
    _check_unit_interval("gamma", gamma, allow_zero=False)
    return torch.pow(torch.tensor(gamma, dtype=torch.float64), episode_step.to(torch.float64))


def episode_total_returns(returns: Tensor, episode_step: Tensor, terminated: Tensor, truncated: Tensor,
                          gamma: float) -> Tensor:
    """The part of the episode's total discounted return R(τ) that a rollout holds, for every step.

    Ψ_t = γ^{k₀} · G_{t₀},

    where t₀ is the first step of t's episode inside the rollout (its start, or the rollout's
    first step), k₀ its step index within the episode and G the reward-to-go. When the episode
    starts inside the rollout (k₀ = 0) this is R(τ) = Σ_k γ^k r_k exactly; otherwise it is R(τ)
    minus the rewards received before the rollout, which have zero-mean terms in the estimator.

    Args:
        returns: ``[T, N]`` reward-to-go G_t (from ``discounted_returns``).
        episode_step: ``[T, N]`` steps since the episode's start.
        terminated: ``[T, N]`` bool, the step ended its episode in a terminal state.
        truncated: ``[T, N]`` bool, the step's episode was cut (a time limit), not terminated.
        gamma: γ.

    Returns:
        ``[T, N]`` Ψ_t.
    """
    steps = torch.arange(returns.shape[0], device=returns.device).unsqueeze(1)  # [T, 1]
    done = terminated.bool() | truncated.bool()
    starts = episode_step == 0
    starts[0] = True
    starts[1:] |= done[:-1]
    first = torch.where(starts, steps, 0).cummax(dim=0).values  # [T, N] index t₀ of each step's segment
    weights = discount_weights(episode_step.gather(0, first), gamma).to(returns.dtype)
    return weights * returns.gather(0, first)
