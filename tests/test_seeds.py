"""``policygrad train --seeds K,K,... [--jobs N]``: one ordinary run directory per seed, bad input
refused before anything is created, a failed seed that leaves the others alone, and ``plot`` of
the result."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from policygrad.cli import main
from policygrad.plots import expand_run_dirs
from policygrad.runconfig import derive_seed
from policygrad.seeds import parse_seeds

TINY = ["--steps", "512", "--set", "num_envs=2", "--set", "num_steps=64", "--set", "minibatch_size=64",
        "--set", "tensorboard=false"]
WALL_CLOCK = {"wall_time", "steps_per_second"}


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], pattern: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("policygrad: error: "), captured.err
    assert pattern in lines[0], lines[0]


def test_parse_seeds() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds(" 7, 3") == [7, 3]


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--seeds", "0,x"], "--seeds expects comma-separated integers such as 0,1,2, got '0,x'"),
        (["--seeds", ""], "--seeds expects comma-separated integers"),
        (["--seeds", "0,1,0"], "--seeds lists seed 0 more than once"),
        (["--seeds", "0,1", "--seed", "3"], "--seed and --seeds are mutually exclusive"),
        (["--seeds", "0,1", "--jobs", "0"], "--jobs must be at least 1, got 0"),
        (["--jobs", "2"], "--jobs runs several --seeds at once; give --seeds too"),
        (["--seeds", "0,1", "--set", "gamma=1.5"], "gamma must lie in (0, 1]"),
        (["--seeds", "0,1", "--env", "NoSuchEnv-v0"], "unknown environment 'NoSuchEnv-v0'"),
        (["--seeds", "0,1", "--algo", "trpo", "--set", "backend=numpy"], "backend=numpy cannot serve this run"),
        (["--seeds", "0,1", "--device", "cuda:9"], "device"),
    ],
)
def test_bad_input_exits_2_and_creates_nothing(argv: list[str], pattern: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "seeds"
    _fails(capsys, ["train", "--out", str(out), "--quiet", *argv], pattern)
    assert not out.exists()


def test_resume_and_seeds_are_exclusive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, ["train", "--resume", str(tmp_path), "--seeds", "0,1"],
           "--resume continues a run with its saved settings; drop --seeds")
    _fails(capsys, ["train", "--resume", str(tmp_path), "--seed", "0"], "drop --seed")


def test_a_seed_directory_that_holds_anything_is_refused_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "seeds"
    (out / "seed_1").mkdir(parents=True)
    (out / "seed_1" / "notes.txt").write_text("mine")
    _fails(capsys, ["train", "--seeds", "0,1", "--out", str(out), "--quiet"], "seed_1 already exists and is not empty")
    assert sorted(p.name for p in out.iterdir()) == ["seed_1"]
    assert (out / "seed_1" / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("")
    _fails(capsys, ["train", "--seeds", "0", "--out", str(tmp_path / "file"), "--quiet"], "is not a directory")


def test_print_config_prints_every_seed_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "seeds"
    assert main(["train", "--seeds", "3,5", "--out", str(out), "--print-config", *TINY]) == 0
    configs = json.loads(capsys.readouterr().out)
    assert [c["seed"] for c in configs] == [3, 5]
    assert all(c["train"]["total_steps"] == 512 for c in configs)
    assert not out.exists()


def test_plot_expands_a_directory_of_seed_runs(tmp_path: Path) -> None:
    for name in ("seed_10", "seed_2", "notes"):
        (tmp_path / "seeds" / name).mkdir(parents=True)
    for name in ("seed_10", "seed_2"):
        (tmp_path / "seeds" / name / "metrics.csv").write_text("step,episode_return_mean\n1,2\n")
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "metrics.csv").write_text("step,episode_return_mean\n1,2\n")
    assert expand_run_dirs([tmp_path / "seeds", tmp_path / "single", tmp_path / "missing"]) == [
        tmp_path / "seeds" / "seed_2", tmp_path / "seeds" / "seed_10", tmp_path / "single", tmp_path / "missing"]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1] / "src"),
                                                     os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "policygrad.cli", *args], check=False, capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_seeds_train_sibling_runs_that_equal_single_runs_and_plot_together(tmp_path: Path) -> None:
    proc = _cli(["train", "--seeds", "0,1", "--jobs", "2", "--out", "seeds", *TINY], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    out = tmp_path / "seeds"
    assert sorted(p.name for p in out.iterdir()) == ["seed_0", "seed_1"]
    for seed in (0, 1):
        run = out / f"seed_{seed}"
        assert json.loads((run / "config.json").read_text())["seed"] == seed
        assert (run / "checkpoints" / "last" / "meta.json").is_file() and (run / "learning_curve.png").is_file()
    table = proc.stdout[proc.stdout.index("seed  run_dir"):].splitlines()
    assert [line.split()[:3] for line in table[2:4]] == [["0", "seeds/seed_0", "512"], ["1", "seeds/seed_1", "512"]]
    assert _metrics(out / "seed_0") != _metrics(out / "seed_1")

    # Seed 1 of --seeds is the run `--seed 1` trains, row for row.
    single = _cli(["train", "--seed", "1", "--out", "single", "--quiet", *TINY], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    assert _metrics(out / "seed_1") == _metrics(tmp_path / "single")

    for args in (["seeds"], ["seeds/seed_0", "seeds/seed_1"]):
        plotted = _cli(["plot", *args, "--out", "curves.png"], tmp_path)
        assert plotted.returncode == 0, plotted.stderr[-3000:]
        assert (tmp_path / "curves.png").stat().st_size > 0


FAILING_ENV = """
import gymnasium as gym
import numpy as np

BAD = {bad}  # the seed of environment 0's first reset in the run of seed 1


class FailsForSeed1(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.bad = seed == BAD
        self.t = 0
        return np.zeros(2, np.float32), {{}}

    def step(self, action):
        self.t += 1
        self.n = getattr(self, "n", 0) + 1  # steps of this copy, over episodes
        if getattr(self, "bad", False) and self.n > 80:  # after the first update (64 steps per copy)
            raise ValueError("the simulator diverged")
        return np.zeros(2, np.float32), 1.0, False, self.t % 50 == 0, {{}}
"""


@pytest.mark.slow
def test_a_failed_seed_leaves_the_others_and_names_itself(tmp_path: Path) -> None:
    (tmp_path / "failing_env.py").write_text(FAILING_ENV.format(bad=derive_seed(1, 0)))
    proc = _cli(["train", "--env", "failing_env:FailsForSeed1", "--seeds", "0,1,2", "--jobs", "2",
                 "--out", "seeds", *TINY], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "policygrad: error:" in line]
    assert errors[0].startswith("[seed 1] policygrad: error: the environment raised at step")
    assert errors[-1] == "policygrad: error: 1 of 3 seeds failed: 1 (exit 1)"
    assert proc.stderr.strip().splitlines()[-1] == errors[-1]
    out = tmp_path / "seeds"
    for seed in (0, 2):
        assert (out / f"seed_{seed}" / "checkpoints" / "last" / "meta.json").is_file()
    assert (out / "seed_1" / "config.json").is_file()  # a training error keeps the run, as for one run
    assert "failed (exit 1)" in proc.stdout
