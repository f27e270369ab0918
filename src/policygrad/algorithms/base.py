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
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from policygrad.algorithms.average import AverageReward
from policygrad.algorithms.config import BaseConfig
from policygrad.errors import InputError, TrainingError
from policygrad.losses import entropy_bonus, score_function_loss, value_loss
from policygrad.returns import gae

__all__ = [
    "METRIC_KEYS",
    "Algorithm",
    "Batch",
    "explained_variance",
    "flatten_rollout",
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
            self.observations[idx],
            self.actions[idx],
            None if self.action_masks is None else self.action_masks[idx],
            self.old_log_probs[idx],
            self.old_values[idx],
            self.advantages[idx],
            self.returns[idx],
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
        valid = valid.reshape(-1)
        if not bool(valid.all()):
            batch = batch.index(valid.nonzero().squeeze(1))
    if len(batch) == 0:
        raise InputError("the rollout holds no valid step")
    return batch


def standardize(x: Tensor, eps: float = 1e-8) -> Tensor:
    """(x − mean x) / (std x + ε): advantage normalisation. A single sample is only centred."""
    if x.numel() < 2:
        return x - x.mean()
    return (x - x.mean()) / (x.std() + eps)


@torch.no_grad()
def explained_variance(values: Tensor, returns: Tensor) -> Tensor:
    """1 − Var[R − V] / Var[R]: 1 for a perfect critic, 0 for a constant one, NaN if Var[R] = 0."""
    var_returns = returns.var()
    return torch.where(var_returns > 0, 1.0 - (returns - values).var() / var_returns, torch.nan)


def make_optimizer(params: list[Tensor], kind: str, lr: float, eps: float) -> torch.optim.Optimizer:
    """Adam (fused kernel where this PyTorch has one for the parameters' device) or RMSprop.

    The fused Adam step takes about half the time of the ``foreach`` one on CPU, which is a
    noticeable part of a PPO update with small networks.
    """
    if kind == "rmsprop":
        # RMSprop with α = 0.99 as in the A2C reference implementation (Mnih et al. 2016).
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=eps, foreach=True)
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, eps=eps, foreach=True)


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
        if not bool(torch.isfinite(batch.advantages).all() & torch.isfinite(batch.returns).all()):
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
        if self.config.max_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm, foreach=True)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=True)
        self.optimizer.step()
        return norm.detach()

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


def _as_floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics as Python floats, with one host transfer for all tensor entries."""
    keys = [k for k, v in metrics.items() if isinstance(v, Tensor)]
    out = {k: float(v) for k, v in metrics.items() if not isinstance(v, Tensor)}
    if keys:
        values = torch.stack([metrics[k].detach().reshape(()).float() for k in keys]).tolist()
        out.update(zip(keys, values))
    return {k: out[k] for k in metrics}
