"""PPO: Ψ is a GAE advantage, the surrogate the clipped importance ratio, several epochs per rollout.

    L(θ, φ) = clipped_surrogate(log πθ, log π_old, Â, ε) + c_v · value_loss(V_φ, R) − c_H · mean H(πθ)

minimised by Adam over ``num_epochs`` passes of random minibatches of the flattened [T·N] batch,
with advantages standardised per minibatch. Options:

* ``kl_penalty``: the adaptive-KL variant, importance_surrogate + β · KL̂ instead of the clip, with
  β halved when the measured KL d < d_targ / 1.5 and doubled when d > 1.5 · d_targ after each
  update (Schulman et al. 2017, section 4).
* ``clip_vloss``: clip the critic's change around its old predictions (value_loss with clip_eps).
* ``target_kl``: stop the epochs early once an epoch's mean KL̂ exceeds it.
* ``anneal_lr``: learning rate linearly to 0 over the run.
* ``criterion = "average"``: Â from differential GAE (r − ρ̂, no γ) for continuing tasks, the
  average-reward PPO of Ma et al. (2021), APO; see policygrad.algorithms.average.

Metrics: policy_loss, value_loss and grad_norm are means over the update's minibatch steps;
entropy, approx_kl and clip_fraction means over every sample of every epoch, each as its
minibatch saw it before its step (so the first minibatch of an update contributes a KL of 0).

Reference: Schulman et al. (2017), "Proximal Policy Optimization Algorithms"; the implementation
details follow Huang et al. (2022), "The 37 Implementation Details of Proximal Policy Optimization".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from policygrad.algorithms.base import Algorithm, Batch, standardize
from policygrad.algorithms.config import BaseConfig, non_negative, positive, unit_interval
from policygrad.backends import Term
from policygrad.errors import InputError, shown
from policygrad.losses import (
    approx_kl,
    clip_fraction,
    clipped_surrogate,
    entropy_bonus,
    importance_surrogate,
    kl_penalty,
    value_loss,
)

__all__ = ["PPOConfig", "PPO"]


@dataclass(frozen=True)
class PPOConfig(BaseConfig):
    """Hyperparameters of PPO (clipped, or adaptive-KL with ``kl_penalty``)."""

    anneal_lr: bool = True
    """Decay the learning rate linearly from learning_rate to 0 over the run's updates."""
    num_epochs: int = 4
    """Passes over the rollout per update."""
    minibatch_size: int = 256
    """Samples per gradient step; at most num_envs · num_steps."""
    gae_lambda: float = 0.95
    """GAE λ in [0, 1]."""
    clip_eps: float = 0.2
    """Clip range ε of the probability ratio (and of the value change with clip_vloss)."""
    clip_vloss: bool = False
    """Clip the critic's change around its collection-time predictions (by clip_eps)."""
    target_kl: float | None = None
    """Stop the update's epochs once an epoch's mean approximate KL exceeds this (None: never)."""
    kl_penalty: bool = False
    """Use the adaptive-KL penalty (importance ratio + β·KL) instead of the clipped surrogate."""
    kl_beta: float = 1.0
    """Initial penalty weight β of the adaptive-KL variant."""
    kl_penalty_target: float = 0.01
    """Target KL d_targ of the adaptive-KL variant: β halves below d_targ/1.5, doubles above 1.5·d_targ."""

    def _validate(self) -> None:
        super()._validate()
        positive(self, "num_epochs", "minibatch_size", "clip_eps", "kl_penalty_target")
        non_negative(self, "kl_beta")
        unit_interval(self, "gae_lambda")
        if self.target_kl is not None and not self.target_kl > 0:
            raise InputError(f"target_kl must be > 0 or None, got {self.target_kl}")
        if self.minibatch_size > self.batch_size:
            raise InputError(
                f"minibatch_size {self.minibatch_size} exceeds the batch size num_envs·num_steps = "
                f"{self.num_envs}·{self.num_steps} = {self.batch_size}"
            )


class PPO(Algorithm):
    """Proximal Policy Optimization (clipped surrogate, or adaptive KL penalty)."""

    name = "ppo"
    off_policy_correction = True  # the ratio is to the stored behaviour log-probabilities
    config: PPOConfig

    def __init__(self, policy: torch.nn.Module, config: PPOConfig, total_updates: int) -> None:
        super().__init__(policy, config, total_updates)
        self.kl_beta = config.kl_beta
        """The adaptive-KL variant's current β."""

    def weigh(self, rollout: Any) -> tuple[Tensor, Tensor]:
        return self._gae(rollout)

    def optimise(self, batch: Batch) -> dict[str, Any]:
        cfg = self.config
        backend = self.backend
        size = len(batch)
        minibatch_size = min(cfg.minibatch_size, size)  # fewer samples when invalid steps were dropped
        value_clip = cfg.clip_eps if cfg.clip_vloss else None
        losses: list[tuple[Any, Any, Any]] = []  # (policy loss, value loss, grad norm) per minibatch step
        log_probs: list[Tensor] = []  # log π(a|s) of each minibatch as evaluated, before its step
        old_log_probs: list[Tensor] = []
        entropies: list[Tensor] = []
        epochs = 0
        for _ in range(cfg.num_epochs):
            # The batch shuffled once per epoch; its minibatches are consecutive slices (views).
            shuffled = batch.index(torch.randperm(size))
            advantages_epoch = self._minibatch_advantages(shuffled.advantages, minibatch_size)
            first = len(losses)
            for start in range(0, size, minibatch_size):
                mb = shuffled.slice(start, start + minibatch_size)
                out = backend.evaluate(mb.observations, mb.actions, mb.action_masks)  # log π, H, V: [b] each
                advantages = advantages_epoch[start : start + minibatch_size]
                if cfg.kl_penalty:
                    terms = [Term(importance_surrogate, (out.log_prob, mb.old_log_probs, advantages)),
                             Term(kl_penalty, (out.log_prob, mb.old_log_probs, self.kl_beta))]
                else:
                    terms = [Term(clipped_surrogate, (out.log_prob, mb.old_log_probs, advantages, cfg.clip_eps))]
                n_policy = len(terms)
                terms.append(Term(value_loss, (out.value, mb.returns, mb.old_values, value_clip), cfg.vf_coef))
                if cfg.ent_coef:
                    terms.append(Term(entropy_bonus, (out.entropy, cfg.ent_coef)))
                values, grad_norm = backend.step(terms)
                losses.append((sum(values[1:n_policy], values[0]), values[n_policy], grad_norm))
                log_probs.append(out.log_prob.detach())
                old_log_probs.append(mb.old_log_probs)
                entropies.append(out.entropy.detach())
            epochs += 1
            # One host read per epoch: the finiteness check, and the early stop on the epoch's KL.
            epoch = losses[first:]
            self._check_finite(_mean([p for p, _, _ in epoch]) + _mean([v for _, v, _ in epoch]),
                               "the summed policy and value loss")
            if cfg.target_kl is not None:
                kl = approx_kl(torch.cat(log_probs[first:]), shuffled.old_log_probs)
                if float(kl) > cfg.target_kl:
                    break
        with torch.no_grad():
            log_prob, old_log_prob = torch.cat(log_probs), torch.cat(old_log_probs)
            metrics: dict[str, Any] = {
                "policy_loss": _mean([p for p, _, _ in losses]),
                "value_loss": _mean([v for _, v, _ in losses]),
                "entropy": torch.cat(entropies).mean(),
                "approx_kl": approx_kl(log_prob, old_log_prob),
                "clip_fraction": clip_fraction(log_prob, old_log_prob, cfg.clip_eps),
                "grad_norm": _mean([g for _, _, g in losses]),
                "epochs": epochs,
            }
        if cfg.kl_penalty:
            metrics["kl_beta"] = self.kl_beta  # the β this update used
            self._adapt_beta(batch)
        return metrics

    def _minibatch_advantages(self, advantages: Tensor, minibatch_size: int) -> Tensor:
        """The shuffled advantages ``[B]``, standardised within each minibatch of consecutive
        samples when ``normalize_advantages`` (all the epoch's minibatches in one operation)."""
        if not self.config.normalize_advantages:
            return advantages
        full = len(advantages) // minibatch_size * minibatch_size  # samples in full-size minibatches
        rows = standardize(advantages[:full].view(-1, minibatch_size), dim=1).view(-1)
        if full == len(advantages):
            return rows
        return torch.cat([rows, standardize(advantages[full:])])

    @torch.no_grad()
    def _adapt_beta(self, batch: Batch) -> None:
        """β ← β/2 if d < d_targ/1.5, β ← 2β if d > 1.5·d_targ, with d the KL̂ after the update."""
        dist = self.policy.distribution(batch.observations, batch.action_masks)
        kl = float(approx_kl(dist.log_prob(batch.actions), batch.old_log_probs))
        target = self.config.kl_penalty_target
        if kl < target / 1.5:
            self.kl_beta /= 2.0
        elif kl > target * 1.5:
            self.kl_beta *= 2.0

    def _extra_state(self) -> dict[str, Any]:
        return {"kl_beta": self.kl_beta}

    def _load_extra_state(self, meta: dict) -> None:
        beta = meta.get("kl_beta", self.config.kl_beta)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < math.inf:
            raise InputError(f"checkpoint's PPO state has a bad kl_beta {shown(beta)}")
        self.kl_beta = float(beta)


def _mean(values: list[Any]) -> Any:
    """The mean of floats (the NumPy backend's losses) or of 0-dim tensors (the torch backend's,
    kept on their device: no host read)."""
    if isinstance(values[0], Tensor):
        return torch.stack(values).mean()
    return sum(values) / len(values)
