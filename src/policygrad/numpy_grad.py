"""The actor-critic's training step in NumPy: losses and their gradients without autograd.

For the small networks of classic control (a few 64-wide layers) a training step costs mostly
per-operation overhead, not arithmetic: every torch operation goes through the dispatcher and
every differentiable one records an autograd node, about 5 to 10 µs each, against about 1 µs for
a NumPy operation. A PPO minibatch step of the [64, 64] actor-critic on a batch of 256 takes about
1.1 ms through autograd and about 0.45 ms here.

:class:`NumpyActorCritic` computes, for an :class:`~policygrad.policies.ActorCritic` with a
categorical or Gaussian actor and a tanh or ReLU activation, the three per-sample outputs every
loss of the library is built from,

    log π(a_b|s_b),  H(π(·|s_b)),  V(s_b),

and, given ∂L/∂ of each (``d_log_prob``, ``d_entropy``, ``d_value``, all ``[B]``), the gradient of
L with respect to every parameter by the chain rule written out:

* categorical:  ∂ log π(a)/∂z = onehot(a) − π,   ∂H/∂z_j = −π_j (log π_j + H),
* Gaussian:     ∂ log π(a)/∂μ = ε/σ,  ∂ log π(a)/∂ log σ = ε² − 1 with ε = (a − μ)/σ,  ∂H/∂ log σ = 1,
* each layer y = h Wᵀ + b:  ∂L/∂W = gᵀ h,  ∂L/∂b = Σ_b g,  ∂L/∂h = g W;  tanh' = 1 − tanh², relu' = [h > 0].

The gradients land in the parameters' ``.grad`` tensors (NumPy views of their memory). Parameters,
gradients and the optimiser's moments each live in one flat buffer, so that clipping and the Adam
or RMSprop step (:meth:`NumpyActorCritic.step`) are a few whole-vector NumPy operations; the
optimiser's state_dict and the checkpoints are those of the autograd path. The
loss-gradient helpers below are the derivatives of :mod:`policygrad.losses`' functions, with
torch's conventions at ties (``torch.minimum``/``torch.maximum`` split the gradient evenly,
``torch.clamp`` passes it on the closed interval). Tests compare every gradient with autograd.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np
import torch
from torch import Tensor

from policygrad.distributions import masked_fill_value
from policygrad.policies import _SDE_EPS, FlattenObservation

__all__ = [
    "NumpyActorCritic",
    "clipped_surrogate_grad",
    "importance_kl_grad",
    "value_loss_grad",
    "standardize",
    "mean",
    "all_finite",
]

_LOG_2PI = math.log(2.0 * math.pi)
_NETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MOMENTS = {"rmsprop": ("square_avg",), "adam": ("exp_avg", "exp_avg_sq")}
"""The optimiser state tensors shaped like a parameter, per KernelOptimizer kind."""


def _sources(policy: Any) -> list[Tensor]:
    tensors = [p[k] for net in (policy.actor.net, policy.critic.net) for p in net._param_dicts for k in ("weight", "bias")]
    if policy.action_kind == "continuous":
        tensors.append(policy.actor._parameters["log_std"])
    return tensors


class Forward:
    """What :meth:`NumpyActorCritic.forward` computed, kept for the backward pass."""

    __slots__ = ("x", "actor_hidden", "critic_hidden", "log_prob", "entropy", "value", "probs", "log_probs_all",
                 "phi2", "variance", "inv_std",
                 "onehot_rows", "actions", "mask", "eps")


class NumpyActorCritic:
    """An ActorCritic's forward and backward pass in NumPy, on views of its parameters.

    Build it with :meth:`of`, which returns None where the policy has no NumPy path (multi-discrete
    actions, an activation other than tanh/ReLU or different ones in actor and critic, parameters
    off the CPU or not floating point).
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.kind = policy.action_kind
        self.activation = policy.actor.net.activation
        self.params = _sources(policy)
        """The parameters: the actor's ``(W_1, b_1, ..., W_L, b_L)``, the critic's, then log σ (Gaussian)."""
        n_actor = 2 * len(policy.actor.net._param_dicts)
        n_critic = 2 * len(policy.critic.net._param_dicts)
        # Every parameter, gradient and optimiser moment lives in one flat buffer (the parameters
        # become views of it; their values and identities are kept), so that clipping and the
        # optimiser step are a few NumPy operations on whole vectors instead of a few per tensor.
        dtype = self.params[0].dtype
        self._spans = []
        offset = 0
        for p in self.params:
            self._spans.append((offset, offset + p.numel()))
            offset += p.numel()
        self.size = offset
        flat = torch.empty(offset, dtype=dtype)
        with torch.no_grad():
            for p, (a, b) in zip(self.params, self._spans):
                view = flat[a:b].view_as(p)
                view.copy_(p)
                p.data = view
        self.flat_params = flat.numpy()
        self._pointers = [p.data_ptr() for p in self.params]
        views = [p.detach().numpy() for p in self.params]
        self.actor_views = views[:n_actor]
        self.critic_views = views[n_actor : n_actor + n_critic]
        self.log_std_view = views[-1] if self.kind == "continuous" else None
        self.sde = bool(getattr(policy, "sde", False))
        """gSDE actor: log_std_view is L ``[H, D]`` and σ depends on the state."""
        flat_grads = torch.zeros(offset, dtype=dtype)
        self.grads = [flat_grads[a:b].view_as(p) for p, (a, b) in zip(self.params, self._spans)]
        """The gradient tensors handed to the parameters' ``.grad`` (views of one buffer, reused every step)."""
        self.grad_views = [g.numpy() for g in self.grads]
        self.flat_grads = flat_grads.numpy()
        self._scratch = np.empty(offset, dtype=self.flat_params.dtype)
        self._bound: tuple[Any, dict, np.ndarray, list[np.ndarray]] | None = None
        """(optimiser, its state dict, step counts, moments) while its state lives in the buffers."""
        self.dtype = self.actor_views[0].dtype
        self._ones = np.ones(0, dtype=self.dtype)  # 1ᵀ g sums a gradient over the batch
        if self.kind == "discrete":
            self.fill = self.dtype.type(masked_fill_value(self.params[0].dtype))

    @staticmethod
    def of(policy: Any) -> NumpyActorCritic | None:
        """The NumPy path of ``policy`` (cached per policy), or None where it has none."""
        net = _NETS.get(policy)
        if net is not None and net._current():
            return net
        if getattr(policy, "_fast_activation", None) is None or getattr(policy, "action_kind", None) not in (
            "discrete",
            "continuous",
        ):
            return None
        params = list(policy.parameters())
        if any(p.device.type != "cpu" or p.dtype not in (torch.float32, torch.float64) or p.dtype != params[0].dtype
               for p in params):
            return None
        net = _NETS[policy] = NumpyActorCritic(policy)
        return net

    def _current(self) -> bool:
        """Whether the policy's parameters are still the tensors viewed, in the same memory."""
        return all(p is q and p.data_ptr() == ptr for p, q, ptr in zip(_sources(self.policy), self.params, self._pointers))

    # --- data ------------------------------------------------------------------------------------

    def encode(self, observations: Tensor) -> np.ndarray:
        """Raw batch observations -> ``[B, obs_dim]`` C-contiguous array in the parameters' dtype."""
        if (  # already what the networks read (a rollout's observations): no trip through torch
            isinstance(observations, Tensor)
            and observations.dtype == self.params[0].dtype
            and observations.dim() == 2
            and observations.device.type == "cpu"
            and not observations.requires_grad
            and type(self.policy.encoder) is FlattenObservation
            and self.policy.encoder.shape == (observations.shape[1],)
        ):
            return np.ascontiguousarray(observations.numpy())
        with torch.no_grad():
            x = self.policy.preprocess(observations)
        return np.ascontiguousarray(x.numpy())

    # --- forward ---------------------------------------------------------------------------------

    def _mlp(self, x: np.ndarray, views: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        hidden = []
        h = x
        for i in range(0, len(views) - 2, 2):
            h = h @ views[i].T
            h += views[i + 1]
            if self.activation == "tanh":
                np.tanh(h, out=h)
            else:
                np.maximum(h, 0, out=h)
            hidden.append(h)
        out = h @ views[-2].T
        out += views[-1]
        return out, hidden

    def forward(self, x: np.ndarray, actions: np.ndarray, mask: np.ndarray | None = None) -> Forward:
        """log π(a|s), H(π(·|s)) and V(s), each ``[B]``, for encoded observations ``x [B, obs_dim]``.

        Args:
            x: ``[B, obs_dim]`` encoded observations.
            actions: ``[B]`` int (categorical) or ``[B, D]`` float (Gaussian) actions.
            mask: optional ``[B, A]`` bool action mask (categorical), True where allowed.
        """
        f = Forward()
        f.x, f.actions, f.mask = x, actions, mask
        out, f.actor_hidden = self._mlp(x, self.actor_views)
        value, f.critic_hidden = self._mlp(x, self.critic_views)
        f.value = value[:, 0]
        if self.kind == "discrete":
            if mask is not None:
                out = np.where(mask, out, self.fill)
            # (ufunc reductions: what the ndarray methods call, without their Python layer)
            z = out - np.maximum.reduce(out, axis=1, keepdims=True)
            e = np.exp(z)
            s = np.add.reduce(e, axis=1, keepdims=True)
            log_probs = z - np.log(s)  # log-softmax
            probs = np.exp(log_probs)
            rows = np.arange(len(x))
            f.onehot_rows = rows
            f.log_probs_all, f.probs = log_probs, probs
            f.log_prob = log_probs[rows, actions]
            f.entropy = -np.add.reduce(probs * log_probs, axis=1)
        elif self.sde:
            # gSDE: log σ(s) = ½ log(φ² exp(2L) + 1e-6), φ the actor's last hidden layer (a constant)
            phi2 = np.square(f.actor_hidden[-1])  # [B, H]
            variance = phi2 @ np.exp(2.0 * self.log_std_view)
            variance += self.dtype.type(_SDE_EPS)  # [B, D]
            log_std = 0.5 * np.log(variance)
            f.phi2, f.variance, f.inv_std = phi2, variance, np.exp(-log_std)
            f.eps = (actions - out) * f.inv_std
            log_std_sum = np.add.reduce(log_std, axis=1)  # [B]
            f.log_prob = -0.5 * np.add.reduce(np.square(f.eps), axis=1) - log_std_sum - 0.5 * _LOG_2PI * out.shape[1]
            f.entropy = log_std_sum + self.dtype.type(0.5 * (1.0 + _LOG_2PI) * out.shape[1])
        else:
            log_std = self.log_std_view
            eps = (actions - out) * np.exp(-log_std)
            f.eps = eps
            log_std_sum = np.add.reduce(log_std)
            constant = log_std_sum + 0.5 * _LOG_2PI * out.shape[1]
            f.log_prob = -0.5 * np.add.reduce(np.square(eps), axis=1) - constant
            entropy = log_std_sum + 0.5 * (1.0 + _LOG_2PI) * out.shape[1]
            f.entropy = np.full(len(x), entropy, dtype=self.dtype)
        return f

    # --- backward --------------------------------------------------------------------------------

    def _mlp_backward(self, g: np.ndarray, x: np.ndarray, views: list[np.ndarray], hidden: list[np.ndarray],
                      grads: list[np.ndarray]) -> None:
        ones = self._ones
        if len(ones) < len(g):
            ones = self._ones = np.ones(len(g), dtype=self.dtype)
        ones = ones[: len(g)]
        for layer in range(len(views) // 2 - 1, -1, -1):
            h_in = hidden[layer - 1] if layer > 0 else x
            np.matmul(g.T, h_in, out=grads[2 * layer])
            np.matmul(ones, g, out=grads[2 * layer + 1])  # Σ_b g: BLAS sums faster than np.sum here
            if layer > 0:
                g = g @ views[2 * layer]
                if self.activation == "tanh":
                    g *= 1 - h_in * h_in
                else:
                    g *= h_in > 0

    def backward(self, f: Forward, d_log_prob: np.ndarray, d_entropy: np.ndarray | None, d_value: np.ndarray | None) -> list[Tensor]:
        """Write ∂L/∂θ into the gradient tensors and hand them to the parameters' ``.grad``.

        Args:
            f: the forward pass.
            d_log_prob, d_entropy, d_value: ``[B]`` ∂L/∂ log π(a_b|s_b), ∂L/∂H_b, ∂L/∂V(s_b);
                None for a term that L does not contain.

        Returns:
            The gradient tensors, in the order of :attr:`params`.
        """
        n_actor = len(self.actor_views)
        grads = self.grad_views
        if self.kind == "discrete":
            # ∂L/∂z = d_lp (onehot − π) − d_H π (log π + H)
            weight = d_log_prob[:, None]
            g = -f.probs * weight
            g[f.onehot_rows, f.actions] += d_log_prob
            if d_entropy is not None:
                g -= f.probs * (f.log_probs_all + f.entropy[:, None]) * d_entropy[:, None]
            if f.mask is not None:
                g[~f.mask] = 0
        elif self.sde:
            g = f.eps * f.inv_std * d_log_prob[:, None]  # ∂L/∂μ
            # ∂L/∂ log σ_bd = d_lp (ε² − 1) + d_H, and ∂ log σ_bd/∂L_jd = φ_bj² exp(2L_jd) / σ_bd²
            d_sigma = d_log_prob[:, None] * (np.square(f.eps) - 1)
            if d_entropy is not None:
                d_sigma += d_entropy[:, None]
            d_sigma /= f.variance
            d_log_std = grads[-1]
            np.matmul(f.phi2.T, d_sigma.astype(self.dtype, copy=False), out=d_log_std)
            d_log_std *= np.exp(2.0 * self.log_std_view)
        else:
            inv_std = np.exp(-self.log_std_view)
            g = f.eps * inv_std * d_log_prob[:, None]  # ∂L/∂μ
            d_log_std = grads[-1]
            np.matmul(d_log_prob, np.square(f.eps) - 1, out=d_log_std)
            if d_entropy is not None:
                d_log_std += d_entropy.sum()
        self._mlp_backward(g.astype(self.dtype, copy=False), f.x, self.actor_views, f.actor_hidden, grads[:n_actor])
        n_critic = len(self.critic_views)
        critic_grads = grads[n_actor : n_actor + n_critic]
        if d_value is None:
            for g_c in critic_grads:
                g_c.fill(0)
        else:
            self._mlp_backward(d_value[:, None].astype(self.dtype, copy=False), f.x, self.critic_views,
                               f.critic_hidden, critic_grads)
        for p, grad in zip(self.params, self.grads):
            p.grad = grad
        return self.grads

    def clip_grads(self, max_norm: float | None) -> float:
        """The global 2-norm of the gradients; scales them to ``max_norm`` when larger (as
        ``torch.nn.utils.clip_grad_norm_``: g ← g · min(1, max_norm / (‖g‖ + 1e-6)))."""
        g = self.flat_grads
        total = math.sqrt(float(np.dot(g, g)))
        if max_norm is not None:
            scale = min(max_norm / (total + 1e-6), 1.0)
            if scale < 1.0:
                g *= self.dtype.type(scale)
        return total

    # --- the optimiser step ----------------------------------------------------------------------

    def step(self, optimizer: Any) -> None:
        """One step of ``optimizer`` with the gradients of :meth:`backward`.

        For the library's :class:`~policygrad.algorithms.base.KernelOptimizer` (Adam or RMSprop)
        the step runs in NumPy on flat buffers: its state tensors (moments and step counts) are
        moved into them once, as views, so its ``state_dict`` and checkpoints are unchanged. The
        arithmetic is torch's (RMSprop: v ← αv + (1 − α)g², θ ← θ − lr·g/(√v + ε); Adam: m ← m +
        (1 − β₁)(g − m), v ← β₂v + (1 − β₂)g², θ ← θ − lr/(1 − β₁ᵗ) · m/(√v/√(1 − β₂ᵗ) + ε)), equal
        up to float rounding. Any other optimiser takes its own ``step()``.
        """
        bound = self._bound
        # KernelOptimizer.load_state_dict (a resume) installs a new state dict: bind again.
        if bound is None or bound[0] is not optimizer or bound[1] is not optimizer.state:
            bound = self._bind(optimizer)
            if bound is None:
                optimizer.step()
                return
        _, _, steps, moments = bound
        group = optimizer.param_groups[0]
        steps += 1
        t = self.dtype.type
        g, p, tmp = self.flat_grads, self.flat_params, self._scratch
        lr, eps = group["lr"], group["eps"]
        if optimizer.kind == "rmsprop":
            (square_avg,) = moments
            alpha = group["alpha"]
            square_avg *= t(alpha)
            np.multiply(g, g, out=tmp)
            tmp *= t(1 - alpha)
            square_avg += tmp
            np.sqrt(square_avg, out=tmp)
            tmp += t(eps)
        else:
            exp_avg, exp_avg_sq = moments
            beta1, beta2 = group["betas"]
            np.subtract(g, exp_avg, out=tmp)
            tmp *= t(1 - beta1)
            exp_avg += tmp
            exp_avg_sq *= t(beta2)
            np.multiply(g, g, out=tmp)
            tmp *= t(1 - beta2)
            exp_avg_sq += tmp
            step = float(steps[0])
            np.sqrt(exp_avg_sq, out=tmp)
            tmp *= t(1.0 / math.sqrt(1 - beta2**step))
            tmp += t(eps)
            lr = lr / (1 - beta1**step)
            g = exp_avg
        np.divide(g, tmp, out=tmp)
        tmp *= t(lr)
        p -= tmp

    def _bind(self, optimizer: Any) -> tuple[Any, dict, np.ndarray, list[np.ndarray]] | None:
        """Move ``optimizer``'s state for :attr:`params` into flat buffers; None where the NumPy
        step does not apply (another optimiser, other parameters, options it does not implement,
        or unequal step counts)."""
        from policygrad.algorithms.base import KernelOptimizer

        self._bound = None
        if type(optimizer) is not KernelOptimizer or len(optimizer.param_groups) != 1:
            return None
        group = optimizer.param_groups[0]
        if {id(p) for p in group["params"]} != {id(p) for p in self.params} or len(group["params"]) != len(self.params):
            return None
        if group.get("weight_decay") or group.get("maximize") or group.get("amsgrad") or group.get("momentum") or group.get("centered"):
            return None
        names = _MOMENTS[optimizer.kind]
        state = optimizer.state
        for p in self.params:
            if p not in state:
                state[p] = optimizer._new_state(p)
        counts = [state[p]["step"] for p in self.params]
        if any(c.shape != () or c.device.type != "cpu" or float(c) != float(counts[0]) for c in counts):
            return None
        steps = torch.stack([c.detach().clone() for c in counts])
        buffers = {name: torch.empty(self.size, dtype=self.params[0].dtype) for name in names}
        for i, (p, (a, b)) in enumerate(zip(self.params, self._spans)):
            entry = state[p]
            for name in names:
                view = buffers[name][a:b].view_as(p)
                view.copy_(entry[name])
                entry[name] = view
            entry["step"] = steps[i]
        self._bound = (optimizer, state, steps.numpy(), [buffers[name].numpy() for name in names])
        return self._bound


# --- the derivatives of policygrad.losses ----------------------------------------------------------


def mean(x: np.ndarray) -> np.floating:
    """``x.mean()`` of a 1-D array, bit for bit (the same pairwise sum, then one division in x's
    dtype), without the Python layer of ``ndarray.mean`` (about 5 µs against 1 µs)."""
    return np.add.reduce(x) / x.size


def all_finite(a: np.ndarray) -> bool:
    """``np.isfinite(a).all()``, tested first on one float64 sum: a finite sum means finite
    elements (float32 data cannot overflow it), and only a sum that is not finite needs the
    elementwise test. One reduction instead of two calls on the hot path."""
    return math.isfinite(np.add.reduce(a, axis=None, dtype=np.float64)) or bool(np.isfinite(a).all())


def standardize(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(x − mean) / (std + eps) with the unbiased std, as ``policygrad.algorithms.base.standardize``
    (the arithmetic of ``x.std(ddof=1)``, without its Python layer)."""
    centred = x - mean(x)
    if len(x) < 2:
        return centred
    std = np.sqrt(np.add.reduce(centred * centred) / (len(x) - 1))
    return centred / (std + x.dtype.type(eps))


def clipped_surrogate_grad(log_prob: np.ndarray, old_log_prob: np.ndarray, advantages: np.ndarray,
                           clip_eps: float) -> tuple[float, np.ndarray, np.ndarray]:
    """``(loss, ∂loss/∂ log π [B], ratio [B])`` of :func:`policygrad.losses.clipped_surrogate`.

    L = −mean min(ρA, clip(ρ, 1 − ε, 1 + ε) A): the unclipped term's gradient is −ρA/B where it is
    the smaller one, the clipped term's −ρA/B where it is the smaller one and ρ lies in
    [1 − ε, 1 + ε] (zero outside), each halved at a tie. Inside the interval the two terms are
    the same number, a tie whose halves add up to −ρA/B; outside, only the unclipped term can
    carry the gradient, where it is the smaller one (a tie there needs A = 0, whose gradient is 0
    either way). So the weight of −ρA/B is [ρ inside] ∨ [ρA < clip(ρ)A].
    """
    dtype = log_prob.dtype.type
    low, high = dtype(1.0 - clip_eps), dtype(1.0 + clip_eps)
    ratio = np.exp(log_prob - old_log_prob)
    unclipped = ratio * advantages
    clipped = np.minimum(np.maximum(ratio, low), high) * advantages  # np.clip's values, without its wrapper
    smaller = np.minimum(unclipped, clipped)
    d = unclipped * ((ratio >= low) & (ratio <= high) | (unclipped < clipped))
    d *= dtype(-1.0 / len(log_prob))
    return -float(mean(smaller)), d, ratio


def importance_kl_grad(log_prob: np.ndarray, old_log_prob: np.ndarray, advantages: np.ndarray,
                       beta: float) -> tuple[float, np.ndarray, np.ndarray]:
    """``(loss, ∂loss/∂ log π, ratio)`` of importance_surrogate + kl_penalty:
    L = −mean ρA + β mean(ρ − 1 − log ρ), ∂L/∂ log π = (−ρA + β(ρ − 1)) / B."""
    dtype = log_prob.dtype.type
    log_ratio = log_prob - old_log_prob
    ratio = np.exp(log_ratio)
    loss = -float(mean(ratio * advantages)) + beta * float(mean(np.expm1(log_ratio) - log_ratio))
    d = (ratio * advantages - dtype(beta) * (ratio - 1)) * dtype(-1.0 / len(log_prob))
    return loss, d, ratio


def value_loss_grad(values: np.ndarray, returns: np.ndarray, old_values: np.ndarray | None = None,
                    clip_eps: float | None = None) -> tuple[float, np.ndarray]:
    """``(loss, ∂loss/∂V [B])`` of :func:`policygrad.losses.value_loss`:
    L = ½ mean (V − R)², ∂L/∂V = (V − R)/B; with clipping the larger of the two squared errors
    carries the gradient (the clipped one only while V − V_old lies in [−ε, ε]), halved at a tie."""
    dtype = values.dtype.type
    n = len(values)
    error = values - returns
    squared = error * error
    if clip_eps is None:
        return 0.5 * float(mean(squared)), error * dtype(1.0 / n)
    delta = values - old_values
    clipped_error = old_values + np.clip(delta, dtype(-clip_eps), dtype(clip_eps)) - returns
    clipped_squared = clipped_error * clipped_error
    inside = (delta >= dtype(-clip_eps)) & (delta <= dtype(clip_eps))
    tie = squared == clipped_squared
    w_plain = np.where(tie, 0.5, squared > clipped_squared).astype(values.dtype)
    w_clipped = np.where(tie, 0.5, clipped_squared > squared).astype(values.dtype) * inside
    d = (error * w_plain + clipped_error * w_clipped) * dtype(1.0 / n)
    return 0.5 * float(mean(np.maximum(squared, clipped_squared))), d
