"""The average-reward criterion: Ψ from differential advantages, a running ρ, a centred critic.

Under ``criterion = "average"`` an algorithm maximises the long-run reward per step

    ρ(π) = lim_{T→∞} (1/T) E_π[ Σ_{t<T} r_t ] = Σ_s d_π(s) Σ_a π(a|s) r(s, a),

with d_π the stationary distribution, instead of a discounted return. Its Policy Gradient Theorem
(Sutton et al. 1999) weighs each score by the differential action value q(s, a) − v(s), where v is
the differential value function (the Poisson equation v(s) = E[r − ρ + v(s') | s]), so that

    δ_t = r_t − ρ̂ + v(s_{t+1}) − v(s_t)          (no discount; policygrad.returns.differential_td_errors)
    Ψ_t = Â_t = Σ_k λ^k δ_{t+k}                    (policygrad.returns.differential_gae)
    critic target R_t = Â_t + v_old(s_t) − c · mean_batch v_old

Three choices, each with where it comes from:

* **ρ̂, the batch mean or a running estimate** (:meth:`AverageReward.update_rho`): ρ̂ ← ρ̂ + η
  (mean batch reward − ρ̂), started at the first batch's mean, before the batch's advantages are
  computed. With η = 1 (``rho_lr``; the default of PPO, NPG and TRPO) it is the batch's own mean
  reward, the estimate of ATRPO (Zhang & Ross 2021, Algorithm 1); η = 0.1 (A2C's default) is
  APO's running estimate (Ma et al. 2021, their ``lr_eta``). A running estimate lags a policy
  that improves quickly, and the lag is not harmless: each update's critic targets then carry a
  bias of about (ρ − ρ̂)/(1 − λ) per state, which the bootstrapped critic accumulates until the
  centring below balances it at about (ρ − ρ̂)/((1 − λ) c). On continuing Pendulum (4 × 1024
  steps per batch) the policy's reward per step rises from about −4 to 0 within a few updates,
  ρ̂ with η = 0.1 trails by about 3, and the critic's values climb into the hundreds; the critic
  saturates and the policy collapses after it has learnt to balance (8 of 12 runs: seeds 0–5
  through each of the two update paths). With η = 1, 3 of 35 such runs fell and stayed down. Batches of thousands of steps
  estimate ρ well on their own; A2C's batches of tens of steps do not, hence its η = 0.1. The
  mean TD-error correction ρ̂ ← ρ̂ + η · mean δ differs from the reward mean only by
  η · mean(v(s') − v(s)), a sum that telescopes to nearly 0 over a long on-policy batch, so the
  plain reward mean is used.
* **A centred critic** (:func:`differential_targets`): v is defined only up to an additive
  constant, and with γ = 1 nothing pins its level, so a critic regressed on bootstrapped targets
  can drift. Each update subtracts c times the batch mean of the collection-time values from the
  critic's targets (``value_center_coef``, c = 0.1 by default), which pulls the batch (≈ stationary)
  mean of v toward 0, the normalisation d_π · v = 0 of the exact solution. This is APO's "average
  value constraint" (Ma et al. 2021: their ``rm_vbias_coeff`` = 0.1 times a running mean of v);
  here the mean is the current batch's, so there is no second running statistic. The advantages do
  not change: a constant in v cancels in every δ_t.
* **The trust region**: NPG and TRPO keep their KL constraint mean_s KL(π_old ‖ π)[s] ≤ δ over
  states of the rollout, and PPO its clip. For the average criterion Zhang & Ross (2021, Theorem 1)
  bound

      | ρ(π') − ρ(π) − E_{s∼d_π, a∼π'}[Ā_π(s, a)] | ≤ 2 ξ · E_{s∼d_π}[ D_TV(π' ‖ π)[s] ],
      ξ = (κ* − 1) max_s | E_{a∼π'} Ā_π(s, a) |,

  with κ* the largest Kemeny constant of the chains P_π (how well connected they are). By Pinsker,
  D_TV ≤ sqrt(KL / 2), so the KL-constrained step on the importance surrogate of differential
  advantages, with states from the stationary distribution (long continuing rollouts, no resets),
  maximises a lower bound on ρ(π') − ρ(π). The discounted bound of Schulman et al. (2015), with its
  1/(1 − γ)² factor, becomes vacuous as γ → 1; this one does not. The same argument, through
  perturbation analysis, is Ma et al. (2021, Theorem 2). The step itself is the same code as for
  the discounted criterion; only Ψ differs.

The criterion needs a continuing task: a termination (a state with v = 0 by definition) has no
meaning when rewards are averaged over an endless run, so :func:`check_continuing` turns the first
``terminated`` flag of a rollout into an :class:`~policygrad.errors.InputError`. Time-limit
truncations are fine (they are bootstrapped); ``time_limit = 0`` removes the limit altogether.

References:
    Zhang & Ross (2021), "On-Policy Deep Reinforcement Learning for the Average-Reward Criterion",
    ICML (ATRPO).
    Ma, Tang, Xia, Yang & Zhao (2021), "Average-Reward Reinforcement Learning with Trust Region
    Methods", IJCAI (APO).
    Sutton & Barto (2018), "Reinforcement Learning: An Introduction", section 10.3.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from policygrad.errors import InputError, shown
from policygrad.returns import differential_gae

__all__ = ["CRITERIA", "AverageReward", "check_continuing", "differential_targets", "valid_mean"]

CRITERIA = ("discounted", "average")
"""The accepted values of the ``criterion`` config field."""


def valid_mean(x: Tensor, valid: Tensor | None) -> Tensor:
    """Mean of ``x [T, N]`` over the steps where ``valid [T, N]`` (all steps if None); 0-dim."""
    if valid is None:
        return x.mean()
    count = valid.sum().clamp(min=1)
    return (x * valid.to(x.dtype)).sum() / count


def check_continuing(rollout: Any) -> None:
    """InputError (one line) if any step of the rollout terminated an episode.

    Args:
        rollout: a :class:`~policygrad.rollout.Rollout`; reads ``terminated [T, N]``.
    """
    terminated = rollout.terminated
    if bool(terminated.any()):
        t, i = (int(v) for v in terminated.nonzero()[0])
        raise InputError(
            f"criterion='average' needs a continuing task, but environment {i} terminated an episode "
            f"(rollout step {t}); use criterion='discounted' for episodic tasks"
        )


def differential_targets(
    rollout: Any, rho: float, lam: float, center_coef: float
) -> tuple[Tensor, Tensor]:
    """Differential GAE advantages and the centred critic targets of a rollout.

    Â_t = differential_gae(r − ρ, v, v', λ),   R_t = Â_t + v_old(s_t) − c · mean_valid v_old.

    Args:
        rollout: reads ``rewards``, ``values``, ``next_values``, ``terminated``, ``truncated``
            (all ``[T, N]``) and ``valid`` (``[T, N]`` bool or None).
        rho: the average-reward estimate ρ̂.
        lam: GAE λ in [0, 1].
        center_coef: c ≥ 0, the fraction of the batch mean of v subtracted from the targets.

    Returns:
        ``(advantages [T, N], targets [T, N])``, without gradient.
    """
    with torch.no_grad():
        advantages = differential_gae(
            rollout.rewards, rollout.values, rollout.next_values, rollout.terminated, rollout.truncated, rho, lam
        )
        targets = advantages + rollout.values
        if center_coef:
            targets = targets - center_coef * valid_mean(rollout.values, getattr(rollout, "valid", None))
    return advantages, targets


class AverageReward:
    """The state of the average-reward criterion: the running estimate ρ̂.

    Args:
        rho_lr: step size η of ρ̂ ← ρ̂ + η (mean batch reward − ρ̂), in (0, 1].
        lam: GAE λ.
        center_coef: c, see :func:`differential_targets`.
    """

    def __init__(self, rho_lr: float, lam: float, center_coef: float) -> None:
        self.rho_lr = float(rho_lr)
        self.lam = float(lam)
        self.center_coef = float(center_coef)
        self.rho: float | None = None
        """ρ̂, None until the first batch."""

    def update_rho(self, rollout: Any) -> float:
        """Move ρ̂ toward the rollout's mean reward over valid steps; returns the new ρ̂."""
        batch_mean = float(valid_mean(rollout.rewards, getattr(rollout, "valid", None)))
        if self.rho is None:
            self.rho = batch_mean
        else:
            self.rho += self.rho_lr * (batch_mean - self.rho)
        return self.rho

    def weigh(self, rollout: Any) -> tuple[Tensor, Tensor]:
        """Check the task is continuing, update ρ̂, and return (Ψ, critic targets), both ``[T, N]``."""
        check_continuing(rollout)
        rho = self.update_rho(rollout)
        return differential_targets(rollout, rho, self.lam, self.center_coef)

    def state(self) -> dict[str, Any]:
        """JSON state for a checkpoint."""
        return {"rho": self.rho}

    def load_state(self, meta: Any) -> None:
        """Restore :meth:`state`."""
        if not isinstance(meta, dict):
            raise InputError("checkpoint lacks the average-reward state (rho) of a criterion='average' run")
        rho = meta.get("rho")
        if rho is not None and (isinstance(rho, bool) or not isinstance(rho, (int, float)) or not math.isfinite(rho)):
            raise InputError(f"checkpoint's average-reward state has a bad rho {shown(rho)}")
        self.rho = None if rho is None else float(rho)
