"""Trust-region pieces of the natural policy gradient (NPG) and TRPO.

Both algorithms replace the plain gradient step with the *natural* gradient, the step that
improves the surrogate L(θ) most for a given change of the policy measured by the KL divergence:

    maximise  g·Δθ   subject to   ½ Δθᵀ F Δθ ≤ δ,

where g = −∇L(θ_old) is the policy-gradient estimate and F the Fisher information matrix of the
policy (the Hessian of the mean KL divergence at θ = θ_old). Its solution is

    s = F⁻¹ g,     Δθ = β s,     β = sqrt( 2δ / (sᵀ F s) ).

F is never formed: :func:`conjugate_gradient` solves F s = g using only Fisher-vector products,
which :func:`fisher_vector_product` computes with two backward passes (Pearlmutter's trick).
NPG takes Δθ as it is (Kakade 2001, "A Natural Policy Gradient"); TRPO shrinks it by
:func:`line_search` until the exact KL constraint holds and the surrogate improves (Schulman et al.
2015, "Trust Region Policy Optimization", Appendix C).

Every function here is pure: tensors and callables in, tensors out. Vectors are flat ``[P]`` over
the P policy parameters (``torch.nn.utils.parameters_to_vector`` order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from policygrad.errors import InputError

__all__ = [
    "conjugate_gradient",
    "fisher_vector_product",
    "natural_step",
    "LineSearchResult",
    "line_search",
]


def conjugate_gradient(
    fvp: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> Tensor:
    """Solve A x = b for a symmetric positive-definite A given only products v ↦ A v.

    Standard conjugate gradient from x₀ = 0 (Hestenes & Stiefel 1952; Nocedal & Wright 2006,
    Algorithm 5.2):

        r₀ = p₀ = b
        α_k = r_kᵀ r_k / p_kᵀ A p_k;   x_{k+1} = x_k + α_k p_k;   r_{k+1} = r_k − α_k A p_k
        p_{k+1} = r_{k+1} + (r_{k+1}ᵀ r_{k+1} / r_kᵀ r_k) p_k

    In exact arithmetic it converges in at most P iterations; TRPO uses ~10 because an
    approximate natural direction suffices (Schulman et al. 2015, Appendix C).

    Args:
        fvp: v ↦ A v for ``[P]`` vectors (here the damped Fisher-vector product).
        b: ``[P]`` right-hand side (here the policy gradient g).
        iters: maximum number of iterations (≥ 1).
        residual_tol: stop once ‖r‖² falls below this.

    Returns:
        ``[P]`` x ≈ A⁻¹ b. Not meant to be differentiated.
    """
    if b.dim() != 1:
        raise InputError(f"b must be a flat vector [P], got shape {tuple(b.shape)}")
    if iters < 1:
        raise InputError(f"iters must be >= 1, got {iters}")
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot_r = torch.dot(r, r)
    # A handful of scalar reads per iteration: CG runs ~10 iterations once per update.
    for _ in range(iters):
        if r_dot_r.item() < residual_tol:
            break
        a_p = fvp(p)
        p_a_p = torch.dot(p, a_p)
        if not p_a_p.item() > 0:
            break  # A is not positive-definite along p (numerical breakdown): keep what we have
        alpha = r_dot_r / p_a_p
        x = x + alpha * p
        r = r - alpha * a_p
        new_r_dot_r = torch.dot(r, r)
        p = r + (new_r_dot_r / r_dot_r) * p
        r_dot_r = new_r_dot_r
    return x


def fisher_vector_product(
    mean_kl: Tensor, params: Sequence[Tensor], damping: float
) -> Callable[[Tensor], Tensor]:
    """Build v ↦ (F + λI) v from the mean KL divergence.

    F v = ∇θ ( (∇θ KL̄(θ_old, θ))ᵀ v ) at θ = θ_old,

    the Hessian-vector product of KL̄ = mean_s KL(π_old(·|s) ‖ πθ(·|s)). At θ = θ_old the KL's
    gradient vanishes and its Hessian equals the Fisher information matrix
    E_s E_{a~π}[∇ log π ∇ log πᵀ] (Kakade 2001; Schulman et al. 2015, Appendix C.1). The damping λ
    (Levenberg–Marquardt style) keeps the system well conditioned when the batch is small.

    The first backward pass (with ``create_graph=True``) is done here once; each call of the
    returned function costs one more backward pass through it.

    Args:
        mean_kl: scalar KL̄, differentiable in ``params``, evaluated at θ = θ_old (π_old detached).
        params: the policy parameters θ, in the order the flat vectors use.
        damping: λ ≥ 0.

    Returns:
        A function from ``[P]`` v to ``[P]`` (F + λI) v (detached).
    """
    if mean_kl.dim() != 0:
        raise InputError(f"mean_kl must be a scalar, got shape {tuple(mean_kl.shape)}")
    if not damping >= 0:
        raise InputError(f"damping must be >= 0, got {damping}")
    params = list(params)
    grads = torch.autograd.grad(mean_kl, params, create_graph=True)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])

    def fvp(v: Tensor) -> Tensor:
        if v.shape != flat_grad.shape:
            raise InputError(f"v has shape {tuple(v.shape)}, expected {tuple(flat_grad.shape)}")
        grad_v = torch.dot(flat_grad, v.detach())
        hvp = torch.autograd.grad(grad_v, params, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hvp]).detach() + damping * v

    return fvp


def natural_step(
    fvp: Callable[[Tensor], Tensor], gradient: Tensor, max_kl: float, cg_iters: int = 10,
    residual_tol: float = 1e-10,
) -> tuple[Tensor, Tensor]:
    """The largest natural-gradient step whose quadratic KL model equals ``max_kl``.

    s = F⁻¹ g (by :func:`conjugate_gradient`),   Δθ = sqrt( 2δ / (sᵀ F s) ) · s,

    so that ½ Δθᵀ F Δθ = δ (Schulman et al. 2015, Appendix C; the step of Kakade 2001 with a
    KL-scaled learning rate).

    Args:
        fvp: v ↦ F v, e.g. from :func:`fisher_vector_product`.
        gradient: ``[P]`` ascent direction g (minus the gradient of the surrogate loss).
        max_kl: δ > 0.
        cg_iters: conjugate-gradient iterations.
        residual_tol: conjugate-gradient tolerance.

    Returns:
        ``(step, expected_improvement)``: ``[P]`` Δθ and the scalar g·Δθ, the first-order
        predicted increase of the surrogate objective (decrease of the loss). A zero gradient
        gives a zero step.
    """
    if not max_kl > 0:
        raise InputError(f"max_kl must be > 0, got {max_kl}")
    direction = conjugate_gradient(fvp, gradient, cg_iters, residual_tol)
    shs = torch.dot(direction, fvp(direction))
    if not shs.item() > 0:
        zero = torch.zeros_like(gradient)
        return zero, torch.dot(gradient, zero)
    step = torch.sqrt(2.0 * max_kl / shs) * direction
    return step, torch.dot(gradient, step)


@dataclass(frozen=True)
class LineSearchResult:
    """What :func:`line_search` found.

    Attributes:
        params: ``[P]`` the accepted parameters (``x0`` itself when no step was accepted).
        step_fraction: the accepted fraction of the full step (0.0 when none was accepted).
        loss: the surrogate loss at ``params``.
        kl: the mean KL at ``params`` (0.0 when no step was accepted).
        accepted: whether a step was taken.
    """

    params: Tensor
    step_fraction: float
    loss: float
    kl: float
    accepted: bool


def line_search(
    evaluate: Callable[[Tensor], tuple[float, float]],
    x0: Tensor,
    full_step: Tensor,
    expected_improvement: float,
    max_kl: float,
    *,
    loss0: float | None = None,
    backtrack_iters: int = 10,
    backtrack_coef: float = 0.5,
    accept_ratio: float = 0.1,
) -> LineSearchResult:
    """Backtracking line search with TRPO's KL constraint and improvement check.

    Tries θ = x₀ + βᵏ Δθ for k = 0, 1, …, ``backtrack_iters`` − 1 and accepts the first with

        KL̄(θ_old, θ) ≤ δ,   L(x₀) − L(θ) > 0,   (L(x₀) − L(θ)) / (βᵏ · expected) ≥ accept_ratio,

    i.e. the exact constraint holds, the surrogate loss decreases, and by at least a fraction of
    what its linear model predicted (Schulman et al. 2015, Appendix C; the ratio test of the
    reference implementation). If no fraction passes it returns x₀: a step never worsens the
    surrogate and never leaves the trust region.

    Args:
        evaluate: θ ↦ (L(θ), KL̄(θ_old, θ)) for a flat ``[P]`` θ; called with no gradient needed.
        x0: ``[P]`` θ_old.
        full_step: ``[P]`` Δθ, e.g. from :func:`natural_step`.
        expected_improvement: g·Δθ, the first-order predicted decrease of L for the full step.
        max_kl: δ > 0.
        loss0: L(x₀) if already known (saves one evaluation).
        backtrack_iters: number of step fractions tried (≥ 1).
        backtrack_coef: β in (0, 1).
        accept_ratio: minimum ratio of actual to expected improvement (≥ 0).

    Returns:
        A :class:`LineSearchResult`.
    """
    if not max_kl > 0:
        raise InputError(f"max_kl must be > 0, got {max_kl}")
    if backtrack_iters < 1:
        raise InputError(f"backtrack_iters must be >= 1, got {backtrack_iters}")
    if not 0 < backtrack_coef < 1:
        raise InputError(f"backtrack_coef must lie in (0, 1), got {backtrack_coef}")
    if loss0 is None:
        loss0, _ = evaluate(x0)
    fraction = 1.0
    for _ in range(backtrack_iters):
        candidate = x0 + fraction * full_step
        loss, kl = evaluate(candidate)
        improvement = loss0 - loss
        expected = fraction * expected_improvement
        if (
            math.isfinite(loss)
            and math.isfinite(kl)
            and kl <= max_kl
            and improvement > 0
            and (expected <= 0 or improvement / expected >= accept_ratio)
        ):
            return LineSearchResult(candidate, fraction, loss, kl, True)
        fraction *= backtrack_coef
    return LineSearchResult(x0.clone(), 0.0, loss0, 0.0, False)
