"""The one environment-stepping evaluation routine: episodes, windows, reward per step, any actor."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from policygrad.errors import InputError, TrainingError
from policygrad.evaluation import ArrayActor, Evaluation, evaluate
from policygrad.runconfig import resolve_run
from policygrad.training import acting_backend, build_session, evaluate_session, measure_reward_per_step


class Counter(gym.Env):
    """obs = [k, 10 · episode index]; reward k for the k-th step of an episode (1, 2, 3, ...).

    The episode terminates after ``terminate_at`` steps (if set) or is truncated after ``limit``.
    """

    def __init__(self, terminate_at: int | None = 3, limit: int = 5) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.terminate_at, self.limit = terminate_at, limit
        self.k = 0
        self.episode = -1

    def _obs(self) -> np.ndarray:
        return np.array([self.k, 10.0 * self.episode], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k, self.episode = 0, self.episode + 1
        return self._obs(), {}

    def step(self, action):
        self.k += 1
        reward = float(self.k)
        terminated = self.terminate_at is not None and self.k >= self.terminate_at
        truncated = not terminated and self.k >= self.limit
        return self._obs(), reward, terminated, truncated, {}


class ZeroActor:
    """A duck-typed actor (no torch module): action 0 everywhere, as a NumPy array."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def act(self, obs, action_mask=None, deterministic=False, generator=None):
        self.seen.append(obs)
        n = obs.shape[0]
        return np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n)


def _sync(make, n: int, mode: AutoresetMode) -> SyncVectorEnv:
    return SyncVectorEnv([make] * n, autoreset_mode=mode)


def test_episodes_are_counted_whole() -> None:
    for mode in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
        envs = _sync(lambda: Counter(3, 10), 4, mode)
        result = evaluate(ZeroActor(), envs, episodes=7)
        assert isinstance(result, Evaluation)
        assert result.returns == [6.0] * 7
        assert result.reward_per_step == pytest.approx(2.0)  # rewards 1, 2, 3
        assert result.steps == 21  # 7 episodes of 3 counted steps
    # A task that never ends is evaluated over windows of max_episode_steps steps: env 0 runs two
    # windows (rewards 1..4, then 5..8), env 1 one; returns are listed env by env.
    envs = _sync(lambda: Counter(None, 10**9), 2, AutoresetMode.SAME_STEP)
    assert evaluate(ZeroActor(), envs, episodes=3, max_episode_steps=4).returns == [10.0, 26.0, 10.0]


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
def test_reward_per_step_skips_the_dummy_steps(mode: AutoresetMode) -> None:
    # 2 copies × 4 steps each. SAME_STEP: rewards 1, 2, 3, 1 per copy -> 7/4. NEXT_STEP: 1, 2, 3,
    # then the reset's dummy step, which counts for nothing -> 6/3.
    envs = _sync(lambda: Counter(3, 10), 2, mode)
    result = evaluate(ZeroActor(), envs, steps=7)  # ⌈7/2⌉ = 4 steps per copy
    assert result.env_steps == 8
    if mode == AutoresetMode.SAME_STEP:
        assert (result.reward_per_step, result.steps) == (pytest.approx(7 / 4), 8)
    else:
        assert (result.reward_per_step, result.steps) == (pytest.approx(2.0), 6)
    assert result.returns == [6.0, 6.0]  # the episodes that ended inside the window


def test_the_actor_sees_normalised_encoded_observations() -> None:
    envs = _sync(lambda: Counter(3, 10), 1, AutoresetMode.SAME_STEP)

    class Halve:
        def normalize(self, x: np.ndarray) -> np.ndarray:
            return x / 2

    actor = ZeroActor()
    evaluate(actor, envs, steps=2, obs_normalizer=Halve())
    assert [o.tolist() for o in actor.seen] == [[[0.0, 0.0]], [[0.5, 0.0]]]
    assert all(o.dtype == torch.float32 for o in actor.seen)


def test_bad_counts_and_faults() -> None:
    envs = _sync(lambda: Counter(3, 10), 1, AutoresetMode.SAME_STEP)
    for kwargs in ({}, {"episodes": 2, "steps": 2}, {"episodes": 0}, {"steps": -1}, {"episodes": True}):
        with pytest.raises(InputError):
            evaluate(ZeroActor(), envs, **kwargs)

    class NaNReward(Counter):
        def step(self, action):
            obs, _, terminated, truncated, info = super().step(action)
            return obs, float("nan"), terminated, truncated, info

    with pytest.raises(TrainingError, match=r"non-finite reward at evaluation step 1 \(environment 0\)"):
        evaluate(ZeroActor(), _sync(NaNReward, 1, AutoresetMode.SAME_STEP), episodes=1)


def test_training_evaluations_go_through_the_routine() -> None:
    spec = resolve_run("ppo", "CartPole-v1", overrides={"eval_episodes": 4})
    session = build_session(spec)
    try:
        returns = evaluate_session(session, 4, seed=3)
        direct = evaluate(session.policy, session.eval_envs, episodes=4, encoder=session.encoder, seed=3)
        assert returns == direct.returns and len(returns) == 4
        # The NumPy backend behind ArrayActor draws the same actions as the policy's act.
        sampled = [
            evaluate(actor, session.eval_envs, episodes=4, encoder=session.encoder, seed=5, deterministic=False,
                     generator=torch.Generator().manual_seed(5)).returns
            for actor in (session.policy, ArrayActor(acting_backend(session)))
        ]
        assert sampled[0] == sampled[1]
        assert evaluate_session(session, 4, seed=5, deterministic=False) == sampled[0]
        rate, steps = measure_reward_per_step(session, 16, deterministic=True, seed=3)
        assert rate == 1.0 and steps == 16  # CartPole pays 1 per step and lasts longer than 4 steps
    finally:
        session.close()
