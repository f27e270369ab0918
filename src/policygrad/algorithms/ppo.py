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

Reference: Schulman et al. (2017), "Proximal Policy Optimization Algorithms"; the implementation
details follow Huang et al. (2022), "The 37 Implementation Details of Proximal Policy Optimization".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from policygrad.algorithms.base import Algorithm, Batch, standardize
from policygrad.algorithms.config import BaseConfig, non_negative, positive, unit_interval
from policygrad.backends import Term
from policygrad.errors import InputError
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
        # Means over all minibatch steps: policy_loss, value_loss, entropy, approx_kl, clip_fraction, grad_norm.
        totals = torch.zeros(6, dtype=torch.float64)
        steps = 0
        epochs = 0
        for _ in range(cfg.num_epochs):
            # The batch shuffled once per epoch; its minibatches are consecutive slices (views).
            shuffled = batch.index(torch.randperm(size))
            advantages_epoch = self._minibatch_advantages(shuffled.advantages, minibatch_size)
            losses: list[Any] = []  # [policy loss, value loss, grad norm] per minibatch
            log_probs: list[Tensor] = []
            entropies: list[Tensor] = []
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
                losses += (sum(values[1:n_policy], values[0]), values[n_policy], grad_norm)
                log_probs.append(out.log_prob.detach())
                entropies.append(out.entropy.detach())
            # The epoch's metrics at once (the same means over minibatches as step by step), and one
            # host read per epoch: the finiteness check and the early stop.
            with torch.no_grad():
                epoch = self._epoch_means(shuffled, minibatch_size, losses, log_probs, entropies)
            self._check_finite(epoch[0] + epoch[1], "the summed policy and value loss")
            epoch_steps = len(entropies)
            totals += epoch * epoch_steps
            steps += epoch_steps
            epochs += 1
            if cfg.target_kl is not None and float(epoch[3]) > cfg.target_kl:
                break
        means = totals / steps
        metrics: dict[str, Any] = {
            "policy_loss": means[0],
            "value_loss": means[1],
            "entropy": means[2],
            "approx_kl": means[3],
            "clip_fraction": means[4],
            "grad_norm": means[5],
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

    def _epoch_means(
        self, shuffled: Batch, minibatch_size: int, losses: list[Tensor], log_probs: list[Tensor], entropies: list[Tensor]
    ) -> Tensor:
        """``[6]``: policy loss, value loss, entropy, approx. KL, clip fraction, grad norm, each the
        mean over the epoch's minibatches of its minibatch mean."""
        n = len(entropies)
        per_step = torch.tensor([float(v) for v in losses], dtype=torch.float64) if not isinstance(losses[0], Tensor) \
            else torch.stack(losses).double()
        per_step = per_step.view(n, 3).mean(0)  # policy loss, value loss, grad norm
        log_prob = log_probs[0] if n == 1 else torch.cat(log_probs)
        entropy = entropies[0] if n == 1 else torch.cat(entropies)
        old_log_prob = shuffled.old_log_probs
        full = len(entropy) // minibatch_size * minibatch_size  # samples in full-size minibatches
        if full == len(entropy):  # equal minibatches: the mean of their means is the mean over all
            stats = [entropy.mean(), approx_kl(log_prob, old_log_prob), clip_fraction(log_prob, old_log_prob, self.config.clip_eps)]
            return torch.stack([per_step[0], per_step[1], *(s.double() for s in stats), per_step[2]])
        stats = []
        for fn in (
            lambda lp, old, h: h.mean(),
            lambda lp, old, h: approx_kl(lp, old),
            lambda lp, old, h: clip_fraction(lp, old, self.config.clip_eps),
        ):
            # A mean over the full minibatches is the mean of their means; a short last one
            # counts as one minibatch.
            value = fn(log_prob[:full], old_log_prob[:full], entropy[:full]) * (full // minibatch_size)
            if full < len(entropy):
                value = value + fn(log_prob[full:], old_log_prob[full:], entropy[full:])
            stats.append((value / n).double())
        return torch.stack([per_step[0], per_step[1], *stats, per_step[2]])

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
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
            raise InputError(f"checkpoint's PPO state has a bad kl_beta {beta!r}")
        self.kl_beta = float(beta)
