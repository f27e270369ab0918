"""The NumPy backend: the actor-critic's forward and backward pass with the chain rule written out.

For the small networks of classic control (a few 64-wide layers) a training step costs mostly
per-operation overhead, not arithmetic: every torch operation goes through the dispatcher and
every differentiable one records an autograd node, about 5 to 10 µs each, against about 1 µs for
a NumPy operation. This backend computes, for an :class:`~policygrad.policies.ActorCritic` whose
actor and critic are tanh or ReLU MLPs with a categorical, Gaussian or gSDE head, the per-sample
log π(a|s), H and V, and, from a loss's derivatives with respect to them
(``policygrad.losses.DERIVATIVES``), the gradient of every parameter:

* the head's kernel (``policygrad.distributions``, beside each distribution) gives ∂L/∂(network output);
* each layer y = h Wᵀ + b:  ∂L/∂W = gᵀ h,  ∂L/∂b = Σ_b g,  ∂L/∂h = g W;  tanh' = 1 − tanh², relu' = [h > 0].

Parameters, gradients and the optimiser's moments each live in one flat buffer (the policy's
parameters become views of it, so the torch modules always see the current weights), so clipping
and the Adam or RMSprop step are a few whole-vector operations. The optimiser's ``state_dict`` is
``torch.optim``'s. Acting in rollouts runs the same :func:`mlp_forward` as training.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from policygrad.backends.base import Backend, PerSample, Term
from policygrad.distributions import (
    categorical_act_np,
    categorical_backward_np,
    categorical_terms_np,
    gaussian_act_np,
    gaussian_backward_np,
    gaussian_terms_np,
    gsde_act_np,
    gsde_backward_np,
    gsde_terms_np,
)
from policygrad.errors import InputError, TrainingError, shown
from policygrad.losses import DERIVATIVES

__all__ = ["NumpyBackend", "NumpyOptimizer", "unsupported_reason", "mlp_forward", "mlp_backward", "ACTIVATIONS"]

ACTIVATIONS = ("tanh", "relu")
"""The hidden activations this backend implements."""


def unsupported_reason(policy: Any) -> str | None:
    """Why the NumPy backend cannot train ``policy``, or None where it can."""
    from policygrad.policies import ActorCritic, MLPCategoricalPolicy, MLPGaussianPolicy, MLPGSDEPolicy

    if type(policy) is not ActorCritic:
        return f"the policy is a {type(policy).__name__}, not one of policygrad's MLP actor-critics"
    if policy.trunk is not None:
        return "its convolutional encoder of image observations (it runs MLPs only)"
    if type(policy.actor) not in (MLPCategoricalPolicy, MLPGaussianPolicy, MLPGSDEPolicy):
        return f"its {type(policy.actor).__name__} actor (the NumPy backend has categorical, Gaussian and gSDE heads)"
    activation = policy.actor.net.activation
    if activation not in ACTIVATIONS or policy.critic.net.activation != activation:
        names = sorted({activation, policy.critic.net.activation})
        return f"activation {', '.join(names)} (the NumPy backend implements tanh and relu, one for both networks)"
    params = list(policy.parameters())
    devices = {p.device.type for p in params}
    if devices != {"cpu"}:
        return f"parameters on {', '.join(sorted(devices))} (the NumPy backend runs on the CPU)"
    dtypes = {p.dtype for p in params}
    if len(dtypes) != 1 or not dtypes <= {torch.float32, torch.float64}:
        return f"parameter dtypes {', '.join(sorted(str(d) for d in dtypes))} (one of float32, float64 needed)"
    return None


# --- the MLP kernel: one forward, one backward ------------------------------------------------


def mlp_forward(x: np.ndarray, layers: Sequence[np.ndarray], activation: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """``x [B, in]`` through ``layers = (W_1, b_1, ..., W_L, b_L)`` (W ``[out, in]``); returns the
    output ``[B, out]`` and the hidden activations h_1..h_{L−1} that the backward pass needs."""
    hidden = []
    h = x
    for i in range(0, len(layers) - 2, 2):
        h = h @ layers[i].T
        h += layers[i + 1]
        if activation == "tanh":
            np.tanh(h, out=h)
        else:
            np.maximum(h, 0, out=h)
        hidden.append(h)
    out = h @ layers[-2].T
    out += layers[-1]
    return out, hidden


def mlp_backward(g: np.ndarray, x: np.ndarray, layers: Sequence[np.ndarray], hidden: list[np.ndarray],
                 activation: str, grads: Sequence[np.ndarray], ones: np.ndarray) -> None:
    """The chain rule of :func:`mlp_forward`: ``g [B, out]`` = ∂L/∂output -> ∂L/∂W, ∂L/∂b written
    into ``grads`` (arrays shaped like ``layers``); ``ones [B]`` sums over the batch."""
    for layer in range(len(layers) // 2 - 1, -1, -1):
        h_in = hidden[layer - 1] if layer > 0 else x
        np.matmul(g.T, h_in, out=grads[2 * layer])
        np.matmul(ones, g, out=grads[2 * layer + 1])  # Σ_b g: BLAS sums faster than np.sum here
        if layer > 0:
            g = g @ layers[2 * layer]
            if activation == "tanh":
                g *= 1 - h_in * h_in
            else:
                g *= h_in > 0


# --- the optimiser ------------------------------------------------------------------------------

_TORCH_OPTIMIZERS = {"adam": "Adam", "rmsprop": "RMSprop"}


def _torch_defaults(kind: str) -> dict[str, Any]:
    """The hyperparameter group ``torch.optim.Adam`` / ``RMSprop`` would hold (its constructor's
    defaults), so that state dicts are interchangeable. Read from the signature: constructing a
    torch.optim optimiser imports torch._dynamo (about a second), which this backend never needs."""
    import inspect

    cls = getattr(torch.optim, _TORCH_OPTIMIZERS[kind])
    return {name: param.default for name, param in inspect.signature(cls.__init__).parameters.items()
            if name not in ("self", "params") and param.default is not inspect.Parameter.empty}


class NumpyOptimizer:
    """Adam or RMSprop on flat buffers, with ``torch.optim``'s hyperparameters and state format.

    Adam (torch's arithmetic): m ← m + (1 − β₁)(g − m), v ← β₂v + (1 − β₂)g²,
    θ ← θ − lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + ε). RMSprop: v ← αv + (1 − α)g²,
    θ ← θ − lr · g/(√v + ε). Equal to ``torch.optim`` up to float rounding; :meth:`state_dict` and
    :meth:`load_state_dict` read and write ``torch.optim.Adam`` / ``RMSprop``'s state dicts.

    Args:
        kind: "adam" or "rmsprop".
        params: the parameters (views of ``flat_params``), in order.
        flat_params, flat_grads: the flat buffers.
        lr, eps: step size and ε.
    """

    def __init__(self, kind: str, params: list[Tensor], spans: list[tuple[int, int]], flat_params: np.ndarray,
                 flat_grads: np.ndarray, lr: float, eps: float) -> None:
        if kind not in _TORCH_OPTIMIZERS:
            raise InputError(f"unknown optimizer {shown(kind)}; valid: adam, rmsprop")
        self.kind = kind
        self.param_groups: list[dict[str, Any]] = [{**_torch_defaults(kind), "lr": lr, "eps": eps, "params": params}]
        self.state: dict[str, Any] = {}
        self._spans = spans
        self._params, self._grads = flat_params, flat_grads
        self._moments = {name: np.zeros_like(flat_params) for name in self._moment_names}
        self._scratch = np.empty_like(flat_params)
        self.steps = 0

    @property
    def _moment_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") if self.kind == "adam" else ("square_avg",)

    @property
    def state_keys(self) -> tuple[str, ...]:
        """The entries of each parameter's state in :meth:`state_dict` (once it has stepped)."""
        return ("step", *self._moment_names)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._grads.fill(0)

    def step(self) -> None:
        """One step with the gradients in the flat gradient buffer."""
        group = self.param_groups[0]
        self.steps += 1
        t = self._params.dtype.type
        g, p, tmp = self._grads, self._params, self._scratch
        lr, eps = group["lr"], group["eps"]
        if self.kind == "rmsprop":
            square_avg = self._moments["square_avg"]
            alpha = group["alpha"]
            square_avg *= t(alpha)
            np.multiply(g, g, out=tmp)
            tmp *= t(1 - alpha)
            square_avg += tmp
            np.sqrt(square_avg, out=tmp)
            tmp += t(eps)
        else:
            exp_avg, exp_avg_sq = self._moments["exp_avg"], self._moments["exp_avg_sq"]
            beta1, beta2 = group["betas"]
            np.subtract(g, exp_avg, out=tmp)
            tmp *= t(1 - beta1)
            exp_avg += tmp
            exp_avg_sq *= t(beta2)
            np.multiply(g, g, out=tmp)
            tmp *= t(1 - beta2)
            exp_avg_sq += tmp
            np.sqrt(exp_avg_sq, out=tmp)
            tmp *= t(1.0 / math.sqrt(1 - beta2**self.steps))
            tmp += t(eps)
            lr = lr / (1 - beta1**self.steps)
            g = exp_avg
        np.divide(g, tmp, out=tmp)
        tmp *= t(lr)
        p -= tmp

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim``'s: ``{"state": {i: {"step", moments...}}, "param_groups": [{..., "params": [i...]}]}``."""
        group = self.param_groups[0]
        params = group["params"]
        state: dict[int, dict[str, Tensor]] = {}
        if self.steps:
            for i, (p, (a, b)) in enumerate(zip(params, self._spans)):
                entry: dict[str, Tensor] = {"step": torch.tensor(float(self.steps), dtype=torch.float32)}
                for name in self._moment_names:
                    entry[name] = torch.from_numpy(self._moments[name][a:b].copy()).view_as(p)
                state[i] = entry
        return {"state": state, "param_groups": [{**{k: v for k, v in group.items() if k != "params"},
                                                   "params": list(range(len(params)))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (this class's or ``torch.optim``'s for the same optimiser).

        Raises:
            ValueError: another number of parameter groups or parameters, moments of other
                shapes, unequal step counts (this optimiser keeps one for all parameters), or a
                setting this optimiser does not implement (``weight_decay``, ``amsgrad``,
                ``momentum``, ...) away from torch's default.
        """
        groups = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(groups) != 1:
            raise ValueError("loaded state dict has a different number of parameter groups")
        if len(groups[0]["params"]) != len(params):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of optimizer's group")
        index = {key: i for i, key in enumerate(groups[0]["params"])}
        moments = {name: np.zeros_like(self._params) for name in self._moment_names}
        steps: set[float] = set()
        for key, entry in state_dict["state"].items():
            if key not in index:
                continue
            i = index[key]
            a, b = self._spans[i]
            steps.add(float(entry["step"]))
            for name in self._moment_names:
                value = entry[name]
                if not isinstance(value, Tensor) or value.numel() != b - a:
                    raise ValueError(f"state {name!r} of parameter {i} does not fit it")
                moments[name][a:b] = value.detach().reshape(-1).cpu().numpy()
        if len(steps) > 1:
            raise ValueError(f"unequal step counts {sorted(steps)} (the NumPy optimiser keeps one)")
        count = steps.pop() if steps else 0.0
        if not math.isfinite(count) or count != int(count) or count < 0:
            raise ValueError(f"bad step count {count}")
        hyper = {k: v for k, v in groups[0].items() if k != "params"}
        defaults = _torch_defaults(self.kind)
        implemented = ("lr", "eps", "betas") if self.kind == "adam" else ("lr", "eps", "alpha")
        for key, value in hyper.items():
            if key not in implemented and key in defaults and value != defaults[key]:
                raise ValueError(f"{key}={value!r}: the NumPy optimiser implements only {key}={defaults[key]!r}")
        self.param_groups = [{**self.param_groups[0], **hyper, "params": params}]
        self._moments, self.steps = moments, int(count)


# --- the backend -----------------------------------------------------------------------------------


class NumpyBackend(Backend):
    """The actor-critic's forward and backward pass in NumPy, on views of its parameters.

    Args:
        policy: an ActorCritic that :func:`unsupported_reason` accepts.
        optimizer: "adam" or "rmsprop"; None builds a backend for acting only.
        learning_rate, optim_eps: the optimiser's step size and ε.
        max_grad_norm: clip the global gradient norm to this (None: no clipping).
        reason: why this backend was chosen.

    Raises:
        InputError: the policy is not one this backend can run (the message says why).
    """

    name = "numpy"

    def __init__(self, policy: Any, optimizer: str | None = None, learning_rate: float = 3e-4,
                 optim_eps: float = 1e-5, max_grad_norm: float | None = None, reason: str = "") -> None:
        why = unsupported_reason(policy)
        if why is not None:
            raise InputError(f"backend=numpy cannot serve this run: {why}; use backend=torch or auto")
        super().__init__(policy, reason)
        self.max_grad_norm = max_grad_norm
        self.activation = policy.actor.net.activation
        self.kind = "gsde" if policy.sde else policy.action_kind  # "discrete", "continuous" or "gsde"
        actor_layers = [p[k] for p in policy.actor.net.layer_params for k in ("weight", "bias")]
        critic_layers = [p[k] for p in policy.critic.net.layer_params for k in ("weight", "bias")]
        self.params = actor_layers + critic_layers
        if self.kind != "discrete":
            self.params.append(policy.actor._parameters["log_std"])
        # One flat buffer for all parameters (they become views of it; their values and
        # identities are kept) and one for their gradients.
        dtype = self.params[0].dtype
        self._spans: list[tuple[int, int]] = []
        offset = 0
        for p in self.params:
            self._spans.append((offset, offset + p.numel()))
            offset += p.numel()
        flat = torch.empty(offset, dtype=dtype)
        with torch.no_grad():
            for p, (a, b) in zip(self.params, self._spans):
                view = flat[a:b].view_as(p)
                view.copy_(p)
                p.data = view
        self.flat_params = flat.numpy()
        self._pointers = [p.data_ptr() for p in self.params]
        flat_grads = torch.zeros(offset, dtype=dtype)
        self.grads = [flat_grads[a:b].view_as(p) for p, (a, b) in zip(self.params, self._spans)]
        """The gradient tensors (views of one buffer), handed to the parameters' ``.grad`` by :meth:`step`."""
        self.flat_grads = flat_grads.numpy()
        views = [p.detach().numpy() for p in self.params]
        grad_views = [g.numpy() for g in self.grads]
        n_actor, n_critic = len(actor_layers), len(critic_layers)
        self._actor, self._critic = views[:n_actor], views[n_actor : n_actor + n_critic]
        self._actor_grads, self._critic_grads = grad_views[:n_actor], grad_views[n_actor : n_actor + n_critic]
        self._log_std = views[-1] if self.kind != "discrete" else None
        self._log_std_grad = grad_views[-1] if self.kind != "discrete" else None
        self.dtype = self.flat_params.dtype
        self._ones = np.ones(0, dtype=self.dtype)
        self._last: tuple[Any, ...] | None = None  # what the last evaluate() computed, for step()
        self._steps = 0  # optimiser steps taken (the acting network copies the weights after each)
        self._fused, self._fused_copies, self._fused_at = self._fuse()
        self._draws: Tensor | None = None  # the categorical race's buffer, reused while acting
        if optimizer is not None:
            self.optimizer = NumpyOptimizer(optimizer, self.params, self._spans, self.flat_params, self.flat_grads,
                                            learning_rate, optim_eps)

    def _fuse(self) -> tuple[list[np.ndarray] | None, list[tuple[np.ndarray, np.ndarray]], int]:
        """The acting network: actor and critic as one MLP for :func:`mlp_forward`, its first layer
        both first layers stacked (both read the observation), each later one the two side by side
        on the diagonal (zeros elsewhere), so that its output is ``[actor output | V]``. Acting on a
        handful of environments costs per operation, and this halves the operations. None where
        the networks differ in depth (acting then runs the two separately)."""
        actor, critic = self._actor, self._critic
        if len(actor) != len(critic):
            return None, [], -1
        layers: list[np.ndarray] = []
        copies: list[tuple[np.ndarray, np.ndarray]] = []
        for i in range(0, len(actor), 2):
            (wa, ba), (wc, bc) = (actor[i], actor[i + 1]), (critic[i], critic[i + 1])
            rows, cols = wa.shape[0] + wc.shape[0], wa.shape[1] if i == 0 else wa.shape[1] + wc.shape[1]
            weight, bias = np.zeros((rows, cols), dtype=self.dtype), np.zeros(rows, dtype=self.dtype)
            critic_cols = slice(0, cols) if i == 0 else slice(wa.shape[1], cols)
            copies += [(weight[: wa.shape[0], : wa.shape[1]], wa), (weight[wa.shape[0] :, critic_cols], wc),
                       (bias[: wa.shape[0]], ba), (bias[wa.shape[0] :], bc)]
            layers += [weight, bias]
        return layers, copies, -1

    def prepare(self) -> None:
        """Bring acting up to date with the parameters, wherever they were changed (called by the
        collector before each rollout); raises if they were replaced."""
        self.check_current()
        for destination, source in self._fused_copies:
            np.copyto(destination, source)
        self._fused_at = self._steps

    def check_current(self) -> None:
        """Raise if the policy's parameters are no longer the tensors this backend views (they
        were replaced, e.g. by ``.to()`` or an assignment to ``.data``)."""
        if any(p.data_ptr() != ptr for p, ptr in zip(self.params, self._pointers)):
            raise TrainingError("the policy's parameters were replaced after the NumPy backend was built")

    # --- acting ------------------------------------------------------------------------------

    def _input(self, obs: np.ndarray) -> np.ndarray:
        return obs if obs.dtype == self.dtype else obs.astype(self.dtype)

    def act(self, obs: np.ndarray, action_mask: np.ndarray | None = None, deterministic: bool = False,
            generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = self._input(obs)
        if self._fused is not None:
            if self._fused_at != self._steps:  # the optimiser moved the weights
                self.prepare()
            joint, hidden = mlp_forward(x, self._fused, self.activation)
            out, value = joint[:, :-1], joint[:, -1]
            if hidden:  # φ for gSDE: the actor's part of the last hidden layer
                hidden = [hidden[-1][:, : self._actor[-2].shape[1]]]
        else:
            out, hidden = mlp_forward(x, self._actor, self.activation)
            value = mlp_forward(x, self._critic, self.activation)[0][:, 0]
        if self.kind == "discrete":
            draws = self._draws
            if draws is None or tuple(draws.shape) != out.shape:
                draws = self._draws = torch.empty(out.shape, dtype=self.params[0].dtype)
            actions, log_prob = categorical_act_np(out, action_mask, deterministic, generator, draws)
            return actions, log_prob, value
        if action_mask is not None:
            raise InputError("an action mask applies to discrete actions only, not to a Gaussian policy")
        if self.kind == "continuous":
            actions, log_prob = gaussian_act_np(out, self._log_std, deterministic, generator)
            return actions, log_prob, value
        actor = self.policy.actor
        if not deterministic and (actor.exploration is None or actor.exploration.shape[0] != len(x)):
            actor.reset_noise(len(x), generator)
        exploration = None if deterministic else actor.exploration.numpy()
        actions, log_prob = gsde_act_np(out, hidden[-1], self._log_std, exploration, deterministic)
        return actions, log_prob, value

    def value(self, obs: np.ndarray) -> np.ndarray:
        if self._fused is None:
            return mlp_forward(self._input(obs), self._critic, self.activation)[0][:, 0]
        if self._fused_at != self._steps:
            self.prepare()
        return mlp_forward(self._input(obs), self._fused, self.activation)[0][:, -1]  # as act() computes V

    # --- training --------------------------------------------------------------------------------

    def evaluate(self, observations: Tensor, actions: Tensor, action_masks: Tensor | None = None) -> PerSample:
        x = observations.numpy() if observations.dtype == self.params[0].dtype and not observations.requires_grad \
            else observations.detach().cpu().numpy().astype(self.dtype)
        x = np.ascontiguousarray(x)
        a = actions.numpy()
        mask = None if action_masks is None else action_masks.numpy()
        out, actor_hidden = mlp_forward(x, self._actor, self.activation)
        value, critic_hidden = mlp_forward(x, self._critic, self.activation)
        value = value[:, 0]
        if self.kind == "discrete":
            log_prob, entropy, *head = categorical_terms_np(out, a, mask)
        elif self.kind == "continuous":
            log_prob, entropy, *head = gaussian_terms_np(out, self._log_std, a)
        else:
            log_prob, entropy, head = gsde_terms_np(out, actor_hidden[-1], self._log_std, a)
        result = PerSample(torch.from_numpy(log_prob), torch.from_numpy(entropy), torch.from_numpy(value))
        self._last = (result, x, a, mask, actor_hidden, critic_hidden, log_prob, entropy, value, head)
        return result

    def step(self, terms: Sequence[Term], guard: Callable[[Any], None] | None = None) -> tuple[list[Any], Any]:
        if self._last is None:
            raise InputError("step() needs an evaluate() first")
        out, x, a, mask, actor_hidden, critic_hidden, log_prob, entropy, value, head = self._last
        derivatives: list[np.ndarray | None] = [None, None, None]  # ∂L/∂ log π, ∂L/∂H, ∂L/∂V
        arrays = (log_prob, entropy, value)
        values: list[float] = []
        total = 0.0
        for term in terms:
            first = term.args[0]
            slot = 0 if first is out.log_prob else 1 if first is out.entropy else 2 if first is out.value else -1
            if slot < 0:
                raise InputError(f"{term.loss.__name__}'s first argument must be a per-sample output of evaluate()")
            args = [arrays[slot]] + [v.numpy() if isinstance(v, Tensor) else v for v in term.args[1:]]
            loss, d = DERIVATIVES[term.loss](*args)
            if term.coef != 1.0:
                d *= d.dtype.type(term.coef)
            derivatives[slot] = d if derivatives[slot] is None else derivatives[slot] + d
            values.append(loss)
            total += term.coef * loss
        if guard is not None:
            guard(total)
        self._backward(x, a, mask, actor_hidden, critic_hidden, entropy, head, *derivatives)
        norm = self._clip()
        self.optimizer.step()
        self._steps += 1
        self._last = None
        return values, norm

    def _backward(self, x: np.ndarray, actions: np.ndarray, mask: np.ndarray | None, actor_hidden: list[np.ndarray],
                  critic_hidden: list[np.ndarray], entropy: np.ndarray, head: Any, d_log_prob: np.ndarray | None,
                  d_entropy: np.ndarray | None, d_value: np.ndarray | None) -> None:
        """∂L/∂θ into the flat gradient buffer (and the parameters' ``.grad``)."""
        if len(self._ones) < len(x):
            self._ones = np.ones(len(x), dtype=self.dtype)
        ones = self._ones[: len(x)]
        if self.kind == "discrete":
            log_probs, probs = head
            g = categorical_backward_np(log_probs, probs, entropy, actions, mask, d_log_prob, d_entropy)
        elif self.kind == "continuous":
            g, self._log_std_grad[...] = gaussian_backward_np(head[0], self._log_std, d_log_prob, d_entropy)
        else:
            g, self._log_std_grad[...] = gsde_backward_np(head, self._log_std, d_log_prob, d_entropy)
        mlp_backward(g.astype(self.dtype, copy=False), x, self._actor, actor_hidden, self.activation,
                     self._actor_grads, ones)
        if d_value is None:
            for grad in self._critic_grads:
                grad.fill(0)
        else:
            mlp_backward(d_value[:, None].astype(self.dtype, copy=False), x, self._critic, critic_hidden,
                         self.activation, self._critic_grads, ones)
        for p, grad in zip(self.params, self.grads):
            p.grad = grad

    def _clip(self) -> float:
        """The global 2-norm of the gradients; scales them to ``max_grad_norm`` when larger (as
        ``torch.nn.utils.clip_grad_norm_``: g ← g · min(1, max_norm / (‖g‖ + 1e-6)))."""
        g = self.flat_grads
        total = math.sqrt(float(np.dot(g, g)))
        if self.max_grad_norm is not None:
            scale = min(self.max_grad_norm / (total + 1e-6), 1.0)
            if scale < 1.0:
                g *= self.dtype.type(scale)
        return total
