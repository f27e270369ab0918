"""Running normalisation of observations and rewards, part of a trained policy's state.

Two normalisers, both driven by :class:`RunningMeanStd`:

* :class:`ObservationNormalizer`: ``clip((s − μ) / sqrt(σ² + ε), −c, c)`` with μ, σ² the running
  mean and variance of every observation seen during training.
* :class:`RewardScaler`: ``clip(r_t / sqrt(Var[R] + ε), −c, c)`` where R_t = γ R_{t−1} + r_t is
  each environment's running discounted return (reset at the end of an episode). Rewards are
  scaled, never shifted, so the sign of every reward and the optimal policy stay as they are.
  This is the reward scaling of the PPO reference implementation and of Stable-Baselines3's
  ``VecNormalize`` (Engstrom et al. 2020, "Implementation Matters in Deep RL", section 3).

Statistics are kept in float64 NumPy arrays because the collector calls them once per
environment step on NumPy data, where a handful of NumPy operations costs less than the
equivalent torch calls. :meth:`state` / :meth:`load_state` turn them into tensors and JSON for a
checkpoint. A normaliser is *frozen* at evaluation: it still transforms, but its statistics no
longer move.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from policygrad.errors import InputError, shown

__all__ = ["RunningMeanStd", "ObservationNormalizer", "RewardScaler", "normalize_observations", "check_running_stats",
           "moments_delta"]


def normalize_observations(obs: Any, mean: Any, var: Any, epsilon: float, clip: float, out: np.ndarray | None = None) -> Any:
    """clip((s − μ) / sqrt(σ² + ε), −c, c): the observation normalisation, on NumPy arrays or tensors.

    Written once for both: the collector calls it on NumPy arrays (with ``out``, a float32 buffer
    row), :class:`policygrad.policies.Policy` on tensors inside its graph.

    Args:
        obs: ``[..., obs_dim]`` encoded observations.
        mean, var: ``[obs_dim]`` the statistics μ and σ².
        epsilon: ε under the square root.
        clip: c, the bound of the result.
        out: NumPy only: where to write the result (cast to its dtype).

    Returns:
        ``[..., obs_dim]``, ``out`` when given.
    """
    scaled = (obs - mean) / (var + epsilon) ** 0.5
    if out is None:
        return scaled.clip(-clip, clip)
    return np.clip(scaled, -clip, clip, out=out, casting="same_kind")


class RunningMeanStd:
    """Mean and variance of a stream of batches, merged exactly one batch at a time.

    For the statistics (μ_a, σ²_a, n_a) so far and a batch (μ_b, σ²_b, n_b), with δ = μ_b − μ_a
    and n = n_a + n_b (Chan, Golub & LeVeque 1979, the parallel form of Welford's update):

        μ = μ_a + δ · n_b / n,    σ² = (σ²_a n_a + σ²_b n_b + δ² n_a n_b / n) / n.

    The variances are population variances. As in the reference implementations the count starts
    at a tiny ``epsilon`` with μ = 0 and σ² = 1, so the first batch dominates at once and the
    statistics are defined before any data arrives.

    ``mean`` and ``var`` are updated in place, so that views of them (the buffers of a
    :class:`policygrad.policies.Policy`) always hold the current statistics.

    Args:
        shape: the shape of one sample (``()`` for scalars).
        epsilon: the initial pseudo-count.
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.mean = np.zeros(self.shape, dtype=np.float64)
        self.var = np.ones(self.shape, dtype=np.float64)
        self.count = float(epsilon)

    def update(self, x: np.ndarray) -> None:
        """Merge the batch ``x [B, *shape]`` (B ≥ 1; an empty batch changes nothing)."""
        x = np.asarray(x)
        if x.shape[1:] != self.shape:
            raise InputError(f"RunningMeanStd of shape {self.shape} got a batch of shape {x.shape}")
        if x.shape[0] == 0:
            return
        self.update_from_moments(x.mean(axis=0), x.var(axis=0), x.shape[0])

    def update_from_moments(self, batch_mean: np.ndarray, batch_var: np.ndarray, batch_count: int) -> None:
        """Merge a batch given by its mean, population variance and size."""
        total = self.count + batch_count
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * batch_count + np.square(delta) * (self.count * batch_count / total)
        self.mean[...] = self.mean + delta * (batch_count / total)
        self.var[...] = m2 / total
        self.count = float(total)

    def moments(self) -> tuple[np.ndarray, np.ndarray, float]:
        """``(mean, var, count)``, copies: what :meth:`set_moments` takes back."""
        return self.mean.copy(), self.var.copy(), float(self.count)

    def set_moments(self, mean: np.ndarray, var: np.ndarray, count: float) -> None:
        """Take the statistics ``(mean, var, count)``, in place (views of ``mean`` and ``var`` stay valid)."""
        self.mean[...] = mean
        self.var[...] = var
        self.count = float(count)

    def state(self, prefix: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """``({prefix.mean, prefix.var}: float64 tensors, {"count": n})``."""
        tensors = {
            f"{prefix}.mean": torch.from_numpy(np.array(self.mean, dtype=np.float64)),
            f"{prefix}.var": torch.from_numpy(np.array(self.var, dtype=np.float64)),
        }
        return tensors, {"count": self.count}

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any], prefix: str) -> None:
        """Restore :meth:`state`; InputError if an entry is missing, malformed
        (:func:`check_running_stats`) or has another shape."""
        mean, var, count = check_running_stats(tensors, meta, prefix)
        if mean.shape != self.shape:
            raise InputError(
                f"normaliser state {prefix!r} has shape {mean.shape}, this environment needs {self.shape}"
            )
        self.set_moments(mean, var, count)


def moments_delta(start: tuple[np.ndarray, np.ndarray, float], end: tuple[np.ndarray, np.ndarray, float]
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """The mean, population variance and count of the data that took running statistics from
    ``start`` to ``end`` (each ``(mean, var, count)``, as :meth:`RunningMeanStd.moments` gives
    them): the inverse of :meth:`RunningMeanStd.update_from_moments`, so that statistics updated
    elsewhere (a rollout worker's) can be merged into others. A count of 0: nothing was added."""
    mean_a, var_a, n_a = start
    mean_n, var_n, n = end
    n_b = n - n_a
    if n_b <= 0:
        return np.zeros_like(mean_a), np.ones_like(var_a), 0.0
    mean_b = (n * mean_n - n_a * mean_a) / n_b
    m2_b = var_n * n - var_a * n_a - np.square(mean_b - mean_a) * (n_a * n_b / n)
    return mean_b, np.maximum(m2_b / n_b, 0.0), float(n_b)


def check_running_stats(tensors: dict[str, Tensor], meta: Any, prefix: str) -> tuple[np.ndarray, np.ndarray, float]:
    """``(mean, var, count)`` of the :meth:`RunningMeanStd.state` under ``prefix``, checked:
    ``<prefix>.mean`` and ``<prefix>.var`` floating-point tensors of one shape, finite, the
    variance >= 0, and ``count`` a finite number > 0.

    Raises:
        InputError: one line saying what is missing or malformed.
    """
    mean_t, var_t = tensors.get(f"{prefix}.mean"), tensors.get(f"{prefix}.var")
    count = meta.get("count") if isinstance(meta, dict) else None
    if not isinstance(mean_t, Tensor) or not isinstance(var_t, Tensor) or count is None:
        raise InputError(f"normaliser state {prefix!r} is missing or malformed (no mean, var or count)")
    if not (mean_t.is_floating_point() and var_t.is_floating_point()) or mean_t.shape != var_t.shape:
        raise InputError(
            f"normaliser state {prefix!r} is malformed: mean and var must be floating-point tensors of one shape, got "
            f"{mean_t.dtype} {tuple(mean_t.shape)} and {var_t.dtype} {tuple(var_t.shape)}"
        )
    if isinstance(count, bool) or not isinstance(count, (int, float)) or not (count > 0 and math.isfinite(count)):
        raise InputError(f"normaliser state {prefix!r} has a bad count {shown(count)}")
    mean = mean_t.double().numpy().copy()
    var = var_t.double().numpy().copy()
    if not (np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all()):
        raise InputError(f"normaliser state {prefix!r} holds non-finite or negative statistics")
    return mean, var, float(count)


class ObservationNormalizer:
    """s ↦ clip((s − μ) / sqrt(σ² + ε), −clip, clip) with running μ, σ² over all observations.

    Args:
        obs_dim: size of an (encoded, flat) observation.
        clip: bound of the normalised values (10 as in the reference implementations).
        epsilon: ε under the square root.

    Attributes:
        frozen: when True, :meth:`__call__` no longer updates the statistics (evaluation).
    """

    def __init__(self, obs_dim: int, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        self.rms = RunningMeanStd((int(obs_dim),))
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.frozen = False

    def __call__(self, obs: np.ndarray, update_mask: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Update the statistics with ``obs [B, obs_dim]`` (unless frozen), then normalise it.

        Args:
            obs: the observations.
            update_mask: ``[B]`` bool, which rows enter the statistics (None: all).
            out: where to write the float32 result (e.g. a rollout buffer row); allocated if None.

        Returns:
            ``[B, obs_dim]`` float32 normalised observations (``out`` when given).
        """
        if not self.frozen:
            self.rms.update(obs if update_mask is None else obs[update_mask])
        return self.normalize(obs, out)

    def normalize(self, obs: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Normalise ``obs [B, obs_dim]`` with the current statistics, without updating them."""
        if out is None:
            out = np.empty(np.shape(obs), dtype=np.float32)
        return normalize_observations(obs, self.rms.mean, self.rms.var, self.epsilon, self.clip, out)

    def state(self, prefix: str = "obs_norm") -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors and JSON for a checkpoint."""
        tensors, meta = self.rms.state(prefix)
        meta.update(clip=self.clip, epsilon=self.epsilon)
        return tensors, meta

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any], prefix: str = "obs_norm") -> None:
        """Restore :meth:`state` (``frozen`` is left as it is)."""
        self.rms.load_state(tensors, meta, prefix)


class RewardScaler:
    """r_t ↦ clip(r_t / sqrt(Var[R] + ε), −clip, clip), R_t = γ R_{t−1} + r_t per environment.

    The running discounted return R of each environment restarts at 0 after the step that ends
    its episode. Var[R] is a running variance over all environments and steps.

    Args:
        num_envs: N, the environments of the vector environment.
        gamma: the discount γ of R (the algorithm's γ).
        clip: bound of the scaled rewards.
        epsilon: ε under the square root.

    Attributes:
        frozen: when True, the statistics no longer move (evaluation).
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(int(num_envs), dtype=np.float64)  # R per environment
        self.gamma = float(gamma)
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.frozen = False

    def __call__(
        self,
        rewards: np.ndarray,
        dones: np.ndarray,
        valid: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Scale one step's ``rewards [N]``; ``dones [N]`` ends episodes after this step.

        Args:
            rewards: ``[N]`` raw rewards.
            dones: ``[N]`` bool, terminated or truncated at this step.
            valid: ``[N]`` bool; False rows (dummy steps of a next-step auto-reset) neither
                accumulate into R nor enter the statistics. None: all valid.
            out: where to write the float32 result; allocated if None.

        Returns:
            ``[N]`` float32 scaled rewards.
        """
        if valid is None:
            self.returns = self.returns * self.gamma + rewards
            if not self.frozen:
                self.rms.update(self.returns)
        else:
            self.returns = np.where(valid, self.returns * self.gamma + rewards, self.returns)
            if not self.frozen:
                self.rms.update(self.returns[valid])
        self.returns[dones] = 0.0
        return self.scale(rewards, out)

    def scale(self, rewards: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Scale ``rewards`` by the current statistics, without updating anything."""
        scaled = rewards / np.sqrt(self.rms.var + self.epsilon)
        if out is None:
            out = np.empty(np.shape(scaled), dtype=np.float32)
        return np.clip(scaled, -self.clip, self.clip, out=out, casting="same_kind")

    def reset(self) -> None:
        """Forget the running returns R (new episodes everywhere); the statistics stay."""
        self.returns[:] = 0.0

    def state(self, prefix: str = "reward_norm") -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors and JSON for a checkpoint (the statistics; R belongs to the episodes in flight)."""
        tensors, meta = self.rms.state(prefix)
        meta.update(gamma=self.gamma, clip=self.clip, epsilon=self.epsilon)
        return tensors, meta

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any], prefix: str = "reward_norm") -> None:
        """Restore :meth:`state`; the running returns restart at 0."""
        self.rms.load_state(tensors, meta, prefix)
        self.reset()
