"""IMPALA: Ψ is V-trace's advantage, computed with the current policy and critic, one step per rollout.

    L(θ, φ) = score_function_loss(log πθ, A^vtrace) + c_v · ½ mean (V_φ − v)² − c_H · mean H(πθ),
    (v, A^vtrace) = vtrace(r, V_φ(s), V_φ(s'), log πθ(a|s) − log μ(a|s), γ, λ, ρ̄, c̄),

where μ is the behaviour policy that collected the rollout (its log-probabilities are stored with
it, ``rollout.log_probs``) and πθ, V_φ are the networks as they are at the update, evaluated
without gradient on the rollout's observations. The step is A2C's: one joint gradient step on
the whole batch (:meth:`Algorithm._score_function_step`), whose value loss regresses the current
V_φ (recomputed with gradient) onto the V-trace targets v.

V(s_{t+1}) is the current critic's value of the rollout's next row where that row holds s_{t+1}
(the same episode, or the dummy row that holds the final observation after a next-step
auto-reset); where it does not (the rollout's last row, a truncation under same-step auto-reset,
whose final observation is not kept) it is ``rollout.next_values``, the value at collection time.

Off-policy data is what IMPALA is for: workers act with an older policy while the learner moves
on, and ρ_t = min(ρ̄, π/μ) corrects the policy gradient, c_t = λ min(c̄, π/μ) the value targets.
In a single process the data is on-policy (π = μ): with ρ̄, c̄ ≥ 1 and λ = 1, A^vtrace is
GAE(γ, 1)'s advantage (the n-step return minus V) and v the n-step return, so one update equals
A2C's with ``gae_lambda = 1`` (see :func:`policygrad.returns.vtrace`).

Reference: Espeholt et al. (2018), "IMPALA: Scalable Distributed Deep-RL with Importance Weighted
Actor-Learner Architectures", section 4 (V-trace) and 4.2 (the actor-critic's three losses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from policygrad.algorithms.base import Algorithm, Batch
from policygrad.algorithms.config import BaseConfig, unit_interval
from policygrad.errors import InputError
from policygrad.losses import approx_kl
from policygrad.returns import vtrace
from policygrad.types import Rollout

__all__ = ["IMPALAConfig", "IMPALA", "next_state_values"]


@dataclass(frozen=True)
class IMPALAConfig(BaseConfig):
    """Hyperparameters of IMPALA (the V-trace actor-critic)."""

    num_steps: int = 20
    """Steps collected per environment per rollout (T, the length of the V-trace; the unroll length
    of the paper's Atari runs is 20)."""
    learning_rate: float = 6e-4
    """Optimiser step size (the paper's Atari RMSprop learning rate)."""
    optimizer: Literal["adam", "rmsprop"] = "rmsprop"
    """Gradient optimiser: rmsprop (α = 0.99) as in the paper, or adam."""
    normalize_advantages: bool = False
    """Standardise the V-trace advantages over the batch before the step."""
    rho_bar: float | None = 1.0
    """ρ̄ > 0, the truncation of the importance weight ρ_t = min(ρ̄, π/μ) of the policy gradient and of
    the TD errors; it sets the fixed point of the value targets, V of π_ρ̄ ∝ min(ρ̄ μ, π). inf or None:
    no truncation (stored as None)."""
    c_bar: float | None = 1.0
    """c̄ ≥ 0, the truncation of the trace coefficients c_t = λ min(c̄, π/μ) (how far a TD error
    reaches back); 0 gives one-step targets. inf or None: no truncation (stored as None)."""
    trace_lambda: float = 1.0
    """λ in [0, 1] of the trace (multiplies c_t); 1 with ρ̄, c̄ ≥ 1 gives, on-policy, the n-step
    return as target and GAE(γ, 1)'s advantage."""

    def __post_init__(self) -> None:
        # The config system refuses non-finite numbers; here +inf has a meaning (no truncation),
        # spelled None in the stored config.
        for name in ("rho_bar", "c_bar"):
            value = getattr(self, name)
            if isinstance(value, float) and value == math.inf:
                object.__setattr__(self, name, None)
        super().__post_init__()

    def _validate(self) -> None:
        super()._validate()
        if self.rho_bar is not None and not self.rho_bar > 0:
            raise InputError(f"rho_bar must be > 0 (inf or none: no truncation), got {self.rho_bar}")
        if self.c_bar is not None and not self.c_bar >= 0:
            raise InputError(f"c_bar must be >= 0 (inf or none: no truncation), got {self.c_bar}")
        unit_interval(self, "trace_lambda")
        if self.criterion != "discounted":
            raise InputError(
                f"impala supports only criterion='discounted' (V-trace discounts by gamma), got {self.criterion!r}; "
                "use a2c, ppo, npg or trpo for the average-reward criterion"
            )


class IMPALA(Algorithm):
    """The V-trace actor-critic: Ψ and the critic's targets from V-trace, one joint step per rollout."""

    name = "impala"
    off_policy_correction = True
    config: IMPALAConfig

    def __init__(self, policy: torch.nn.Module, config: IMPALAConfig, total_updates: int) -> None:
        super().__init__(policy, config, total_updates)
        self._trace_metrics: dict[str, Any] = {}  # of the last weigh(), reported by the next optimise()

    def weigh(self, rollout: Rollout) -> tuple[Tensor, Tensor]:
        """V-trace's advantages (Ψ) and value targets v, both ``[T, N]``, from the current policy and critic."""
        cfg = self.config
        T, N = rollout.num_steps, rollout.num_envs
        flat = lambda x: x.reshape(T * N, *x.shape[2:])  # [T, N, ...] -> [T·N, ...]  # noqa: E731
        masks = rollout.action_masks
        with torch.no_grad():
            out = self.backend.evaluate(flat(rollout.observations), flat(rollout.actions),
                                        None if masks is None else flat(masks))  # [T·N] each
        log_prob = out.log_prob.reshape(T, N)  # [T, N] current log π(a_t|s_t)
        log_ratio = log_prob - rollout.log_probs  # log π(a|s) − log μ(a|s)
        values = out.value.reshape(T, N)  # [T, N] current V(s_t)
        rho_bar = math.inf if cfg.rho_bar is None else cfg.rho_bar
        c_bar = math.inf if cfg.c_bar is None else cfg.c_bar
        vs, advantages = vtrace(rollout.rewards, values, next_state_values(values, rollout), rollout.terminated,
                                rollout.truncated, log_ratio, cfg.gamma, cfg.trace_lambda, rho_bar, c_bar)
        self._trace_metrics = _trace_metrics(log_prob, rollout.log_probs, rollout.valid, rho_bar)
        return advantages, vs

    def optimise(self, batch: Batch) -> dict[str, Any]:
        metrics = self._score_function_step(batch, use_critic=True)
        metrics.update(self._trace_metrics)
        self._trace_metrics = {}
        return metrics


def next_state_values(values: Tensor, rollout: Rollout) -> Tensor:
    """V(s_{t+1}) for every step: ``values[t+1]`` where the next row holds s_{t+1}, else ``rollout.next_values``.

    The next row of an environment holds s_{t+1} unless t is the rollout's last row, or the
    episode was truncated at t and the next row is valid (same-step auto-reset: the next row
    starts a new episode, and the final observation was evaluated only at collection). After a
    next-step auto-reset the next row is the dummy one (``valid = False``), whose observation is
    the final one, so it holds s_{t+1} too. At a termination the result is 0, as the collector
    writes it. On-policy (``values == rollout.values``) this returns ``rollout.next_values``.

    Args:
        values: ``[T, N]`` V(s_t) of the rollout's observations (e.g. by the current critic).
        rollout: the rollout (its ``truncated``, ``terminated``, ``valid`` and ``next_values``).

    Returns:
        ``[T, N]`` V(s_{t+1}).
    """
    if values.shape != rollout.next_values.shape:
        raise InputError(f"values has shape {tuple(values.shape)}, expected {tuple(rollout.next_values.shape)}")
    truncated, terminated = rollout.truncated.bool(), rollout.terminated.bool()
    inside = torch.zeros_like(truncated)  # [T, N] whether row t+1 holds s_{t+1}
    next_is_dummy = torch.zeros_like(truncated[1:]) if rollout.valid is None else ~rollout.valid[1:].bool()
    inside[:-1] = ~truncated[:-1] | next_is_dummy
    following = torch.cat([values[1:], rollout.next_values[-1:]])  # values[t+1]; the last row's is not used
    next_values = torch.where(inside, following, rollout.next_values)
    return torch.where(terminated, torch.zeros((), dtype=next_values.dtype, device=next_values.device), next_values)


@torch.no_grad()
def _trace_metrics(log_prob: Tensor, old_log_prob: Tensor, valid: Tensor | None, rho_bar: float) -> dict[str, Any]:
    """Over the valid steps of ``[T, N]`` log π and log μ: the policy lag KL̂(μ ‖ π) (``approx_kl``) and
    the mean truncated importance weight ρ_t = min(ρ̄, π/μ) of the policy gradient (``rho_mean``; 1
    on-policy with ρ̄ ≥ 1, up to rounding)."""
    if valid is not None:
        log_prob, old_log_prob = log_prob[valid], old_log_prob[valid]
    return {
        "approx_kl": approx_kl(log_prob, old_log_prob),
        "rho_mean": (log_prob - old_log_prob).exp().clamp(max=rho_bar).mean(),
    }
