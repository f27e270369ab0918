"""Action distributions on plain tensor operations: masked categorical, diagonal Gaussian,
independent categoricals for multi-discrete actions, and independent Bernoullis for multi-binary
actions.

Each distribution is immutable: it is built from its parameters and every method is a pure function
of them, so there is no "call X first" state. The classes do no argument validation beyond shape
checks at the boundary (``torch.distributions`` validates and broadcasts on every call, which costs
more than the arithmetic at rollout batch sizes).

Symbols and shapes:

| symbol | shape | meaning |
|---|---|---|
| ``[...]`` | batch shape | e.g. ``[N]`` during a rollout, ``[T, N]`` or ``[B]`` |
| A | int | number of actions of a categorical |
| D | int | action dimension of a Gaussian |
| z | ``[..., A]`` | logits; log π(a) = z_a − log Σ_b exp z_b |
| μ, log σ | ``[..., D]``, ``[D]`` | mean and log standard deviation of a Gaussian |
| K | int | number of bits of a multi-binary action |

NumPy kernels. Beside each distribution are the kernels the NumPy backend
(``policygrad.backends.numpy``) runs instead of autograd, one per formula: its per-sample
log π(a|s) and entropy from the network's output, their derivatives with respect to that output
(by the chain rule written out), and acting (a draw and its log-probability). They take torch's
random draws from the same generator, so a seed draws the same noise on either backend. The tests
compare each with the torch distribution above it and with autograd.

Every ``log_prob`` is differentiable with respect to the parameters; its gradient is the score
∇θ log πθ(a|s) when the parameters are network outputs. ``sample`` returns actions detached from
the graph (the score-function estimator treats actions as constants); ``DiagGaussian.rsample`` is
the reparameterised draw for estimators that differentiate through the action.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from policygrad.errors import InputError

__all__ = [
    "Categorical",
    "DiagGaussian",
    "MultiCategorical",
    "Bernoulli",
    "masked_fill_value",
    "SDE_EPS",
    "gsde_log_std",
    "categorical_terms_np",
    "categorical_backward_np",
    "categorical_act_np",
    "gaussian_terms_np",
    "gaussian_backward_np",
    "gaussian_act_np",
    "gsde_terms_np",
    "gsde_backward_np",
    "gsde_act_np",
]

_LOG_2PI = math.log(2.0 * math.pi)


@lru_cache(maxsize=None)
def masked_fill_value(dtype: torch.dtype) -> float:
    """The finite logit given to masked-out actions: half the most negative value of ``dtype``.

    After log-softmax it stays finite (so ``0 · log π = 0`` in entropy and KL, never NaN) and its
    exponential is exactly 0, so a masked action has probability exactly 0.
    """
    return torch.finfo(dtype).min / 2


def _snapshot(dist: Any) -> Any:
    """A copy of ``dist`` whose tensors are detached *and cloned* (see ``DiagGaussian.snapshot``)."""
    copy = object.__new__(type(dist))
    for name in type(dist).__slots__:
        value = getattr(dist, name)
        if isinstance(value, Tensor):
            value = value.detach().clone()
        elif hasattr(value, "snapshot"):
            value = value.snapshot()
        setattr(copy, name, value)
    return copy


def _check_floating(name: str, x: Tensor) -> None:
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_actions(actions: Tensor, shape: torch.Size, what: str) -> Tensor:
    """Integer actions of exactly ``shape``, as ``long`` (a no-op when they already are)."""
    if actions.shape != shape:
        raise InputError(f"{what} actions have shape {tuple(actions.shape)}, expected {tuple(shape)}")
    if actions.is_floating_point() or actions.is_complex() or actions.dtype == torch.bool:
        raise InputError(f"{what} actions must be an integer tensor, got dtype {actions.dtype}")
    return actions.long()


def _argmax_race(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """``[..., 1]`` one draw per row of ``probs [..., A]``: argmax_a π(a) / E_a, E_a ~ Exp(1) i.i.d.

    This is the Gumbel-max trick in exponential form (argmax log π(a) − log E_a), under half the cost of
    ``torch.multinomial`` at rollout sizes. An action with π(a) = 0 scores 0 and never
    wins, because every row has an action with π(a) > 0 and every E_a > 0 (the clamp guards against
    a generator that returns an exact 0, which would turn 0 / 0 into NaN).
    """
    race = torch.empty_like(probs).exponential_(generator=generator)
    race.clamp_min_(torch.finfo(race.dtype).tiny)
    torch.div(probs, race, out=race)
    return race.argmax(-1, keepdim=True)


class Categorical:
    """A categorical distribution over A actions, with an optional action mask.

    π(a) = exp(z_a) / Σ_b exp(z_b) over the allowed actions; a masked-out action gets the finite
    logit :func:`masked_fill_value`, hence probability exactly 0 and a huge negative (finite)
    log-probability, so entropy and KL stay finite.

    Args:
        logits: ``[..., A]`` unnormalised log-probabilities z (floating point).
        mask: ``[..., A]`` bool, True where the action is allowed; every row must allow at least
            one action. None allows all actions.

    Raises:
        InputError: logits not floating point or without an action dimension, a mask of another
            shape or dtype, or a mask row with no allowed action.
    """

    __slots__ = ("_log_probs",)

    def __init__(self, logits: Tensor, mask: Tensor | None = None) -> None:
        _check_floating("logits", logits)
        if logits.dim() == 0:
            raise InputError("logits must have an action dimension [..., A], got a scalar")
        if mask is not None:
            if mask.dtype != torch.bool:
                raise InputError(f"action mask must be a bool tensor, got dtype {mask.dtype}")
            if mask.shape != logits.shape:
                raise InputError(
                    f"action mask has shape {tuple(mask.shape)}, expected {tuple(logits.shape)} like the logits"
                )
            if not bool(mask.any(-1).all()):
                raise InputError("action mask allows no action in some row; every row needs at least one True")
            logits = logits.masked_fill(~mask, masked_fill_value(logits.dtype))
        self._log_probs = torch.log_softmax(logits, dim=-1)  # [..., A]

    @property
    def logits(self) -> Tensor:
        """``[..., A]`` normalised log-probabilities log π(a) (log-softmax of the input logits)."""
        return self._log_probs

    @property
    def probs(self) -> Tensor:
        """``[..., A]`` probabilities π(a); exactly 0 for masked actions."""
        return self._log_probs.exp()

    @property
    def batch_shape(self) -> torch.Size:
        """The batch shape ``[...]``."""
        return self._log_probs.shape[:-1]

    @property
    def num_actions(self) -> int:
        """A, the number of actions (masked ones included)."""
        return self._log_probs.shape[-1]

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw a ~ π, one per batch element.

        Args:
            generator: the random-number generator; None uses torch's global one.

        Returns:
            ``[...]`` long actions; never a masked action. Not differentiable.
        """
        return _argmax_race(self._log_probs.detach().exp(), generator).squeeze(-1)

    def sample_and_log_prob(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``a ~ π`` and ``log π(a)`` in one call (the rollout's path).

        Returns:
            ``([...] long actions, [...] log π(a))``; the log-probability is differentiable.
        """
        index = _argmax_race(self._log_probs.detach().exp(), generator)  # [..., 1]
        return index.squeeze(-1), self._log_probs.gather(-1, index).squeeze(-1)

    def log_prob(self, actions: Tensor) -> Tensor:
        """log π(a) = z_a − log Σ_b exp z_b.

        Args:
            actions: ``[...]`` integer actions in [0, A).

        Returns:
            ``[...]`` log-probabilities; the gradient wrt the logits is onehot(a) − π (the score).
        """
        actions = _check_actions(actions, self.batch_shape, "categorical")
        return self._log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        """H(π) = −Σ_a π(a) log π(a); masked actions contribute exactly 0.

        Returns:
            ``[...]`` entropies in nats.
        """
        return -(self._log_probs.exp() * self._log_probs).sum(-1)

    def mode(self) -> Tensor:
        """``[...]`` long: argmax_a π(a) (the lowest index on ties); never a masked action."""
        return self._log_probs.argmax(-1)

    def snapshot(self) -> Categorical:
        """This distribution frozen, its tensors detached and copied (see :meth:`DiagGaussian.snapshot`)."""
        return _snapshot(self)

    def kl(self, other: Categorical) -> Tensor:
        """KL(self ‖ other) = Σ_a π(a) (log π(a) − log π'(a)).

        Args:
            other: a categorical with the same ``[..., A]`` shape.

        Returns:
            ``[...]`` KL divergences ≥ 0. An action allowed here but masked in ``other`` gives a
            huge (or infinite) value, the finite stand-in for KL = ∞.
        """
        if not isinstance(other, Categorical):
            raise InputError(f"kl needs another Categorical, got {type(other).__name__}")
        if other._log_probs.shape != self._log_probs.shape:
            raise InputError(
                f"kl between categoricals of shapes {tuple(self._log_probs.shape)} "
                f"and {tuple(other._log_probs.shape)}"
            )
        return (self._log_probs.exp() * (self._log_probs - other._log_probs)).sum(-1)

    def __repr__(self) -> str:
        return f"Categorical(batch_shape={tuple(self.batch_shape)}, num_actions={self.num_actions})"


# --- Categorical: NumPy kernels ---------------------------------------------------------------

_TINY = np.finfo(np.float32).tiny


def _masked_logits_np(logits: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return logits
    if mask.shape != logits.shape or mask.dtype != np.bool_:
        raise InputError(f"action mask must be bool of shape {logits.shape}, got {mask.dtype} {mask.shape}")
    if np.logical_and.reduce(mask, axis=None):
        return logits
    if not np.logical_or.reduce(mask, axis=-1).all():
        raise InputError("action mask allows no action in some row; every row needs at least one True")
    return np.where(mask, logits, logits.dtype.type(masked_fill_value(torch.float32 if logits.dtype == np.float32 else torch.float64)))


def categorical_terms_np(logits: np.ndarray, actions: np.ndarray,
                         mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:class:`Categorical`'s log π(a) and H for ``logits [B, A]`` and int ``actions [B]``.

    Returns:
        ``(log_prob [B], entropy [B], log π [B, A], π [B, A])``; the last two are what
        :func:`categorical_backward_np` needs.
    """
    z = _masked_logits_np(logits, mask)
    # (ufunc reductions: what the ndarray methods call, without their Python layer)
    z = z - np.maximum.reduce(z, axis=1, keepdims=True)
    log_probs = z - np.log(np.add.reduce(np.exp(z), axis=1, keepdims=True))  # log-softmax
    probs = np.exp(log_probs)
    log_prob = log_probs[np.arange(len(z)), actions]
    entropy = -np.add.reduce(probs * log_probs, axis=1)
    return log_prob, entropy, log_probs, probs


def categorical_backward_np(log_probs: np.ndarray, probs: np.ndarray, entropy: np.ndarray, actions: np.ndarray,
                            mask: np.ndarray | None, d_log_prob: np.ndarray | None,
                            d_entropy: np.ndarray | None) -> np.ndarray:
    """``[B, A]`` ∂L/∂z from ∂L/∂ log π(a_b) and ∂L/∂H_b (either may be None: no such term):
    ∂ log π(a)/∂z = onehot(a) − π,  ∂H/∂z_j = −π_j (log π_j + H); masked logits get none."""
    g = np.zeros_like(probs)
    if d_log_prob is not None:
        g -= probs * d_log_prob[:, None]
        g[np.arange(len(g)), actions] += d_log_prob
    if d_entropy is not None:
        g -= probs * (log_probs + entropy[:, None]) * d_entropy[:, None]
    if mask is not None:
        g[~mask] = 0
    return g


def categorical_act_np(logits: np.ndarray, mask: np.ndarray | None = None, deterministic: bool = False,
                       generator: torch.Generator | None = None,
                       draws: Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(actions [N] int64, log π(a) [N])`` for ``logits [N, A]``: the mode, or a draw by
    :meth:`Categorical.sample`'s exponential race (the same torch draws). ``draws``: a float
    tensor of the logits' shape to draw into (reused between calls), or None."""
    z = _masked_logits_np(logits, mask)
    z = z - np.maximum.reduce(z, axis=-1, keepdims=True)
    p = np.exp(z)  # π up to the factor Σ_b exp z_b
    if deterministic:
        actions = z.argmax(-1)
    else:
        if draws is None or tuple(draws.shape) != z.shape:
            draws = torch.empty(z.shape, dtype=torch.float32 if z.dtype == np.float32 else torch.float64)
        draws = draws.exponential_(generator=generator).numpy()
        np.maximum(draws, _TINY, out=draws)
        np.divide(p, draws, out=draws)
        actions = draws.argmax(-1)
    log_prob = z[np.arange(len(z)), actions]
    log_prob -= np.log(np.add.reduce(p, axis=-1))
    return actions, log_prob


class DiagGaussian:
    """A Gaussian with diagonal covariance, N(μ, diag σ²), over ``D``-dimensional actions.

    log π(a) = −½ Σ_d ((a_d − μ_d) / σ_d)² − Σ_d log σ_d − (D / 2) log 2π.

    The log-probability is of the action as given: clipping a sample to the action bounds is the
    environment wrapper's job, and the stored action is the unclipped one.

    Args:
        mean: ``[..., D]`` means μ (floating point).
        log_std: ``[D]`` (state-independent, broadcast over the batch) or ``[..., D]`` log σ.

    Raises:
        InputError: non-floating inputs, or a ``log_std`` whose shape is neither ``[D]`` nor that of
            ``mean``.
    """

    __slots__ = ("_mean", "_log_std")

    def __init__(self, mean: Tensor, log_std: Tensor) -> None:
        _check_floating("mean", mean)
        _check_floating("log_std", log_std)
        if mean.dim() == 0:
            raise InputError("mean must have an action dimension [..., D], got a scalar")
        if log_std.shape != mean.shape[-1:] and log_std.shape != mean.shape:
            raise InputError(
                f"log_std has shape {tuple(log_std.shape)}, expected {tuple(mean.shape[-1:])} "
                f"or {tuple(mean.shape)} for mean of shape {tuple(mean.shape)}"
            )
        self._mean = mean
        self._log_std = log_std

    @property
    def mean(self) -> Tensor:
        """``[..., D]`` the mean μ."""
        return self._mean

    @property
    def log_std(self) -> Tensor:
        """``[D]`` or ``[..., D]`` log σ, as given."""
        return self._log_std

    @property
    def std(self) -> Tensor:
        """``[D]`` or ``[..., D]`` σ = exp(log σ)."""
        return self._log_std.exp()

    @property
    def batch_shape(self) -> torch.Size:
        """The batch shape ``[...]``."""
        return self._mean.shape[:-1]

    @property
    def action_dim(self) -> int:
        """D, the action dimension."""
        return self._mean.shape[-1]

    def _sum_log_std(self) -> Tensor:
        # [] for a state-independent log σ, [...] otherwise; broadcasts against [...]
        return self._log_std.sum(-1)

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised draw a = μ + σ ⊙ ε, ε ~ N(0, I); differentiable wrt μ and log σ.

        Returns:
            ``[..., D]`` actions.
        """
        eps = torch.randn(self._mean.shape, generator=generator, dtype=self._mean.dtype, device=self._mean.device)
        return torch.addcmul(self._mean, self._log_std.exp(), eps)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw a ~ N(μ, diag σ²), detached from the graph.

        Args:
            generator: the random-number generator; None uses torch's global one.

        Returns:
            ``[..., D]`` actions (not clipped to any bounds).
        """
        return self.rsample(generator).detach()

    def sample_and_log_prob(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``a ~ π`` (detached) and ``log π(a)`` in one call (the rollout's path).

        Returns:
            ``([..., D] actions, [...] log π(a))``; the log-probability is that of the detached
            action, differentiable wrt μ and log σ exactly as :meth:`log_prob`.
        """
        mean, log_std = self._mean, self._log_std
        if torch.is_grad_enabled() and (mean.requires_grad or log_std.requires_grad):
            actions = self.sample(generator)
            return actions, self.log_prob(actions)
        # Without a graph, (a − μ)/σ = ε saves the subtraction, division and second exp.
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        actions = torch.addcmul(mean, log_std.exp(), eps)
        log_prob = eps.square_().sum(-1).mul_(-0.5).sub_(self._sum_log_std()).sub_(0.5 * _LOG_2PI * self.action_dim)
        return actions, log_prob

    def log_prob(self, actions: Tensor) -> Tensor:
        """log π(a) = −½ Σ_d ((a_d − μ_d)/σ_d)² − Σ_d log σ_d − (D/2) log 2π.

        Args:
            actions: ``[..., D]`` actions (the unclipped samples).

        Returns:
            ``[...]`` log-densities; their gradient wrt μ is (a − μ)/σ² and wrt log σ is
            (a − μ)²/σ² − 1 (the score).
        """
        if actions.shape != self._mean.shape:
            raise InputError(
                f"Gaussian actions have shape {tuple(actions.shape)}, expected {tuple(self._mean.shape)}"
            )
        z = (actions - self._mean) * torch.exp(-self._log_std)  # [..., D]
        return -0.5 * z.square().sum(-1) - self._sum_log_std() - 0.5 * _LOG_2PI * self.action_dim

    def entropy(self) -> Tensor:
        """H = Σ_d log σ_d + (D/2)(1 + log 2π).

        Returns:
            ``[...]`` entropies in nats (broadcast over the batch for a state-independent σ).
        """
        h = self._sum_log_std() + 0.5 * (1.0 + _LOG_2PI) * self.action_dim
        return h.expand(self.batch_shape)

    def mode(self) -> Tensor:
        """``[..., D]``: the mean μ."""
        return self._mean

    def snapshot(self) -> DiagGaussian:
        """This distribution frozen: its tensors detached from autograd and copied out of the storage
        they share with parameters, so that changing a parameter in place later leaves it unchanged.

        A trust-region step needs this for π_old. A parameter used as it is (the state-independent
        log σ of :class:`DiagGaussian`) is shared by a distribution built under ``torch.no_grad()``,
        and would make KL(π_old ‖ πθ) blind to it.
        """
        return _snapshot(self)

    def kl(self, other: DiagGaussian) -> Tensor:
        """KL(self ‖ other) = Σ_d [log(σ'_d/σ_d) + (σ_d² + (μ_d − μ'_d)²) / (2σ'_d²) − ½].

        Args:
            other: a Gaussian with the same mean shape.

        Returns:
            ``[...]`` KL divergences ≥ 0.
        """
        if not isinstance(other, DiagGaussian):
            raise InputError(f"kl needs another DiagGaussian, got {type(other).__name__}")
        if other._mean.shape != self._mean.shape:
            raise InputError(
                f"kl between Gaussians of mean shapes {tuple(self._mean.shape)} and {tuple(other._mean.shape)}"
            )
        log_ratio = other._log_std - self._log_std  # log(σ'/σ)
        inv_var_other = torch.exp(-2.0 * other._log_std)
        var_ratio = torch.exp(-2.0 * log_ratio)  # σ²/σ'²
        kl = log_ratio + 0.5 * (var_ratio + (self._mean - other._mean).square() * inv_var_other) - 0.5
        return kl.sum(-1)

    def __repr__(self) -> str:
        return f"DiagGaussian(batch_shape={tuple(self.batch_shape)}, action_dim={self.action_dim})"




# --- DiagGaussian: NumPy kernels (state-independent log σ) -----------------------------------


def gaussian_terms_np(mean: np.ndarray, log_std: np.ndarray,
                      actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:class:`DiagGaussian`'s log π(a) and H for ``mean [B, D]`` and ``log_std [D]``.

    Returns:
        ``(log_prob [B], entropy [B], ε [B, D])`` with ε = (a − μ)/σ (for the backward pass).
    """
    eps = (actions - mean) * np.exp(-log_std)
    log_std_sum = np.add.reduce(log_std)
    log_prob = -0.5 * np.add.reduce(np.square(eps), axis=1) - (log_std_sum + 0.5 * _LOG_2PI * mean.shape[1])
    entropy = np.full(len(mean), log_std_sum + 0.5 * (1.0 + _LOG_2PI) * mean.shape[1], dtype=mean.dtype)
    return log_prob, entropy, eps


def gaussian_backward_np(eps: np.ndarray, log_std: np.ndarray, d_log_prob: np.ndarray | None,
                         d_entropy: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(∂L/∂μ [B, D], ∂L/∂ log σ [D])``: ∂ log π/∂μ = ε/σ, ∂ log π/∂ log σ = ε² − 1, ∂H/∂ log σ = 1."""
    if d_log_prob is not None:
        d_mean = eps * np.exp(-log_std) * d_log_prob[:, None]
        d_log_std = d_log_prob @ (np.square(eps) - 1)
    else:
        d_mean, d_log_std = np.zeros_like(eps), np.zeros_like(log_std)
    if d_entropy is not None:
        d_log_std += d_entropy.sum()
    return d_mean, d_log_std


def gaussian_act_np(mean: np.ndarray, log_std: np.ndarray, deterministic: bool = False,
                    generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(actions [N, D], log π(a) [N])``: μ, or μ + σε with :meth:`DiagGaussian.sample`'s torch draw ε."""
    constant = float(np.add.reduce(log_std)) + 0.5 * _LOG_2PI * mean.shape[1]
    if deterministic:
        return mean, np.full(len(mean), -constant, dtype=mean.dtype)
    eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32 if mean.dtype == np.float32 else torch.float64).numpy()
    actions = mean + np.exp(log_std) * eps
    log_prob = np.add.reduce(np.square(eps), axis=-1)
    log_prob *= -0.5
    log_prob -= constant
    return actions, log_prob.astype(mean.dtype, copy=False)


# --- gSDE: σ(s) from features, its torch formula and NumPy kernels ------------------------------

SDE_EPS = 1e-6
"""Added to σ(s)² under gSDE, so that σ stays positive where the features vanish."""


def gsde_log_std(features: Tensor, log_std: Tensor) -> Tensor:
    """gSDE's state-dependent log σ (Raffin et al. 2022): log σ(s) = ½ log(φ(s)² exp(2L) + 1e-6).

    Args:
        features: ``[..., H]`` φ(s), held constant (detached).
        log_std: ``[H, D]`` L.

    Returns:
        ``[..., D]`` log σ(s), differentiable in L.
    """
    variance = features.detach().square() @ torch.exp(2.0 * log_std)  # [..., D]
    return 0.5 * torch.log(variance + SDE_EPS)


def gsde_terms_np(mean: np.ndarray, features: np.ndarray, log_std: np.ndarray,
                  actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """log π(a) and H of N(μ, σ(s)²) with :func:`gsde_log_std`'s σ, for ``mean [B, D]``,
    ``features [B, H]`` and L ``[H, D]``.

    Returns:
        ``(log_prob [B], entropy [B], cache)``, the cache for :func:`gsde_backward_np`.
    """
    phi2 = np.square(features)  # [B, H]
    variance = phi2 @ np.exp(2.0 * log_std)
    variance += mean.dtype.type(SDE_EPS)  # [B, D]
    log_sigma = 0.5 * np.log(variance)
    inv_std = np.exp(-log_sigma)
    eps = (actions - mean) * inv_std
    log_sigma_sum = np.add.reduce(log_sigma, axis=1)  # [B]
    log_prob = -0.5 * np.add.reduce(np.square(eps), axis=1) - log_sigma_sum - 0.5 * _LOG_2PI * mean.shape[1]
    entropy = log_sigma_sum + mean.dtype.type(0.5 * (1.0 + _LOG_2PI) * mean.shape[1])
    return log_prob, entropy, (phi2, variance, inv_std, eps)


def gsde_backward_np(cache: tuple[np.ndarray, ...], log_std: np.ndarray, d_log_prob: np.ndarray | None,
                     d_entropy: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(∂L/∂μ [B, D], ∂L/∂L [H, D])``: ∂L/∂ log σ_bd = d_lp (ε² − 1) + d_H, and
    ∂ log σ_bd/∂L_jd = φ_bj² exp(2L_jd) / σ_bd²; no gradient reaches φ."""
    phi2, variance, inv_std, eps = cache
    if d_log_prob is not None:
        d_mean = eps * inv_std * d_log_prob[:, None]
        d_sigma = d_log_prob[:, None] * (np.square(eps) - 1)
        if d_entropy is not None:
            d_sigma += d_entropy[:, None]
    else:
        d_mean = np.zeros_like(eps)
        d_sigma = np.zeros_like(eps) if d_entropy is None else np.broadcast_to(d_entropy[:, None], eps.shape).copy()
    d_sigma /= variance
    d_log_std = phi2.T @ d_sigma.astype(phi2.dtype, copy=False)
    d_log_std *= np.exp(2.0 * log_std)
    return d_mean, d_log_std


def gsde_act_np(mean: np.ndarray, features: np.ndarray, log_std: np.ndarray, exploration: np.ndarray | None,
                deterministic: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(actions [N, D], log π(a) [N])``: μ, or μ + φ(s_i)ᵀM_i with the noise matrices
    ``exploration [N, H, D]``, and log N(a; μ, σ(s)²)."""
    log_sigma = np.log(np.square(features) @ np.exp(2.0 * log_std) + mean.dtype.type(SDE_EPS))
    log_sigma *= 0.5  # [N, D]
    log_prob = np.add.reduce(log_sigma, axis=-1)
    log_prob += 0.5 * _LOG_2PI * mean.shape[1]
    log_prob *= -1  # −Σ log σ − (D/2) log 2π
    if deterministic:
        return mean, log_prob
    noise = np.matmul(features[:, None, :], exploration)[:, 0, :]  # [N, D]
    z = noise * np.exp(-log_sigma)  # (a − μ)/σ
    log_prob -= 0.5 * np.add.reduce(np.square(z), axis=-1)
    return mean + noise, log_prob


@lru_cache(maxsize=64)
def _padding_index(nvec: tuple[int, ...], device: torch.device) -> Tensor:
    """``[K · max n]`` long: where slot (k, j) of the padded ``[K, max n]`` layout reads from the
    concatenated logits ``[Σ n]`` extended by one padding column at index Σ n (for j ≥ n_k)."""
    width, total, offset = max(nvec), sum(nvec), 0
    index = []
    for n in nvec:
        index.extend(range(offset, offset + n))
        index.extend([total] * (width - n))
        offset += n
    return torch.tensor(index, dtype=torch.long, device=device)


class MultiCategorical:
    """Independent categoricals over K sub-actions with n_1, ..., n_K choices (a MultiDiscrete space).

    π(a) = Π_k π_k(a_k), so log π(a) = Σ_k log π_k(a_k) and H(π) = Σ_k H(π_k).

    The K categoricals are held as one ``[..., K, max n]`` categorical, padding short rows with
    masked (probability-0) actions, so every method is a single tensor operation.

    Args:
        logits: ``[..., n_1 + ... + n_K]`` the sub-actions' logits, concatenated in order.
        nvec: the K numbers of choices n_k ≥ 1.
        mask: ``[..., n_1 + ... + n_K]`` bool, True where a sub-action's choice is allowed; every
            sub-action needs at least one. None allows all.

    Raises:
        InputError: an empty ``nvec`` or a non-positive n_k, logits (or mask) whose last dimension is
            not Σ n_k, or a sub-action with no allowed choice.
    """

    __slots__ = ("_nvec", "_inner")

    def __init__(self, logits: Tensor, nvec: Sequence[int], mask: Tensor | None = None) -> None:
        nvec = tuple(int(n) for n in nvec)
        if len(nvec) == 0 or min(nvec) < 1:
            raise InputError(f"nvec must be a non-empty sequence of positive integers, got {nvec}")
        _check_floating("logits", logits)
        total = sum(nvec)
        if logits.dim() == 0 or logits.shape[-1] != total:
            raise InputError(f"logits have shape {tuple(logits.shape)}, expected [..., {total}] for nvec {nvec}")
        if mask is not None and mask.shape != logits.shape:
            raise InputError(f"action mask has shape {tuple(mask.shape)}, expected {tuple(logits.shape)}")
        batch = logits.shape[:-1]
        width = max(nvec)
        if min(nvec) == width:  # equal sizes: a view, no padding
            logits = logits.reshape(*batch, len(nvec), width)
            if mask is not None:
                mask = mask.reshape(*batch, len(nvec), width)
        else:
            index = _padding_index(nvec, logits.device)  # [K · max n]
            padded = F.pad(logits, (0, 1), value=masked_fill_value(logits.dtype))  # [..., Σ n + 1]
            logits = padded.index_select(-1, index).view(*batch, len(nvec), width)
            if mask is not None:
                padded_mask = F.pad(mask, (0, 1), value=False)
                mask = padded_mask.index_select(-1, index).view(*batch, len(nvec), width)
        self._nvec = nvec
        self._inner = Categorical(logits, mask)  # [..., K, max n]

    @property
    def nvec(self) -> tuple[int, ...]:
        """(n_1, ..., n_K)."""
        return self._nvec

    @property
    def batch_shape(self) -> torch.Size:
        """The batch shape ``[...]``."""
        return self._inner.batch_shape[:-1]

    @property
    def logits(self) -> Tensor:
        """``[..., K, max n]`` normalised log-probabilities per sub-action (padding ≈ −∞)."""
        return self._inner.logits

    @property
    def probs(self) -> Tensor:
        """``[..., K, max n]`` probabilities per sub-action (exactly 0 in the padding)."""
        return self._inner.probs

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """``[..., K]`` long: a_k ~ π_k independently. Not differentiable."""
        return self._inner.sample(generator)

    def sample_and_log_prob(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``([..., K] long actions, [...] log π(a))`` in one call (the rollout's path)."""
        actions, log_prob = self._inner.sample_and_log_prob(generator)
        return actions, log_prob.sum(-1)

    def log_prob(self, actions: Tensor) -> Tensor:
        """log π(a) = Σ_k log π_k(a_k).

        Args:
            actions: ``[..., K]`` integer actions, a_k in [0, n_k).

        Returns:
            ``[...]`` log-probabilities.
        """
        actions = _check_actions(actions, self._inner.batch_shape, "multi-discrete")
        return self._inner._log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1).sum(-1)

    def entropy(self) -> Tensor:
        """``[...]``: H(π) = Σ_k H(π_k)."""
        return self._inner.entropy().sum(-1)

    def mode(self) -> Tensor:
        """``[..., K]`` long: the most likely choice of each sub-action."""
        return self._inner.mode()

    def snapshot(self) -> MultiCategorical:
        """This distribution frozen, its tensors detached and copied (see :meth:`DiagGaussian.snapshot`)."""
        return _snapshot(self)

    def kl(self, other: MultiCategorical) -> Tensor:
        """``[...]``: KL(self ‖ other) = Σ_k KL(π_k ‖ π'_k); ``other`` must have the same nvec."""
        if not isinstance(other, MultiCategorical):
            raise InputError(f"kl needs another MultiCategorical, got {type(other).__name__}")
        if other._nvec != self._nvec:
            raise InputError(f"kl between multi-categoricals with nvec {self._nvec} and {other._nvec}")
        return self._inner.kl(other._inner).sum(-1)

    def __repr__(self) -> str:
        return f"MultiCategorical(batch_shape={tuple(self.batch_shape)}, nvec={self._nvec})"


class Bernoulli:
    """Independent Bernoullis over K bits (a MultiBinary space).

    π(a) = Π_k p_k^{a_k} (1 − p_k)^{1 − a_k} with p_k = σ(z_k), so
    log π(a) = Σ_k a_k z_k − softplus(z_k) and the score with respect to the logits is
    ∇_z log π(a) = a − σ(z).

    Args:
        logits: ``[..., K]`` log-odds z (floating point).

    Raises:
        InputError: logits not floating point or without a bit dimension.
    """

    __slots__ = ("_logits",)

    def __init__(self, logits: Tensor) -> None:
        _check_floating("logits", logits)
        if logits.dim() == 0:
            raise InputError("logits must have a bit dimension [..., K], got a scalar")
        self._logits = logits  # [..., K]

    @property
    def logits(self) -> Tensor:
        """``[..., K]`` the log-odds z."""
        return self._logits

    @property
    def probs(self) -> Tensor:
        """``[..., K]`` p = σ(z), the probability of each bit being 1."""
        return torch.sigmoid(self._logits)

    @property
    def batch_shape(self) -> torch.Size:
        """The batch shape ``[...]``."""
        return self._logits.shape[:-1]

    @property
    def num_bits(self) -> int:
        """K."""
        return self._logits.shape[-1]

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """``[..., K]`` long bits: a_k = [u_k < p_k], u_k ~ U(0, 1). Not differentiable."""
        p = torch.sigmoid(self._logits.detach())
        u = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device)
        return (u < p).long()

    def sample_and_log_prob(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``([..., K] long actions, [...] log π(a))`` in one call (the rollout's path)."""
        actions = self.sample(generator)
        return actions, self.log_prob(actions)

    def log_prob(self, actions: Tensor) -> Tensor:
        """log π(a) = Σ_k a_k z_k − softplus(z_k).

        Args:
            actions: ``[..., K]`` integer bits in {0, 1}.

        Returns:
            ``[...]`` log-probabilities; the gradient wrt the logits is a − σ(z) (:meth:`score`).
        """
        actions = _check_actions(actions, self._logits.shape, "multi-binary")
        z = self._logits
        return (actions.to(z.dtype) * z - F.softplus(z)).sum(-1)

    def score(self, actions: Tensor) -> Tensor:
        """``[..., K]`` the analytic score ∇_z log π(a) = a − σ(z) (no autograd)."""
        actions = _check_actions(actions, self._logits.shape, "multi-binary")
        z = self._logits.detach()
        return actions.to(z.dtype) - torch.sigmoid(z)

    def entropy(self) -> Tensor:
        """``[...]``: H(π) = Σ_k softplus(z_k) − p_k z_k (= −p log p − (1 − p) log(1 − p))."""
        z = self._logits
        return (F.softplus(z) - torch.sigmoid(z) * z).sum(-1)

    def mode(self) -> Tensor:
        """``[..., K]`` long: a_k = [p_k > ½] (0 on ties)."""
        return (self._logits > 0).long()

    def snapshot(self) -> Bernoulli:
        """This distribution frozen, its tensors detached and copied (see :meth:`DiagGaussian.snapshot`)."""
        return _snapshot(self)

    def kl(self, other: Bernoulli) -> Tensor:
        """``[...]``: KL(self ‖ other) = Σ_k p_k (log p_k − log q_k) + (1 − p_k)(log(1 − p_k) − log(1 − q_k)).

        With log p = −softplus(−z) and log(1 − p) = −softplus(z), this is
        Σ_k p_k (z_k − z'_k) + softplus(z'_k) − softplus(z_k).
        """
        if not isinstance(other, Bernoulli):
            raise InputError(f"kl needs another Bernoulli, got {type(other).__name__}")
        if other._logits.shape != self._logits.shape:
            raise InputError(
                f"kl between Bernoullis of shapes {tuple(self._logits.shape)} and {tuple(other._logits.shape)}"
            )
        z, z_other = self._logits, other._logits
        return (torch.sigmoid(z) * (z - z_other) + F.softplus(z_other) - F.softplus(z)).sum(-1)

    def __repr__(self) -> str:
        return f"Bernoulli(batch_shape={tuple(self.batch_shape)}, num_bits={self.num_bits})"
