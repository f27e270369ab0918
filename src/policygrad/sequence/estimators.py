"""Group estimators for token sequences: advantages, per-token KL terms, aggregation, surrogates.

Pure functions on torch tensors. A batch holds ``num_groups`` groups of ``G`` completions each,
group-major: rows ``g·G .. g·G + G − 1`` are the G completions of group g (one prompt). Per-token
tensors are ``[B, L]`` (B = num_groups · G rows, right-padded, ``mask [B, L]`` True on a
completion's tokens); rewards are ``[B]`` or ``[num_groups, G]``.

Symbols: y_i the i-th completion of a group, |y_i| its length, R_i its reward, R'_i the reward the
advantage sees (R_i, or R_i − β Σ_t k1_it with the KL in the reward), log π_it = log πθ(y_it | x,
y_i,<t), log π_ref,it the same under the reference policy, k1_it = log π_it − log π_ref,it.

The objective throughout is J_β(θ) = E_y~πθ[R(y)] − β KL(πθ ‖ π_ref), the KL over whole
completions (= E[Σ_t k1_t]). Each function's docstring says whose gradient its estimate follows in
expectation; :mod:`policygrad.sequence.exact` computes those expectations exactly on small spaces
and ``policygrad verify --sequence`` checks them.

References: Williams (1992) REINFORCE; Kool et al. (2019) and Ahmadian et al. (2024, 2402.14740)
RLOO; Shao et al. (2024) GRPO; Liu et al. (2025, 2503.20783) Dr. GRPO; Li et al. (2023,
2310.10505) ReMax; Hu (2025, 2501.03262) REINFORCE++; Schulman (2020) "Approximating KL
divergence" (k1, k2, k3); Tang & Munos (2025, 2506.09477) on KL gradients.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from policygrad.errors import InputError, shown
from policygrad.returns import gae

__all__ = [
    "ADVANTAGES",
    "KL_MODES",
    "KL_LOSS_MODES",
    "AGGREGATIONS",
    "GRPO_EPS",
    "reinforce",
    "rloo",
    "dr_grpo",
    "grpo",
    "remax",
    "reinforce_pp",
    "group_advantages",
    "k1",
    "k2",
    "k3",
    "k3_ratio",
    "kl_term",
    "k1_reward",
    "aggregate",
    "clipped_token_surrogate",
    "token_gae",
    "sequence_surrogate",
]

Advantage = Literal["reinforce", "rloo", "dr_grpo", "grpo", "remax", "reinforce_pp"]
KLMode = Literal["none", "k1_reward", "k1_loss", "k2_loss", "k3_loss", "k3_ratio_loss"]
Aggregation = Literal["sum", "sequence_mean", "token_mean"]

ADVANTAGES = ("reinforce", "rloo", "dr_grpo", "grpo", "remax", "reinforce_pp")
KL_MODES = ("none", "k1_reward", "k1_loss", "k2_loss", "k3_loss", "k3_ratio_loss")
KL_LOSS_MODES = ("k1_loss", "k2_loss", "k3_loss", "k3_ratio_loss")
AGGREGATIONS = ("sum", "sequence_mean", "token_mean")

GRPO_EPS = 1e-4
"""Added to the group's standard deviation in :func:`grpo` (TRL's value)."""


# ---------------------------------------------------------------------------------------------
# Group advantages: R' [G] or [num_groups, G] -> A of the same shape, no gradient
# ---------------------------------------------------------------------------------------------


def _groups(rewards: Tensor, minimum: int = 1) -> Tensor:
    if rewards.dim() not in (1, 2):
        raise InputError(f"rewards must be [G] or [num_groups, G], got shape {tuple(rewards.shape)}")
    if rewards.shape[-1] < minimum:
        raise InputError(f"this advantage needs groups of at least {minimum} completions, got {rewards.shape[-1]}")
    return rewards.detach()


def reinforce(rewards: Tensor) -> Tensor:
    """A_i = R'_i. With sum aggregation, E[Σ_t ∇log π_it · A_i] = ∇J_β (Williams 1992) when R'
    carries the KL (``k1_reward``) or β = 0.

    Args:
        rewards: ``[G]`` or ``[num_groups, G]`` R'.

    Returns:
        A, same shape (detached).
    """
    return _groups(rewards).clone()


def rloo(rewards: Tensor) -> Tensor:
    """Leave-one-out baseline: A_i = R'_i − mean_{j≠i} R'_j (G ≥ 2).

    The baseline is independent of y_i, so E[∇log π(y_i) · A_i] = E[∇log π(y) R'(y)]: the same
    expectation as :func:`reinforce`, ∇J_β with sum aggregation (Kool et al. 2019).
    """
    r = _groups(rewards, 2)
    g = r.shape[-1]
    return r - (r.sum(-1, keepdim=True) - r) / (g - 1)


def dr_grpo(rewards: Tensor) -> Tensor:
    """Group-mean baseline (Dr. GRPO, Liu et al. 2025): A_i = R'_i − mean_j R'_j.

    A_i = (G − 1)/G · (R'_i − mean_{j≠i} R'_j), so its expectation is (G − 1)/G times that of
    :func:`rloo`: the gradient of (G − 1)/G · J_β with sum aggregation.
    """
    r = _groups(rewards)
    return r - r.mean(-1, keepdim=True)


def grpo(rewards: Tensor) -> Tensor:
    """GRPO (Shao et al. 2024): A_i = (R'_i − mean_j R'_j) / (std_j R'_j + 1e-4), the sample
    standard deviation (G − 1 in the denominator; G ≥ 2).

    Biased: the division by a statistic of the group changes the expected direction (scale and,
    when rewards are graded, direction); ``verify --sequence`` reports by how much.
    """
    r = _groups(rewards, 2)
    return (r - r.mean(-1, keepdim=True)) / (r.std(-1, correction=1, keepdim=True) + GRPO_EPS)


def remax(rewards: Tensor, baseline: Tensor | float) -> Tensor:
    """ReMax (Li et al. 2023): A_i = R'_i − b, b the reward of the greedy completion of the same
    prompt (computed apart from the sampled group).

    b does not depend on the sampled y_i, so the expectation is that of :func:`reinforce`:
    ∇J_β with sum aggregation.

    Args:
        rewards: ``[G]`` or ``[num_groups, G]`` R'.
        baseline: a number, ``[]``, or ``[num_groups]`` b per group.
    """
    r = _groups(rewards)
    b = torch.as_tensor(baseline, dtype=r.dtype, device=r.device).detach()
    if b.dim() == 1 and r.dim() == 2:
        if b.shape[0] != r.shape[0]:
            raise InputError(f"baseline has {b.shape[0]} entries for {r.shape[0]} groups")
        b = b[:, None]
    elif b.dim() > 0 and not (b.dim() == 1 and b.shape[0] == 1):
        raise InputError(f"baseline must be a number or [num_groups], got shape {tuple(b.shape)}")
    return r - b


def reinforce_pp(rewards: Tensor) -> Tensor:
    """REINFORCE++ (Hu 2025): A = (R' − batch mean) / (batch std + 1e-4), both over every
    completion of every group passed (sample standard deviation).

    Biased like :func:`grpo` (the statistics depend on the sample), less so as the batch grows;
    its expectation is not computed per group, since the baseline spans the whole batch.
    """
    r = _groups(rewards)
    if r.numel() < 2:
        raise InputError("reinforce_pp needs at least 2 completions in the batch")
    return (r - r.mean()) / (r.std(correction=1) + GRPO_EPS)


def group_advantages(rewards: Tensor, advantage: str, baseline: Tensor | float | None = None) -> Tensor:
    """The advantage named ``advantage`` (one of :data:`ADVANTAGES`) of ``rewards`` ``[num_groups, G]``."""
    if advantage == "reinforce":
        return reinforce(rewards)
    if advantage == "rloo":
        return rloo(rewards)
    if advantage == "dr_grpo":
        return dr_grpo(rewards)
    if advantage == "grpo":
        return grpo(rewards)
    if advantage == "remax":
        if baseline is None:
            raise InputError("remax needs baseline: the reward of each prompt's greedy completion")
        return remax(rewards, baseline)
    if advantage == "reinforce_pp":
        return reinforce_pp(rewards)
    raise InputError(f"advantage must be one of {', '.join(ADVANTAGES)}, got {shown(advantage)}")


# ---------------------------------------------------------------------------------------------
# Per-token KL terms: [B, L] log π, log π_ref -> [B, L]
# ---------------------------------------------------------------------------------------------


def k1(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k1_t = log π_t − log π_ref,t. E[Σ_t k1_t] = KL(π ‖ π_ref), but E[Σ_t ∇k1_t] =
    E[∇log π(y)] = 0: as a loss term its expected gradient is zero (Schulman 2020)."""
    return log_probs - ref_log_probs.detach()


def k2(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k2_t = ½ k1_t². E[Σ_t ∇k2_t] = Σ_t E[∇_θ KL(π(·|h_t) ‖ π_ref(·|h_t))] with the prefix h_t
    held fixed (the per-prefix reverse KL): the gradient of KL(π ‖ π_ref) without the term
    E[Σ_t ∇log π_t Σ_{t'>t} k1_t']."""
    return 0.5 * k1(log_probs, ref_log_probs) ** 2


def k3(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k3_t = e^{−k1_t} − 1 + k1_t ≥ 0 (unbiased for the per-token KL value). E[Σ_t ∇k3_t] =
    Σ_t E[∇_θ KL(π_ref(·|h_t) ‖ π(·|h_t))], prefix held fixed: the per-prefix *forward* KL."""
    d = k1(log_probs, ref_log_probs)
    return torch.exp(-d) - 1 + d


def k3_ratio(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k3_t · π_t / stop_gradient(π_t): the value of k3, the gradient ∇k3_t + k3_t ∇log π_t, whose
    expectation equals that of :func:`k2` (the per-prefix reverse KL, prefix held fixed)."""
    return k3(log_probs, ref_log_probs) * torch.exp(log_probs - log_probs.detach())


_KL_TERMS = {"k1_loss": k1, "k2_loss": k2, "k3_loss": k3, "k3_ratio_loss": k3_ratio}


def kl_term(log_probs: Tensor, ref_log_probs: Tensor, kl: str) -> Tensor:
    """The per-token KL loss term of ``kl`` (one of :data:`KL_LOSS_MODES`), ``[B, L]``."""
    try:
        return _KL_TERMS[kl](log_probs, ref_log_probs)
    except KeyError:
        raise InputError(f"kl loss term must be one of {', '.join(KL_LOSS_MODES)}, got {shown(kl)}") from None


def k1_reward(rewards: Tensor, log_probs: Tensor, ref_log_probs: Tensor, mask: Tensor, beta: float) -> Tensor:
    """R' = R − β Σ_t k1_t, k1 detached: the KL is part of the reward, a weight, not differentiated.

    E[∇log π(y) · R'(y)] = ∇(E[R] − β KL(π ‖ π_ref)) = ∇J_β exactly, since the missing pathwise
    term −β E[Σ_t ∇k1_t] = −β E[∇log π(y)] = 0.

    Args:
        rewards: ``[B]`` R.
        log_probs, ref_log_probs: ``[B, L]`` (detached here).
        mask: ``[B, L]`` bool.
        beta: β ≥ 0.

    Returns:
        ``[B]`` R'.
    """
    d = (log_probs.detach() - ref_log_probs.detach()) * mask.to(log_probs.dtype)
    return rewards.detach() - beta * d.sum(-1)


# ---------------------------------------------------------------------------------------------
# Aggregation of per-token terms within each group
# ---------------------------------------------------------------------------------------------


def aggregate(terms: Tensor, mask: Tensor, group_size: int, aggregation: str) -> Tensor:
    """Per-group aggregate of per-token terms x_it, ``[num_groups]``:

    * ``sum``:           (1/G) Σ_i Σ_t x_it  (with x = ∇log π·A: follows ∇J_β for unbiased A);
    * ``sequence_mean``: (1/G) Σ_i (1/|y_i|) Σ_t x_it  (follows ∇E[(R − b)/|y|]: shorter
      completions weigh more);
    * ``token_mean``:    (1/Σ_j |y_j|) Σ_i Σ_t x_it  (a random normaliser shared by the group;
      exact G-group expectation in :mod:`policygrad.sequence.exact`).

    Args:
        terms: ``[B, L]``, B = num_groups · G.
        mask: ``[B, L]`` bool.
        group_size: G.
        aggregation: one of :data:`AGGREGATIONS`.
    """
    if terms.shape != mask.shape or terms.dim() != 2:
        raise InputError(f"terms {tuple(terms.shape)} and mask {tuple(mask.shape)} must be the same [B, L]")
    b = terms.shape[0]
    if group_size < 1 or b % group_size:
        raise InputError(f"{b} rows do not split into groups of {group_size}")
    m = mask.to(terms.dtype)
    per_seq = (terms * m).sum(-1)  # [B]
    lengths = m.sum(-1)  # [B]
    if aggregation == "sum":
        return per_seq.view(-1, group_size).mean(-1)
    if aggregation == "sequence_mean":
        return (per_seq / lengths.clamp(min=1)).view(-1, group_size).mean(-1)
    if aggregation == "token_mean":
        return per_seq.view(-1, group_size).sum(-1) / lengths.view(-1, group_size).sum(-1).clamp(min=1)
    raise InputError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {shown(aggregation)}")


# ---------------------------------------------------------------------------------------------
# Surrogates
# ---------------------------------------------------------------------------------------------


def clipped_token_surrogate(log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor,
                            clip_eps: float) -> Tensor:
    """PPO's clipped objective per token, ``[B, L]``: min(ρ_t A, clip(ρ_t, 1 − ε, 1 + ε) A),
    ρ_t = π_t / π_old,t (Schulman et al. 2017, eq. 7). Its mean over tokens is the negative of
    :func:`policygrad.losses.clipped_surrogate`; at θ = θ_old its gradient is ∇log π_t · A.

    Args:
        log_probs: ``[B, L]`` differentiable.
        old_log_probs: ``[B, L]`` detached.
        advantages: ``[B]`` per completion or ``[B, L]`` per token; detached.
        clip_eps: ε > 0.
    """
    if not clip_eps > 0:
        raise InputError(f"clip_eps must be > 0, got {shown(clip_eps)}")
    a = advantages.detach()
    if a.dim() == 1:
        a = a[:, None]
    ratio = torch.exp(log_probs - old_log_probs.detach())
    return torch.minimum(ratio * a, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * a)


def token_gae(rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float = 1.0, gae_lambda: float = 1.0,
              log_probs: Tensor | None = None, ref_log_probs: Tensor | None = None,
              beta: float = 0.0) -> tuple[Tensor, Tensor]:
    """Token-level GAE for a value head, through :func:`policygrad.returns.gae` (time-major).

    Per-token reward r_t = −β k1_t (when ``log_probs`` and ``ref_log_probs`` are given: the KL in
    the reward, detached) plus R on the completion's last token; the last token terminates (no
    bootstrap), padding carries nothing. With γ = λ = 1: A_t = R − β Σ_{t'≥t} k1_t' − V_t.

    Args:
        rewards: ``[B]`` R.
        values: ``[B, L]`` V(x, y_<t) (detached here).
        mask: ``[B, L]`` bool.

    Returns:
        ``(advantages, returns)``, both ``[B, L]`` and 0 beyond each completion; returns = A + V,
        the value head's targets.
    """
    m = mask.to(values.dtype)
    lengths = mask.sum(-1)
    if torch.any(lengths < 1):
        raise InputError("every completion needs at least one token")
    bsz, length = values.shape
    last = torch.zeros_like(mask)
    last[torch.arange(bsz), lengths - 1] = True
    r = rewards.detach().to(values.dtype)[:, None] * last.to(values.dtype)
    if log_probs is not None and ref_log_probs is not None and beta:
        r = r - beta * (log_probs.detach() - ref_log_probs.detach()) * m
    v = values.detach() * m
    next_v = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)
    adv = gae(r.T.contiguous(), v.T.contiguous(), next_v.T.contiguous(), last.T.contiguous(),
              torch.zeros_like(last.T).contiguous(), gamma, gae_lambda).T * m
    return adv, (adv + v) * m


def sequence_surrogate(
    log_probs: Tensor,
    old_log_probs: Tensor,
    ref_log_probs: Tensor | None,
    mask: Tensor,
    rewards: Tensor,
    *,
    group_size: int,
    advantage: str,
    kl: str,
    aggregation: str,
    beta: float,
    clip_eps: float | None = None,
    baseline: Tensor | float | None = None,
) -> Tensor:
    """The loss of one step of a group estimator: mean over groups of

        −agg_i,t[ ρ_it A_i ] + β agg_i,t[ kl_it ]     (the second term for ``*_loss`` KL modes)

    with ρ_it = π_it / π_old,it (clipped when ``clip_eps`` is given), A from
    :func:`group_advantages` of R' (:func:`k1_reward` when ``kl == "k1_reward"``, with the KL of
    ``old_log_probs``), agg from :func:`aggregate`, kl from :func:`kl_term`. On-policy
    (old = log π detached) its negative gradient is, per group,

        agg[∇log π_it · A_i] − β ∇agg[kl_it],

    the direction ``verify --sequence`` checks; each piece's docstring names the objective whose
    gradient it follows in expectation.

    Args:
        log_probs: ``[B, L]`` log π_it, differentiable; B = num_groups · G, group-major.
        old_log_probs: ``[B, L]`` log-probs under the sampling policy (detached).
        ref_log_probs: ``[B, L]`` under π_ref (detached); may be None when ``kl == "none"``.
        mask: ``[B, L]`` bool.
        rewards: ``[B]`` R.
        group_size: G.
        advantage: one of :data:`ADVANTAGES`.
        kl: one of :data:`KL_MODES`.
        aggregation: one of :data:`AGGREGATIONS`.
        beta: β ≥ 0.
        clip_eps: PPO's ε, or None for the plain ratio.
        baseline: remax's b (per group).

    Returns:
        Scalar loss; −∇ of it is the mean over groups of the direction above.
    """
    if log_probs.dim() != 2 or old_log_probs.shape != log_probs.shape or mask.shape != log_probs.shape:
        raise InputError(f"log_probs {tuple(log_probs.shape)}, old_log_probs {tuple(old_log_probs.shape)} and "
                         f"mask {tuple(mask.shape)} must be the same [B, L]")
    if rewards.shape != log_probs.shape[:1]:
        raise InputError(f"rewards has shape {tuple(rewards.shape)}, expected ({log_probs.shape[0]},)")
    if kl not in KL_MODES:
        raise InputError(f"kl must be one of {', '.join(KL_MODES)}, got {shown(kl)}")
    if kl != "none" and ref_log_probs is None:
        raise InputError(f"kl {kl!r} needs ref_log_probs")
    if ref_log_probs is not None and ref_log_probs.shape != log_probs.shape:
        raise InputError(f"ref_log_probs has shape {tuple(ref_log_probs.shape)}, expected {tuple(log_probs.shape)}")
    if not beta >= 0:
        raise InputError(f"beta must be >= 0, got {shown(beta)}")
    if group_size < 1 or log_probs.shape[0] % group_size:
        raise InputError(f"{log_probs.shape[0]} rows do not split into groups of {group_size}")
    r = rewards.detach().to(log_probs.dtype)
    if kl == "k1_reward":
        r = k1_reward(r, old_log_probs, ref_log_probs, mask, beta)
    adv = group_advantages(r.view(-1, group_size), advantage, baseline).reshape(-1)  # [B]
    if clip_eps is None:
        pg = torch.exp(log_probs - old_log_probs.detach()) * adv[:, None]
    else:
        pg = clipped_token_surrogate(log_probs, old_log_probs, adv, clip_eps)
    objective = aggregate(pg, mask, group_size, aggregation)  # [num_groups]
    if kl in KL_LOSS_MODES and beta:
        objective = objective - beta * aggregate(kl_term(log_probs, ref_log_probs, kl), mask, group_size, aggregation)
    return -objective.mean()
