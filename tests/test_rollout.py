"""The rollout collector: bootstrap values at truncations, both auto-reset modes, masks, clipping,
encodings, raw episode statistics, errors; and environment creation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from policygrad.envs import make_vec_env
from policygrad.errors import InputError, TrainingError
from policygrad.normalize import ObservationNormalizer, RewardScaler
from policygrad.rollout import Rollout, RolloutCollector, make_policy


class Counter(gym.Env):
    """obs = [k, 10 · episode index]; reward k + 1 for the k-th step of an episode.

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


class SumCritic(torch.nn.Module):
    """A stand-in policy: uniform actions, V(s) = Σ s (so values identify observations)."""

    def __init__(self, obs_dim: int = 2) -> None:
        super().__init__()
        self.obs_dim = obs_dim

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.sum(-1)

    def act(self, obs, action_mask=None, deterministic=False, generator=None):
        n = obs.shape[0]
        return torch.zeros(n, dtype=torch.long), torch.zeros(n), self.value(obs)


def _sync(make, n: int, mode: AutoresetMode) -> SyncVectorEnv:
    return SyncVectorEnv([make] * n, autoreset_mode=mode)


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
def test_next_values_bootstrap_from_the_true_final_observation(mode: AutoresetMode) -> None:
    # Env 0 terminates at k = 3; env 1 is truncated at k = 5. V(s) = k + 10·episode.
    envs = SyncVectorEnv([lambda: Counter(3, 10), lambda: Counter(None, 5)], autoreset_mode=mode)
    collector = RolloutCollector(envs, SumCritic(), 13)
    collector.reset(seed=0)
    r = collector.collect().clone()  # the next collect() reuses the buffers
    assert isinstance(r, Rollout) and (r.num_steps, r.num_envs, r.batch_size) == (13, 2, 26)
    valid = torch.ones(13, 2, dtype=torch.bool) if r.valid is None else r.valid
    assert (r.valid is None) == (mode == AutoresetMode.SAME_STEP)
    for t in range(13):
        for i in range(2):
            if not valid[t, i]:
                continue
            k, episode = r.observations[t, i].tolist()
            assert r.values[t, i] == k + episode
            assert r.episode_step[t, i] == k
            assert r.rewards[t, i] == k + 1
            if r.terminated[t, i]:
                assert i == 0 and k + 1 == 3 and r.next_values[t, i] == 0
            elif r.truncated[t, i]:
                # V(final obs) = 5 + 10·episode, not V of the next episode's first observation.
                assert i == 1 and k + 1 == 5 and r.next_values[t, i] == 5 + episode
            elif t + 1 < 13:
                assert r.next_values[t, i] == r.values[t + 1, i]
    # NEXT_STEP: one dummy row after each episode end inside the rollout, and no other.
    ends = (r.terminated | r.truncated).sum(0)
    if mode == AutoresetMode.NEXT_STEP:
        assert (~valid).sum(0).tolist() == [int(ends[0]) - int(r.terminated[-1, 0]), int(ends[1]) - int(r.truncated[-1, 1])]
        assert not (r.terminated | r.truncated)[~valid].any()
    # The bootstrap at the rollout's end is V(s_T) for the carried-over observation.
    running = valid[-1] & ~r.terminated[-1] & ~r.truncated[-1]
    following = collector.collect()
    assert running.any()
    assert torch.equal(following.observations[0].sum(-1)[running], r.next_values[-1][running])


def test_raw_episode_statistics_ignore_reward_scaling_and_dummies() -> None:
    envs = _sync(lambda: Counter(3, 10), 2, AutoresetMode.NEXT_STEP)
    collector = RolloutCollector(envs, SumCritic(), 16, reward_scaler=RewardScaler(2, gamma=0.9))
    collector.collect()
    returns, lengths = collector.pop_episodes()
    assert returns and set(returns) == {6.0} and set(lengths) == {3}  # 1 + 2 + 3 over 3 steps
    assert collector.pop_episodes() == ([], [])
    assert collector.reward_per_step == pytest.approx(2.0)  # raw rewards 1, 2, 3 repeating


def test_vector_cartpole_and_sync_cartpole() -> None:
    for vectorization, mode in (("vector", AutoresetMode.NEXT_STEP), ("sync", AutoresetMode.SAME_STEP)):
        envs = make_vec_env("CartPole-v1", 4, 0, vectorization=vectorization)
        assert envs.metadata["autoreset_mode"] == mode
        torch.manual_seed(0)
        policy, encoder = make_policy(envs.single_observation_space, envs.single_action_space)
        collector = RolloutCollector(envs, policy, 64, encoder=encoder)
        collector.reset(seed=1)
        r = collector.collect()
        assert r.observations.shape == (64, 4, 4) and r.actions.dtype == torch.long
        returns, lengths = collector.pop_episodes()
        assert returns == [float(n) for n in lengths]  # CartPole pays 1 per step
        assert collector.steps == 256
        if mode == AutoresetMode.NEXT_STEP:
            # One dummy row after every episode end (except one ending on the last step).
            ends = int((r.terminated | r.truncated)[:-1].sum())
            assert int((~r.valid).sum()) == ends
        # The log-probabilities are those of the stored actions under the policy that acted.
        dist = policy.distribution(r.observations)
        torch.testing.assert_close(dist.log_prob(r.actions), r.log_probs)
        torch.testing.assert_close(policy.value(r.observations), r.values)
        envs.close()


def test_rollouts_reuse_buffers_and_clone_keeps_a_copy() -> None:
    envs = make_vec_env("CartPole-v1", 2, 0)
    policy, encoder = make_policy(envs.single_observation_space, envs.single_action_space)
    collector = RolloutCollector(envs, policy, 8, encoder=encoder)
    first = collector.collect()
    kept = first.clone()
    second = collector.collect()
    assert second.observations.data_ptr() == first.observations.data_ptr()
    assert not torch.equal(kept.observations, second.observations)


class BoxActions(gym.Env):
    """Records the action it receives; actions live in [-1, 2]²."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (3,), np.float64)
        self.action_space = spaces.Box(np.float32(-1.0), np.float32(2.0), (2,), dtype=np.float32)
        self.received: list[np.ndarray] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3), {}

    def step(self, action):
        self.received.append(np.array(action, copy=True))
        return np.ones(3) * 0.5, 0.0, False, False, {}


def test_box_actions_are_clipped_for_the_env_and_stored_unclipped() -> None:
    envs = SyncVectorEnv([BoxActions], autoreset_mode=AutoresetMode.SAME_STEP)
    policy, encoder = make_policy(envs.single_observation_space, envs.single_action_space)
    with torch.no_grad():
        policy.actor.log_std.fill_(1.5)  # σ ≈ 4.5: most samples fall outside the bounds
    r = RolloutCollector(envs, policy, 50, encoder=encoder).collect()
    received = np.stack(envs.envs[0].received)
    stored = r.actions[:, 0].numpy()
    assert r.actions.dtype == torch.float32 and r.actions.shape == (50, 1, 2)
    assert (stored < -1).any() and (stored > 2).any()
    np.testing.assert_allclose(received, np.clip(stored, -1.0, 2.0))
    assert r.observations.dtype == torch.float32


class Masked(gym.Env):
    """Discrete(4) actions of which only those in info["action_mask"] are allowed; obs Discrete(3)."""

    def __init__(self) -> None:
        self.observation_space = spaces.Discrete(3)
        self.action_space = spaces.Discrete(4)
        self.t = 0

    def _mask(self) -> np.ndarray:
        mask = np.zeros(4, dtype=np.int8)
        mask[[self.t % 4, (self.t + 1) % 4]] = 1
        return mask

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return 0, {"action_mask": self._mask()}

    def step(self, action):
        assert self._mask()[action], f"masked action {action} taken at t = {self.t}"
        self.t += 1
        return self.t % 3, 1.0, False, self.t >= 7, {"action_mask": self._mask()}


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
def test_action_masks_from_info_and_one_hot_observations(mode: AutoresetMode) -> None:
    envs = _sync(Masked, 3, mode)
    policy, encoder = make_policy(envs.single_observation_space, envs.single_action_space)
    r = RolloutCollector(envs, policy, 20, encoder=encoder).collect()
    assert r.action_masks is not None and r.action_masks.shape == (20, 3, 4)
    assert r.action_masks.sum(-1).eq(2).all()
    assert r.action_masks.gather(-1, r.actions.unsqueeze(-1)).all()
    # One-hot observations: exactly one 1 per row, at the state index.
    assert r.observations.shape == (20, 3, 3)
    assert torch.equal(r.observations.sum(-1), torch.ones(20, 3))
    torch.testing.assert_close(policy.distribution(r.observations, r.action_masks).log_prob(r.actions), r.log_probs)


class MultiAction(gym.Env):
    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (2, 2), np.float32)
        self.action_space = spaces.MultiDiscrete([3, 2])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros((2, 2), np.float32), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action))
        return np.full((2, 2), 0.25, np.float32), float(action[0]), False, False, {}


def test_multidiscrete_actions_and_flattened_box_observations() -> None:
    envs = _sync(MultiAction, 2, AutoresetMode.SAME_STEP)
    policy, encoder = make_policy(envs.single_observation_space, envs.single_action_space)
    r = RolloutCollector(envs, policy, 10, encoder=encoder).collect()
    assert r.actions.shape == (10, 2, 2) and r.actions.dtype == torch.long
    assert r.observations.shape == (10, 2, 4)
    torch.testing.assert_close(r.rewards, r.actions[..., 0].float())


def test_observation_normalizer_applies_to_what_the_policy_sees() -> None:
    envs = _sync(lambda: Counter(None, 4), 2, AutoresetMode.SAME_STEP)
    norm = ObservationNormalizer(2)
    r = RolloutCollector(envs, SumCritic(), 40, obs_normalizer=norm).collect()
    assert norm.rms.count > 80
    assert float(r.observations[..., 0].abs().max()) < 3.0  # k ∈ {0..3} standardised
    torch.testing.assert_close(r.values, r.observations.sum(-1))


class Broken(gym.Env):
    """Well-behaved for ``good`` steps, then returns a NaN observation, NaN reward or raises."""

    def __init__(self, fault: str, good: int = 5) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.fault, self.good, self.t = fault, good, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        obs, reward = np.zeros(1, np.float32), 0.0
        if self.t > self.good:
            if self.fault == "obs":
                obs[0] = np.nan
            elif self.fault == "reward":
                reward = np.inf
            else:
                raise RuntimeError("simulator exploded")
        return obs, reward, False, False, {}


@pytest.mark.parametrize(
    "fault, message",
    [
        ("obs", r"non-finite observation at step 12 \(environment 0\)"),
        ("reward", r"non-finite reward at step 12 \(environment 0\)"),
        ("raise", r"the environment raised at step 12 \(environment 0\): RuntimeError: simulator exploded"),
    ],
)
def test_faulty_environments_raise_training_errors(fault: str, message: str) -> None:
    envs = _sync(lambda: Broken(fault), 2, AutoresetMode.SAME_STEP)
    collector = RolloutCollector(envs, SumCritic(1), 8)
    with pytest.raises(TrainingError, match=message):
        collector.collect()


def test_make_vec_env_resolves_ids_modules_and_classes() -> None:
    envs = make_vec_env("CartPole-v1", 3, 0, time_limit=7)
    assert envs.num_envs == 3
    envs.reset(seed=0)
    for _ in range(7):
        _, _, terminated, truncated, _ = envs.step(np.zeros(3, dtype=np.int64))
    assert (terminated | truncated).all()
    user = make_vec_env(f"{__name__}:Counter", 2, 0, env_kwargs={"terminate_at": None, "limit": 2})
    assert user.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert make_vec_env(Counter, 1, vectorization="sync").num_envs == 1
    with pytest.raises(InputError, match="unknown environment 'NoSuchEnv-v0'"):
        make_vec_env("NoSuchEnv-v0", 1)
    with pytest.raises(InputError, match="cannot import module"):
        make_vec_env("no_such_module_xyz:Env", 1)
    with pytest.raises(InputError, match="no vectorised implementation"):
        make_vec_env("Pendulum-v1", 1, vectorization="vector")
    with pytest.raises(InputError, match="num_envs"):
        make_vec_env("CartPole-v1", 0)


def test_make_policy_rejects_unsupported_spaces() -> None:
    with pytest.raises(InputError, match="unsupported sub-space at '\\[0\\]'"):
        make_policy(spaces.Tuple([spaces.Text(2)]), spaces.Discrete(2))
    with pytest.raises(InputError, match="unsupported action space"):
        make_policy(spaces.Box(-1, 1, (2,)), spaces.Box(-1, 1, (2, 2)))
