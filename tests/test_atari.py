"""Atari: the ALE namespace registered on demand, the missing extra, environment seeds in range,
the preprocessing (shapes, clipped rewards with raw returns, lives), the presets, a smoke run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from policygrad.algorithms import PRESETS, get_preset
from policygrad.atari import AtariOptions, LifeLossTermination
from policygrad.cli import main
from policygrad.envs import make_vec_env, resolve_env
from policygrad.errors import InputError
from policygrad.rollout import RolloutCollector, make_policy
from policygrad.runconfig import TrainConfig, resolve_run
from policygrad.seeding import DERIVED_SEED_LIMIT, ENV_SEED_LIMIT, derive_seed, env_seed

HAS_ALE = importlib.util.find_spec("ale_py") is not None
HAS_CV2 = importlib.util.find_spec("cv2") is not None
needs_ale = pytest.mark.skipif(not HAS_ALE, reason="ale-py is not installed (pip install 'policygrad[atari]')")
needs_cv2 = pytest.mark.skipif(not (HAS_ALE and HAS_CV2), reason="ale-py and opencv are not installed")
QUICK = ["--quiet", "--set", "tensorboard=false"]


def _without_ale_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gymnasium as it is before ale_py is imported: no ALE/... ids."""
    for env_id in [k for k in gym.registry if k.startswith("ALE/")]:
        monkeypatch.delitem(gym.registry, env_id)


# --- the namespace and the extra ----------------------------------------------------------------


class _FakeGame(gym.Env):
    observation_space = spaces.Box(0, 255, (2,), np.uint8)
    action_space = spaces.Discrete(2)


def test_an_ale_id_imports_ale_py_and_registers_its_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_ale_ids(monkeypatch)
    registered: list[Any] = []

    def register_envs(module: Any) -> None:  # what importing ale-py does: register its ids
        registered.append(module)
        monkeypatch.setitem(gym.registry, "ALE/Fake-v5",
                            gym.envs.registration.EnvSpec("ALE/Fake-v5", entry_point=_FakeGame))

    fake = type(sys)("ale_py")
    monkeypatch.setitem(sys.modules, "ale_py", fake)
    monkeypatch.setattr(gym, "register_envs", register_envs)
    assert resolve_env("ALE/Fake-v5").id == "ALE/Fake-v5"
    assert registered == [fake]
    with pytest.raises(InputError, match="unknown environment 'ALE/Missing-v5'"):
        resolve_env("ALE/Missing-v5")  # the namespace is known now: an unknown game stays unknown
    assert registered == [fake]


@pytest.mark.slow
@needs_ale
def test_a_fresh_process_resolves_an_ale_id() -> None:
    code = ("import sys; from policygrad.envs import resolve_env; assert 'ale_py' not in sys.modules; "
            "print(resolve_env('ALE/Breakout-v5').id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "ALE/Breakout-v5"


@pytest.mark.parametrize("env", ["ALE/Breakout-v5", "ale_py:ALE/Breakout-v5"])
def test_without_the_extra_one_line_names_it_exit_2_no_run_directory(
    env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _without_ale_ids(monkeypatch)
    monkeypatch.setitem(sys.modules, "ale_py", None)  # `import ale_py` raises ImportError
    out = tmp_path / "run"
    assert main(["train", "--env", env, "--out", str(out), *QUICK]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == f"policygrad: error: environment {env!r} needs ale-py: pip install 'policygrad[atari]'"
    assert not out.exists()


# --- seeds ----------------------------------------------------------------------------------


def test_derived_seeds_leave_room_for_every_copy() -> None:
    seeds = [0, 1, 7, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 123456789012345]
    derived = [derive_seed(s, *keys) for s in seeds for keys in [(), (3,), (1, 5000), (2, 10**9)]]
    assert all(0 <= d < DERIVED_SEED_LIMIT for d in derived)
    assert len(set(derived)) == len(derived)  # distinct inputs, distinct seeds (here)
    assert derive_seed(3, 1, 4096) == derive_seed(3, 1, 4096)  # deterministic
    for seed in [*seeds, *derived, -1, -(2**40)]:
        for num_envs in [1, 2, 8, 16, 1000, 2**20]:
            first = env_seed(seed, num_envs)
            assert 0 <= first and first + num_envs - 1 < ENV_SEED_LIMIT, (seed, num_envs)
            if 0 <= seed and seed + num_envs <= ENV_SEED_LIMIT:
                assert first == seed  # a seed in range is kept
    assert all(env_seed(d, 1000) == d for d in derived)  # a run's derived seeds pass unchanged


@needs_ale
def test_ale_vector_env_takes_the_largest_seeds() -> None:
    options = AtariOptions(terminal_on_life_loss=False)
    envs = make_vec_env("ALE/Pong-v5", 2, 2**31 - 1, vectorization="vector", atari=options)  # mapped into range
    try:
        envs.reset(seed=env_seed(2**32 + 5, 2))
    finally:
        envs.close()


def test_a_reset_error_shows_its_whole_message() -> None:
    class Picky(gym.Env):
        observation_space = spaces.Box(-1, 1, (1,), np.float32)
        action_space = spaces.Discrete(2)

        def reset(self, *, seed: Any = None, options: Any = None) -> Any:
            raise TypeError("reset(): incompatible function arguments. The supported types are:\n"
                            "    1. reset(self, seeds: Sequence[int]) -> tuple\n\nInvoked with: ndarray")

    with pytest.raises(InputError) as err:
        make_vec_env(Picky, 1, 0)
    message = str(err.value)
    assert "\n" not in message
    assert "1. reset(self, seeds: Sequence[int]) -> tuple Invoked with: ndarray" in message


# --- the preprocessing -------------------------------------------------------------------------


class _Lives(gym.Env):
    """An ALE-like game: reward 3 (or −0.5 at every third step), a life lost every 2 steps, over after
    ``2 · lives`` steps; ``info["lives"]`` as ale-py reports it."""

    observation_space = spaces.Box(0, 255, (2,), np.uint8)
    action_space = spaces.Discrete(2)

    def __init__(self, lives: int = 3) -> None:
        self.start_lives = lives

    def reset(self, *, seed: Any = None, options: Any = None) -> Any:
        super().reset(seed=seed)
        self.t, self.lives = 0, self.start_lives
        return np.zeros(2, np.uint8), {"lives": self.lives}

    def step(self, action: Any) -> Any:
        self.t += 1
        if self.t % 2 == 0:
            self.lives -= 1
        reward = -0.5 if self.t % 3 == 0 else 3.0
        return np.full(2, self.t, np.uint8), reward, self.lives == 0, False, {"lives": self.lives}


def _vec(num_envs: int = 1) -> gym.vector.VectorEnv:
    return gym.vector.SyncVectorEnv([_Lives] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)


def test_a_lost_life_ends_the_episode_but_not_the_game() -> None:
    envs = LifeLossTermination(_vec())
    envs.reset(seed=0)
    flags = []
    for _ in range(7):
        obs, reward, terminated, truncated, info = envs.step(np.zeros(1, np.int64))
        flags.append((bool(terminated[0]), bool(info["life_loss"][0]), int(obs[0, 0])))
    # Lives 3 -> 2 at step 2, -> 1 at step 4 (life losses: the game goes on, t keeps counting), -> 0
    # at step 6 (game over: terminated, not a life loss; the new game's first observation is 0).
    assert flags == [(False, False, 1), (True, True, 2), (False, False, 3), (True, True, 4),
                     (False, False, 5), (True, False, 0), (False, False, 1)]


def test_life_loss_needs_same_step_resets() -> None:
    with pytest.raises(InputError, match="same-step"):
        LifeLossTermination(gym.vector.SyncVectorEnv([_Lives], autoreset_mode=AutoresetMode.NEXT_STEP))


def test_clipped_rewards_train_raw_whole_games_are_reported() -> None:
    envs = LifeLossTermination(_vec(2))
    policy, encoder = make_policy(envs.single_observation_space, envs.single_action_space, (8,), "tanh")
    collector = RolloutCollector(envs, policy, 7, encoder=encoder, clip_reward=True)
    collector.reset(seed=0)
    rollout = collector.collect()
    # Rewards 3, 3, −0.5, 3, 3, −0.5 (game over at step 6), then 3 of the next game.
    assert rollout.rewards[:, 0].tolist() == [1, 1, -1, 1, 1, -1, 1]
    assert rollout.terminated[:, 0].tolist() == [False, True, False, True, False, True, False]
    returns, lengths = collector.pop_episodes()
    assert returns == [11.0, 11.0] and lengths == [6, 6]  # raw, unclipped, the whole game
    assert collector.reward_per_step == pytest.approx((11.0 + 3.0) / 7)


def test_without_clipping_the_rewards_are_raw() -> None:
    envs = _vec()
    policy, encoder = make_policy(envs.single_observation_space, envs.single_action_space, (8,), "tanh")
    collector = RolloutCollector(envs, policy, 3, encoder=encoder)
    collector.reset(seed=0)
    assert collector.collect().rewards[:, 0].tolist() == [3.0, 3.0, -0.5]


def test_the_atari_keys_are_checked() -> None:
    with pytest.raises(InputError, match=r"frame_stack must be an int in \[1, 64\], got 0"):
        TrainConfig(frame_stack=0)
    with pytest.raises(InputError, match=r"noop_max must be an int in \[0, 100,000\], got -1"):
        TrainConfig(noop_max=-1)
    with pytest.raises(InputError, match=r"screen_size must be an int in \[1, 1,024\]"):
        TrainConfig(screen_size=10**6)
    with pytest.raises(InputError, match="max_episode_frames"):
        TrainConfig(atari_preprocessing=True, time_limit=1000)
    with pytest.raises(InputError, match="ALE/... environments, not 'CartPole-v1'"):
        make_vec_env("CartPole-v1", 1, atari=AtariOptions())


@needs_ale
@pytest.mark.parametrize("vectorization", ["vector", pytest.param("sync", marks=needs_cv2)])
def test_preprocessed_observations(vectorization: str) -> None:
    envs = make_vec_env("ALE/Breakout-v5", 2, 0, vectorization=vectorization, atari=AtariOptions())
    try:
        assert isinstance(envs, LifeLossTermination)
        assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        assert envs.single_observation_space.shape == (4, 84, 84)
        assert envs.single_observation_space.dtype == np.uint8
        obs, info = envs.reset(seed=1)
        assert obs.shape == (2, 4, 84, 84) and info["lives"].tolist() == [5, 5]
        obs, *_ = envs.step(np.ones(2, np.int64))
        assert obs.shape == (2, 4, 84, 84)
    finally:
        envs.close()
    small = AtariOptions(screen_size=42, frame_stack=2, terminal_on_life_loss=False)
    envs = make_vec_env("ALE/Breakout-v5", 1, 0, vectorization=vectorization, atari=small)
    try:
        assert not isinstance(envs, LifeLossTermination)
        assert envs.single_observation_space.shape == (2, 42, 42)
    finally:
        envs.close()


@needs_ale
def test_a_plain_ale_id_keeps_its_frames() -> None:
    envs = make_vec_env("ALE/Pong-v5", 1, 0)  # no preprocessing: ale-py's vector env is not used
    try:
        assert envs.single_observation_space.shape == (210, 160, 3)
    finally:
        envs.close()
    with pytest.raises(InputError, match="set atari_preprocessing"):
        make_vec_env("ALE/Pong-v5", 1, 0, vectorization="vector")


# --- presets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["ALE/Pong-v5", "ALE/Breakout-v5", "ale_py:ALE/SpaceInvaders-v5"])
def test_the_atari_presets_apply_to_every_v5_game(env: str) -> None:
    ppo, a2c = get_preset("ppo", env), get_preset("a2c", env)
    assert (ppo["num_envs"], ppo["num_steps"], ppo["num_epochs"], ppo["minibatch_size"]) == (8, 128, 4, 256)
    assert (ppo["learning_rate"], ppo["anneal_lr"], ppo["clip_eps"], ppo["ent_coef"], ppo["vf_coef"]) == (
        2.5e-4, True, 0.1, 0.01, 0.5)
    assert (a2c["num_envs"], a2c["num_steps"], a2c["optimizer"], a2c["learning_rate"], a2c["optim_eps"]) == (
        16, 5, "rmsprop", 7e-4, 1e-5)
    assert (a2c["ent_coef"], a2c["vf_coef"]) == (0.01, 0.25)
    for preset in (ppo, a2c):
        assert preset["atari_preprocessing"] and preset["clip_reward"] and "hidden_sizes" not in preset
    spec = resolve_run("ppo", env)
    assert spec.train.atari_preprocessing and spec.train.frame_stack == 4 and spec.train.clip_reward


def test_the_atari_presets_are_for_v5_ids_only() -> None:
    assert get_preset("ppo", "ALE/Pong-v4") == {} and get_preset("ppo", "PongNoFrameskip-v4") == {}
    assert get_preset("trpo", "ALE/Pong-v5") == {}
    assert get_preset("ppo", "CartPole-v1") == PRESETS["ppo"]["CartPole-v1"]


# --- a smoke run --------------------------------------------------------------------------------


@pytest.mark.slow
@needs_ale
def test_train_pong_through_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--env", "ALE/Pong-v5", "--steps", "256", "--out", str(out), *QUICK,
            "--set", "num_envs=2", "--set", "num_steps=64", "--set", "minibatch_size=64",
            "--set", "eval_episodes=1", "--set", "max_episode_frames=2000"]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["atari_preprocessing"] and config["train"]["clip_reward"]
    assert config["config"]["clip_eps"] == 0.1  # the preset's
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # a header and two updates of 2 x 64 steps


@needs_ale
@pytest.mark.parametrize("vectorization", ["vector", pytest.param("sync", marks=needs_cv2)])
def test_fire_reset_serves_the_ball_in_breakout(vectorization: str) -> None:
    # Breakout's ball appears only after FIRE: with fire_reset, always NOOP loses a life within
    # a few dozen steps; without it, the game stalls (five lives after 200 steps).
    lost = {}
    for fire in (False, True):
        options = AtariOptions(fire_reset=fire, terminal_on_life_loss=False)
        envs = make_vec_env("ALE/Breakout-v5", 1, 0, vectorization=vectorization, atari=options)
        try:
            envs.reset(seed=3)
            for _ in range(200):
                *_, info = envs.step(np.zeros(1, np.int64))
            lost[fire] = 5 - int(info["lives"][0])
        finally:
            envs.close()
    assert lost[False] == 0 and lost[True] >= 1


def test_the_atari_presets_press_fire_and_evaluate_stochastically() -> None:
    spec = resolve_run("ppo", "ALE/Breakout-v5")
    assert spec.train.fire_reset and not spec.train.eval_deterministic
    assert AtariOptions.from_train(spec.train).fire_reset
    assert not resolve_run("ppo", "CartPole-v1").train.fire_reset
