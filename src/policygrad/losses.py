"""Surrogate losses: scalars whose gradient is a policy-gradient estimate.

Each loss is *minimised*; its negative gradient is the ascent direction stated in its docstring.
Weights (advantages, returns) are detached inside every loss: only the policy is differentiated,
as the Policy Gradient Theorem prescribes. All functions are pure.

Shapes: any shape ``[...]`` shared by all per-sample arguments (typically ``[T, N]`` or a flat
minibatch ``[B]``).

Derivatives. A backend without autograd (``policygrad.backends.numpy``) needs ∂L/∂ of each loss's
first, per-sample argument (log π, H or V): each loss the training algorithms use has it written
once, right beneath the loss, as ``<loss>_grad`` on ``[B]`` NumPy arrays, returning ``(L, ∂L/∂x)``;
:data:`DERIVATIVES` maps each loss to its derivative. The tests compare every one with autograd of
the loss above it, ties and clip edges included (there, torch's conventions: ``torch.minimum`` and
``torch.maximum`` split the gradient evenly, ``torch.clamp`` passes it on the closed interval).
"""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor

from policygrad.errors import InputError, shown
from policygrad.numeric import mean as _mean
from policygrad.returns import discount_weights

__all__ = [
    "score_function_loss",
    "importance_surrogate",
    "clipped_surrogate",
    "approx_kl",
    "kl_penalty",
    "clip_fraction",
    "entropy_bonus",
    "value_loss",
    "score_function_loss_grad",
    "importance_surrogate_grad",
    "clipped_surrogate_grad",
    "kl_penalty_grad",
    "entropy_bonus_grad",
    "value_loss_grad",
    "DERIVATIVES",
]

Reduction = Literal["mean", "sum"]


def _check_shapes(**tensors: Tensor) -> None:
    names = list(tensors)
    shape = tensors[names[0]].shape
    for name in names[1:]:
        if tensors[name].shape != shape:
            raise InputError(
                f"{name} has shape {tuple(tensors[name].shape)}, expected {tuple(shape)} like {names[0]}"
            )


def _reduce(x: Tensor, mask: Tensor | None, reduction: Reduction) -> Tensor:
    if mask is not None:
        x = x * mask.to(x.dtype)
    if reduction == "sum":
        return x.sum()
    if reduction == "mean":
        count = x.numel() if mask is None else mask.sum().clamp(min=1)
        return x.sum() / count
    raise InputError(f"reduction must be 'mean' or 'sum', got {shown(reduction)}")


def score_function_loss(
    log_prob: Tensor,
    psi: Tensor,
    *,
    gamma: float | None = None,
    episode_step: Tensor | None = None,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """The score-function (REINFORCE) surrogate.

    L(θ) = − reduce_t [ w_t · Ψ_t · log πθ(a_t | s_t) ],   w_t = γ^{k_t} or 1,

    where k_t is the step's index within its episode. Its negative gradient is the policy-gradient
    estimate reduce_t[w_t Ψ_t ∇θ log πθ(a_t|s_t)] (Williams 1992). With ``gamma`` and
    ``episode_step`` given (w_t = γ^{k_t}), a sum over an episode is an unbiased estimate of the
    gradient of the discounted objective E[Σ_t γ^t r_t | s_0 ~ μ0] when E[Ψ_t | s_t, a_t] = Q(s_t,
    a_t) + b(s_t); without them (w_t = 1) it is the common form used by most implementations,
    which is biased for that objective when γ < 1 (Thomas 2014, "Bias in Natural Actor-Critic
    Algorithms"; Nota & Thomas 2020, "Is the Policy Gradient a Gradient?").

    Args:
        log_prob: ``[...]`` log πθ(a_t | s_t), differentiable.
        psi: ``[...]`` the weights Ψ_t; detached here.
        gamma: γ for the per-step γ^{k_t} factor; requires ``episode_step``.
        episode_step: ``[...]`` integer k_t, steps since the episode began.
        mask: ``[...]`` bool, steps that count (padding after an episode's end excluded).
        reduction: ``"mean"`` over (unmasked) steps, or ``"sum"``.

    Returns:
        Scalar loss; −∇ of it is the estimate above.
    """
    _check_shapes(log_prob=log_prob, psi=psi)
    weights = psi.detach()
    if gamma is not None or episode_step is not None:
        if gamma is None or episode_step is None:
            raise InputError("the γ^t factor needs both gamma and episode_step")
        _check_shapes(log_prob=log_prob, episode_step=episode_step)
        weights = weights * discount_weights(episode_step, gamma).to(weights.dtype)
    if mask is not None:
        _check_shapes(log_prob=log_prob, mask=mask)
    return -_reduce(weights * log_prob, mask, reduction)


def score_function_loss_grad(log_prob: np.ndarray, psi: np.ndarray) -> tuple[float, np.ndarray]:
    """``(L, ∂L/∂ log π [B])`` of :func:`score_function_loss` with its defaults (mean, w_t = 1):
    L = −mean Ψ log π,  ∂L/∂ log π_b = −Ψ_b / B."""
    return -float(_mean(psi * log_prob)), psi * psi.dtype.type(-1.0 / len(psi))


def importance_surrogate(log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor) -> Tensor:
    """The importance-sampled surrogate of TRPO and NPG.

    L(θ) = − mean[ ρ_t(θ) A_t ],   ρ_t = πθ(a_t|s_t) / πθ_old(a_t|s_t).

    At θ = θ_old its gradient equals that of :func:`score_function_loss` with Ψ = A (the
    policy-gradient estimate); away from θ_old it is the local approximation L_θold of Kakade &
    Langford (2002) and Schulman et al. (2015), "Trust Region Policy Optimization", eq. 14.

    Args:
        log_prob: ``[...]`` log πθ, differentiable.
        old_log_prob: ``[...]`` log πθ_old of the sampled actions; detached.
        advantages: ``[...]`` A_t; detached.

    Returns:
        Scalar loss.
    """
    _check_shapes(log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages)
    ratio = torch.exp(log_prob - old_log_prob.detach())
    return -(ratio * advantages.detach()).mean()


def importance_surrogate_grad(log_prob: np.ndarray, old_log_prob: np.ndarray,
                              advantages: np.ndarray) -> tuple[float, np.ndarray]:
    """``(L, ∂L/∂ log π [B])`` of :func:`importance_surrogate`: ∂L/∂ log π_b = −ρ_b A_b / B."""
    weighted = np.exp(log_prob - old_log_prob) * advantages
    return -float(_mean(weighted)), weighted * log_prob.dtype.type(-1.0 / len(log_prob))


def clipped_surrogate(log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, clip_eps: float) -> Tensor:
    """PPO's clipped surrogate.

    L(θ) = − mean[ min( ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t ) ]

    Its gradient is the importance-weighted policy gradient −ρ_t A_t ∇ log πθ on samples where the
    ratio has not moved past the clip in the direction the advantage favours, and zero elsewhere.
    At θ = θ_old it equals the score-function gradient. Reference: Schulman et al. (2017),
    "Proximal Policy Optimization Algorithms", eq. 7.

    Args:
        log_prob: ``[...]`` log πθ(a_t|s_t), differentiable.
        old_log_prob: ``[...]`` log πθ_old(a_t|s_t); detached.
        advantages: ``[...]`` A_t; detached.
        clip_eps: ε > 0.

    Returns:
        Scalar loss.
    """
    _check_shapes(log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages)
    if not clip_eps > 0:
        raise InputError(f"clip_eps must be > 0, got {clip_eps}")
    advantages = advantages.detach()
    ratio = torch.exp(log_prob - old_log_prob.detach())
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -torch.minimum(unclipped, clipped).mean()


def clipped_surrogate_grad(log_prob: np.ndarray, old_log_prob: np.ndarray, advantages: np.ndarray,
                           clip_eps: float) -> tuple[float, np.ndarray]:
    """``(L, ∂L/∂ log π [B])`` of :func:`clipped_surrogate`.

    The unclipped term's gradient is −ρA/B where it is the smaller one, the clipped term's −ρA/B
    where it is the smaller one and ρ lies in [1 − ε, 1 + ε] (zero outside), each halved at a tie.
    Inside the interval the two terms are the same number, a tie whose halves add up to −ρA/B;
    outside, only the unclipped term can carry the gradient, where it is the smaller one (a tie
    there needs A = 0, whose gradient is 0 either way). So the weight of −ρA/B is
    [ρ inside] ∨ [ρA < clip(ρ)A].
    """
    dtype = log_prob.dtype.type
    low, high = dtype(1.0 - clip_eps), dtype(1.0 + clip_eps)
    ratio = np.exp(log_prob - old_log_prob)
    unclipped = ratio * advantages
    clipped = np.minimum(np.maximum(ratio, low), high) * advantages  # np.clip's values, without its wrapper
    smaller = np.minimum(unclipped, clipped)
    d = unclipped * ((ratio >= low) & (ratio <= high) | (unclipped < clipped))
    d *= dtype(-1.0 / len(log_prob))
    return -float(_mean(smaller)), d


def approx_kl(log_prob: Tensor, old_log_prob: Tensor) -> Tensor:
    """Sample estimate of KL(πθ_old ‖ πθ) from actions drawn under πθ_old.

    KL ≈ mean[ (ρ_t − 1) − log ρ_t ],   ρ_t = πθ / πθ_old.

    Unbiased and non-negative per sample (Schulman 2020, "Approximating KL Divergence", k3).

    Args:
        log_prob: ``[...]`` log πθ, may be differentiable.
        old_log_prob: ``[...]`` log πθ_old; detached.

    Returns:
        Scalar KL estimate (differentiable in ``log_prob``).
    """
    _check_shapes(log_prob=log_prob, old_log_prob=old_log_prob)
    log_ratio = log_prob - old_log_prob.detach()
    return (torch.expm1(log_ratio) - log_ratio).mean()


def kl_penalty(log_prob: Tensor, old_log_prob: Tensor, beta: float) -> Tensor:
    """β-weighted KL penalty, the adaptive-KL variant of PPO.

    L_KL(θ) = β · KL̂(πθ_old ‖ πθ), with KL̂ from :func:`approx_kl`.

    Added to :func:`importance_surrogate`, it gives PPO's KL-penalised objective (Schulman et al.
    2017, eq. 8). Its gradient pulls πθ back toward πθ_old; it is zero at θ = θ_old.

    Args:
        log_prob: ``[...]`` log πθ, differentiable.
        old_log_prob: ``[...]`` log πθ_old; detached.
        beta: β ≥ 0.

    Returns:
        Scalar loss.
    """
    if not beta >= 0:
        raise InputError(f"beta must be >= 0, got {beta}")
    return beta * approx_kl(log_prob, old_log_prob)


def kl_penalty_grad(log_prob: np.ndarray, old_log_prob: np.ndarray, beta: float) -> tuple[float, np.ndarray]:
    """``(L, ∂L/∂ log π [B])`` of :func:`kl_penalty`: L = β mean(ρ − 1 − log ρ),
    ∂L/∂ log π_b = β (ρ_b − 1) / B."""
    log_ratio = log_prob - old_log_prob
    excess = np.expm1(log_ratio)  # ρ − 1
    loss = beta * float(_mean(excess - log_ratio))
    return loss, excess * log_prob.dtype.type(beta / len(log_prob))


@torch.no_grad()
def clip_fraction(log_prob: Tensor, old_log_prob: Tensor, clip_eps: float) -> Tensor:
    """Fraction of samples whose ratio lies outside [1 − ε, 1 + ε] (a diagnostic, no gradient)."""
    _check_shapes(log_prob=log_prob, old_log_prob=old_log_prob)
    ratio = torch.exp(log_prob - old_log_prob)
    return ((ratio - 1.0).abs() > clip_eps).float().mean()


def entropy_bonus(entropy: Tensor, coef: float) -> Tensor:
    """Entropy regularisation as a loss: − c · mean[ H(π(·|s_t)) ].

    Minimising it raises the policy's entropy (Williams & Peng 1991; Mnih et al. 2016, eq. 7).

    Args:
        entropy: ``[...]`` per-state entropies, differentiable.
        coef: c ≥ 0.

    Returns:
        Scalar loss.
    """
    return -coef * entropy.mean()


def entropy_bonus_grad(entropy: np.ndarray, coef: float) -> tuple[float, np.ndarray]:
    """``(L, ∂L/∂H [B])`` of :func:`entropy_bonus`: ∂L/∂H_b = −c / B."""
    return -coef * float(_mean(entropy)), np.full(len(entropy), -coef / len(entropy), dtype=entropy.dtype)


def value_loss(
    values: Tensor,
    returns: Tensor,
    old_values: Tensor | None = None,
    clip_eps: float | None = None,
) -> Tensor:
    """Squared-error critic loss, optionally clipped around the old predictions.

    L(φ) = ½ mean[ (V_φ(s_t) − R_t)² ], or with clipping
    L(φ) = ½ mean[ max( (V_φ − R_t)², (V_old + clip(V_φ − V_old, −ε, ε) − R_t)² ) ]
    (the value clipping of the PPO reference implementation; Engstrom et al. 2020 study its effect).

    Args:
        values: ``[...]`` V_φ(s_t), differentiable.
        returns: ``[...]`` targets R_t; detached.
        old_values: ``[...]`` predictions before the update; needed with ``clip_eps``.
        clip_eps: ε for value clipping, or None.

    Returns:
        Scalar loss.
    """
    _check_shapes(values=values, returns=returns)
    returns = returns.detach()
    squared = (values - returns).pow(2)
    if clip_eps is not None:
        if old_values is None:
            raise InputError("value clipping needs old_values")
        _check_shapes(values=values, old_values=old_values)
        old_values = old_values.detach()
        clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        squared = torch.maximum(squared, (clipped - returns).pow(2))
    return 0.5 * squared.mean()


def value_loss_grad(values: np.ndarray, returns: np.ndarray, old_values: np.ndarray | None = None,
                    clip_eps: float | None = None) -> tuple[float, np.ndarray]:
    """``(L, ∂L/∂V [B])`` of :func:`value_loss`: ∂L/∂V_b = (V_b − R_b)/B; with clipping the larger
    of the two squared errors carries the gradient (the clipped one only while V − V_old lies in
    [−ε, ε]), halved at a tie."""
    dtype = values.dtype.type
    n = len(values)
    error = values - returns
    squared = error * error
    if clip_eps is None:
        return 0.5 * float(_mean(squared)), error * dtype(1.0 / n)
    if old_values is None:
        raise InputError("value clipping needs old_values")
    delta = values - old_values
    clipped_error = old_values + np.clip(delta, dtype(-clip_eps), dtype(clip_eps)) - returns
    clipped_squared = clipped_error * clipped_error
    inside = (delta >= dtype(-clip_eps)) & (delta <= dtype(clip_eps))
    tie = squared == clipped_squared
    w_plain = np.where(tie, 0.5, squared > clipped_squared).astype(values.dtype)
    w_clipped = np.where(tie, 0.5, clipped_squared > squared).astype(values.dtype) * inside
    d = (error * w_plain + clipped_error * w_clipped) * dtype(1.0 / n)
    return 0.5 * float(_mean(np.maximum(squared, clipped_squared))), d


DERIVATIVES: dict[Callable[..., Tensor], Callable[..., tuple[float, np.ndarray]]] = {
    score_function_loss: score_function_loss_grad,
    importance_surrogate: importance_surrogate_grad,
    clipped_surrogate: clipped_surrogate_grad,
    kl_penalty: kl_penalty_grad,
    entropy_bonus: entropy_bonus_grad,
    value_loss: value_loss_grad,
}
"""Each loss -> its derivative in its first argument (the arguments are the loss's own, positional,
as NumPy arrays; ``score_function_loss`` with its defaults only)."""
