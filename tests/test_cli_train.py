"""``policygrad train`` / ``eval`` on bad input and failing training: one line, the right exit
code, no traceback, no half-written run directory, the last checkpoint intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from policygrad.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from policygrad.cli import main

QUICK = ["--quiet", "--set", "tensorboard=false"]


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, pattern: str) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("policygrad: error: ")
    assert pattern in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--env", "NoSuchEnv-v0"], "unknown environment 'NoSuchEnv-v0'"),
        (["--env", "no_such_module_xyz:MyEnv"], "cannot import module 'no_such_module_xyz'"),
        (["--set", "gamma=1.5"], "gamma must lie in (0, 1]"),
        (["--set", "gamma=0"], "gamma must lie in (0, 1]"),
        (["--steps", "-100"], "--steps must be a positive"),
        (["--set", "minibatch_size=4096"], "minibatch_size 4096 exceeds the batch size"),
        (["--set", "no_such_key=1"], "unknown ppo hyperparameter 'no_such_key'"),
        (["--set", "hidden_sizes"], "--set expects KEY=VALUE"),
        (["--set", "learning_rate=fast"], "learning_rate must be a number"),
        (["--algo", "trpo", "--set", "clip_eps=0.1"], "unknown trpo hyperparameter 'clip_eps'"),
        (["--device", "cuda:9"], "device"),
        (["--set", "vectorization=threads"], "vectorization must be one of"),
        (["--set", "blas_threads=0"], "blas_threads must be > 0, got 0"),
        (["--set", "torch_threads=many"], "torch_threads must be an int"),
    ],
)
def test_bad_input_exits_2_without_a_run_directory(
    argv: list[str], pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    _fails(capsys, ["train", "--out", str(out), *QUICK, *argv], 2, pattern)
    assert not out.exists()


def test_bad_toml_and_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("gamma = \nlearning_rate = 3e-4\n")
    out = tmp_path / "run"
    _fails(capsys, ["train", "--config", str(bad), "--out", str(out)], 2, "bad TOML in")
    _fails(capsys, ["train", "--config", str(tmp_path / "none.toml"), "--out", str(out)], 2, "does not exist")
    nested = tmp_path / "nested.toml"
    nested.write_text("[ppo]\ngamma = 0.9\n")
    _fails(capsys, ["train", "--config", str(nested), "--out", str(out)], 2, "flat key = value")
    assert not out.exists()


def test_existing_out_directory_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _fails(capsys, ["train", "--out", str(out), *QUICK], 2, "already exists and is not empty")
    assert (out / "notes.txt").read_text() == "mine"


def test_failed_setup_removes_what_it_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The metrics file cannot be created: the run directory and the parents this invocation
    # created are removed again.
    import policygrad.logging

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(policygrad.logging, "MetricsLogger", refuse)
    out = tmp_path / "a" / "b" / "run"
    _fails(capsys, ["train", "--out", str(out), "--steps", "64", *QUICK], 2, "disk full")
    assert not (tmp_path / "a").exists()


def test_missing_and_damaged_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, ["eval", str(tmp_path / "nothing")], 2, "does not exist")
    _fails(capsys, ["train", "--resume", str(tmp_path / "nothing")], 2, "does not exist")
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--steps", "256", *QUICK]) == 0
    _fails(capsys, ["train", "--resume", str(run), "--seed", "3"], 2, "drop --seed")

    last = latest_checkpoint(run)
    tensors_file = next(last.glob("tensors-*.safetensors"))
    blob = tensors_file.read_bytes()
    tensors_file.write_bytes(blob[: len(blob) // 2])
    _fails(capsys, ["eval", str(run)], 2, "truncated")
    _fails(capsys, ["train", "--resume", str(run), "--steps", "512"], 2, "truncated")

    damaged = bytearray(blob)
    damaged[len(blob) // 2] ^= 0xFF
    tensors_file.write_bytes(bytes(damaged))
    _fails(capsys, ["eval", str(run)], 2, "corrupt")

    meta = last / "meta.json"
    meta.write_text(json.dumps({"library": "someone-else", "weights": "w.bin"}))
    _fails(capsys, ["eval", str(run)], 2, "not a policygrad checkpoint")

    save_checkpoint(tmp_path / "other", {"x": torch.zeros(1)}, {"note": 1})  # a checkpoint, not of a run
    for entry in last.iterdir():
        entry.unlink()
    for entry in (tmp_path / "other").iterdir():
        (last / entry.name).write_bytes(entry.read_bytes())
    _fails(capsys, ["eval", str(run)], 2, "not a policygrad training checkpoint")

    (run / "config.json").write_text("{not json")
    _fails(capsys, ["eval", str(run)], 2, "not valid JSON")
    (run / "config.json").unlink()
    _fails(capsys, ["eval", str(run)], 2, "not a policygrad run directory")


class Faulty(gym.Env):
    """Healthy for ``good`` steps per copy, then a NaN observation, an inf reward, a reward so
    large that the returns overflow, or an exception."""

    fault = "obs"

    def __init__(self, good: int = 40) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.good, self.t = good, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        obs, reward = np.full(2, 0.1 * (self.t % 5), np.float32), 1.0
        if self.t > self.good:
            if self.fault == "obs":
                obs[1] = np.nan
            elif self.fault == "reward":
                reward = float("inf")
            elif self.fault == "huge":
                reward = 3e38
            else:
                raise ValueError("the simulator diverged")
        return obs, reward, False, self.t % 10 == 0, {}


class NaNObservation(Faulty):
    fault = "obs"


class InfReward(Faulty):
    fault = "reward"


class HugeReward(Faulty):
    fault = "huge"


class Raises(Faulty):
    fault = "raise"


@pytest.mark.parametrize(
    "env, pattern",
    [
        ("NaNObservation", "non-finite observation at step 82 (environment 0)"),
        ("InfReward", "non-finite reward at step 82 (environment 0)"),
        ("HugeReward", "non-finite loss at update 6"),
        ("Raises", "the environment raised at step 82 (environment 0): ValueError: the simulator diverged"),
    ],
)
def test_training_failures_exit_1_and_keep_the_last_checkpoint(
    env: str, pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 2 envs × 8 steps = 16 per update; every copy fails on its 41st step (environment step 82),
    # after checkpoints at steps 32 and 64.
    out = tmp_path / "run"
    argv = ["train", "--env", f"{__name__}:{env}", "--out", str(out), "--steps", "320", *QUICK,
            "--set", "num_envs=2", "--set", "num_steps=8", "--set", "minibatch_size=16",
            "--set", "checkpoint_every=32"]
    _fails(capsys, argv, 1, pattern)
    tensors, meta = load_checkpoint(latest_checkpoint(out))
    assert meta["step"] == 64
    assert (out / "metrics.csv").is_file() and (out / "config.json").is_file()


@pytest.mark.slow
def test_subprocess_error_has_no_traceback(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "policygrad.cli", "train", "--env", "NoSuchEnv-v0", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("policygrad: error: unknown environment 'NoSuchEnv-v0'")
    assert not out.exists()


@pytest.mark.parametrize("args,words", [
    (["--algo", "npg", "--set", "backend=numpy"], "npg and trpo"),
    (["--set", "activation=elu", "--set", "backend=numpy"], "activation elu"),
    (["--env", "MountainCar-v0", "--set", "backend=numpy", "--device", "meta"], "meta"),
    (["--set", "backend=jax"], "backend must be one of"),
])
def test_a_backend_that_cannot_serve_is_one_line_and_exit_2(tmp_path, capsys, args, words) -> None:
    out = tmp_path / "run"
    assert main(["train", "--steps", "256", "--quiet", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("policygrad: error: ") and "\n" not in err and words in err, err
    assert not out.exists()


def test_auto_falls_back_to_torch_and_says_why(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--steps", "256", "--out", str(out), "--set", "activation=elu",
                 "--set", "num_steps=32", "--set", "minibatch_size=64"]) == 0
    backend = json.loads((out / "config.json").read_text())["backend"]
    assert backend["name"] == "torch" and "activation elu" in backend["reason"]
    assert "backend: torch (auto: the NumPy backend cannot serve activation elu" in capsys.readouterr().err


def test_print_config_prints_the_resolved_run_and_trains_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--algo", "a2c", "--set", "learning_rate=1e-3", "--seed", "4", "--out", str(out),
                 "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["algo"] == "a2c" and config["seed"] == 4 and config["config"]["learning_rate"] == 1e-3
    assert config["config"]["num_steps"] == 5 and config["train"]["total_steps"] == 500_000  # the preset's
    assert not out.exists()
    assert main(["train", "--set", "learning_rte=1", "--print-config"]) == 2  # bad input stays bad input


def test_presets_lists_every_algorithm_and_environment(capsys) -> None:
    from policygrad.algorithms import PRESETS

    assert main(["presets"]) == 0
    table = capsys.readouterr().out
    assert all(env in table for envs in PRESETS.values() for env in envs)
    assert main(["presets", "--algo", "trpo", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"trpo": json.loads(json.dumps(PRESETS["trpo"], default=list))}


def test_presets_lists_the_sequence_presets_that_runs_resolve_to(capsys) -> None:
    from policygrad.sequence_training import SEQUENCE_PRESETS, resolve_sequence_run

    assert main(["presets"]) == 0
    table = capsys.readouterr().out
    sequence_table = table.split("sequence tasks")[1]
    assert all(f"{algo} " in sequence_table for algo in SEQUENCE_PRESETS) and "seq:count" in sequence_table
    for algo in ("grpo", "rloo", "ppo"):
        assert main(["presets", "--algo", algo, "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)[algo]
        for task in ("count", "sort"):
            preset = listed.get(f"seq:{task}", listed["seq:*"])
            resolved = resolve_sequence_run(algo, f"seq:{task}").config
            assert {key: getattr(resolved, key) for key in preset} == preset, (algo, task)
    assert listed.keys() >= {"CartPole-v1", "seq:*"}  # ppo: environments and sequence tasks


def test_env_module_attr_is_found_in_the_current_directory(tmp_path, monkeypatch) -> None:
    import sys as _sys

    from policygrad.envs import resolve_env
    from policygrad.errors import InputError

    (tmp_path / "local_envs_for_test.py").write_text(
        "import gymnasium as gym\n\ndef make():\n    return gym.make('CartPole-v1')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_sys, "path", [p for p in _sys.path if p not in ("", str(tmp_path))])
    factory = resolve_env("local_envs_for_test:make")
    assert callable(factory) and factory().spec.id == "CartPole-v1"
    assert str(tmp_path) in _sys.path
    with pytest.raises(InputError, match="cannot import module 'no_such_module_here'"):
        resolve_env("no_such_module_here:make")


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """``policygrad presets --json | head -1``: a pipe closed before the output is written ends the
    command quietly (exit 141, as a SIGPIPE would), with nothing on stderr."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from policygrad.cli import main; sys.exit(main())",
                             "presets", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before the command prints
    _, err = proc.communicate(timeout=120)
    assert err == b"", err.decode()
    assert proc.returncode == 141
