"""Nothing lost: one writer per run directory, signals that save, no dead ends, full disks, and
environments that raise, exit, die or hang."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from policygrad.cli import main
from policygrad.errors import InputError
from policygrad.rundir import RunLock

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
SMALL = ["--set", "num_envs=2", "--set", "num_steps=64", "--set", "minibatch_size=64", "--set", "tensorboard=false"]

BAD_ENVS = '''
import os, sys, time
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

class _After(CartPoleEnv):
    after = 40
    def step(self, action):
        self.n = getattr(self, "n", 0) + 1
        if self.n > self.after:
            self.fail()
        return super().step(action)

class Exits(_After):
    def fail(self): sys.exit(0)

class Interrupts(_After):
    def fail(self): raise KeyboardInterrupt

class Hangs(_After):
    def fail(self):
        while True:
            time.sleep(0.05)

class Dies(_After):
    def fail(self): os._exit(7)

class Raises(_After):
    def fail(self): raise ValueError("the simulator diverged\\nat a second line")
'''


def _env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "badenvs.py").write_text(BAD_ENVS)
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{tmp_path}", "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1"}


def _start(tmp_path: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "policygrad.cli", *argv], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(run_dir: Path, proc: subprocess.Popen, rows: int = 3, timeout: float = 60.0) -> None:
    """Until metrics.csv has ``rows`` rows (training is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = run_dir / "metrics.csv"
        if metrics.exists() and len(metrics.read_text().splitlines()) > rows:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("training did not start")


def _checkpoint_step(run_dir: Path, name: str = "last") -> int:
    return json.loads((run_dir / "checkpoints" / name / "meta.json").read_text())["meta"]["step"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its new parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# --- one writer ---------------------------------------------------------------------------------


def test_a_run_directory_is_locked_once(tmp_path: Path) -> None:
    lock = RunLock(tmp_path).acquire()
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    with pytest.raises(InputError, match="is being written by another model in this process"):
        RunLock(tmp_path).acquire()
    lock.release()
    RunLock(tmp_path).acquire().release()


@pytest.mark.slow
def test_two_writers_of_one_directory_one_trains_the_other_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _start(tmp_path, "train", "--env", "CartPole-v1", "--steps", "1000000", "--out", str(out), "--quiet", *SMALL)
    _wait_for_step(out, first)
    for argv in (["train", "--env", "CartPole-v1", "--steps", "512", "--seed", "2", "--out", str(out), *SMALL],
                 ["train", "--resume", str(out)]):
        second = _start(tmp_path, *argv, "--quiet")
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2, err
        assert err.strip() == f"policygrad: error: run directory {out} is in use by process {first.pid} " \
                              "(one process writes a run at a time)"
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    assert first.returncode == 143
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    assert len({len(r) for r in rows}) == 1  # one writer: every row has the header's fields


# --- signals --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_a_checkpoint_says_how_to_resume_and_exits(tmp_path: Path, signum: int, code: int) -> None:
    out = tmp_path / "run"
    proc = _start(tmp_path, "train", "--env", "Pendulum-v1", "--steps", "1000000", "--out", str(out), "--quiet",
                  "--set", "tensorboard=false")
    _wait_for_step(out, proc)
    sent = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    assert proc.returncode == code, err
    step = _checkpoint_step(out)
    name = signal.Signals(signum).name
    assert err.strip() == (f"policygrad: stopped by {name} at step {step}; checkpoint saved in {out}/checkpoints/last; "
                           f"continue with: policygrad train --resume {out}")
    assert elapsed < 2.0, elapsed
    last_row = (out / "metrics.csv").read_text().splitlines()[-1]
    assert int(last_row.split(",")[0]) == step  # metrics flushed up to the checkpoint
    resumed = _start(tmp_path, "train", "--resume", str(out), "--steps", str(step + 2048), "--quiet")
    resumed.communicate(timeout=120)
    assert resumed.returncode == 0
    steps = [int(line.split(",")[0]) for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] >= step + 2048


@pytest.mark.slow
def test_a_second_signal_stops_at_once_leaving_the_previous_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # A slow environment: the first signal waits for the step under way, the second does not.
    (tmp_path / "slow.py").write_text(
        "import time\nfrom gymnasium.envs.classic_control.pendulum import PendulumEnv\n"
        "class Slow(PendulumEnv):\n    def step(self, a):\n        time.sleep(2.0)\n        return super().step(a)\n")
    proc = _start(tmp_path, "train", "--env", "slow:Slow", "--steps", "1000000", "--out", str(out), "--quiet",
                  "--set", "tensorboard=false", "--set", "num_envs=1", "--set", "num_steps=64", "--set", "minibatch_size=64")
    deadline = time.monotonic() + 60
    while not (out / "checkpoints" / "last" / "meta.json").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    before = (out / "checkpoints" / "last" / "meta.json").read_text()
    time.sleep(0.5)  # inside the first step
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip() == "policygrad: interrupted by SIGINT"
    assert (out / "checkpoints" / "last" / "meta.json").read_text() == before
    from policygrad.training import load_run_checkpoint

    assert load_run_checkpoint(out / "checkpoints" / "last")[1]["step"] == 0  # complete, verified


# --- no dead ends ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_takes_the_newest_complete_checkpoint_and_a_run_without_one_starts_over(tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "run"
    assert main(["train", "--env", "CartPole-v1", "--steps", "1024", "--out", str(out), "--quiet",
                 "--set", "checkpoint_every=512", *SMALL]) == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    # A kill between the two writes of one save: step_1024 complete, last still at 512.
    checkpoints = out / "checkpoints"
    shutil.copytree(checkpoints / "last", checkpoints / "step_1024")
    shutil.rmtree(checkpoints / "last")
    shutil.copytree(checkpoints / "step_512", checkpoints / "last")
    assert main(["train", "--resume", str(out), "--steps", "1152", "--quiet"]) == 0
    assert _checkpoint_step(out) == 1152
    resumed = (out / "metrics.csv").read_text().splitlines()
    assert resumed[:-1] == rows and resumed[-1].startswith("1152,")  # continued from 1024, nothing redone
    # A run directory with a config and no checkpoint starts from its configuration.
    shutil.rmtree(checkpoints)
    assert main(["train", "--resume", str(out), "--steps", "256", "--quiet"]) == 0
    assert _checkpoint_step(out) == 256
    assert [int(r.split(",")[0]) for r in (out / "metrics.csv").read_text().splitlines()[1:]] == [128, 256]


@pytest.mark.slow
def test_a_new_run_holds_a_checkpoint_from_its_first_moment(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _start(tmp_path, "train", "--env", "CartPole-v1", "--steps", "1000000", "--out", str(out), "--quiet", *SMALL)
    deadline = time.monotonic() + 60
    while not (out / "config.json").exists():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)
    proc.kill()
    proc.communicate()
    assert main(["eval", str(out), "--episodes", "1"]) == 0
    assert main(["train", "--resume", str(out), "--steps", "256", "--quiet"]) == 0


# --- write failures -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_newest_checkpoint(tmp_path: Path, monkeypatch, capsys) -> None:
    import policygrad.checkpoint as checkpoint

    out = tmp_path / "run"
    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] > 8:  # config.json, the step-0 checkpoint and one periodic one get through
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    code = main(["train", "--env", "CartPole-v1", "--steps", "2048", "--out", str(out), "--quiet",
                 "--set", "checkpoint_every=512", *SMALL])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0, err
    assert err.startswith(f"policygrad: error: cannot write {out}/checkpoints/")
    assert re.search(r"No space left on device; the newest intact checkpoint is \S+/checkpoints/last \(step \d+\)$", err)
    leftovers = [p for p in (out / "checkpoints").rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0


# --- environments ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("vectorization", ["sync", "async"])
@pytest.mark.parametrize("env, pattern", [
    ("Exits", r"the environment raised at step 82 \(environment \d\): SystemExit: 0"),
    ("Interrupts", r"the environment raised at step 82 \(environment \d\): KeyboardInterrupt"),
    ("Raises", r"the environment raised at step 82 \(environment \d\): ValueError: the simulator diverged"),
    ("Hangs", r"the environment did not finish step 82 within 2 s \(env_step_timeout\)"),
    ("Dies", r"environment worker \d died at step 82 \(exit code 7\)"),
])
def test_an_environment_that_fails_stops_training_with_one_line(tmp_path: Path, vectorization: str, env: str,
                                                                  pattern: str) -> None:
    if env == "Dies" and vectorization == "sync":
        pytest.skip("os._exit in the training process itself ends it; nothing can report that")
    out = tmp_path / "run"
    start = time.monotonic()
    proc = _start(tmp_path, "train", "--env", f"badenvs:{env}", "--steps", "4096", "--out", str(out), "--quiet",
                  "--set", f"vectorization={vectorization}", "--set", "env_step_timeout=2", *SMALL,
                  "--set", "num_steps=32")  # one update (at step 64) before the failure at step 82
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert re.fullmatch(f"policygrad: error: {pattern}\n", err), err
    assert time.monotonic() - start < 2 + 5 + 10  # the timeout, plus start-up and shutdown
    assert _children(proc.pid) == []
    # what the run had is intact: its checkpoint and the update before the failure
    assert (out / "checkpoints" / "last" / "meta.json").exists()
    assert (out / "metrics.csv").read_text().splitlines()[-1].startswith("64,")


@pytest.mark.slow
def test_an_environment_that_fails_before_the_first_update_leaves_no_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _start(tmp_path, "train", "--env", "badenvs:Raises", "--steps", "4096", "--out", str(out), "--quiet", *SMALL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.count("\n") == 1 and "the simulator diverged" in err
    assert not out.exists()


@pytest.mark.slow
def test_debug_shows_the_environments_traceback(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--debug", "train", "--env", "badenvs:Raises", "--steps", "4096", "--out",
                  str(tmp_path / "run"), "--quiet", "--set", "minibatch_size=64", *SMALL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Traceback" in err and "in fail" in err and err.strip().splitlines()[-1].startswith("policygrad: error:")


@pytest.mark.slow
def test_async_workers_end_with_a_killed_main_process(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _start(tmp_path, "train", "--env", "Pendulum-v1", "--steps", "1000000", "--out", str(out), "--quiet",
                  "--set", "vectorization=async", "--set", "num_envs=3", "--set", "tensorboard=false")
    _wait_for_step(out, proc)
    workers = _children(proc.pid)
    assert len(workers) >= 3
    proc.kill()
    _, err = proc.communicate()
    deadline = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers)
    assert "Traceback" not in err


# --- code is imported only when the user names it -------------------------------------------------


@pytest.mark.slow
def test_a_run_directory_imports_nothing_the_user_did_not_name(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (tmp_path / "mine.py").write_text("import gymnasium as gym\n\ndef make():\n    return gym.make('CartPole-v1')\n")
    proc = _start(tmp_path, "train", "--env", "mine:make", "--steps", "256", "--out", str(out), "--quiet", *SMALL)
    assert proc.communicate(timeout=120)[0] == "" and proc.returncode == 0
    # A received run directory whose config.json names a module: nothing is imported unasked.
    (tmp_path / "mine.py").write_text("raise SystemExit('imported')\n")
    refused = "would import module 'mine', named by the run directory and not by you; pass --env mine:make " \
              "(or --trust-run-code) to run it"
    for argv in (["eval", str(out)], ["train", "--resume", str(out), "--steps", "512"],
                 ["export", str(out), "--out", str(tmp_path / "a.pt"), "--format", "torchscript"]):
        proc = _start(tmp_path, *argv)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and err.count("\n") == 1 and refused in err, err
    proc = _start(tmp_path, "train", "--resume", str(out), "--env", "CartPole-v1")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--env may only name that one" in err
    # Named again, or trusted, it is imported (and here, it says so).
    for argv in (["eval", str(out), "--env", "mine:make"], ["eval", str(out), "--trust-run-code"]):
        proc = _start(tmp_path, *argv)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "imported" in err, err
    proc = _start(tmp_path, "eval", str(out), "--env", "CartPole-v1", "--episodes", "2", "--json")
    out_text, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and json.loads(out_text)["episodes"] == 2, err


def test_a_start_killed_before_its_config_was_written_is_no_dead_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("12345\n")
    (out / "config.json.tmp-12345").write_text('{"algo": "pp')  # killed while writing config.json
    assert main(["train", "--env", "CartPole-v1", "--steps", "128", "--out", str(out), "--quiet", *SMALL]) == 0
    assert sorted(p.name for p in out.iterdir() if ".tmp-" in p.name) == []
    assert _checkpoint_step(out) == 128


@pytest.mark.slow
def test_resume_refuses_up_front_where_checkpoints_cannot_be_written(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--env", "CartPole-v1", "--steps", "128", "--out", str(out), "--quiet", *SMALL]) == 0
    import shutil

    shutil.rmtree(out / "checkpoints")
    (out / "checkpoints").write_text("")
    rows = (out / "metrics.csv").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--steps", "512", "--quiet"]) == 2
    assert "checkpoints is not a directory; checkpoints cannot be written there" in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == rows
