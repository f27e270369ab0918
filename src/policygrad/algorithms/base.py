"""What every policy-gradient algorithm shares: the update's skeleton.

An update is

    rollout [T, N]  --weigh-->  Ψ [T, N], critic targets [T, N]   (policygrad.returns)
                    --flatten-->  Batch [B]                           (invalid steps dropped)
                    --optimise-->  surrogate loss, gradient step(s)   (policygrad.losses)

and an algorithm is a subclass that chooses :meth:`Algorithm.weigh` (its Ψ) and
:meth:`Algorithm.optimise` (its surrogate and how it steps). Everything else lives here once:
the optimiser, learning-rate annealing, gradient clipping, the non-finite checks, the metrics and
the state kept in checkpoints.
"""

from __future__ import annotations

import abc
import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from policygrad.algorithms.average import AverageReward
from policygrad.algorithms.config import BaseConfig
from policygrad.errors import InputError, TrainingError
from policygrad.losses import entropy_bonus, score_function_loss, value_loss
from policygrad.numpy_grad import NumpyActorCritic, value_loss_grad
from policygrad.numpy_grad import all_finite as numpy_all_finite
from policygrad.numpy_grad import mean as numpy_mean
from policygrad.numpy_grad import standardize as numpy_standardize
from policygrad.returns import _numpy_ok, gae, gae_numpy

__all__ = [
    "METRIC_KEYS",
    "Algorithm",
    "Batch",
    "explained_variance",
    "flatten_rollout",
    "KernelOptimizer",
    "clip_grad_norm",
    "make_optimizer",
    "standardize",
]

METRIC_KEYS = (
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
    "grad_norm",
)
"""Keys every :meth:`Algorithm.update` returns (NaN where an algorithm has no such quantity)."""

NAN = float("nan")


@dataclass(frozen=True)
class Batch:
    """A rollout flattened to B = (valid) T·N samples, with its Ψ and critic targets.

    Attributes:
        observations: ``[B, obs_dim]`` what the policy saw.
        actions: ``[B]`` (discrete), ``[B, D]`` (continuous) or ``[B, K]`` (multi-discrete).
        action_masks: ``[B, A]`` bool or None.
        old_log_probs: ``[B]`` log π_old(a|s) at collection time.
        old_values: ``[B]`` V_old(s) at collection time.
        advantages: ``[B]`` Ψ, the weight of each score ∇ log π(a|s).
        returns: ``[B]`` regression targets of the critic.
    """

    observations: Tensor
    actions: Tensor
    action_masks: Tensor | None
    old_log_probs: Tensor
    old_values: Tensor
    advantages: Tensor
    returns: Tensor

    def __len__(self) -> int:
        return self.old_log_probs.shape[0]

    def index(self, idx: Tensor) -> Batch:
        """The samples at ``idx`` (a ``[b]`` long tensor), as a new Batch."""
        return Batch(
            self.observations.index_select(0, idx),
            self.actions.index_select(0, idx),
            None if self.action_masks is None else self.action_masks.index_select(0, idx),
            self.old_log_probs.index_select(0, idx),
            self.old_values.index_select(0, idx),
            self.advantages.index_select(0, idx),
            self.returns.index_select(0, idx),
        )

    def slice(self, start: int, stop: int) -> Batch:
        """Samples ``start`` to ``stop`` (exclusive), as a new Batch of views."""
        return Batch(
            self.observations[start:stop],
            self.actions[start:stop],
            None if self.action_masks is None else self.action_masks[start:stop],
            self.old_log_probs[start:stop],
            self.old_values[start:stop],
            self.advantages[start:stop],
            self.returns[start:stop],
        )


def flatten_rollout(rollout: Any, advantages: Tensor, returns: Tensor) -> Batch:
    """Flatten a time-major rollout and its ``[T, N]`` Ψ and targets to one ``[B]`` batch.

    Steps with ``rollout.valid == False`` (dummy transitions of a next-step auto-reset) are
    dropped here, once, so that no loss has to know about them.
    """
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # [T, N, ...] -> [T·N, ...]  # noqa: E731
    masks = rollout.action_masks
    batch = Batch(
        flat(rollout.observations),
        flat(rollout.actions),
        None if masks is None else flat(masks),
        flat(rollout.log_probs),
        flat(rollout.values),
        flat(advantages),
        flat(returns),
    )
    valid = getattr(rollout, "valid", None)
    if valid is not None:
        if valid.device.type == "cpu":  # NumPy's reductions cost a fraction of torch's here
            valid_np = valid.numpy().reshape(-1)
            if not np.logical_and.reduce(valid_np):
                batch = batch.index(torch.from_numpy(np.flatnonzero(valid_np)))
        else:
            valid = valid.reshape(-1)
            if not bool(valid.all()):
                batch = batch.index(valid.nonzero().squeeze(1))
    if len(batch) == 0:
        raise InputError("the rollout holds no valid step")
    return batch


def standardize(x: Tensor, eps: float = 1e-8, dim: int | None = None) -> Tensor:
    """(x − mean x) / (std x + ε): advantage normalisation, over all of ``x`` or along ``dim``
    (each row on its own, e.g. ``[minibatches, samples]``). A single sample is only centred."""
    if dim is None:
        if x.numel() < 2:
            return x - x.mean()
        return (x - x.mean()) / (x.std() + eps)
    centred = x - x.mean(dim, keepdim=True)
    if x.shape[dim] < 2:
        return centred
    return centred / (x.std(dim, keepdim=True) + eps)


@torch.no_grad()
def explained_variance(values: Tensor, returns: Tensor) -> Tensor | float:
    """1 − Var[R − V] / Var[R]: 1 for a perfect critic, 0 for a constant one, NaN if Var[R] = 0
    (a float for CPU tensors, else a 0-dim tensor)."""
    if values.device.type == "cpu" and returns.device.type == "cpu" and values.dtype == returns.dtype:
        # Sums of squares about the means (np.var's arithmetic without its per-call overhead);
        # the 1/(n − 1) factors cancel. A float: the update's metrics need no tensor here.
        r = returns.numpy()
        if len(r) < 2:
            return math.nan
        r_centred = r - numpy_mean(r)
        residual = r - values.numpy()
        residual -= numpy_mean(residual)
        ss_returns = float(np.dot(r_centred, r_centred))
        return 1.0 - float(np.dot(residual, residual)) / ss_returns if ss_returns > 0 else math.nan
    var_returns = returns.var()
    return torch.where(var_returns > 0, 1.0 - (returns - values).var() / var_returns, torch.nan)


# The hyperparameter groups of torch.optim.Adam(fused=True) and RMSprop(foreach=True), in their order
# (lr and eps are filled in).
_ADAM_GROUP: dict[str, Any] = {
    "lr": None, "betas": (0.9, 0.999), "eps": None, "weight_decay": 0, "amsgrad": False, "maximize": False,
    "foreach": None, "capturable": False, "differentiable": False, "fused": True, "decoupled_weight_decay": False,
}
# RMSprop with α = 0.99 as in the A2C reference implementation (Mnih et al. 2016).
_RMSPROP_GROUP: dict[str, Any] = {
    "lr": None, "momentum": 0, "alpha": 0.99, "eps": None, "centered": False, "weight_decay": 0, "capturable": False,
    "foreach": True, "maximize": False, "differentiable": False,
}


_ONE = torch.tensor(1.0)  # the step increment on the CPU


class KernelOptimizer:
    """Adam or RMSprop stepped by torch's own kernels, with torch.optim's state and state_dict.

    Each step is that of ``torch.optim.Adam(fused=True)`` (the fused kernel ``torch._fused_adam_``)
    or of ``torch.optim.RMSprop(foreach=True)`` (its sequence of ``_foreach`` operations), bit for
    bit, and :meth:`state_dict` / :meth:`load_state_dict` write and read theirs, so a checkpoint
    loads into either. What it leaves out is torch.optim's machinery around the kernels: hooks,
    grouping by device, profiler markers (about 50 µs per Adam step and 150 µs per RMSprop step,
    more than the arithmetic for these networks), and the import of ``torch._dynamo`` that the
    first use of a torch.optim optimiser triggers (about a second at start-up).

    Args:
        params: the parameters, one group.
        kind: "adam" or "rmsprop".
        lr: learning rate (``param_groups[0]["lr"]``, changed there by the annealing).
        eps: ε of the denominator.
    """

    def __init__(self, params: list[Tensor], kind: str, lr: float, eps: float) -> None:
        if kind not in ("adam", "rmsprop"):
            raise InputError(f"unknown optimizer {kind!r}; valid: adam, rmsprop")
        self.kind = kind
        group = _ADAM_GROUP if kind == "adam" else _RMSPROP_GROUP
        self.param_groups: list[dict[str, Any]] = [dict(group, lr=lr, eps=eps, params=list(params))]
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    @staticmethod
    def supports(params: list[Tensor], kind: str) -> bool:
        """Whether this torch has the kernels for ``params`` (else use torch.optim)."""
        if kind == "rmsprop":
            return hasattr(torch, "_foreach_addcdiv_")
        return hasattr(torch, "_fused_adam_") and all(
            p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64) for p in params
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _new_state(self, p: Tensor) -> dict[str, Tensor]:
        # As torch.optim's lazy initialisation: a float32 step (on the parameter's device for the
        # fused Adam, on the CPU for RMSprop) and zero moments.
        if self.kind == "adam":
            return {
                "step": torch.zeros((), dtype=torch.float32, device=p.device),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        return {
            "step": torch.zeros((), dtype=torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32),
            "square_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
        }

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        state = self.state
        for p in params:
            if p not in state:
                state[p] = self._new_state(p)
        grads = [p.grad for p in params]
        steps = [state[p]["step"] for p in params]
        if self.kind == "adam":
            beta1, beta2 = group["betas"]
            if steps[0].is_cpu:  # the Tensor overload: a Python 1 is wrapped per tensor (3x slower)
                torch._foreach_add_(steps, _ONE, alpha=1.0)
            else:
                torch._foreach_add_(steps, 1)
            torch._fused_adam_(
                params, grads, [state[p]["exp_avg"] for p in params], [state[p]["exp_avg_sq"] for p in params], [],
                steps, amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                eps=group["eps"], maximize=False, grad_scale=None, found_inf=None,
            )
            return
        square_avgs = [state[p]["square_avg"] for p in params]
        alpha = group["alpha"]
        if steps[0].is_cpu:
            torch._foreach_add_(steps, _ONE, alpha=1.0)
        else:
            torch._foreach_add_(steps, 1)
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
        avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, group["eps"])
        torch._foreach_addcdiv_(params, grads, avg, value=-group["lr"])

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}`` as torch.optim's."""
        group = self.param_groups[0]
        index = {p: i for i, p in enumerate(group["params"])}
        return {
            "state": {index[p]: dict(s) for p, s in self.state.items() if p in index},
            "param_groups": [{**{k: v for k, v in group.items() if k != "params"}, "params": list(range(len(index)))}],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (this class's or torch.optim's for the same optimiser).

        Raises:
            ValueError: another number of parameter groups or of parameters.
        """
        groups = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(groups) != 1:
            raise ValueError("loaded state dict has a different number of parameter groups")
        if len(groups[0]["params"]) != len(params):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of optimizer's group")
        id_map = dict(zip(groups[0]["params"], params))
        state: dict[Tensor, dict[str, Tensor]] = {}
        for key, values in state_dict["state"].items():
            if key not in id_map:
                continue
            p = id_map[key]
            state[p] = {name: self._cast(p, name, v) for name, v in values.items()}
        self.state = state
        self.param_groups = [{**copy.deepcopy({k: v for k, v in groups[0].items() if k != "params"}), "params": params}]

    def _cast(self, p: Tensor, name: str, value: Any) -> Any:
        # torch.optim's policy: "step" stays as saved except for the fused Adam (float32 on the
        # parameter's device); the moments take the parameter's dtype and device.
        if not isinstance(value, Tensor):
            return value
        if name == "step":
            return value.to(dtype=torch.float32, device=p.device) if self.kind == "adam" else value
        return value.to(dtype=p.dtype, device=p.device) if p.is_floating_point() else value.to(device=p.device)


def make_optimizer(params: list[Tensor], kind: str, lr: float, eps: float) -> Any:
    """Adam (the fused kernel) or RMSprop, as a :class:`KernelOptimizer` where this torch has the
    kernels for the parameters, else as the torch.optim optimiser."""
    if KernelOptimizer.supports(params, kind):
        return KernelOptimizer(params, kind, lr, eps)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=eps, foreach=True)
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, eps=eps, foreach=True)


def clip_grad_norm(grads: list[Tensor], max_norm: float | None) -> Tensor:
    """The global 2-norm of ``grads``; scales them in place to norm ``max_norm`` when it is larger.

    The operations of ``torch.nn.utils.clip_grad_norm_(..., foreach=True)`` for one device,
    bit for bit: g ← g · min(1, max_norm / (‖g‖ + 1e-6)).
    """
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    if max_norm is not None:
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


class Algorithm(abc.ABC):
    """A policy-gradient algorithm: a choice of Ψ (:meth:`weigh`) and of update (:meth:`optimise`).

    Args:
        policy: the ActorCritic to train (``policygrad.policies``).
        config: the algorithm's config (a :class:`BaseConfig` subclass).
        total_updates: updates the run will make; the learning rate reaches 0 after the last one
            when ``config.anneal_lr`` is set.
    """

    name: ClassVar[str]

    def __init__(self, policy: torch.nn.Module, config: BaseConfig, total_updates: int) -> None:
        if isinstance(total_updates, bool) or not isinstance(total_updates, int) or total_updates < 1:
            raise InputError(f"total_updates must be a positive int, got {total_updates!r}")
        self.policy = policy
        self.config = config
        self.total_updates = total_updates
        self.updates = 0
        self._params = [p for p in policy.parameters() if p.requires_grad]
        if not self._params:
            raise InputError("the policy has no trainable parameters")
        self.optimizer = make_optimizer(self._params, config.optimizer, config.learning_rate, config.optim_eps)
        self.average: AverageReward | None = None
        """The average-reward state (ρ̂) under ``criterion = "average"``, else None."""
        if config.criterion == "average":
            self.average = AverageReward(config.rho_lr, getattr(config, "gae_lambda", 1.0), config.value_center_coef)
        self.use_numpy: bool | None = None
        """Take the losses' gradients in NumPy (:mod:`policygrad.numpy_grad`) wherever the policy
        allows it: None (default) or True; False: always through autograd. Both compute the same
        update up to float rounding."""
        self._numpy_checked: NumpyActorCritic | None = None

    # --- the two choices an algorithm makes ---------------------------------------------------

    @abc.abstractmethod
    def weigh(self, rollout: Any) -> tuple[Tensor, Tensor]:
        """Ψ and the critic's targets for every step, both ``[T, N]`` (computed without gradient)."""

    @abc.abstractmethod
    def optimise(self, batch: Batch) -> dict[str, Any]:
        """Improve the policy (and critic) on ``batch``; returns metrics as floats or 0-dim tensors."""

    # --- the update ---------------------------------------------------------------------------

    def update(self, rollout: Any) -> dict[str, float]:
        """Weigh the rollout, optimise on it, and return the update's metrics.

        Returns:
            Floats under :data:`METRIC_KEYS` (NaN where not applicable), plus ``learning_rate``
            and algorithm-specific entries.

        Raises:
            TrainingError: Ψ, the critic targets or a loss is NaN or infinite (e.g. a NaN
                reward). The check on Ψ comes before any parameter changes; a loss that turns
                non-finite during an update is reported at the end of its epoch.
        """
        _check_rollout(rollout)
        lr = self.learning_rate
        self._set_lr(lr)
        with torch.no_grad():
            advantages, returns = self.weigh(rollout)
        batch = flatten_rollout(rollout, advantages, returns)
        if not _all_finite(batch.advantages, batch.returns):
            raise TrainingError(
                f"non-finite loss at update {self.updates + 1}: the advantages or returns contain "
                "NaN or inf (check the rewards, observations and value estimates)"
            )
        metrics = {key: NAN for key in METRIC_KEYS}
        metrics.update(self.optimise(batch))
        metrics["explained_variance"] = explained_variance(batch.old_values, batch.returns)
        metrics["learning_rate"] = lr
        if self.average is not None:
            metrics["rho"] = self.average.rho
        self.updates += 1
        self._set_lr(self.learning_rate)
        return _as_floats(metrics)

    # --- shared pieces ------------------------------------------------------------------------

    @property
    def learning_rate(self) -> float:
        """The learning rate of the next update: linearly annealed to 0 at ``total_updates``."""
        if not self.config.anneal_lr:
            return self.config.learning_rate
        return self.config.learning_rate * max(0.0, 1.0 - self.updates / self.total_updates)

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _gradient_step(self, loss: Tensor, params: list[Tensor] | None = None) -> Tensor:
        """Backpropagate ``loss``, clip the global gradient norm, step; returns the norm (0-dim).

        No host synchronisation: the caller checks finiteness once per epoch.
        """
        params = self._params if params is None else params
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        with torch.no_grad():
            norm = clip_grad_norm(grads, self.config.max_grad_norm)
        self.optimizer.step()
        return norm

    def numpy_path(self) -> NumpyActorCritic | None:
        """The policy's NumPy training path, or None (autograd) where it has none or
        :attr:`use_numpy` is off."""
        if self.use_numpy is False or torch.is_anomaly_enabled():
            return None
        net = NumpyActorCritic.of(self.policy)
        if net is None:
            return None
        if self._numpy_checked is not net:  # it must train exactly the optimiser's parameters
            if {id(p) for p in net.params} != {id(p) for p in self._params}:
                return None
            self._numpy_checked = net
        return net

    def _check_finite(self, value: Tensor | float, what: str) -> None:
        if not math.isfinite(float(value)):
            raise TrainingError(f"non-finite loss at update {self.updates + 1}: {what} is {float(value)}")

    def _gae(self, rollout: Any) -> tuple[Tensor, Tensor]:
        """Ψ = GAE(γ, λ) advantages from the rollout's critic values; targets = Ψ + V (λ-returns).

        Under ``criterion = "average"``: differential GAE with the running ρ̂ and centred targets
        (:mod:`policygrad.algorithms.average`).
        """
        if self.average is not None:
            return self.average.weigh(rollout)
        r, v, nv = rollout.rewards, rollout.values, rollout.next_values
        if _numpy_ok(r, v, nv):
            # gae's NumPy path without its checks: the rollout's shapes were checked
            # (_check_rollout), γ and λ by the config.
            values = v.detach().numpy()
            advantages = gae_numpy(r.detach().numpy(), values, nv.detach().numpy(), rollout.terminated.numpy(),
                                   rollout.truncated.numpy(), self.config.gamma, self.config.gae_lambda)
            return torch.from_numpy(advantages), torch.from_numpy(advantages + values)
        advantages = gae(
            rollout.rewards,
            rollout.values,
            rollout.next_values,
            rollout.terminated,
            rollout.truncated,
            self.config.gamma,
            self.config.gae_lambda,
        )
        return advantages, advantages + rollout.values

    def _score_function_step(self, batch: Batch, *, use_critic: bool) -> dict[str, Any]:
        """One gradient step on the whole batch (REINFORCE, A2C):

        L = score_function_loss(log π, Ψ) + c_v · value_loss(V, R) + entropy_bonus(H, c_H).
        """
        net = self.numpy_path()
        if net is not None:
            return self._score_function_step_numpy(batch, net, use_critic=use_critic)
        cfg = self.config
        dist, values = self.policy(batch.observations, batch.action_masks)
        log_prob = dist.log_prob(batch.actions)  # [B]
        entropy = dist.entropy()  # [B]
        psi = standardize(batch.advantages) if cfg.normalize_advantages else batch.advantages
        policy_loss = score_function_loss(log_prob, psi)
        loss = policy_loss + entropy_bonus(entropy, cfg.ent_coef)
        v_loss = value_loss(values, batch.returns) if use_critic else None
        if v_loss is not None:
            loss = loss + cfg.vf_coef * v_loss
        self._check_finite(loss.detach(), "the loss")
        grad_norm = self._gradient_step(loss)
        return {
            "policy_loss": policy_loss.detach(),
            "value_loss": NAN if v_loss is None else v_loss.detach(),
            "entropy": entropy.detach().mean(),
            "grad_norm": grad_norm,
        }

    def _score_function_step_numpy(self, batch: Batch, net: NumpyActorCritic, *, use_critic: bool) -> dict[str, Any]:
        """:meth:`_score_function_step` with the losses' gradients in NumPy:
        ∂L/∂ log π = −Ψ/B, ∂L/∂V = c_v (V − R)/B, ∂L/∂H = −c_H/B."""
        cfg = self.config
        x = net.encode(batch.observations)
        f = net.forward(x, batch.actions.numpy(), None if batch.action_masks is None else batch.action_masks.numpy())
        psi = batch.advantages.numpy()
        if cfg.normalize_advantages:
            psi = numpy_standardize(psi)
        n = len(psi)
        dtype = f.log_prob.dtype.type
        policy_loss = -float(numpy_mean(f.log_prob * psi))
        entropy = float(numpy_mean(f.entropy))
        loss = policy_loss - cfg.ent_coef * entropy
        v_loss, d_value = NAN, None
        if use_critic:
            v_loss, d_value = value_loss_grad(f.value, batch.returns.numpy())
            d_value *= dtype(cfg.vf_coef)
            loss = loss + cfg.vf_coef * v_loss
        self._check_finite(loss, "the loss")
        d_entropy = None if cfg.ent_coef == 0 else np.full(n, -cfg.ent_coef / n, dtype=f.log_prob.dtype)
        net.backward(f, psi * dtype(-1.0 / n), d_entropy, d_value)
        grad_norm = net.clip_grads(cfg.max_grad_norm)
        net.step(self.optimizer)
        return {"policy_loss": policy_loss, "value_loss": v_loss, "entropy": entropy, "grad_norm": grad_norm}

    # --- state kept in checkpoints --------------------------------------------------------------

    def state(self) -> tuple[dict[str, Tensor], dict]:
        """The optimiser's state and the counters, as ``(tensors, JSON meta)`` for a checkpoint."""
        from policygrad.checkpoint import optimizer_state

        tensors, optim_meta = optimizer_state(self.optimizer, prefix="algo.optim")
        meta = {"algorithm": self.name, "updates": self.updates, "optimizer": optim_meta}
        if self.average is not None:
            meta["average"] = self.average.state()
        meta.update(self._extra_state())
        return tensors, meta

    def load_state(self, tensors: dict[str, Tensor], meta: dict) -> None:
        """Restore what :meth:`state` returned, so the next update is identical."""
        from policygrad.checkpoint import load_optimizer_state

        if not isinstance(meta, dict) or meta.get("algorithm") != self.name:
            found = meta.get("algorithm") if isinstance(meta, dict) else None
            raise InputError(f"checkpoint holds the state of algorithm {found!r}, not {self.name!r}")
        updates = meta.get("updates")
        if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
            raise InputError(f"checkpoint's algorithm state has a bad update counter {updates!r}")
        load_optimizer_state(self.optimizer, tensors, meta.get("optimizer"), prefix="algo.optim")
        self.updates = updates
        if self.average is not None:
            self.average.load_state(meta.get("average"))
        self._load_extra_state(meta)
        self._set_lr(self.learning_rate)

    def _extra_state(self) -> dict[str, Any]:
        """Algorithm-specific JSON state (e.g. PPO's adaptive β)."""
        return {}

    def _load_extra_state(self, meta: dict) -> None:
        """Restore what :meth:`_extra_state` returned."""


_ROLLOUT_FIELDS = ("log_probs", "rewards", "terminated", "truncated", "values", "next_values")


def _check_rollout(rollout: Any) -> None:
    """Every per-step field of the rollout is ``[T, N]`` and the observations ``[T, N, ...]``."""
    shape = rollout.log_probs.shape
    if len(shape) != 2:
        raise InputError(f"rollout.log_probs must be [T, N], got shape {tuple(shape)}")
    for name in _ROLLOUT_FIELDS[1:]:
        got = getattr(rollout, name).shape
        if got != shape:
            raise InputError(f"rollout.{name} has shape {tuple(got)}, expected {tuple(shape)} like log_probs")
    if rollout.observations.shape[:2] != shape:
        raise InputError(
            f"rollout.observations has shape {tuple(rollout.observations.shape)}, "
            f"expected [{shape[0]}, {shape[1]}, ...]"
        )


def _all_finite(*tensors: Tensor) -> bool:
    """Whether every element of ``tensors`` is finite (on NumPy views for CPU tensors: one
    host-side check without torch's per-operation overhead)."""
    if all(t.device.type == "cpu" and not t.requires_grad for t in tensors):
        return all(numpy_all_finite(t.numpy()) for t in tensors)
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def _as_floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics as Python floats, with one host transfer for all tensor entries."""
    keys = [k for k, v in metrics.items() if isinstance(v, Tensor)]
    if not keys:  # the NumPy path's metrics are floats already
        return {k: float(v) for k, v in metrics.items()}
    out = {k: float(v) for k, v in metrics.items() if not isinstance(v, Tensor)}
    values = torch.stack([metrics[k].detach().reshape(()).float() for k in keys]).tolist()
    out.update(zip(keys, values))
    return {k: out[k] for k in metrics}
