"""The data that flows between the layers: a :class:`Rollout` of ``[T, N]`` steps and the flat
:class:`Batch` an update trains on. Plain frozen dataclasses of tensors; no environments, no networks.

Symbols and shapes (T steps, N environments):

================  =====================  ======================================================
field             shape                  meaning
================  =====================  ======================================================
observations      [T, N, obs_dim] float  s_t as the policy saw it (encoded, then normalised;
                  (uint8 for images)     an image's raw pixels, which the network scales)
actions           [T, N] | [T, N, D|K]   a_t ~ π_old(·|s_t); Box actions unclipped
log_probs         [T, N]                 log π_old(a_t|s_t)
rewards           [T, N]                 r_{t+1}, scaled when reward normalisation is on
terminated        [T, N] bool            s_{t+1} is terminal: V(s_{t+1}) = 0
truncated         [T, N] bool            the episode was cut after this step (time limit)
values            [T, N]                 V(s_t) at collection time
next_values       [T, N]                 V(s_{t+1}) of the true next state (see below)
episode_step      [T, N] long            steps since the episode's start (t of γ^t)
action_masks      [T, N, A] bool | None  allowed actions, from ``info["action_mask"]``
valid             [T, N] bool | None     False on dummy transitions of a next-step auto-reset
================  =====================  ======================================================

``next_values`` is values[t+1] inside an episode; at a truncation it is V of the episode's true
final observation (never of the next episode's first one), at t = T−1 the bootstrap V(s_T), and
0 at a termination. The algorithms bootstrap from it (``policygrad.returns``) and cut the
eligibility trace at terminated | truncated.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from policygrad.errors import InputError

__all__ = ["Rollout", "Batch", "flatten_rollout"]


@dataclass(frozen=True)
class Rollout:
    """T steps of N environments, time-major; see the module docstring for every field.

    A collector reuses its buffers: the tensors of a Rollout are overwritten by the collector's
    next :meth:`RolloutCollector.collect`. Use :meth:`clone` to keep one.
    """

    observations: Tensor
    actions: Tensor
    log_probs: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    values: Tensor
    next_values: Tensor
    episode_step: Tensor
    action_masks: Tensor | None = None
    valid: Tensor | None = None

    @property
    def num_steps(self) -> int:
        """T, steps per environment."""
        return self.log_probs.shape[0]

    @property
    def num_envs(self) -> int:
        """N, environments."""
        return self.log_probs.shape[1]

    @property
    def batch_size(self) -> int:
        """T · N transitions (dummy ones included)."""
        return self.log_probs.shape[0] * self.log_probs.shape[1]

    def clone(self) -> Rollout:
        """A copy that owns its tensors."""
        return Rollout(**{f.name: _clone(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str) -> Rollout:
        """The rollout with every tensor on ``device``."""
        return Rollout(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})


def _clone(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.clone()


def _to(x: Tensor | None, device: torch.device | str) -> Tensor | None:
    return None if x is None else x.to(device)


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


def flatten_rollout(rollout: Rollout, advantages: Tensor, returns: Tensor) -> Batch:
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
