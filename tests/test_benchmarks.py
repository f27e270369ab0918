"""The benchmark runners keep working (tiny step counts; nothing about timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each runs a benchmark script in a subprocess

ROOT = Path(__file__).resolve().parents[1]


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
    assert rows["rollout collection"] == "10" and rows["environment steps"] == "50" and rows["forward"] == "10"
