"""The training loop: learning CartPole, every algorithm on every kind of space, determinism,
resuming, hyperparameter precedence and evaluation."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from policygrad.algorithms import ALGORITHMS, CONFIGS, get_preset
from policygrad.checkpoint import latest_checkpoint, load_checkpoint
from policygrad.cli import main
from policygrad.errors import InputError
from policygrad.runconfig import parse_set, resolve_run
from policygrad.training import METRIC_COLUMNS, WALL_CLOCK_COLUMNS, build_session, evaluate_run, train


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _without_wall_clock(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK_COLUMNS} for row in rows]


def _policy_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(latest_checkpoint(run_dir))
    return {k: v for k, v in tensors.items() if k.startswith("policy.")}


def test_ppo_learns_cartpole(tmp_path: Path) -> None:
    run = tmp_path / "ppo"
    code = main(["train", "--out", str(run), "--target-return", "475", "--quiet", "--set", "tensorboard=false"])
    assert code == 0
    # The saved policy (with its normaliser) reproduces the evaluation that stopped the run:
    # 10 deterministic episodes with the run's evaluation seed.
    returns = evaluate_run(run, 10, deterministic=True)
    assert len(returns) == 10 and np.mean(returns) >= 475
    config = json.loads((run / "config.json").read_text())
    assert config["algo"] == "ppo" and config["env"] == "CartPole-v1" and config["seed"] == 0
    assert set(config["versions"]) == {"policygrad", "torch", "gymnasium", "numpy", "python"}
    assert config["config"]["gae_lambda"] == get_preset("ppo", "CartPole-v1")["gae_lambda"]
    assert list(_rows(run)[0]) == list(METRIC_COLUMNS)
    assert (run / "learning_curve.png").is_file()
    assert (run / "checkpoints" / "last" / "meta.json").is_file()


class MultiAction(gym.Env):
    """MultiDiscrete actions, a 2×2 Box observation, reward for matching the observation's sign."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (2, 2), np.float32)
        self.action_space = spaces.MultiDiscrete([3, 2])
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, (2, 2)).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.uniform(-1, 1, (2, 2)).astype(np.float32)
        return obs, float(action[0] == 1) + float(action[1]), self.t >= 6, False, {}


class MaskedChain(gym.Env):
    """Discrete(4) observations and actions with an action mask in info; truncated after 7 steps."""

    def __init__(self) -> None:
        self.observation_space = spaces.Discrete(4)
        self.action_space = spaces.Discrete(3)
        self.t = 0

    def _info(self) -> dict:
        mask = np.ones(3, dtype=np.int8)
        mask[self.t % 3] = 0
        return {"action_mask": mask}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return 0, self._info()

    def step(self, action):
        assert action != self.t % 3, "a masked action was taken"
        self.t += 1
        return self.t % 4, float(action), False, self.t >= 7, self._info()


ENVS = {
    "discrete-vector": ("CartPole-v1", {}),
    "box-action": ("Pendulum-v1", {"time_limit": 5, "normalize_obs": True, "normalize_reward": True}),
    "multidiscrete": (f"{__name__}:MultiAction", {}),
    "masked-discrete-obs": (f"{__name__}:MaskedChain", {"vectorization": "async"}),
}


@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("env_case", list(ENVS))
def test_every_algorithm_on_every_space(algo: str, env_case: str, tmp_path: Path) -> None:
    env, extra = ENVS[env_case]
    keys = {f for f in CONFIGS[algo].__dataclass_fields__}
    overrides = {"num_envs": 2, "num_steps": 8, "total_steps": 32, "tensorboard": False, "hidden_sizes": [8]}
    overrides.update({k: v for k, v in {"minibatch_size": 8, "vf_iters": 2, "cg_iters": 3}.items() if k in keys})
    overrides.update(extra)
    if env_case == "masked-discrete-obs" and algo != "ppo":
        overrides.pop("vectorization")  # one async run is enough
    spec = resolve_run(algo, env, overrides=overrides)
    session = build_session(spec)
    try:
        summary = train(session, tmp_path, quiet=True)
    finally:
        session.close()
    rows = _rows(tmp_path)
    assert [int(r["step"]) for r in rows] == [16, 32]
    assert summary["step"] == 32 and len(summary["eval_returns"]) == 10
    assert all(np.isfinite(float(rows[-1][k])) for k in ("policy_loss", "entropy", "grad_norm"))
    tensors, meta = load_checkpoint(tmp_path / "checkpoints" / "last")
    assert meta["step"] == 32 and meta["algo"] == algo
    assert any(k.startswith("policy.") for k in tensors) and any(k.startswith("rng.") for k in tensors)
    if extra.get("normalize_obs"):
        assert "obs_norm.mean" in tensors and "reward_norm.var" in tensors


def _short_run(out: Path, steps: int, *extra: str) -> None:
    args = ["train", "--out", str(out), "--steps", str(steps), "--seed", "7", "--quiet",
            "--set", "normalize_obs=true", "--set", "normalize_reward=true", "--set", "tensorboard=false",
            "--set", "num_steps=16", "--set", "minibatch_size=64", "--set", "num_epochs=4", *extra]
    assert main(args) == 0


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_same_seed_same_metrics(tmp_path: Path, backend: str) -> None:
    _short_run(tmp_path / "a", 1024, "--set", f"backend={backend}")
    _short_run(tmp_path / "b", 1024, "--set", f"backend={backend}")
    assert json.loads((tmp_path / "a" / "config.json").read_text())["backend"]["name"] == backend
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert len(a) == 8
    assert _without_wall_clock(a) == _without_wall_clock(b)
    assert a[0]["wall_time"] and a[0]["steps_per_second"]
    ta, tb = _policy_tensors(tmp_path / "a"), _policy_tensors(tmp_path / "b")
    assert ta and ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    _short_run(tmp_path / "c", 1024, "--seed", "8", "--set", f"backend={backend}")
    assert _without_wall_clock(_rows(tmp_path / "c")) != _without_wall_clock(a)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_resuming_one_checkpoint_twice_gives_the_same_run(tmp_path: Path, backend: str) -> None:
    first = tmp_path / "first"
    _short_run(first, 512, "--set", f"backend={backend}")
    before = _rows(first)
    copies = [tmp_path / "x", tmp_path / "y"]
    for copy in copies:
        shutil.copytree(first, copy)
        assert main(["train", "--resume", str(copy), "--steps", "1024", "--quiet"]) == 0
    x, y = (_rows(c) for c in copies)
    assert [int(r["step"]) for r in x] == [128 * i for i in range(1, 9)]
    assert x[: len(before)] == before  # the rows up to the checkpoint are kept as they were
    assert _without_wall_clock(x) == _without_wall_clock(y)
    tx, ty = (_policy_tensors(c) for c in copies)
    assert tx and tx.keys() == ty.keys()
    assert all(torch.equal(tx[k], ty[k]) for k in tx)
    config = json.loads((copies[0] / "config.json").read_text())
    assert config["train"]["total_steps"] == 1024 and config["backend"]["name"] == backend
    # Resuming a finished run without more steps does nothing.
    assert main(["train", "--resume", str(copies[0]), "--quiet"]) == 0
    assert len(_rows(copies[0])) == 8


def test_precedence_preset_file_set_flags(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('learning_rate = 0.01\nnum_steps = 64\nseed = 3\nhidden_sizes = [32, 16]\nactivation = "relu"\n')
    spec = resolve_run(
        "ppo", "CartPole-v1", config_file=config,
        overrides=parse_set(["num_steps=16", "minibatch_size=64", "target_kl=none"]),
        flags={"seed": 5, "total_steps": 256},
    )
    cfg = spec.config
    preset = get_preset("ppo", "CartPole-v1")
    assert cfg.num_epochs == preset["num_epochs"] and cfg.gae_lambda == preset["gae_lambda"]  # preset
    assert cfg.learning_rate == 0.01 and cfg.hidden_sizes == (32, 16) and cfg.activation == "relu"  # file
    assert cfg.num_steps == 16 and cfg.minibatch_size == 64 and cfg.target_kl is None  # --set
    assert spec.seed == cfg.seed == 5 and spec.train.total_steps == 256  # flags
    assert resolve_run(config_file=_toml(tmp_path, 'algo = "a2c"\nenv = "Acrobot-v1"\n')).algo == "a2c"


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.toml"
    path.write_text(text)
    return path


def test_parse_set_reads_toml_literals() -> None:
    assert parse_set(["hidden_sizes=[64, 64]", "gamma=0.9", "anneal_lr=false", "activation=relu", "x = 'a=b'"]) == {
        "hidden_sizes": [64, 64], "gamma": 0.9, "anneal_lr": False, "activation": "relu", "x": "a=b"}
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_set(["gamma"])


def test_eval_prints_a_table_or_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--steps", "512", "--quiet", "--set", "tensorboard=false"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "3", "--json", "--seed", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"mean_return", "std_return", "episodes"} and result["episodes"] == 3
    assert main(["eval", str(run), "--episodes", "2", "--deterministic"]) == 0
    out = capsys.readouterr().out
    assert "mean_return" in out and "deterministic" in out
    # The same seed gives the same stochastic evaluation.
    assert evaluate_run(run, 4, seed=11) == evaluate_run(run, 4, seed=11)


def test_continuing_task_logs_reward_per_step(tmp_path: Path) -> None:
    # No termination and no time limit: no episode ever ends, the curve is the reward per step,
    # and evaluation runs over windows instead of forever.
    run = tmp_path / "river"
    argv = ["train", "--env", "policygrad/RiverSwim-v0", "--steps", "256", "--out", str(run), *["--quiet"],
            "--set", "num_envs=2", "--set", "num_steps=64", "--set", "minibatch_size=64", "--set", "eval_episodes=2",
            "--set", "eval_max_episode_steps=500"]
    assert main(argv) == 0
    rows = _rows(run)
    assert [int(r["step"]) for r in rows] == [128, 256]
    assert all(r["episode_return_mean"] == "" and float(r["reward_per_step"]) >= 0 for r in rows)
    assert (run / "learning_curve.png").is_file()
