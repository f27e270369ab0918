"""Policy-gradient estimators against the exact gradient of a finite MDP.

The Policy Gradient Theorem says that for every choice of Ψ_t with E[Ψ_t | s_t, a_t] = Q(s_t, a_t)
+ b(s_t) (any state-dependent b), the sampled sum Σ_t ∇ log π(a_t|s_t) Ψ_t (with the γ^t factor in
the discounted setting) is an unbiased estimate of ∇J(θ). On a finite MDP the exact gradient is
computable (:mod:`policygrad.tabular`), so each estimator can be *checked*: its mean over many
sampled episodes must lie within a few standard errors of the exact value, and its variance shows
what the choice of Ψ buys.

Sampling goes through the same code a training run uses: the MDP is a Gymnasium vector
environment (a black box to the estimator), the policy is a :class:`~policygrad.distributions.
Categorical` over logits θ[s], Ψ comes from :mod:`policygrad.returns`, and the gradient is autograd's
gradient of :func:`policygrad.losses.score_function_loss`. Per-episode gradients (needed for
standard errors) come from one backward pass through a copy of θ per episode.

Settings and what one sample of an estimator is:

- ``episodic``: one episode from s_0 ~ μ0 to termination (or ``horizon`` steps, then bootstrapped
  from V^π where an estimator bootstraps); J = E[Σ_t γ^t r_t].
- ``discounted``: one episode from s_0 ~ μ0 cut at ``horizon`` steps with γ^horizon negligible;
  J = E[Σ_t γ^t r_t]. Estimators weight step t by γ^t, except the "common form" which does not and
  is biased (Thomas 2014; Nota & Thomas 2020).
- ``average``: a window of ``horizon`` steps from s_0 ~ d^π (the stationary distribution), reward
  r_t − ρ, the differential value v^π bootstrapped at the window's end; the sample is
  (1/H) Σ_t ∇ log π(a_t|s_t) Ψ_t, whose mean is ∇ρ (Sutton et al. 1999, Theorem 1).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from policygrad.errors import InputError, check_seed, shown
from policygrad.losses import score_function_loss
from policygrad.returns import (
    differential_gae,
    differential_returns,
    discounted_returns,
    episode_total_returns,
    gae,
)
from policygrad.sequence.base import completion_mask
from policygrad.sequence.estimators import sequence_surrogate
from policygrad.sequence.exact import baselines, build_space, exact_objective, expected_direction, is_unbiased
from policygrad.sequence.tabular import TabularSequencePolicy

if TYPE_CHECKING:
    from policygrad.tabular import FiniteMDP

SETTINGS = ("episodic", "discounted", "average")
_MAX_EPISODIC_HORIZON = 10_000

MAX_STEPS = 100_000
"""Most steps per sampled episode (each step costs about 0.2 ms of Python besides its arithmetic)."""

MAX_SAMPLE_ENTRIES = 24_000_000
"""Most entries of a verification's samples: episodes × (steps × (actions + 2) + states × actions).
What verify holds grows with it, at most about 60 bytes per entry: per step of each episode the
states, rewards and every estimator's Ψ (the "+ 2"), and the action log-probabilities with their
gradients ([H, E, A]); per episode one gradient table ([E, S, A]). At this limit a run peaked below
1.5 GB and took at most about half a minute (measurements in docs/verify.md)."""


@dataclass(frozen=True)
class Samples:
    """Episodes sampled from a finite MDP, time-major ``[H, E]`` (H steps, E episodes)."""

    states: Tensor  # [H, E] long, s_t
    actions: Tensor  # [H, E] long, a_t
    rewards: Tensor  # [H, E] float64, r_t
    next_states: Tensor  # [H, E] long, s_{t+1}
    terminated: Tensor  # [H, E] bool, s_{t+1} is terminal
    truncated: Tensor  # [H, E] bool, cut by the horizon at the last live step
    valid: Tensor  # [H, E] bool, the episode was still running at step t
    episode_step: Tensor  # [H, E] long, t


@dataclass(frozen=True)
class EstimatorResult:
    """Statistics of one estimator's per-episode gradient samples against the exact gradient."""

    name: str
    unbiased: bool
    description: str
    mean: np.ndarray  # [S, A]
    stderr: np.ndarray  # [S, A]
    max_abs_z: float
    cosine: float
    relative_error: float
    total_variance: float
    variance_ratio: float  # total variance relative to the total-return estimator

    def to_json(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "stderr": self.stderr.tolist(),
            "unbiased": self.unbiased,
            "description": self.description,
            "max_abs_z": self.max_abs_z,
            "cosine": self.cosine,
            "relative_error": self.relative_error,
            "total_variance": self.total_variance,
            "variance_ratio": self.variance_ratio,
        }


@dataclass(frozen=True)
class VerifyReport:
    setting: str
    objective: float
    exact_gradient: np.ndarray  # [S, A]
    estimators: dict[str, EstimatorResult]
    episodes: int
    horizon: int
    seed: int

    def to_json(self) -> dict:
        return {
            "setting": self.setting,
            "objective": self.objective,
            "exact_gradient": self.exact_gradient.tolist(),
            "estimators": {name: r.to_json() for name, r in self.estimators.items()},
            "episodes": self.episodes,
            "horizon": self.horizon,
            "seed": self.seed,
        }


def default_horizon(mdp: FiniteMDP, setting: str) -> int:
    """Steps per sampled episode when the user gives none.

    episodic: up to 10,000 (sampling stops as soon as every episode has terminated);
    discounted: H with γ^H ≤ 1e-8, so the cut-off tail is far below any standard error;
    average: 50 steps per window.
    """
    if setting == "episodic":
        return _MAX_EPISODIC_HORIZON
    if setting == "discounted":
        return max(1, math.ceil(math.log(1e-8) / math.log(mdp.gamma)))
    return 50


def sample_episodes(mdp: FiniteMDP, theta: Tensor, setting: str, episodes: int, horizon: int, seed: int,
                    initial: np.ndarray | None = None) -> Samples:
    """Samples ``episodes`` episodes at once through the MDP's Gymnasium vector environment.

    The environment runs without auto-reset: a terminated copy sits in its absorbing terminal
    state with reward 0 and its later steps are marked invalid. Actions come from
    ``Categorical(theta[s])``.
    """
    from gymnasium.vector import AutoresetMode

    from policygrad.distributions import Categorical
    from policygrad.tabular import FiniteMDPVectorEnv

    if initial is not None:
        mdp = dataclasses.replace(mdp, initial=np.asarray(initial, dtype=np.float64))
    env = FiniteMDPVectorEnv(mdp, num_envs=episodes, autoreset_mode=AutoresetMode.DISABLED)
    generator = torch.Generator().manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    states, actions, rewards, next_states, terminated = [], [], [], [], []
    alive = np.ones(episodes, dtype=bool)
    valid = []
    with torch.no_grad():
        for _ in range(horizon):
            s = torch.from_numpy(np.asarray(obs, dtype=np.int64))
            a = Categorical(theta[s]).sample(generator=generator)
            next_obs, reward, term, _trunc, _ = env.step(a.numpy())
            states.append(s)
            actions.append(a)
            rewards.append(torch.from_numpy(np.asarray(reward, dtype=np.float64)))
            next_states.append(torch.from_numpy(np.asarray(next_obs, dtype=np.int64)))
            valid.append(torch.from_numpy(alive.copy()))
            term = np.asarray(term, dtype=bool) & alive
            terminated.append(torch.from_numpy(term))
            alive = alive & ~term
            obs = next_obs
            if setting == "episodic" and not alive.any():
                break
    env.close()
    valid_t = torch.stack(valid)
    steps = valid_t.shape[0]
    truncated = torch.zeros_like(valid_t)
    truncated[-1] = valid_t[-1] & ~torch.stack(terminated)[-1]
    return Samples(
        states=torch.stack(states),
        actions=torch.stack(actions),
        rewards=torch.stack(rewards) * valid_t,
        next_states=torch.stack(next_states),
        terminated=torch.stack(terminated),
        truncated=truncated,
        valid=valid_t,
        episode_step=torch.arange(steps).unsqueeze(1).expand(steps, episodes),
    )


def _fitted_baseline(samples: Samples, targets: Tensor, num_states: int) -> Tensor:
    """A state-value baseline fitted from data, cross-fitted so that it stays unbiased.

    The episodes are split into two halves; each half's baseline is the per-state mean of
    ``targets`` over the *other* half. Because an episode's baseline never depends on its own
    actions, E[∇ log π(a_t|s_t) b(s_t)] = 0 still holds exactly.

    Returns:
        ``[H, E]`` b(s_t).
    """
    num_episodes = targets.shape[1]
    half = torch.arange(num_episodes) < num_episodes // 2
    baseline = torch.zeros_like(targets)
    for fit_on in (half, ~half):
        mask = samples.valid[:, fit_on]
        s = samples.states[:, fit_on][mask]
        sums = torch.zeros(num_states, dtype=targets.dtype).index_add_(0, s, targets[:, fit_on][mask])
        counts = torch.zeros(num_states, dtype=targets.dtype).index_add_(0, s, torch.ones_like(s, dtype=targets.dtype))
        table = sums / counts.clamp(min=1)
        use_on = ~fit_on
        baseline[:, use_on] = table[samples.states[:, use_on]]
    return baseline


def _estimator_weights(samples: Samples, exact, setting: str, gamma: float, lam: float,
                       num_states: int) -> dict[str, tuple[Tensor, bool, bool, str]]:
    """Ψ_t for every estimator: name → (Ψ [H, E], use the γ^t factor, unbiased, description)."""
    V = torch.as_tensor(exact.V, dtype=torch.float64)
    values = V[samples.states]  # [H, E]
    next_values = V[samples.next_states]  # [H, E]; V = 0 at terminal states, and ignored there anyway
    term, trunc = samples.terminated, samples.truncated
    r = samples.rewards
    out: dict[str, tuple[Tensor, bool, bool, str]] = {}
    if setting == "average":
        rho = float(exact.rho)
        rtg = differential_returns(r, next_values, term, trunc, rho)
        out["total_return"] = (rtg[:1].expand_as(rtg), False, True,
                               "Ψ_t = Σ_k (r_k − ρ) + v(s_H) over the whole window")
        out["reward_to_go"] = (rtg, False, True, "Ψ_t = Σ_{k≥t} (r_k − ρ) + v(s_H)")
        no_bootstrap = differential_returns(r, torch.zeros_like(next_values), term, trunc, rho)
        out["reward_to_go_no_bootstrap"] = (no_bootstrap, False, False,
                                            "Ψ_t = Σ_{k≥t} (r_k − ρ), window end not bootstrapped")
        out["baseline_exact_v"] = (rtg - values, False, True, "differential reward-to-go − v^π(s_t)")
        out["baseline_fitted_v"] = (rtg - _fitted_baseline(samples, rtg, num_states), False, True,
                                    "differential reward-to-go − v̂(s_t), v̂ cross-fitted from data")
        out["gae_exact_v"] = (differential_gae(r, values, next_values, term, trunc, rho, lam), False, True,
                              f"differential GAE(λ={lam}) with exact v^π")
        return out
    rtg = discounted_returns(r, next_values, term, trunc, gamma)
    # Williams' total return: every step weighted by the episode's whole discounted return
    # G_0 = Σ_k γ^k r_k, which already carries the discount, so no γ^t factor on top.
    total = episode_total_returns(rtg, samples.episode_step, term, trunc, gamma)
    out["total_return"] = (total, False, True, "Ψ_t = G_0 for every step (Williams 1992)")
    out["reward_to_go"] = (rtg, True, True, "Ψ_t = G_t, γ^t-weighted")
    out["baseline_exact_v"] = (rtg - values, True, True, "G_t − V^π(s_t), γ^t-weighted")
    out["baseline_fitted_v"] = (rtg - _fitted_baseline(samples, rtg, num_states), True, True,
                                "G_t − V̂(s_t), V̂ cross-fitted from data, γ^t-weighted")
    out["gae_exact_v"] = (gae(r, values, next_values, term, trunc, gamma, lam), True, True,
                          f"GAE(λ={lam}) with exact V^π, γ^t-weighted")
    if gamma < 1.0:
        out["reward_to_go_no_discount_factor"] = (rtg, False, False,
                                                  "Ψ_t = G_t without γ^t: the common form, biased")
    return out


def _per_episode_gradients(theta: Tensor, samples: Samples, psi: Tensor, gamma: float | None,
                           scale: float) -> Tensor:
    """Per-episode gradient samples ``[E, S, A]`` of the score-function surrogate.

    One leaf copy of θ per episode lets a single backward pass produce every episode's own
    Σ_t w_t Ψ_t ∇θ log π(a_t|s_t).
    """
    from policygrad.distributions import Categorical

    num_episodes = samples.states.shape[1]
    copies = theta.detach().unsqueeze(0).repeat(num_episodes, 1, 1).requires_grad_(True)  # [E, S, A]
    episode = torch.arange(num_episodes).unsqueeze(0).expand_as(samples.states)
    log_prob = Categorical(copies[episode, samples.states]).log_prob(samples.actions)  # [H, E]
    loss = score_function_loss(
        log_prob,
        psi,
        gamma=gamma,
        episode_step=samples.episode_step if gamma is not None else None,
        mask=samples.valid,
        reduction="sum",
    )
    (grad,) = torch.autograd.grad(-loss, copies)
    return grad * scale


def _summarise(name: str, grads: Tensor, exact_gradient: np.ndarray, unbiased: bool, description: str,
               reference_variance: float | None) -> EstimatorResult:
    g = grads.numpy()
    n = g.shape[0]
    mean = g.mean(axis=0)
    std = g.std(axis=0, ddof=1)
    stderr = std / math.sqrt(n)
    diff = mean - exact_gradient
    # A component with zero spread is exact in every sample; it only counts if it is off.
    tiny = 1e-12 * max(1.0, float(np.abs(exact_gradient).max()))
    z = np.where(stderr > tiny, diff / np.maximum(stderr, tiny), np.where(np.abs(diff) > tiny, np.inf, 0.0))
    exact_norm = float(np.linalg.norm(exact_gradient))
    mean_norm = float(np.linalg.norm(mean))
    cosine = float((mean * exact_gradient).sum() / (mean_norm * exact_norm)) if mean_norm and exact_norm else float("nan")
    total_variance = float((std**2).sum())
    return EstimatorResult(
        name=name,
        unbiased=unbiased,
        description=description,
        mean=mean,
        stderr=stderr,
        max_abs_z=float(np.abs(z).max()),
        cosine=cosine,
        relative_error=float(np.linalg.norm(diff) / exact_norm) if exact_norm else float("nan"),
        total_variance=total_variance,
        variance_ratio=total_variance / reference_variance if reference_variance else float("nan"),
    )


def check_verify_inputs(mdp: FiniteMDP, theta: np.ndarray | None, setting: str, episodes: int,
                        horizon: int | None, seed: int) -> np.ndarray:
    """The checks every sampled verification makes before it samples: at least 4 episodes, a
    positive horizon, a seed in [0, 2**63), an MDP of at most ``MAX_MDP_ENTRIES`` transition
    probabilities, ``theta`` of shape [S, A] (default zeros), an MDP that suits ``setting``.

    Returns:
        θ as a float64 ``[S, A]`` array.
    """
    from policygrad.tabular import validate_setting
    from policygrad.tabular.mdp import MAX_MDP_ENTRIES

    if episodes < 4:
        raise InputError(f"--episodes must be at least 4, got {shown(episodes)}")
    if horizon is not None and horizon < 1:
        raise InputError(f"--horizon must be at least 1, got {shown(horizon)}")
    check_seed(seed, "--seed")
    S, A = mdp.num_states, mdp.num_actions
    if S * A * S > MAX_MDP_ENTRIES:
        raise InputError(
            f"the MDP has {S:,} states and {A:,} actions: S·A·S = {S * A * S:,} transition probabilities, "
            f"above verify's limit of {MAX_MDP_ENTRIES:,}"
        )
    theta = np.zeros((S, A)) if theta is None else np.asarray(theta, dtype=np.float64)
    if theta.shape != (S, A):
        raise InputError(f"theta has shape {theta.shape}, expected ({S}, {A})")
    validate_setting(mdp, setting, theta)
    return theta


def verify(mdp: FiniteMDP, theta: np.ndarray | None = None, setting: str | None = None, *, episodes: int = 20000,
           horizon: int | None = None, lam: float = 0.9, seed: int = 0) -> VerifyReport:
    """Samples ``episodes`` episodes and compares every estimator with the exact gradient.

    Args:
        mdp: a :class:`policygrad.tabular.FiniteMDP`.
        theta: ``[S, A]`` logits of the tabular softmax policy (default zeros: uniform).
        setting: ``"episodic"``, ``"discounted"`` or ``"average"`` (default: episodic when the MDP
            has terminal states, else discounted).
        episodes: sampled episodes (windows, for average reward); at least 4.
        horizon: steps per episode (default :func:`default_horizon`).
        lam: λ of the GAE estimators.
        seed: seeds the environment and the policy's sampling, in [0, 2**63).

    Returns:
        A :class:`VerifyReport`.

    Raises:
        InputError: a bad argument; an MDP of more than ``MAX_MDP_ENTRIES`` transition
            probabilities (S·A·S); episodes longer than :data:`MAX_STEPS` or samples of more than
            :data:`MAX_SAMPLE_ENTRIES` entries (episodes × (steps × (actions + 2) + states ×
            actions)), refused before sampling, or (episodic) once the most steps they allow leave
            episodes still running.
    """
    from policygrad.tabular import exact_solution

    if setting is None:
        setting = "episodic" if len(mdp.terminal) else "discounted"
    if setting not in SETTINGS:
        raise InputError(f"unknown setting {shown(setting)}; choose one of {', '.join(SETTINGS)}")
    if not 0.0 <= lam <= 1.0:
        raise InputError(f"--lam must lie in [0, 1], got {lam}")
    theta = check_verify_inputs(mdp, theta, setting, episodes, horizon, seed)
    S, A = mdp.num_states, mdp.num_actions
    why = ""
    if horizon is None:
        horizon = default_horizon(mdp, setting)
        if setting == "discounted":
            why = f" ({horizon:,} steps is the default for γ = {mdp.gamma:g}: γ^H ≤ 1e-8)"
    max_steps = _sample_limit(episodes, horizon, S, A, setting, why)
    exact = exact_solution(mdp, theta, setting)

    theta_t = torch.as_tensor(theta, dtype=torch.float64)
    initial = exact.d if setting == "average" else None
    samples = sample_episodes(mdp, theta_t, setting, episodes, min(horizon, max_steps), seed, initial=initial)
    if horizon > max_steps and samples.truncated[-1].any():  # episodic: still running at the limit
        raise InputError(
            f"{int(samples.truncated[-1].sum()):,} of {episodes:,} episodes are still running after {max_steps:,} "
            f"steps, the most verify samples for {episodes:,} episodes of {S:,} states and {A:,} actions; pass "
            f"--horizon {max_steps:,} or shorter (episodes cut there are bootstrapped from V^π) or fewer --episodes"
        )
    gamma = 1.0 if setting == "average" else float(mdp.gamma)
    scale = 1.0 / samples.states.shape[0] if setting == "average" else 1.0

    weights = _estimator_weights(samples, exact, setting, gamma, lam, S)
    results: dict[str, EstimatorResult] = {}
    reference_variance = None
    for name, (psi, discounted, unbiased, description) in weights.items():
        grads = _per_episode_gradients(theta_t, samples, psi, gamma if discounted else None, scale)
        result = _summarise(name, grads, exact.gradient, unbiased, description, reference_variance)
        if reference_variance is None:  # the first estimator is the total-return one
            reference_variance = result.total_variance
            result = dataclasses.replace(result, variance_ratio=1.0)
        results[name] = result
    return VerifyReport(
        setting=setting,
        objective=float(exact.objective),
        exact_gradient=np.asarray(exact.gradient),
        estimators=results,
        episodes=episodes,
        horizon=int(samples.states.shape[0]),
        seed=seed,
    )


def _sample_limit(episodes: int, horizon: int, num_states: int, num_actions: int, setting: str,
                  why: str) -> int:
    """The most steps ``episodes`` episodes may take: :data:`MAX_STEPS`, and within
    :data:`MAX_SAMPLE_ENTRIES` episodes × (steps × (actions + 2) + states × actions). InputError if
    not one step fits, or if ``horizon`` steps do not fit and are every episode's length (every
    setting but episodic, whose episodes mostly end early); ``why`` explains a default horizon."""
    per_step, per_episode = num_actions + 2, num_states * num_actions
    max_steps = min(MAX_STEPS, (MAX_SAMPLE_ENTRIES // episodes - per_episode) // per_step)
    if max_steps < 1:
        most = MAX_SAMPLE_ENTRIES // (per_step + per_episode)
        raise InputError(
            f"{episodes:,} episodes of {num_states:,} states and {num_actions:,} actions exceed verify's limit of "
            f"{MAX_SAMPLE_ENTRIES:,} sampled entries before the first step; pass --episodes {most:,} or fewer"
        )
    if horizon <= max_steps or setting == "episodic":
        return max_steps
    if horizon > MAX_STEPS:
        raise InputError(
            f"episodes of {horizon:,} steps exceed verify's limit of {MAX_STEPS:,} steps; "
            f"pass --horizon {max_steps:,} or shorter{why}"
        )
    entries = episodes * (horizon * per_step + per_episode)
    most = MAX_SAMPLE_ENTRIES // (horizon * per_step + per_episode)
    fewer = f"--episodes {most:,} or fewer, or " if most >= 4 else ""
    raise InputError(
        f"{episodes:,} episodes × ({horizon:,} steps × ({num_actions:,} actions + 2) + {num_states:,} states × "
        f"{num_actions:,} actions) = {entries:,} sampled entries, above verify's limit of "
        f"{MAX_SAMPLE_ENTRIES:,}; pass {fewer}--horizon {max_steps:,} or shorter{why}"
    )


# What the lagged (off-policy) check, :mod:`policygrad.verify_lagged`, shares with this one.
per_episode_gradients = _per_episode_gradients
summarise = _summarise
sample_limit = _sample_limit


def format_report(report: VerifyReport) -> str:
    """A readable table of one report."""
    objective = "ρ(θ)" if report.setting == "average" else "J(θ)"
    lines = [
        f"setting: {report.setting}   {objective} = {report.objective:.6g}   "
        f"episodes: {report.episodes}   steps: {report.horizon}   seed: {report.seed}",
        f"exact gradient norm: {np.linalg.norm(report.exact_gradient):.6g}",
        "",
    ]
    header = f"{'estimator':<32} {'unbiased':>8} {'max|z|':>8} {'cosine':>8} {'rel.err':>8} {'variance':>10} {'var/total':>9}  verdict"
    lines += [header, "-" * len(header)]
    for name, r in report.estimators.items():
        if r.unbiased:
            verdict = "agrees" if r.max_abs_z < 4 else "DISAGREES"
        else:
            verdict = "biased, as expected" if r.max_abs_z >= 4 else "bias below noise"
        lines.append(
            f"{name:<32} {'yes' if r.unbiased else 'no':>8} {r.max_abs_z:>8.2f} {r.cosine:>8.4f} "
            f"{r.relative_error:>8.4f} {r.total_variance:>10.4g} {r.variance_ratio:>9.3f}  {verdict}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Token sequences: ``policygrad verify --sequence``
# --------------------------------------------------------------------------------------------

MAX_SEQUENCE_SAMPLES = 2_000_000
"""Most completions ``verify --sequence`` samples."""

MIN_Z_ROUNDS = 300
"""A parameter enters ``verify --sequence``'s max|z| only if at least this many rounds gave it a
nonzero direction. A table row that a few sampled completions reach has a heavy-tailed mean (one
visit with a small advantage gives z ≈ 1 − n·g/x, unbounded), so its z is no normal deviate. On the
built-in example (20,000 completions, seeds 0-5) the largest max|z| over all exact estimators was
3.0-4.8 with 100 rounds, 2.9-3.4 with 300, 2.5-3.4 with 1000: the excess at 100 came from such
rows, all of whose estimators are exact to 1e-14. With too few rounds no parameter qualifies and
max|z| is null."""

_SEQUENCE_CHUNK_ENTRIES = 4_000_000
"""Logits of the per-round copies of the table held at once while sampled directions are computed."""


@dataclass(frozen=True)
class SequenceEstimatorResult:
    """One estimator of a ``verify --sequence`` run (see :func:`verify_sequence`)."""

    name: str
    advantage: str
    kl: str
    aggregation: str
    exact: bool
    unbiased: bool
    cosine: float | None
    relative_error: float | None
    scale: float | None
    samples: int
    sampled_max_abs_z: float | None
    sampled_cosine: float

    def to_json(self) -> dict:
        return {
            "exact": self.exact,
            "cosine": _finite_or_none(self.cosine),
            "relative_error": _finite_or_none(self.relative_error),
            "scale": _finite_or_none(self.scale),
            "unbiased": self.unbiased,
            "sampled": {"samples": self.samples, "max_abs_z": _finite_or_none(self.sampled_max_abs_z),
                        "cosine": _finite_or_none(self.sampled_cosine)},
        }


def _finite_or_none(x: float | None) -> float | None:
    """JSON has no NaN: an undefined number (a zero gradient's cosine) is null."""
    return x if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class SequenceReport:
    objective: float
    exact_gradient_norm: float
    completions: int
    group_size: int
    beta: float
    seed: int
    estimators: dict[str, SequenceEstimatorResult]

    def to_json(self) -> dict:
        return {
            "objective": self.objective,
            "exact_gradient_norm": self.exact_gradient_norm,
            "estimators": {name: r.to_json() for name, r in self.estimators.items()},
        }


def _compare(g: Tensor, exact: Tensor) -> tuple[float, float, float]:
    """(cosine, relative error, scale ⟨g, ∇J⟩/‖∇J‖²) of g against the exact gradient."""
    gn, en = float(g.norm()), float(exact.norm())
    dot = float((g * exact).sum())
    cosine = dot / (gn * en) if gn and en else float("nan")
    return cosine, float((g - exact).norm()) / en if en else float("nan"), dot / en**2 if en else float("nan")


def sampled_sequence_directions(space, est, completions, ref_log_probs: Tensor, rewards: Tensor,
                                baseline: Tensor | None) -> tuple[Tensor, Tensor, Tensor, int]:
    """Per-round directions of ``est`` from sampled completions, through the library's loss.

    ``completions`` holds R rounds of one group of G completions per prompt (row order: round,
    prompt, member). A round's direction is −∇ of :func:`policygrad.sequence.estimators.
    sequence_surrogate` over its P groups (the mean over prompts of each group's direction). Each
    round's gradient lands in its own copy of the table, so one backward pass gives every
    round's direction of a chunk of rounds.

    Returns:
        ``(Σ_r d_r, Σ_r d_r², #{r: d_r ≠ 0}, R)``, each sum ``[P, num_prefixes, V]``. A parameter no sampled
        completion touches has d_r = 0 in every round: both sums are exactly 0 there.
    """
    spec = space.spec
    pol = space.policy
    p, g = spec.prompts, spec.group_size
    per_round = p * g
    rounds = completions.tokens.shape[0] // per_round
    table = pol.logits.detach()
    chunk = max(1, min(rounds, _SEQUENCE_CHUNK_ENTRIES // table.numel()))
    replica = TabularSequencePolicy(spec.vocab_size, spec.max_length, spec.eos, chunk * p)
    total = torch.zeros_like(table)
    total_sq = torch.zeros_like(table)
    nonzero = torch.zeros(table.shape, dtype=torch.long)
    for start in range(0, rounds, chunk):
        c = min(chunk, rounds - start)
        rows = slice(start * per_round, (start + c) * per_round)
        with torch.no_grad():
            replica.logits.copy_(table.repeat(chunk, 1, 1))
        replica.logits.grad = None
        group_index = torch.arange(c * p).repeat_interleave(g)  # round·P + prompt, per row
        tokens, lengths = completions.tokens[rows], completions.lengths[rows]
        logp = replica.token_log_probs(group_index[:, None], torch.ones_like(lengths), tokens, lengths)
        mask = completion_mask(lengths, tokens.shape[1])
        b = None if baseline is None else baseline.repeat(c)
        # sequence_surrogate is the mean over the groups it is given: × (c·P) makes it the sum over
        # groups, whose gradient in copy (round, prompt) is that group's own −direction.
        loss = sequence_surrogate(logp, logp.detach(), ref_log_probs[rows], mask, rewards[rows], group_size=g,
                                  advantage=est.advantage, kl=est.kl, aggregation=est.aggregation,
                                  beta=spec.beta, baseline=b) * (c * p)
        loss.backward()
        d = -replica.logits.grad[: c * p].view(c, p, *table.shape[1:]) / p  # [c, P, prefixes, V]
        total += d.sum(0)
        total_sq += (d * d).sum(0)
        nonzero += (d != 0).sum(0)
    return total, total_sq, nonzero, rounds


def verify_sequence(spec, *, samples: int = 20000, seed: int = 0) -> SequenceReport:
    """Every estimator of a sequence spec against ∇J_β, exactly and from ``samples`` completions.

    (a) Exact: :func:`policygrad.sequence.exact.expected_direction` (None where the multiset of
    the group's reward classes is too large to enumerate: GRPO with a near-continuous R'; then
    ``exact`` is False and cosine, relative error, scale and max|z| are null).
    (b) Sampled: ``samples`` completions (rounded down to whole rounds of G per prompt) drawn with
    :meth:`TabularSequencePolicy.sample`, directions by autograd of ``sequence_surrogate``;
    z = (sample mean − exact)/(sample std/√rounds) per parameter with nonzero spread that at
    least :data:`MIN_Z_ROUNDS` rounds moved, max |z| reported; the sampled cosine is the sample mean's cosine with ∇J_β.
    """
    check_seed(seed, "--seed")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1 or samples > MAX_SEQUENCE_SAMPLES:
        raise InputError(f"--samples must be an integer in [1, {MAX_SEQUENCE_SAMPLES:,}], got {shown(samples)}")
    per_round = spec.prompts * spec.group_size
    rounds = samples // per_round
    if rounds < 2:
        raise InputError(f"--samples {samples} gives fewer than 2 rounds of {spec.group_size} completions for each "
                         f"of {spec.prompts} prompts; pass at least {2 * per_round}")
    space = build_space(spec)
    exact = exact_objective(space)
    gradient = exact.gradient
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.arange(spec.prompts).repeat_interleave(spec.group_size).repeat(rounds)[:, None]
    ones = torch.ones(prompts.shape[0], dtype=torch.long)
    completions = space.policy.sample(prompts, ones, max_new_tokens=spec.max_length, eos=spec.eos, generator=gen)
    with torch.no_grad():
        ref_log_probs = space.reference.token_log_probs(prompts, ones, completions.tokens, completions.lengths)
    rows = space.policy.prefix_rows(completions.tokens, completions.lengths)
    rewards = space.rewards[prompts[:, 0], space.lookup(rows, completions.tokens, completions.lengths)]
    results = {}
    for est in spec.estimators:
        g = expected_direction(space, est)
        baseline = baselines(space, est.kl).detach() if est.advantage == "remax" else None
        total, total_sq, nonzero, n = sampled_sequence_directions(space, est, completions, ref_log_probs, rewards, baseline)
        mean = total / n
        second = total_sq / n
        var = (second - mean**2).clamp(min=0) * (n / (n - 1))
        stderr = (var / n).sqrt()
        # Nonzero spread (above the rounding of the second moment it comes from), in enough rounds.
        spread = (var > 1e-10 * second) & (nonzero >= MIN_Z_ROUNDS)
        if g is not None:
            z = torch.where(spread, (mean - g) / torch.where(spread, stderr, torch.ones_like(stderr)),
                            torch.zeros_like(stderr))
            max_z: float | None = float(z.abs().max()) if bool(spread.any()) else None  # None: nothing to test
            cosine, rel, scale = _compare(g, gradient)
        else:
            max_z = cosine = rel = scale = None
        sampled_cosine, _, _ = _compare(mean, gradient)
        results[est.name] = SequenceEstimatorResult(
            name=est.name, advantage=est.advantage, kl=est.kl, aggregation=est.aggregation, exact=g is not None,
            unbiased=is_unbiased(est.advantage, est.kl, est.aggregation, spec.beta), cosine=cosine,
            relative_error=rel, scale=scale, samples=n * per_round, sampled_max_abs_z=max_z,
            sampled_cosine=sampled_cosine)
    return SequenceReport(exact.objective, float(gradient.norm()), int(space.tokens.shape[0]) * spec.prompts,
                          spec.group_size, spec.beta, seed, results)


def format_sequence_report(report: SequenceReport) -> str:
    """A readable table of a ``verify --sequence`` report."""

    def num(x: float | None, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    lines = [
        f"J_beta = {report.objective:.6g}   exact gradient norm: {report.exact_gradient_norm:.6g}   "
        f"completions enumerated: {report.completions:,}   G = {report.group_size}   beta = {report.beta:g}   "
        f"seed: {report.seed}",
        "",
    ]
    header = (f"{'estimator':<30} {'advantage':<9} {'kl':<13} {'aggregation':<13} {'unbiased':>8} {'exact':>5} "
              f"{'cosine':>8} {'rel.err':>9} {'scale':>7} {'samples':>8} {'max|z|':>7} {'s.cos':>7}")
    lines += [header, "-" * len(header)]
    for name, r in report.estimators.items():
        lines.append(
            f"{name:<30} {r.advantage:<9} {r.kl:<13} {r.aggregation:<13} {'yes' if r.unbiased else 'no':>8} "
            f"{'yes' if r.exact else 'no':>5} {num(r.cosine, '.4f'):>8} {num(r.relative_error, '.2e'):>9} "
            f"{num(r.scale, '.4f'):>7} {r.samples:>8} {num(r.sampled_max_abs_z, '.2f'):>7} {r.sampled_cosine:>7.4f}")
    return "\n".join(lines)
