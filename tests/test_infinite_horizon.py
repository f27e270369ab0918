"""A time limit is not a termination: the critic of a task that never ends learns 1/(1 − γ).

Stable-Baselines3's infinite-horizon check, run through the library's own environment builder,
collector and algorithm. The task pays a reward of 1 at every step and never ends; episodes are
cut by a time limit of H steps. Because a truncation is bootstrapped from the value of the final
observation, the critic must learn the infinite-horizon value

    V(s0) = Σ_{t≥0} γ^t = 1 / (1 − γ)           (γ = 0.9: 10)

and not the value of an episode that stops after H steps,

    V(s0) = Σ_{t<H} γ^t = (1 − γ^H) / (1 − γ)   (γ = 0.9, H = 5: 1 − 0.59049 = 0.40951 → 4.0951),

which is what it must learn when the same task *terminates* after H steps instead.

The observation is the step count modulo H, so that the terminating task is Markov (its value
depends on the steps left) while the truncated one stays the same endless cycle: its episode is
cut where the observation is back at s0, and every state of the cycle is worth 1 / (1 − γ).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from policygrad.algorithms import make_algorithm, make_config
from policygrad.envs import make_vec_env
from policygrad.rollout import RolloutCollector, make_policy

GAMMA = 0.9
H = 5
INFINITE = 1 / (1 - GAMMA)  # 10
FINITE = (1 - GAMMA**H) / (1 - GAMMA)  # 4.0951


class RewardOneCycle(gym.Env):
    """Reward 1 at every step, whatever the action; the observation is the step count mod ``period``.

    Never terminates, unless ``terminate`` is set: then the episode terminates after ``period`` steps.
    """

    def __init__(self, period: int = H, terminate: bool = False) -> None:
        self.observation_space = gym.spaces.Discrete(period)
        self.action_space = gym.spaces.Discrete(2)
        self.period = period
        self.terminate = terminate
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[int, dict]:
        super().reset(seed=seed)
        self.t = 0
        return 0, {}

    def step(self, action: int) -> tuple[int, float, bool, bool, dict]:
        self.t += 1
        terminated = self.terminate and self.t >= self.period
        return self.t % self.period, 1.0, terminated, False, {}


def _trained_values(terminate: bool) -> np.ndarray:
    """V(s) of every observation s = 0..H−1 after training A2C's critic on the task."""
    # Truncated: a TimeLimit of H. Terminating: no TimeLimit (time_limit=0), the task ends by itself.
    envs = make_vec_env(RewardOneCycle, 4, 0, time_limit=0 if terminate else H,
                        env_kwargs={"period": H, "terminate": terminate})
    try:
        torch.manual_seed(0)
        config = make_config("a2c", {"gamma": GAMMA, "num_envs": 4, "num_steps": 10, "optimizer": "adam",
                                     "learning_rate": 3e-3, "hidden_sizes": (32,)})
        policy, encoder = make_policy(envs.single_observation_space, envs.single_action_space,
                                      config.hidden_sizes, config.activation)
        updates = 250  # the targets are exact (no noise): within 0.1% of V after 200 (seeds 0, 1, 2)
        algorithm = make_algorithm("a2c", policy, config, total_updates=updates)
        collector = RolloutCollector(envs, policy, config.num_steps, encoder=encoder)
        collector.reset(seed=0)
        for _ in range(updates):
            rollout = collector.collect()
            if not terminate:  # the limit truncates and nothing terminates (else the test is moot)
                assert not rollout.terminated.any() and rollout.truncated.any()
            else:
                assert rollout.terminated.any() and not rollout.truncated.any()
            algorithm.update(rollout)
        with torch.no_grad():
            return policy.value(encoder(torch.arange(H), torch.float32)).double().numpy()
    finally:
        envs.close()


def test_truncation_bootstraps_to_the_infinite_horizon_value():
    values = _trained_values(terminate=False)
    assert values[0] == pytest.approx(INFINITE, rel=0.02), values
    np.testing.assert_allclose(values, INFINITE, rtol=0.02)  # every state of the endless cycle


def test_termination_at_the_same_step_gives_the_finite_horizon_value():
    values = _trained_values(terminate=True)
    assert values[0] == pytest.approx(FINITE, rel=0.02), values
    assert values[0] < 0.5 * INFINITE
    # and the values of the later steps count down to the one reward left: V(s_{H−1}) = 1
    expected = (1 - GAMMA ** (H - np.arange(H))) / (1 - GAMMA)
    np.testing.assert_allclose(values, expected, rtol=0.02)
