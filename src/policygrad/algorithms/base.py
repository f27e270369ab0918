"""What every policy-gradient algorithm shares: the update's skeleton.

An update is

    rollout [T, N]  --weigh-->  Ψ [T, N], critic targets [T, N]   (policygrad.returns)
                    --flatten-->  Batch [B]                           (invalid steps dropped)
                    --optimise-->  surrogate loss, gradient step(s)   (policygrad.losses)

and an algorithm is a subclass that chooses :meth:`Algorithm.weigh` (its Ψ) and
:meth:`Algorithm.optimise` (its surrogate and how it steps), written once against the backend
(:mod:`policygrad.backends`), which owns the networks' forward and backward pass, gradient
clipping and the optimiser. Everything else lives here once: the backend's resolution,
learning-rate annealing, the non-finite checks, the metrics and the state kept in checkpoints.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from policygrad.algorithms.average import AverageReward
from policygrad.algorithms.config import BaseConfig
from policygrad.backends import Backend, Term, make_backend, resolve_backend
from policygrad.errors import InputError, TrainingError, shown
from policygrad.losses import entropy_bonus, score_function_loss, value_loss
from policygrad.numeric import all_finite, mean
from policygrad.returns import gae
from policygrad.types import Batch, Rollout, flatten_rollout

__all__ = [
    "METRIC_KEYS",
    "Algorithm",
    "Batch",
    "explained_variance",
    "flatten_rollout",
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
    """1 − Var[R − V] / Var[R]: 1 for a perfect critic, 0 for a constant one, NaN if Var[R] = 0.

    A float for CPU tensors (computed on NumPy views: the update's metrics need no tensor), else a
    0-dim tensor. The variances' common factor 1/(n − 1) cancels: the ratio of sums of squared
    deviations is the expression, for either array library.
    """
    if values.device.type == "cpu" and returns.device.type == "cpu":
        values, returns = values.numpy(), returns.numpy()
    ss_returns = _squared_deviations(returns)
    if not ss_returns > 0:
        return math.nan
    return 1.0 - _squared_deviations(returns - values) / ss_returns


def _mean(x: Tensor) -> Tensor | float:
    """The mean of a 1-D tensor: a float for a CPU one (on its NumPy view: no torch operation), else
    a 0-dim tensor (no host read)."""
    if x.device.type == "cpu":
        return float(mean(x.detach().numpy()))
    return x.detach().mean()


def _squared_deviations(x: Any) -> Any:
    """Σ (x − mean x)² of a 1-D tensor or array (ufuncs on arrays: no Python layer)."""
    if isinstance(x, Tensor):
        centred = x - x.mean()
        return centred.dot(centred)
    centred = x - mean(x)
    return float(np.dot(centred, centred))


class Algorithm(abc.ABC):
    """A policy-gradient algorithm: a choice of Ψ (:meth:`weigh`) and of update (:meth:`optimise`).

    The update is written once, against the algorithm's :class:`~policygrad.backends.Backend`
    (:attr:`backend`): it asks the backend for the per-sample log π, H and V of a minibatch and
    hands it the loss, as functions of :mod:`policygrad.losses`, to take one step on.

    Args:
        policy: the ActorCritic to train (``policygrad.policies``).
        config: the algorithm's config (a :class:`BaseConfig` subclass); ``config.backend``
            chooses the backend (resolved here, see :func:`policygrad.backends.resolve_backend`).
        total_updates: updates the run will make; the learning rate reaches 0 after the last one
            when ``config.anneal_lr`` is set.

    Raises:
        InputError: a bad ``total_updates``, a policy without trainable parameters, or
            ``backend=numpy`` where that backend cannot serve (the message says why).
    """

    name: ClassVar[str]
    numpy_refusal: ClassVar[str | None] = None
    """Why this algorithm cannot run on the NumPy backend (None: it can)."""
    off_policy_correction: ClassVar[bool] = False
    """Whether the update corrects for data collected by an older policy: it uses the behaviour
    log-probabilities stored with each rollout (``rollout.log_probs``) to weigh the data for the
    current policy (PPO's ratio, IMPALA's V-trace). Asynchronous workers, whose rollouts lag the
    learner's policy, need it; the other algorithms assume the rollout's policy is the current one."""

    def __init__(self, policy: torch.nn.Module, config: BaseConfig, total_updates: int) -> None:
        if isinstance(total_updates, bool) or not isinstance(total_updates, int) or total_updates < 1:
            raise InputError(f"total_updates must be a positive int, got {total_updates!r}")
        self.policy = policy
        self.config = config
        self.total_updates = total_updates
        self.updates = 0
        if not any(p.requires_grad for p in policy.parameters()):
            raise InputError("the policy has no trainable parameters")
        backend, reason = resolve_backend(config.backend, policy, self.numpy_refusal)
        self.backend: Backend = make_backend(
            backend, policy, optimizer=config.optimizer, learning_rate=config.learning_rate,
            optim_eps=config.optim_eps, max_grad_norm=config.max_grad_norm, reason=reason,
        )
        """Where the networks run: acting (the rollout collector's), evaluation and the step."""
        self.optimizer = self.backend.optimizer
        self.average: AverageReward | None = None
        """The average-reward state (ρ̂) under ``criterion = "average"``, else None."""
        if config.criterion == "average":
            self.average = AverageReward(config.rho_lr, getattr(config, "gae_lambda", 1.0), config.value_center_coef)

    # --- the two choices an algorithm makes ---------------------------------------------------

    @abc.abstractmethod
    def weigh(self, rollout: Rollout) -> tuple[Tensor, Tensor]:
        """Ψ and the critic's targets for every step, both ``[T, N]`` (computed without gradient)."""

    @abc.abstractmethod
    def optimise(self, batch: Batch) -> dict[str, Any]:
        """Improve the policy (and critic) on ``batch``; returns metrics as floats or 0-dim tensors."""

    # --- the update ---------------------------------------------------------------------------

    def update(self, rollout: Rollout) -> dict[str, float]:
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
        check_current = getattr(self.backend, "check_current", None)
        if check_current is not None:
            check_current()
        lr = self.learning_rate
        self.backend.set_learning_rate(lr)
        with torch.no_grad():
            advantages, returns = self.weigh(rollout)
        batch = flatten_rollout(rollout, advantages, returns)
        if not _all_finite(batch.advantages, batch.returns):
            raise TrainingError(
                f"non-finite loss at update {self.updates + 1}: the advantages or returns contain "
                "NaN or inf (check the rewards, observations and value estimates)"
            )
        metrics: dict[str, Any] = {key: NAN for key in METRIC_KEYS}
        metrics.update(self.optimise(batch))
        metrics["explained_variance"] = explained_variance(batch.old_values, batch.returns)
        metrics["learning_rate"] = lr
        if self.average is not None:
            metrics["rho"] = self.average.rho
        self.updates += 1
        self.backend.set_learning_rate(self.learning_rate)
        return _as_floats(metrics)

    # --- shared pieces ------------------------------------------------------------------------

    @property
    def learning_rate(self) -> float:
        """The learning rate of the next update: linearly annealed to 0 at ``total_updates``."""
        if not self.config.anneal_lr:
            return self.config.learning_rate
        return self.config.learning_rate * max(0.0, 1.0 - self.updates / self.total_updates)

    def _check_finite(self, value: Tensor | float, what: str) -> None:
        if not math.isfinite(float(value)):
            raise TrainingError(f"non-finite loss at update {self.updates + 1}: {what} is {float(value)}")

    def _gae(self, rollout: Rollout) -> tuple[Tensor, Tensor]:
        """Ψ = GAE(γ, λ) advantages from the rollout's critic values; targets = Ψ + V (λ-returns).

        Under ``criterion = "average"``: differential GAE with the running ρ̂ and centred targets
        (:mod:`policygrad.algorithms.average`).
        """
        if self.average is not None:
            return self.average.weigh(rollout)
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
        cfg = self.config
        out = self.backend.evaluate(batch.observations, batch.actions, batch.action_masks)  # [B] each
        psi = standardize(batch.advantages) if cfg.normalize_advantages else batch.advantages
        terms = [Term(score_function_loss, (out.log_prob, psi))]
        if use_critic:
            terms.append(Term(value_loss, (out.value, batch.returns), cfg.vf_coef))
        if cfg.ent_coef:
            terms.append(Term(entropy_bonus, (out.entropy, cfg.ent_coef)))
        losses, grad_norm = self.backend.step(terms, guard=lambda loss: self._check_finite(loss, "the loss"))
        return {
            "policy_loss": losses[0],
            "value_loss": losses[1] if use_critic else NAN,
            "entropy": _mean(out.entropy),
            "grad_norm": grad_norm,
        }

    # --- state kept in checkpoints --------------------------------------------------------------

    def state(self) -> tuple[dict[str, Tensor], dict]:
        """The optimiser's state and the counters, as ``(tensors, JSON meta)`` for a checkpoint."""
        from policygrad.checkpoint import optimizer_state

        tensors, optim_meta = optimizer_state(self.optimizer, prefix="algo.optim")
        meta = {"algorithm": self.name, "updates": self.updates, "backend": self.backend.name, "optimizer": optim_meta}
        if self.average is not None:
            meta["average"] = self.average.state()
        meta.update(self._extra_state())
        return tensors, meta

    def load_state(self, tensors: dict[str, Tensor], meta: dict) -> None:
        """Restore what :meth:`state` returned, so the next update is identical."""
        from policygrad.checkpoint import load_optimizer_state

        if not isinstance(meta, dict) or meta.get("algorithm") != self.name:
            found = meta.get("algorithm") if isinstance(meta, dict) else None
            raise InputError(f"checkpoint holds the state of algorithm {shown(found)}, not {shown(self.name)}")
        updates = meta.get("updates")
        if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
            raise InputError(f"checkpoint's algorithm state has a bad update counter {shown(updates)}")
        load_optimizer_state(self.optimizer, tensors, meta.get("optimizer"), prefix="algo.optim")
        self.updates = updates
        if self.average is not None:
            self.average.load_state(meta.get("average"))
        self._load_extra_state(meta)
        self.backend.set_learning_rate(self.learning_rate)

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
        return all(all_finite(t.numpy()) for t in tensors)
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
