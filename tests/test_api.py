"""The Python API: pg.PPO / A2C / REINFORCE / NPG / TRPO / IMPALA with learn, predict, save and load; a run
started from Python is a complete run directory for the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import policygrad as pg
from policygrad.algorithms import CONFIGS
from policygrad.cli import main

SMALL = {"num_envs": 4, "num_steps": 32, "minibatch_size": 64, "num_epochs": 2, "tensorboard": False}


def test_importing_the_package_imports_no_torch_and_no_gymnasium() -> None:
    code = "import sys, policygrad as pg; print(pg.PPO, sorted(m for m in ('torch', 'gymnasium') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]")


def test_every_algorithm_has_a_model_class_with_its_config_class() -> None:
    for cls, algo in ((pg.PPO, "ppo"), (pg.A2C, "a2c"), (pg.REINFORCE, "reinforce"), (pg.NPG, "npg"), (pg.TRPO, "trpo"),
                      (pg.IMPALA, "impala")):
        assert cls.algo == algo and cls.config_class is CONFIGS[algo]
    model = pg.PPO("CartPole-v1", seed=3, learning_rate=1e-3)
    assert model.config.learning_rate == 1e-3 and model.spec.seed == 3 and model.config.num_envs == 8  # the preset's
    assert isinstance(model.config, pg.PPO.config_class)


def test_an_unknown_keyword_names_the_closest_keys() -> None:
    with pytest.raises(pg.InputError, match=r"unknown ppo config key 'learning_rte'; did you mean 'learning_rate'\?"):
        pg.PPO("CartPole-v1", learning_rte=1e-3)
    with pytest.raises(pg.InputError, match="gamma must lie in"):
        pg.PPO("CartPole-v1", gamma=1.5)
    with pytest.raises(pg.InputError, match="a vector environment was given; pass one environment"):
        pg.PPO(gym.make_vec("CartPole-v1", 2))
    with pytest.raises(pg.InputError, match="env must be a Gymnasium id, 'module:attr', a gymnasium.Env"):
        pg.PPO(42)


def test_learn_writes_a_run_directory_the_command_line_reads(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    seen: list[int] = []
    model = pg.PPO("CartPole-v1", seed=0, **SMALL).learn(512, run_dir=run_dir, progress_bar=False,
                                                          callback=lambda row: seen.append(row["step"]))
    assert model.run_dir == run_dir and model.num_timesteps == 512 and seen == [128, 256, 384, 512]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == "ppo" and config["backend"]["name"] == "numpy"
    assert main(["eval", str(run_dir), "--episodes", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2
    assert main(["train", "--resume", str(run_dir), "--steps", "640", "--quiet"]) == 0
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 and rows[-1].startswith("640,")


def test_a_callback_that_returns_false_stops_training(tmp_path: Path) -> None:
    model = pg.A2C("CartPole-v1", seed=0, tensorboard=False)
    model.learn(100_000, run_dir=tmp_path / "run", progress_bar=False, callback=lambda row: row["step"] < 400)
    assert model.num_timesteps == 400  # 8 envs x 5 steps per update: stopped after the update reaching 400


def test_predict_single_and_batch_applies_the_normaliser_and_clips(tmp_path: Path) -> None:
    model = pg.PPO("Pendulum-v1", seed=0, normalize_obs=True, **SMALL).learn(256, run_dir=tmp_path / "p",
                                                                            progress_bar=False)
    rng = np.random.default_rng(0)
    batch = rng.uniform(-1, 1, (16, 3)).astype(np.float32)
    actions, state = model.predict(batch)
    assert state is None and actions.shape == (16, 1) and actions.dtype == np.float32
    one, _ = model.predict(batch[3])
    assert one.shape == (1,) and np.allclose(one, actions[3])
    # the policy's mean on the normalised observation, clipped to the action space's bounds
    session = model._session
    normalised = session.obs_normalizer.normalize(batch)
    with torch.no_grad():
        mean = model.policy.net.distribution(torch.from_numpy(np.asarray(normalised, dtype=np.float32))).mode().numpy()
    np.testing.assert_allclose(actions, np.clip(mean, -2.0, 2.0), rtol=1e-5, atol=1e-5)
    # the policy module does all of it from raw observations: encoding, normaliser, mode, clipping
    np.testing.assert_allclose(model.policy(batch).numpy(), actions, rtol=1e-5, atol=1e-5)
    state = model.policy.state_dict()
    np.testing.assert_array_equal(state["obs_mean"].numpy(), session.obs_normalizer.rms.mean)
    np.testing.assert_array_equal(state["obs_var"].numpy(), session.obs_normalizer.rms.var)
    sampled, _ = model.predict(batch * 100, deterministic=False)
    assert np.all(sampled >= -2.0) and np.all(sampled <= 2.0)
    with pytest.raises(pg.InputError, match=r"observation has shape \(4,\), expected \(3,\)"):
        model.predict(np.zeros(4, dtype=np.float32))


def test_save_and_load_restore_the_model_and_learn_continues_the_run(tmp_path: Path) -> None:
    model = pg.PPO("CartPole-v1", seed=1, **SMALL).learn(256, run_dir=tmp_path / "run", progress_bar=False)
    obs = np.random.default_rng(1).normal(size=(32, 4)).astype(np.float32)
    before, _ = model.predict(obs)
    saved = model.save(tmp_path / "copy")
    assert (saved / "config.json").is_file() and (saved / "checkpoints" / "last" / "meta.json").is_file()
    for path in (tmp_path / "copy", tmp_path / "run", tmp_path / "run" / "checkpoints" / "last"):
        loaded = pg.load(path)
        assert type(loaded) is pg.PPO and loaded.num_timesteps == 256
        after, _ = loaded.predict(obs)
        np.testing.assert_array_equal(after, before)
    loaded = pg.load(tmp_path / "run")
    loaded.learn(128, progress_bar=False)
    assert loaded.num_timesteps == 384
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["128", "256", "384"]
    with pytest.raises(pg.InputError, match="trains in"):
        loaded.learn(128, run_dir=tmp_path / "elsewhere", progress_bar=False)


def test_load_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(pg.InputError, match="does not exist"):
        pg.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(pg.InputError, match="not a policygrad run directory"):
        pg.load(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"algo": "ppo", "env": "os:system"}')
    with pytest.raises(pg.InputError):
        pg.load(tmp_path / "bad")
    with pytest.raises(pg.InputError, match="not empty"):
        pg.PPO("CartPole-v1", **SMALL).save(tmp_path / "bad")


@pytest.mark.parametrize("hook", ["on_rollout_end", "on_update", "on_eval"])
def test_each_callback_hook_can_stop_training(tmp_path: Path, hook: str) -> None:
    calls: list[tuple[str, int]] = []

    class Stop(pg.Callback):
        def on_rollout_end(self, step):
            calls.append(("on_rollout_end", step))
            return False if hook == "on_rollout_end" and step >= 256 else None

        def on_update(self, row):
            calls.append(("on_update", row["step"]))
            return False if hook == "on_update" and row["step"] >= 256 else None

        def on_eval(self, step, returns):
            calls.append(("on_eval", step))
            assert len(returns) == 2 and all(np.isfinite(returns))
            return False if hook == "on_eval" else None

    model = pg.PPO("CartPole-v1", seed=0, target_return=10_000.0, eval_every=256, eval_episodes=2, **SMALL)
    model.learn(4096, run_dir=tmp_path / "run", callback=Stop(), progress_bar=False)
    # 128 steps per rollout; the evaluation comes at the first update at or after 256 steps
    expected = {"on_rollout_end": 256, "on_update": 256, "on_eval": 256}[hook]
    assert calls[-1] == (hook, expected) and model.num_timesteps == (128 if hook == "on_rollout_end" else 256)
    assert (tmp_path / "run" / "checkpoints" / "last" / "meta.json").is_file()


def test_a_callback_must_be_a_function_or_a_callback_object(tmp_path: Path) -> None:
    with pytest.raises(pg.InputError, match="callback must be a function or a policygrad.Callback"):
        pg.PPO("CartPole-v1", **SMALL).learn(128, run_dir=tmp_path / "run", callback=3)
