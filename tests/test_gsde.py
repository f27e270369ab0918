"""gSDE (generalised state-dependent exploration): the policy's law, its noise, and the collector's
resampling (the NumPy backend's gSDE kernels are checked in test_backends.py).

σ_d(s)² = Σ_j φ_j(s)² exp(2 L_jd) + 1e-6 with φ the actor's last hidden layer; rollouts act with
a = μ(s) + φ(s)ᵀ M, M ~ N(0, exp(L)²) kept for several steps.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from policygrad.errors import InputError
from policygrad.policies import MLPGSDEPolicy, make_actor_critic
from policygrad.rollout import RolloutCollector, make_policy

OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)


def _policy(hidden_sizes=(8, 7), dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    policy = make_actor_critic(OBS, ACT, hidden_sizes=hidden_sizes, use_sde=True).to(dtype)
    with torch.no_grad():  # distinct entries, so that a transposed L would show
        policy.actor.log_std.copy_(0.3 * torch.randn(policy.actor.log_std.shape, dtype=dtype))
    return policy


def test_the_law_is_a_gaussian_with_the_state_dependent_std_of_the_features() -> None:
    policy = _policy(dtype=torch.float64)
    assert isinstance(policy.actor, MLPGSDEPolicy) and policy.sde and policy.actor.log_std.shape == (7, 3)
    x = torch.randn(11, 5, dtype=torch.float64)
    features, mean = policy.actor.net.features_and_output(x)
    assert features.shape == (11, 7) and torch.equal(mean, policy.actor.net(x))
    std = torch.sqrt(features.square() @ torch.exp(policy.actor.log_std).square() + 1e-6)  # [11, 3]
    reference = torch.distributions.Normal(mean, std)
    dist = policy.actor.distribution(x)
    actions = reference.sample()
    torch.testing.assert_close(dist.log_prob(actions), reference.log_prob(actions).sum(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(dist.entropy(), reference.entropy().sum(-1), rtol=0, atol=1e-12)
    # σ is learnt through L only: no gradient reaches the MLP through the features.
    dist.log_prob(actions).sum().backward()
    hidden_weight = policy.actor.net.layers[0].weight
    mean_only = torch.autograd.grad(torch.distributions.Normal(policy.actor.net(x), std.detach()).log_prob(actions).sum(),
                                    hidden_weight)[0]
    torch.testing.assert_close(hidden_weight.grad, mean_only, rtol=0, atol=1e-12)
    assert policy.actor.log_std.grad is not None and policy.actor.log_std.grad.abs().sum() > 0


def test_the_noise_of_fixed_matrices_has_the_policys_variance() -> None:
    policy = _policy(dtype=torch.float64)
    x = torch.randn(1, 5, dtype=torch.float64)
    features, _ = policy.actor.net.features_and_output(x)
    g = torch.Generator().manual_seed(0)
    draws = []
    for _ in range(20_000):
        policy.actor.reset_noise(1, g)
        draws.append(policy.actor.noise(features))
    noise = torch.cat(draws).detach()  # [20000, 3]
    variance = (features.square() @ torch.exp(2 * policy.actor.log_std)).detach()[0]  # σ² − 1e-6
    # mean 0 and variance σ²: 20,000 draws put 4 standard errors within about 3% of σ²
    assert torch.all(noise.mean(0).abs() < 4 * torch.sqrt(variance / 20_000))
    torch.testing.assert_close(noise.var(0), variance, rtol=0.04, atol=0)
    # one matrix per environment, kept until the next reset
    policy.actor.reset_noise(4, g)
    matrices = policy.actor.exploration.clone()
    assert matrices.shape == (4, 7, 3)
    policy.actor.noise(torch.randn(4, 7, dtype=torch.float64))
    assert torch.equal(policy.actor.exploration, matrices)


@pytest.mark.parametrize("sample_freq,expected_resets", [(-1, 1), (1, 6), (2, 3), (4, 2), (6, 1)])
def test_the_collector_draws_new_matrices_at_each_rollout_and_every_sample_freq_steps(sample_freq, expected_resets):
    envs = gym.make_vec("Pendulum-v1", num_envs=2, vectorization_mode="sync")
    policy, encoder = make_policy(envs.single_observation_space, envs.single_action_space, (8, 8), use_sde=True)
    collector = RolloutCollector(envs, policy, 6, encoder=encoder, sde_sample_freq=sample_freq)
    resets = []
    original = policy.actor.reset_noise
    policy.actor.reset_noise = lambda n, generator=None: (resets.append(n), original(n, generator))
    collector.reset(seed=0)
    rollout = collector.collect()
    assert resets == [2] * expected_resets
    # the stored log-probabilities are those of the stored (unclipped) actions under π
    with torch.no_grad():
        dist = policy.actor.distribution(rollout.observations)
        torch.testing.assert_close(dist.log_prob(rollout.actions), rollout.log_probs, rtol=0, atol=1e-5)
    envs.close()


def test_gsde_needs_box_actions_and_a_hidden_layer() -> None:
    with pytest.raises(InputError, match="use_sde applies to Box"):
        make_actor_critic(OBS, gym.spaces.Discrete(3), use_sde=True)
    with pytest.raises(InputError, match="at least one hidden layer"):
        MLPGSDEPolicy(5, 3, hidden_sizes=())


@pytest.mark.slow
def test_a_gsde_run_is_reproducible_and_resumes_to_the_same_run(tmp_path) -> None:
    import csv
    import shutil

    from policygrad.checkpoint import latest_checkpoint, load_checkpoint
    from policygrad.cli import main

    def rows(run):
        with open(run / "metrics.csv") as f:
            return [{k: v for k, v in r.items() if k not in ("wall_time", "steps_per_second")} for r in csv.DictReader(f)]

    base = ["train", "--env", "Pendulum-v1", "--seed", "3", "--quiet", "--set", "use_sde=true",
            "--set", "sde_sample_freq=4", "--set", "num_steps=64", "--set", "num_envs=2", "--set", "minibatch_size=32",
            "--set", "tensorboard=false"]
    assert main([*base, "--out", str(tmp_path / "a"), "--steps", "512"]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--steps", "512"]) == 0
    assert rows(tmp_path / "a") == rows(tmp_path / "b") and len(rows(tmp_path / "a")) == 4
    tensors, _ = load_checkpoint(latest_checkpoint(tmp_path / "a"))
    assert tensors["policy.actor.log_std"].shape == (64, 1)
    assert main([*base, "--out", str(tmp_path / "c"), "--steps", "256"]) == 0
    copies = [tmp_path / "x", tmp_path / "y"]
    for copy in copies:
        shutil.copytree(tmp_path / "c", copy)
        assert main(["train", "--resume", str(copy), "--steps", "512", "--quiet"]) == 0
    assert rows(copies[0]) == rows(copies[1])


@pytest.mark.parametrize("use_sde,shape", [(False, (3,)), (True, (8, 3))])
def test_log_std_init_sets_the_initial_log_std(use_sde: bool, shape) -> None:
    policy, _ = make_policy(OBS, ACT, (8, 8), use_sde=use_sde, log_std_init=-2.0)
    assert policy.actor.log_std.shape == shape and torch.all(policy.actor.log_std == -2.0)
