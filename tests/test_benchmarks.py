"""The benchmark runners keep working (tiny step counts; nothing about timing is asserted)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts' shared modules (load, report)

import load  # noqa: E402


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: an existence check, nothing is sent
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_speed_runner_runs_policygrad_and_the_floor_and_writes_its_table(tmp_path):
    out = tmp_path / "speed.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--cases", "ppo_8x128", "a2c_sb3_default",
         "--seeds", "1", "--scale", "0.01", "--libs", "policygrad", "floor", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ppo_8x128") or line.startswith("| a2c_sb3_default")]
    assert len(rows) == 2
    assert "policygrad / floor" in table


@pytest.mark.slow
def test_profile_runner_splits_a_short_run_into_stages(tmp_path):
    out = tmp_path / "profile.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "profile_train.py"), "--out", str(out), "--", "--steps", "2048"],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    for stage in ("imports", "environment steps", "update: backward", "learning-curve plot"):
        assert stage in text


@pytest.mark.slow
def test_iteration_costs_runner_times_each_part_of_a_short_run(tmp_path):
    out = tmp_path / "costs.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "iteration_costs.py"), "a2c_sb3_default", "--steps", "400",
         "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "10 iterations" in text and "environment floor" in text
    rows = {line.split(" | ")[0].strip("|· "): line.split(" | ")[-1].strip(" |") for line in text.splitlines()[4:]}
    assert rows["rollout collection"] == "10" and rows["environment steps"] == "50" and rows["forward (log π, H, V)"] == "10"


def test_competitors_run_during_the_block_and_are_ended_by_their_own_pids_even_on_an_error():
    with pytest.raises(RuntimeError):
        with load.competitors(2, settle=0.05) as procs:
            assert len(procs) == 2 and all(p.poll() is None for p in procs)
            load.check_alive(procs)
            raise RuntimeError("a failing benchmark")
    assert all(p.returncode is not None for p in procs)  # terminated and reaped
    with load.competitors(0) as none:
        assert none == []
    assert load.describe(0) == "idle" and load.describe(1) == "1 CPU-bound competitor process"


def test_speed_runner_refuses_to_write_a_loaded_table_over_the_idle_one():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--competitors", "1",
         "--out", str(ROOT / "benchmarks" / "results" / "speed.md")],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert proc.returncode == 2 and "speed_loaded.md" in proc.stderr


@pytest.mark.slow
def test_speed_runner_under_load_says_so_in_its_table_and_records(tmp_path):
    out, record = tmp_path / "speed_loaded.md", tmp_path / "speed_loaded.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--cases", "a2c_sb3_default", "--seeds", "1",
         "--scale", "0.01", "--libs", "policygrad", "floor", "--competitors", "1", "--out", str(out),
         "--json", str(record)],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = out.read_text()
    assert table.startswith("**Loaded machine**: with 1 CPU-bound competitor process")
    rows = [line for line in table.splitlines() if line.startswith("| a2c_sb3_default")]
    assert len(rows) == 1 and rows[0].endswith("| 1 CPU-bound competitor process |")
    data = json.loads(record.read_text())
    assert data["competitors"] == 1
    assert all(run["competitors"] == 1 for runs in data["cases"]["a2c_sb3_default"].values() for run in runs)
    pids = [int(pid) for pid in re.search(r"PIDs \[([0-9, ]+)\]", proc.stderr).group(1).split(",")]
    assert len(pids) == 1 and all(_gone(pid) for pid in pids)


@pytest.mark.slow
def test_train_under_load_times_idle_and_loaded_processes_of_a_given_source(tmp_path):
    record = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_under_load.py"), "--src", str(ROOT / "src"), "--runs", "1",
         "--steps", "1024", "--json", str(record)],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Loaded / idle wall:" in proc.stdout and "target ≤ 1.5×" in proc.stdout
    data = json.loads(record.read_text())
    assert data["src"] == str((ROOT / "src").resolve()) and data["competitors"] == 1
    assert len(data["runs"]["idle"]) == len(data["runs"]["loaded"]) == 1
    assert data["runs"]["loaded"][0]["competitors"] == 1 and data["ratio_wall"] > 0


@pytest.mark.slow
def test_faults_runner_runs_one_trial_of_each_kind_and_counts_them(tmp_path):
    out, record, work = tmp_path / "faults.md", tmp_path / "faults.json", tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "faults.py"), "--trials-scale", "0.01", "--out", str(out),
         "--json", str(record), "--workdir", str(work)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = out.read_text()
    assert "faults.py --trials-scale 0.01" in table and "commit" in table
    trials = json.loads(record.read_text())["trials"]
    kinds = ["kill-random", "kill-write", "two-starts", "two-resumes", "sigint", "sigterm", "hostile", "hang"]
    assert list(trials) == kinds
    for kind in kinds:
        counted = [t for t in trials[kind] if t.get("group") != "control"]
        assert len(counted) == 1, kind
        assert re.search(rf"^\| {kind} \| {len(trials[kind])} \| \d+ \|", table, re.MULTILINE), kind
        assert all("harness error" not in t["reason"] for t in trials[kind]), trials[kind]
    assert trials["kill-write"][0]["point"] == "fsync:1" and trials["kill-write"][0]["killed_at"].startswith("fsync 1 ")
    assert trials["hang"][0]["exit_after_hang"] < 7
    # every process the runner started has ended
    assert not [p for p in os.listdir("/proc") if p.isdigit() and str(work) in _cmdline(int(p))]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_trl_grpo_runner_times_one_short_run_of_each_library(tmp_path):
    for name in ("trl", "datasets", "transformers", "tokenizers"):
        pytest.importorskip(name)
    out = tmp_path / "trl_grpo.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "trl_grpo.py"), "--runs", "1", "--warmup", "1", "--steps", "1",
         "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = out.read_text()
    assert "| TRL GRPOTrainer |" in table and "| policygrad sequence_update |" in table
    assert "| the model's calls alone (floor) |" in table
    record = json.loads(out.with_suffix(".json").read_text())
    assert [r["lib"] for r in record["runs"]] == ["trl", "policygrad", "floor"]
    assert all(r["completion_length"] == 16 and r["cpu_s_per_step"] > 0 for r in record["runs"])
    assert record["trl_over_floor_cpu"] > 0


@pytest.mark.slow
def test_workers_runner_kills_a_worker_and_counts_what_was_accepted(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'policygrad[ray]')")
    out, records = tmp_path / "faults.md", tmp_path / "faults.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "workers.py"), "faults", "--trials", "1", "--updates", "10", "--no-node-loss",
         "--out", str(out), "--json", str(records)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = json.loads(records.read_text())
    assert record["completed"] and record["accepted_steps"] == record["requested_steps"] == 10 * 512
    assert record["duplicates"] == record["beyond_lag"] == 0 and record["replaced"] == 1
    assert "1 of 1 runs completed with exactly the requested steps" in out.read_text()


class _Reach(gym.Env):
    """A small Box task for sb3-contrib, with 3 action dimensions: reward −‖a − W s‖², 50 steps."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (5,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    weights = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32) / 3

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._s = self.np_random.uniform(-1, 1, 5).astype(np.float32)
        return self._s, {}

    def step(self, action):
        reward = -float(np.square(action - self.weights @ self._s).sum())
        self._t += 1
        self._s = self.np_random.uniform(-1, 1, 5).astype(np.float32)
        return self._s, reward, False, self._t >= 50, {}


def test_trpo_step_equals_sb3_contribs_on_identical_weights_and_data():
    """benchmarks/sb3_steps.py: policygrad's TRPO step with (D·δ, D·λ) is sb3-contrib's with (δ, λ),
    the log σ part included (a π_old sharing the log σ parameter made it 4× too long)."""
    pytest.importorskip("sb3_contrib", reason="sb3-contrib is not installed (pip install 'policygrad[bench]')")
    from sb3_steps import compare_trpo
    from stable_baselines3.common.env_util import make_vec_env

    records = compare_trpo(make_vec_env(_Reach, n_envs=2, seed=0), updates=2, n_steps=128)
    assert len(records) == 2
    for record in records:
        assert record["actor_cosine"] > 0.99999, record
        assert record["actor_norm_policygrad"] == pytest.approx(record["actor_norm_sb3"], rel=1e-3)
        assert record["log_std_step_ratio"] == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a2c_update_with_gsde_equals_sb3s_with_vf_coef_doubled(backend):
    """benchmarks/sb3_steps.py: SB3's critic loss has no ½, so its vf_coef c is 2c here; then the
    first A2C update (gSDE, RMSprop, clipped gradient norm) is SB3's, actor and critic."""
    pytest.importorskip("stable_baselines3", reason="SB3 is not installed (pip install 'policygrad[bench]')")
    from sb3_steps import compare_a2c
    from stable_baselines3.common.env_util import make_vec_env

    record = compare_a2c(make_vec_env(_Reach, n_envs=4, seed=0), backend=backend)
    for part in ("actor", "critic"):
        assert record[f"{part}_cosine"] > 0.99999, record
        assert record[f"{part}_norm_policygrad"] == pytest.approx(record[f"{part}_norm_sb3"], rel=1e-4)
