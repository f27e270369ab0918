"""A2C, the synchronous advantage actor-critic: Ψ is a GAE advantage, one gradient step per rollout.

    L(θ, φ) = score_function_loss(log πθ, Â) + c_v · ½ mean (V_φ − R)² − c_H · mean H(πθ),
    Â = GAE(γ, λ) from the critic's values at collection time,  R = Â + V_old.

With λ = 1 and short rollouts this is the n-step actor-critic of Mnih et al. (2016), "Asynchronous
Methods for Deep Reinforcement Learning", run synchronously over N environments; Ψ from GAE is
Schulman et al. (2016). With ``criterion = "average"``, Â is the differential GAE advantage of
policygrad.algorithms.average.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from policygrad.algorithms.base import Algorithm, Batch
from policygrad.algorithms.config import BaseConfig, unit_interval

__all__ = ["A2CConfig", "A2C"]


@dataclass(frozen=True)
class A2CConfig(BaseConfig):
    """Hyperparameters of A2C."""

    num_steps: int = 5
    """Steps collected per environment per rollout (T, the n of n-step returns)."""
    learning_rate: float = 7e-4
    """Optimiser step size."""
    optimizer: Literal["adam", "rmsprop"] = "rmsprop"
    """Gradient optimiser: rmsprop (α = 0.99, as in the reference implementation) or adam."""
    gae_lambda: float = 1.0
    """GAE λ in [0, 1]: 1 gives n-step returns minus V, 0 the one-step TD error."""
    normalize_advantages: bool = False
    """Standardise the advantages over the batch before the step."""
    rho_lr: float = 0.1
    """criterion="average": step size η of ρ ← ρ + η (mean batch reward − ρ); a running mean (APO's
    0.1), as A2C's batches of tens of steps give a noisy mean each."""

    def _validate(self) -> None:
        super()._validate()
        unit_interval(self, "gae_lambda")


class A2C(Algorithm):
    """Synchronous advantage actor-critic: GAE advantages, one joint gradient step per rollout."""

    name = "a2c"
    config: A2CConfig

    def weigh(self, rollout: Any) -> tuple[Tensor, Tensor]:
        return self._gae(rollout)

    def optimise(self, batch: Batch) -> dict[str, Any]:
        return self._score_function_step(batch, use_critic=True)
