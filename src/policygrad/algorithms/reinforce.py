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
from policygrad.returns import discount_weights, discounted_returns

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


def episode_total_returns(returns: Tensor, episode_step: Tensor, terminated: Tensor, truncated: Tensor,
                          gamma: float) -> Tensor:
    """The part of the episode's total discounted return R(τ) that a rollout holds, for every step.

    Ψ_t = γ^{k₀} · G_{t₀},

    where t₀ is the first step of t's episode inside the rollout (its start, or the rollout's
    first step), k₀ its step index within the episode and G the reward-to-go. When the episode
    starts inside the rollout (k₀ = 0) this is R(τ) = Σ_k γ^k r_k exactly; otherwise it is R(τ)
    minus the rewards received before the rollout, which have zero-mean terms in the estimator.

    Args:
        returns: ``[T, N]`` reward-to-go G_t (from ``discounted_returns``).
        episode_step: ``[T, N]`` steps since the episode's start.
        terminated, truncated: ``[T, N]`` bool.
        gamma: γ.

    Returns:
        ``[T, N]`` Ψ_t.
    """
    steps = torch.arange(returns.shape[0], device=returns.device).unsqueeze(1)  # [T, 1]
    done = terminated.bool() | truncated.bool()
    starts = episode_step == 0
    starts[0] = True
    starts[1:] |= done[:-1]
    first = torch.where(starts, steps, 0).cummax(dim=0).values  # [T, N] index t₀ of each step's segment
    weights = discount_weights(episode_step.gather(0, first), gamma).to(returns.dtype)
    return weights * returns.gather(0, first)


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
