"""REINFORCE: Ψ is a Monte Carlo return, the surrogate the plain score-function loss.

    ∇J(θ) ≈ mean_t [ ∇ log πθ(a_t|s_t) · Ψ_t ],
    Ψ_t = R(τ)            (return_type = "total": the whole episode's discounted return)
    Ψ_t = G_t             (return_type = "reward_to_go": only rewards from t on)
    Ψ_t − V(s_t)          (use_baseline: a learned state-value baseline, unbiased, lower variance)

Reference: Williams (1992), "Simple Statistical Gradient-Following Algorithms for Connectionist
Reinforcement Learning"; Sutton & Barto (2018), section 13.3–13.4.

Episodes that do not fit in a rollout. A rollout holds T steps per environment, so an episode can
start in an earlier rollout or go on after this one:

* With ``use_baseline`` the return is bootstrapped from the critic at a truncation and at the
  rollout's end (``policygrad.returns.discounted_returns``), as in an actor-critic method.
* Without a baseline there is no trained critic, so the return is cut there (bootstrap 0): it sums
  only the rewards inside the rollout. Use a ``num_steps`` of at least the episode length limit to
  keep that cut rare.
* For ``"total"``, the rewards of an episode received before this rollout are not available;
  they are left out. This changes nothing in expectation: a reward received before a_t is
  independent of the score ∇ log π(a_t|s_t) given the past, so its term has mean zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from policygrad.algorithms.base import Algorithm, Batch
from policygrad.algorithms.config import BaseConfig
from policygrad.errors import InputError
from policygrad.returns import discounted_returns, episode_total_returns

__all__ = ["ReinforceConfig", "Reinforce", "episode_total_returns"]


@dataclass(frozen=True)
class ReinforceConfig(BaseConfig):
    """Hyperparameters of REINFORCE (with or without a learned baseline)."""

    num_steps: int = 512
    """Steps collected per environment per rollout (T); one gradient step per rollout."""
    learning_rate: float = 1e-3
    """Optimiser step size (policy and baseline share the optimiser)."""
    return_type: Literal["total", "reward_to_go"] = "reward_to_go"
    """Ψ: "total" (the episode's whole return for every step) or "reward_to_go" (rewards from t on)."""
    use_baseline: bool = True
    """Subtract the learned state value V(s_t) from Ψ and train V on the reward-to-go."""

    def _validate(self) -> None:
        super()._validate()
        if self.criterion != "discounted":
            raise InputError(
                f"reinforce supports only criterion='discounted' (its Ψ is a Monte Carlo return), got "
                f"{self.criterion!r}; use a2c, ppo, npg or trpo for the average-reward criterion"
            )


class Reinforce(Algorithm):
    """REINFORCE: one score-function gradient step per rollout on Monte Carlo returns."""

    name = "reinforce"
    config: ReinforceConfig

    def weigh(self, rollout: Any) -> tuple[Tensor, Tensor]:
        cfg = self.config
        # Bootstrap from the critic only when there is a trained one (see the module docstring).
        next_values = rollout.next_values if cfg.use_baseline else torch.zeros_like(rollout.next_values)
        returns = discounted_returns(rollout.rewards, next_values, rollout.terminated, rollout.truncated, cfg.gamma)
        psi = returns
        if cfg.return_type == "total":
            psi = episode_total_returns(returns, rollout.episode_step, rollout.terminated, rollout.truncated,
                                        cfg.gamma)
        if cfg.use_baseline:
            psi = psi - rollout.values
        return psi, returns

    def optimise(self, batch: Batch) -> dict[str, Any]:
        return self._score_function_step(batch, use_critic=self.config.use_baseline)
