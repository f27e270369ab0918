"""NPG and TRPO: Ψ is a GAE advantage, the step a natural gradient of the importance surrogate.

    L(θ) = importance_surrogate(log πθ, log π_old, Â) − c_H · mean H(πθ)
    g = −∇L(θ_old),   s = F⁻¹ g by conjugate gradient on Fisher-vector products,
    Δθ = sqrt(2δ / sᵀFs) · s          (½ ΔθᵀFΔθ = δ = max_kl)

NPG takes θ_old + Δθ (Kakade 2001, "A Natural Policy Gradient", with the KL-normalised step of
Rajeswaran et al. 2017). TRPO backtracks along Δθ until the exact mean KL ≤ δ and the surrogate
improves (Schulman et al. 2015, "Trust Region Policy Optimization", Appendix C). In both, the
critic is then fitted by Adam on the λ-returns for ``vf_iters`` passes of minibatches.

The policy's parameters are those the action distribution depends on (found by autograd each
update), so the trust-region step never touches a separate critic. A trunk shared by actor and
critic is moved by both steps.

With ``criterion = "average"`` Â is the differential GAE advantage (no γ) and the same
KL-constrained step maximises the average-reward lower bound of Zhang & Ross (2021), ATRPO, whose
penalty depends on Kemeny's constant instead of 1/(1 − γ)²; see policygrad.algorithms.average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from policygrad.algorithms.base import Algorithm, Batch, standardize
from policygrad.algorithms.config import BaseConfig, non_negative, positive, unit_interval
from policygrad.errors import InputError, TrainingError
from policygrad.losses import entropy_bonus, importance_surrogate, value_loss
from policygrad.trust_region import fisher_vector_product, line_search, natural_step

__all__ = ["NPGConfig", "TRPOConfig", "NPG", "TRPO"]


@dataclass(frozen=True)
class NPGConfig(BaseConfig):
    """Hyperparameters of the natural policy gradient (NPG)."""

    num_steps: int = 1024
    """Steps collected per environment per rollout (T); one natural step per rollout."""
    learning_rate: float = 1e-3
    """Adam step size of the critic (the policy's step size comes from max_kl)."""
    gae_lambda: float = 0.95
    """GAE λ in [0, 1]."""
    max_kl: float = 0.01
    """Trust-region size δ: the step's (quadratic-model) mean KL divergence."""
    cg_iters: int = 10
    """Conjugate-gradient iterations for s = F⁻¹ g."""
    cg_residual_tol: float = 1e-10
    """Stop conjugate gradient once the squared residual falls below this."""
    damping: float = 0.1
    """λ added to the Fisher matrix (F + λI) for a well-conditioned solve."""
    vf_iters: int = 10
    """Passes of critic minibatch updates per rollout."""
    minibatch_size: int = 128
    """Samples per critic gradient step; at most num_envs · num_steps."""
    max_grad_norm: float | None = None
    """Clip the critic's global gradient norm to this (None: no clipping)."""

    def _validate(self) -> None:
        super()._validate()
        positive(self, "max_kl", "cg_iters", "vf_iters", "minibatch_size", "cg_residual_tol")
        non_negative(self, "damping")
        unit_interval(self, "gae_lambda")
        if self.minibatch_size > self.batch_size:
            raise InputError(
                f"minibatch_size {self.minibatch_size} exceeds the batch size num_envs·num_steps = "
                f"{self.num_envs}·{self.num_steps} = {self.batch_size}"
            )


@dataclass(frozen=True)
class TRPOConfig(NPGConfig):
    """Hyperparameters of TRPO: NPG's plus the line search."""

    backtrack_iters: int = 10
    """Step fractions tried by the line search (1, β, β², ...)."""
    backtrack_coef: float = 0.8
    """Shrink factor β of the line search, in (0, 1)."""
    accept_ratio: float = 0.1
    """Accept a step once actual / expected improvement of the surrogate reaches this."""

    def _validate(self) -> None:
        super()._validate()
        positive(self, "backtrack_iters")
        non_negative(self, "accept_ratio")
        if not 0.0 < self.backtrack_coef < 1.0:
            raise InputError(f"backtrack_coef must lie in (0, 1), got {self.backtrack_coef}")


class NPG(Algorithm):
    """Natural policy gradient: the full KL-scaled natural step, then critic regression."""

    name = "npg"
    config: NPGConfig
    line_search: bool = False
    numpy_refusal = "npg and trpo, whose natural step takes second derivatives (Fisher-vector products) through autograd"

    def weigh(self, rollout: Any) -> tuple[Tensor, Tensor]:
        return self._gae(rollout)

    def optimise(self, batch: Batch) -> dict[str, Any]:
        metrics = self._policy_step(batch)
        metrics.update(self._critic_steps(batch))
        return metrics

    def _policy_step(self, batch: Batch) -> dict[str, Any]:
        cfg = self.config
        obs, masks, actions = batch.observations, batch.action_masks, batch.actions
        advantages = standardize(batch.advantages) if cfg.normalize_advantages else batch.advantages

        def surrogate(dist: Any) -> Tensor:
            loss = importance_surrogate(dist.log_prob(actions), batch.old_log_probs, advantages)
            return loss + entropy_bonus(dist.entropy(), cfg.ent_coef) if cfg.ent_coef else loss

        with torch.no_grad():  # a snapshot: the steps below change the parameters in place
            old_dist = self.policy.distribution(obs, masks).snapshot()
        dist = self.policy.distribution(obs, masks)
        entropy = dist.entropy().detach().mean()
        loss = surrogate(dist)
        self._check_finite(loss.detach(), "the surrogate loss")
        grads = torch.autograd.grad(loss, self.backend.params, retain_graph=True, allow_unused=True)
        params = [p for p, g in zip(self.backend.params, grads) if g is not None]
        gradient = -torch.cat([g.reshape(-1) for g in grads if g is not None])  # ascent direction g
        fvp = fisher_vector_product(old_dist.kl(dist).mean(), params, cfg.damping)
        step, expected = natural_step(fvp, gradient, cfg.max_kl, cfg.cg_iters, cfg.cg_residual_tol)
        x0 = torch.cat([p.detach().reshape(-1) for p in params])

        def evaluate(x: Tensor) -> tuple[float, float]:
            _assign(params, x)
            with torch.no_grad():
                new_dist = self.policy.distribution(obs, masks)
                loss_kl = torch.stack([surrogate(new_dist), old_dist.kl(new_dist).mean()])
            loss_value, kl_value = loss_kl.tolist()
            return loss_value, kl_value

        if self.line_search:
            result = line_search(
                evaluate, x0, step, float(expected), cfg.max_kl, loss0=float(loss.detach()),
                backtrack_iters=cfg.backtrack_iters, backtrack_coef=cfg.backtrack_coef,
                accept_ratio=cfg.accept_ratio,
            )
            _assign(params, result.params)
            kl, fraction = result.kl, result.step_fraction
        else:
            _, kl = evaluate(x0 + step)
            fraction = 1.0
            if not math.isfinite(kl):
                _assign(params, x0)
                raise TrainingError(
                    f"non-finite loss at update {self.updates + 1}: the KL after the natural step is {kl}"
                )
        return {
            "policy_loss": loss.detach(),
            "entropy": entropy,
            "approx_kl": kl,
            "grad_norm": gradient.norm(),
            "step_fraction": fraction,
            "expected_improvement": expected,
        }

    def _critic_steps(self, batch: Batch) -> dict[str, Any]:
        cfg = self.config
        size = len(batch)
        minibatch_size = min(cfg.minibatch_size, size)
        total = torch.zeros(())
        steps = 0
        for _ in range(cfg.vf_iters):
            perm = torch.randperm(size)
            for start in range(0, size, minibatch_size):
                idx = perm[start : start + minibatch_size]
                v_loss = value_loss(self.policy.value(batch.observations[idx]), batch.returns[idx])
                self.backend.minimize(v_loss)
                total += v_loss.detach()
                steps += 1
        mean = total / steps
        self._check_finite(mean, "the value loss")
        return {"value_loss": mean}


class TRPO(NPG):
    """Trust Region Policy Optimization: NPG's step, backtracked to satisfy the KL constraint."""

    name = "trpo"
    config: TRPOConfig
    line_search = True


@torch.no_grad()
def _assign(params: list[Tensor], flat: Tensor) -> None:
    """Copy the flat ``[P]`` vector into the parameters (in place, keeping their storage)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[offset : offset + n].view_as(p))
        offset += n
