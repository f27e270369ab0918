"""Tests of the algorithms' updates on synthetic rollouts, and of their configs."""

from __future__ import annotations

import copy
import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from policygrad.algorithms import (
    ALGORITHMS,
    METRIC_KEYS,
    PRESETS,
    get_preset,
    make_algorithm,
    make_config,
)
from policygrad.algorithms.base import flatten_rollout, standardize
from policygrad.algorithms.reinforce import episode_total_returns
from policygrad.errors import InputError, TrainingError
from policygrad.losses import importance_surrogate
from policygrad.policies import make_actor_critic
from policygrad.returns import discounted_returns
from policygrad.rollout import Rollout
from policygrad.runconfig import TRAIN_KEYS, TrainConfig

OBS_DIM = 4
SPACES = {
    "discrete": gym.spaces.Discrete(3),
    "continuous": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
    "multidiscrete": gym.spaces.MultiDiscrete([2, 3]),
}
SMALL = {"num_envs": 4, "num_steps": 16, "hidden_sizes": (16, 16)}
ALGO_SMALL = {
    "reinforce": {},
    "a2c": {},
    "ppo": {"minibatch_size": 16, "num_epochs": 2},
    "npg": {"minibatch_size": 16, "vf_iters": 2},
    "trpo": {"minibatch_size": 16, "vf_iters": 2},
    "impala": {},
}


def _policy(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    return make_actor_critic(obs_space, SPACES[kind], hidden_sizes=(16, 16))


def _reward(kind: str, actions: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """A reward that depends on the action, so every policy-gradient has a signal."""
    if kind == "discrete":
        return (actions == (obs[..., 0] > 0).long()).float()
    if kind == "continuous":
        return -(actions - 0.5).square().sum(-1)
    return (actions[..., 0] == 1).float() + (actions[..., 1] == 2).float()


@torch.no_grad()
def _rollout(policy, kind: str, num_steps: int = 16, num_envs: int = 4, seed: int = 0, valid=None) -> Rollout:
    """A rollout of the policy on i.i.d. Gaussian states, with random episode ends."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(num_steps, num_envs, OBS_DIM, generator=g)
    dist, values = policy(obs.reshape(-1, OBS_DIM))
    actions = dist.sample()
    log_probs = dist.log_prob(actions).reshape(num_steps, num_envs)
    actions = actions.reshape(num_steps, num_envs, *actions.shape[1:])
    values = values.reshape(num_steps, num_envs)
    u = torch.rand(num_steps, num_envs, generator=g)
    terminated = u < 0.08
    truncated = (u >= 0.08) & (u < 0.12)
    next_values = torch.cat([values[1:], torch.randn(1, num_envs, generator=g)])
    next_values = torch.where(truncated, torch.randn(num_steps, num_envs, generator=g), next_values)
    episode_step = torch.zeros(num_steps, num_envs, dtype=torch.long)
    for t in range(1, num_steps):
        episode_step[t] = torch.where(terminated[t - 1] | truncated[t - 1], 0, episode_step[t - 1] + 1)
    return Rollout(
        observations=obs,
        actions=actions,
        log_probs=log_probs,
        rewards=_reward(kind, actions, obs),
        terminated=terminated,
        truncated=truncated,
        values=values,
        next_values=next_values,
        episode_step=episode_step,
        action_masks=None,
        valid=valid,
    )


def _algorithm(algo: str, kind: str, seed: int = 0, total_updates: int = 10, **overrides):
    policy = _policy(kind, seed)
    config = make_config(algo, {**SMALL, **ALGO_SMALL[algo], **overrides})
    return make_algorithm(algo, policy, config, total_updates)


def _surrogate(algorithm, rollout: Rollout, psi: torch.Tensor) -> float:
    """−mean ρ Ψ on the rollout: the importance surrogate every algorithm's step decreases."""
    batch = flatten_rollout(rollout, psi, psi)
    with torch.no_grad():
        dist = algorithm.policy.distribution(batch.observations)
        log_prob = dist.log_prob(batch.actions)
        return float(importance_surrogate(log_prob, batch.old_log_probs, standardize(psi.reshape(-1))))


# --- every algorithm, every action space -----------------------------------------------------


@pytest.mark.parametrize("kind", list(SPACES))
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_update_runs_reports_metrics_and_reduces_the_surrogate(algo, kind):
    overrides = {"learning_rate": 3e-3} if algo in ("reinforce", "a2c", "ppo", "impala") else {}
    algorithm = _algorithm(algo, kind, **overrides)
    rollout = _rollout(algorithm.policy, kind)
    with torch.no_grad():
        psi, _ = algorithm.weigh(rollout)
    before = _surrogate(algorithm, rollout, psi)
    metrics = algorithm.update(rollout)
    after = _surrogate(algorithm, rollout, psi)
    assert after < before
    assert set(METRIC_KEYS) <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    for key in ("policy_loss", "value_loss", "entropy", "grad_norm", "explained_variance"):
        assert math.isfinite(metrics[key]), key
    assert algorithm.updates == 1


@pytest.mark.parametrize("kind", list(SPACES))
@pytest.mark.parametrize("algo", ["npg", "trpo"])
def test_trust_region_step_size_comes_from_max_kl(algo, kind):
    """The KL of the step, measured against a copy of the policy taken before it (so that it sees
    every parameter, the state-independent log σ of a Gaussian included), is max_kl's."""
    algorithm = _algorithm(algo, kind, max_kl=0.005)
    before = copy.deepcopy(algorithm.policy)
    rollout = _rollout(algorithm.policy, kind, num_steps=64)
    metrics = algorithm.update(rollout)
    obs = flatten_rollout(rollout, rollout.rewards, rollout.rewards).observations
    with torch.no_grad():
        kl = float(before.distribution(obs).kl(algorithm.policy.distribution(obs)).mean())
    assert kl == pytest.approx(metrics["approx_kl"], rel=1e-4)
    if algo == "trpo":
        assert 0.0 < kl <= 0.005
    else:  # the full natural step: its quadratic model's KL is max_kl, the true KL close to it
        assert 0.002 < kl < 0.01
        assert metrics["step_fraction"] == 1.0


def test_ppo_with_vanishing_clip_leaves_the_ratios_almost_unchanged():
    def max_ratio_change(clip_eps: float) -> float:
        algorithm = _algorithm("ppo", "discrete", learning_rate=3e-3, clip_eps=clip_eps, num_epochs=4,
                               vf_coef=0.0, anneal_lr=False)
        rollout = _rollout(algorithm.policy, "discrete", num_steps=32)
        algorithm.update(rollout)
        batch = flatten_rollout(rollout, rollout.rewards, rollout.rewards)
        with torch.no_grad():
            log_prob = algorithm.policy.distribution(batch.observations).log_prob(batch.actions)
        return float((log_prob - batch.old_log_probs).exp().sub(1).abs().max())

    # With ε → 0 only the first step (all ratios 1) has the full gradient; later steps push the
    # ratios that moved back toward 1, so 32 Adam steps leave them within a few percent.
    tiny, normal = max_ratio_change(1e-6), max_ratio_change(0.2)
    assert tiny < 0.1
    assert normal > 5 * tiny


def test_ppo_adaptive_kl_variant_adapts_beta_and_round_trips_it():
    algorithm = _algorithm("ppo", "discrete", kl_penalty=True, kl_beta=1.0, kl_penalty_target=1e-6,
                           learning_rate=1e-2)
    metrics = algorithm.update(_rollout(algorithm.policy, "discrete"))
    assert metrics["kl_beta"] == 1.0 and algorithm.kl_beta == 2.0  # KL far above the target: doubled
    algorithm = _algorithm("ppo", "discrete", kl_penalty=True, kl_beta=1.0, kl_penalty_target=10.0)
    algorithm.update(_rollout(algorithm.policy, "discrete"))
    assert algorithm.kl_beta == 0.5


def test_ppo_target_kl_stops_the_epochs_early():
    algorithm = _algorithm("ppo", "discrete", target_kl=1e-9, num_epochs=4, learning_rate=1e-2)
    assert algorithm.update(_rollout(algorithm.policy, "discrete"))["epochs"] == 1
    algorithm = _algorithm("ppo", "discrete", num_epochs=4)
    assert algorithm.update(_rollout(algorithm.policy, "discrete"))["epochs"] == 4


@pytest.mark.parametrize("algo", ["ppo", "a2c", "reinforce", "trpo", "impala"])
def test_invalid_steps_are_dropped_before_the_loss(algo):
    algorithm = _algorithm(algo, "discrete")
    valid = torch.ones(16, 4, dtype=torch.bool)
    valid[5, 1] = valid[9, 2] = False
    rollout = _rollout(algorithm.policy, "discrete", valid=valid)
    batch = flatten_rollout(rollout, rollout.rewards, rollout.rewards)
    assert len(batch) == 16 * 4 - 2
    metrics = algorithm.update(rollout)
    assert math.isfinite(metrics["policy_loss"])


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_a_nan_reward_raises_training_error_before_touching_the_policy(algo):
    algorithm = _algorithm(algo, "discrete")
    rollout = _rollout(algorithm.policy, "discrete")
    rewards = rollout.rewards.clone()
    rewards[7, 2] = float("nan")
    params = [p.detach().clone() for p in algorithm.policy.parameters()]
    with pytest.raises(TrainingError, match="non-finite loss"):
        algorithm.update(dataclasses.replace(rollout, rewards=rewards))
    assert all(torch.equal(a, b) for a, b in zip(params, algorithm.policy.parameters()))


@pytest.mark.parametrize("algo", ["ppo", "a2c", "impala"])
def test_learning_rate_anneals_linearly_to_zero(algo):
    algorithm = _algorithm(algo, "discrete", total_updates=4, anneal_lr=True, learning_rate=1e-3)
    rollout = _rollout(algorithm.policy, "discrete")
    used = [algorithm.update(rollout)["learning_rate"] for _ in range(4)]
    assert used == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert algorithm.learning_rate == 0.0
    assert all(group["lr"] == 0.0 for group in algorithm.optimizer.param_groups)
    constant = _algorithm(algo, "discrete", total_updates=4, anneal_lr=False, learning_rate=1e-3)
    constant.update(rollout)
    assert constant.learning_rate == 1e-3


@pytest.mark.parametrize(
    "algo,overrides",
    [("ppo", {}), ("ppo", {"kl_penalty": True}), ("a2c", {}), ("reinforce", {}), ("trpo", {}), ("npg", {}),
     ("impala", {}), ("impala", {"rho_bar": "inf", "trace_lambda": 0.9})],
)
def test_state_round_trip_makes_the_next_update_identical(algo, overrides, tmp_path):
    from policygrad.checkpoint import load_checkpoint, save_checkpoint

    first = _algorithm(algo, "continuous", **overrides)
    first.update(_rollout(first.policy, "continuous", seed=1))
    tensors, meta = first.state()
    save_checkpoint(tmp_path / "ckpt", {k: v.clone() for k, v in tensors.items()}, meta)
    tensors, meta = load_checkpoint(tmp_path / "ckpt")

    second = _algorithm(algo, "continuous", seed=123, **overrides)
    second.policy.load_state_dict(copy.deepcopy(first.policy.state_dict()))
    second.load_state(tensors, meta)
    assert second.updates == first.updates == 1

    rollout = _rollout(first.policy, "continuous", seed=2)
    torch.manual_seed(9)
    metrics_first = first.update(rollout)
    torch.manual_seed(9)
    metrics_second = second.update(rollout)
    assert metrics_first == pytest.approx(metrics_second, nan_ok=True, rel=0, abs=0)
    for a, b in zip(first.policy.parameters(), second.policy.parameters()):
        assert torch.equal(a, b)


def test_load_state_rejects_another_algorithms_state():
    tensors, meta = _algorithm("ppo", "discrete").state()
    with pytest.raises(InputError, match="ppo"):
        _algorithm("a2c", "discrete").load_state(tensors, meta)


# --- REINFORCE's Ψ ------------------------------------------------------------------------


def test_reinforce_total_return_is_the_episode_return_for_every_step():
    # One env, γ = 0.5: episode A = steps 0-1 (terminated at 1), B = steps 2-3 (cut by the rollout),
    # and a rollout that starts mid-episode (k₀ = 2) in a second env.
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0], [4.0, 1.0], [8.0, 1.0]])
    terminated = torch.tensor([[False, False], [True, False], [False, False], [False, False]])
    truncated = torch.zeros(4, 2, dtype=torch.bool)
    episode_step = torch.tensor([[0, 2], [1, 3], [0, 4], [1, 5]])
    returns = discounted_returns(rewards, torch.zeros(4, 2), terminated, truncated, 0.5)
    psi = episode_total_returns(returns, episode_step, terminated, truncated, 0.5)
    # A: 1 + 0.5·2 = 2; B: 4 + 0.5·8 = 8; env 1: γ² (1 + .5 + .25 + .125) = 0.25 · 1.875.
    assert torch.allclose(psi[:, 0], torch.tensor([2.0, 2.0, 8.0, 8.0]))
    assert torch.allclose(psi[:, 1], torch.full((4,), 0.25 * 1.875))


def test_reinforce_without_baseline_does_not_bootstrap():
    algorithm = _algorithm("reinforce", "discrete", use_baseline=False)
    rollout = _rollout(algorithm.policy, "discrete")
    big = dataclasses.replace(rollout, next_values=rollout.next_values + 1e3)
    psi, _ = algorithm.weigh(rollout)
    psi_big, _ = algorithm.weigh(big)
    assert torch.equal(psi, psi_big)
    with_baseline = _algorithm("reinforce", "discrete", use_baseline=True)
    assert not torch.equal(with_baseline.weigh(rollout)[0], with_baseline.weigh(big)[0])


# --- configs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "algo,overrides,message",
    [
        ("ppo", {"gamma": 0.0}, "gamma must lie in (0, 1], got 0.0"),
        ("a2c", {"gamma": 1.01}, "gamma must lie in (0, 1]"),
        ("ppo", {"num_steps": 0}, "num_steps must be > 0, got 0"),
        ("trpo", {"num_envs": -2}, "num_envs must be > 0"),
        ("ppo", {"num_envs": 2, "num_steps": 64, "minibatch_size": 256},
         "minibatch_size 256 exceeds the batch size num_envs·num_steps = 2·64 = 128"),
        ("ppo", {"clip_epsilon": 0.1}, "unknown ppo hyperparameter 'clip_epsilon'; valid: activation,"),
        ("ppo", {"learning_rate": "fast"}, "learning_rate must be a number, got 'fast'"),
        ("ppo", {"num_epochs": 2.5}, "num_epochs must be an int, got 2.5"),
        ("a2c", {"normalize_obs": "maybe"}, "normalize_obs must be true or false"),
        ("reinforce", {"return_type": "monte_carlo"}, "return_type must be one of 'total', 'reward_to_go'"),
        ("ppo", {"activation": "sigmoid"}, "unknown activation 'sigmoid'; valid: tanh"),
        ("ppo", {"hidden_sizes": (64, 0)}, "hidden_sizes must be a non-empty tuple of positive ints"),
        ("ppo", {"hidden_sizes": "64,x"}, "hidden_sizes must be a tuple of ints"),
        ("trpo", {"backtrack_coef": 1.5}, "backtrack_coef must lie in (0, 1)"),
        ("npg", {"max_kl": 0}, "max_kl must be > 0"),
        ("ppo", {"target_kl": -1.0}, "target_kl must be > 0 or None"),
        ("a2c", {"gae_lambda": 2.0}, "gae_lambda must lie in [0, 1]"),
        ("impala", {"rho_bar": 0}, "rho_bar must be > 0"),
    ],
)
def test_config_validation_raises_one_line_input_errors(algo, overrides, message):
    with pytest.raises(InputError) as info:
        make_config(algo, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_make_config_parses_strings_and_rejects_unknown_algorithms():
    config = make_config("ppo", {"gamma": "0.9", "hidden_sizes": "32,32", "target_kl": "none", "anneal_lr": "false",
                                 "num_envs": "4", "num_steps": "64"})
    assert (config.gamma, config.hidden_sizes, config.target_kl, config.anneal_lr) == (0.9, (32, 32), None, False)
    assert config.batch_size == 256
    assert make_config("ppo", {"hidden_sizes": [8]}).hidden_sizes == (8,)
    assert isinstance(make_config("ppo", {"learning_rate": 1}).learning_rate, float)
    with pytest.raises(InputError, match="unknown algorithm 'dqn'; valid: reinforce, a2c, ppo, npg, trpo, impala"):
        make_config("dqn", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.gamma = 0.5  # type: ignore[misc]


def test_every_config_field_has_a_docstring():
    from policygrad.algorithms import CONFIGS, field_docs

    for cls in CONFIGS.values():
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, (cls.__name__, missing)


def test_every_preset_is_a_valid_config():
    for algo, table in PRESETS.items():
        for env_id, preset in table.items():
            assert preset["total_steps"] > 0
            make_config(algo, {k: v for k, v in preset.items() if k not in TRAIN_KEYS})
            TrainConfig(**{k: v for k, v in preset.items() if k in TRAIN_KEYS})
    assert get_preset("ppo", "CartPole-v1")["total_steps"] == 100_000
    assert get_preset("ppo", "NoSuchEnv-v0") == {}
    get_preset("ppo", "CartPole-v1")["num_envs"] = 999  # a copy: the table is not changed
    assert PRESETS["ppo"]["CartPole-v1"]["num_envs"] != 999
