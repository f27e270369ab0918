"""Rollout workers on Ray (policygrad.distributed): the ledger and the statistics merge as plain
functions; then, on one private local cluster for the module, the guarantees of docs/scaling-out.md:
one worker trains exactly as one process, a worker count and seed give one run, asynchronous
fragments stay within the lag bound, and a killed worker or a raising environment is survived
with every step accounted for once."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from policygrad.cli import main
from policygrad.distributed.ledger import FragmentKey, Ledger, Rejected
from policygrad.errors import InputError, TrainingError
from policygrad.normalize import RunningMeanStd, moments_delta
from policygrad.runconfig import resolve_run

SMALL = {"num_envs": 4, "num_steps": 32, "minibatch_size": 64, "num_epochs": 2, "tensorboard": False}


# --- no Ray needed ------------------------------------------------------------------------------


def test_ledger_accepts_each_key_once_and_within_the_lag():
    ledger = Ledger(max_lag=2)
    assert ledger.new_incarnation(0) == 0 and ledger.new_incarnation(0) == 1
    assert ledger.accept(FragmentKey(0, 1, 0), version=3, learner_version=5, steps=64) == 2
    with pytest.raises(Rejected, match="accepted before"):
        ledger.accept(FragmentKey(0, 1, 0), version=5, learner_version=5, steps=64)
    with pytest.raises(Rejected, match="accepted before"):  # a replayed, earlier sequence number
        ledger.accept(FragmentKey(0, 1, -1), version=5, learner_version=5, steps=64)
    with pytest.raises(Rejected, match="lag 3"):
        ledger.accept(FragmentKey(1, 0, 0), version=2, learner_version=5, steps=64)
    ledger.accept(FragmentKey(1, 0, 0), version=5, learner_version=5, steps=64)
    assert (ledger.accepted_steps, ledger.fragments, ledger.duplicates, ledger.stale) == (128, 2, 2, 1)
    assert ledger.lags == {2: 1, 0: 1} and ledger.median_lag() == 1.0
    again = Ledger.from_state(ledger.state(), max_lag=4)
    assert again.state() == {**ledger.state(), "max_lag": 4}
    with pytest.raises(Rejected):  # the restored ledger still knows the key
        again.accept(FragmentKey(0, 1, 0), version=5, learner_version=5, steps=64)
    assert again.new_incarnation(0) == 2


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(fragments=3), "lags do not add up"),
    (lambda s: s.update(accepted_steps=-1), "accepted_steps"),
    (lambda s: s.update(last_seq=[[0, 1]]), "last_seq"),
    (lambda s: s.update(lags={"x": 1}), "lags"),
    (lambda s: s.pop("incarnations"), "incarnations"),
])
def test_a_malformed_ledger_is_refused_in_one_line(change, message):
    ledger = Ledger(max_lag=1)
    ledger.accept(FragmentKey(0, 0, 0), 0, 1, 8)
    state = ledger.state()
    change(state)
    with pytest.raises(InputError, match=message):
        Ledger.from_state(state, 1)


def test_moments_delta_inverts_the_running_merge():
    rng = np.random.default_rng(0)
    stats = RunningMeanStd((3,))
    stats.update(rng.normal(2.0, 3.0, size=(500, 3)))
    start = (stats.mean.copy(), stats.var.copy(), stats.count)
    batch = rng.normal(-1.0, 0.5, size=(64, 3))
    stats.update(batch)
    mean, var, count = moments_delta(start, (stats.mean, stats.var, stats.count))
    assert count == pytest.approx(64)
    np.testing.assert_allclose(mean, batch.mean(0), rtol=1e-9)
    np.testing.assert_allclose(var, batch.var(0), rtol=1e-7)
    assert moments_delta(start, start)[2] == 0.0


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--workers", "-2"], "--workers must be at least 1"),
    (["--workers", "2", "--mode", "async", "--max-lag", "-1"], "--max-lag must be >= 0"),
    (["--workers", "2", "--mode", "async", "--algo", "a2c"], "a2c has no correction"),
    (["--workers", "2", "--mode", "async", "--algo", "trpo"], "trpo has no correction"),
    (["--workers", "3"], "cannot share num_envs = 4"),
    (["--mode", "async"], "set workers"),
    (["--workers", "2", "--address", "no-port-here"], "--address must be local, auto or HOST:PORT"),
])
def test_bad_worker_settings_exit_2_in_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["train", "--steps", "256", "--quiet", "--out", str(out), "--set", "num_envs=4", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("policygrad: error: ") and message in err[0], err
    assert not out.exists()


def test_an_address_that_is_not_a_ray_head_is_refused_within_seconds(tmp_path, capsys):
    """Nothing listening (refused at once), and a listener that never answers (5 s): never a hang."""
    import socket
    import time

    pytest.importorskip("ray", reason="Ray is not installed (pip install 'policygrad[ray]')")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        for address, message in ((f"127.0.0.1:{_free_port()}", "Connection refused"),
                                  (f"127.0.0.1:{silent.getsockname()[1]}", "no answer within 5 s")):
            t0 = time.monotonic()
            assert main(["train", "--steps", "256", "--quiet", "--out", str(tmp_path / "run"), "--workers", "1",
                         "--address", address]) == 2
            assert time.monotonic() - t0 < 30
            err = capsys.readouterr().err.strip()
            assert err == f"policygrad: error: cannot reach the Ray cluster at {address}: {message}", err
            assert not (tmp_path / "run").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_ray_workers_name_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["train", "--steps", "256", "--quiet", "--out", str(tmp_path / "run"), "--workers", "2",
                 "--set", "num_envs=4"]) == 2
    assert capsys.readouterr().err.strip() == "policygrad: error: rollout workers need Ray: pip install 'policygrad[ray]'"
    assert not (tmp_path / "run").exists()


def test_a_run_without_workers_imports_no_ray(tmp_path):
    import subprocess

    code = ("import sys; from policygrad.cli import main; "
            "assert main(['train', '--steps', '128', '--quiet', '--out', sys.argv[1], '--set', 'num_envs=2', "
            "'--set', 'num_steps=64', '--set', 'minibatch_size=64', '--set', 'tensorboard=false']) == 0; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], check=True, env=env, timeout=120)


# --- on a private local cluster -------------------------------------------------------------------

ENVS = '''
import os
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

MARK = {mark!r}

class RaisesOnce(CartPoleEnv):
    """Raises at its 41st step, the first time any copy gets there (a marker file says so)."""
    mark = MARK
    def step(self, action):
        self.n = getattr(self, "n", 0) + 1
        if self.n > 40 and not os.path.exists(self.mark):
            try:
                os.close(os.open(self.mark, os.O_CREAT | os.O_EXCL))  # one copy of all wins
            except FileExistsError:
                return super().step(action)
            raise ValueError("the simulator diverged")
        return super().step(action)


class RaisesOnceMore(RaisesOnce):
    """RaisesOnce with a marker of its own: a worker of an earlier run, still stepping while it is
    being ended, cannot take this one's turn to raise."""
    mark = MARK + "-more"
'''


@pytest.fixture(scope="module")
def cluster():
    """One private local Ray cluster for the module (its own temporary directory; never `ray stop`),
    whose workers can import the module of test environments."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'policygrad[ray]')")
    temp = tempfile.mkdtemp(prefix="pgrt-", dir="/tmp")
    envs_dir = Path(temp) / "envs"
    envs_dir.mkdir()
    (envs_dir / "pg_ray_envs.py").write_text(ENVS.format(mark=str(envs_dir / "raised")))
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(envs_dir), saved) if p)
    sys.path.insert(0, str(envs_dir))
    ray.init(address="local", num_cpus=9, include_dashboard=False, _temp_dir=temp, object_store_memory=200 * 2**20,
             log_to_driver=False, configure_logging=False)
    try:
        yield envs_dir
    finally:
        ray.shutdown()
        sys.path.remove(str(envs_dir))
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        shutil.rmtree(temp, ignore_errors=True)


def _train(run_dir: Path, algo: str = "ppo", env: str = "CartPole-v1", callback=None, **values):
    from policygrad.rundir import start_run

    flags = {"total_steps": values.pop("total_steps", 1024)}
    spec = resolve_run(algo, env, overrides={**SMALL, **values}, flags=flags)
    session, summary = start_run(spec, run_dir, quiet=True, callback=callback)
    try:
        tensors = {k: v.clone() for k, v in session.policy.state_dict().items()}
        stats = None if session.obs_normalizer is None else session.obs_normalizer.rms.mean.copy()
        return summary, tensors, stats
    finally:
        session.close()


def _curve(run_dir: Path) -> list[list[str]]:
    """metrics.csv without the wall-clock columns."""
    import csv

    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.reader(f))
    keep = [i for i, name in enumerate(rows[0]) if name not in ("wall_time", "steps_per_second")]
    return [[row[i] for i in keep] for row in rows]


def test_one_worker_trains_exactly_as_one_process(cluster, tmp_path):
    values = {"normalize_obs": True, "normalize_reward": True}
    alone, params_alone, stats_alone = _train(tmp_path / "alone", **values)
    worker, params_worker, stats_worker = _train(tmp_path / "worker", workers=1, **values)
    assert _curve(tmp_path / "alone") == _curve(tmp_path / "worker")
    for name, value in params_alone.items():
        assert torch.equal(value, params_worker[name]), name
    np.testing.assert_array_equal(stats_alone, stats_worker)
    assert worker["ledger"]["accepted_steps"] == 1024 and worker["ledger"]["lags"] == {"0": 8}


def test_a_worker_count_and_seed_give_one_run(cluster, tmp_path):
    for workers in (2, 4):
        first = _train(tmp_path / f"a{workers}", workers=workers, normalize_obs=True, total_steps=512)
        second = _train(tmp_path / f"b{workers}", workers=workers, normalize_obs=True, total_steps=512)
        assert _curve(tmp_path / f"a{workers}") == _curve(tmp_path / f"b{workers}")
        for name, value in first[1].items():
            assert torch.equal(value, second[1][name]), name
        ledger = first[0]["ledger"]
        assert ledger["fragments"] == 4 * workers and ledger["lags"] == {"0": 4 * workers}
        # one fragment of each worker in every update, sequence numbers 0..3
        assert ledger["last_seq"] == [[w, 0, 3] for w in range(workers)]


def test_local_workers_take_sockets_and_actor_calls_give_the_same_run(cluster, tmp_path, monkeypatch):
    from policygrad.distributed import collector

    for mode in ("sync", "async"):
        direct = _train(tmp_path / f"sockets-{mode}", workers=2, worker_mode=mode, normalize_obs=True,
                        total_steps=512)
        monkeypatch.setattr(collector, "DIRECT_CHANNELS", False)
        calls = _train(tmp_path / f"calls-{mode}", workers=2, worker_mode=mode, normalize_obs=True,
                       total_steps=512)
        monkeypatch.setattr(collector, "DIRECT_CHANNELS", True)
        assert direct[0]["transport"] == {"sockets": 2, "actor_calls": 0}
        assert calls[0]["transport"] == {"sockets": 0, "actor_calls": 2}
        if mode == "sync":  # asynchronous batches depend on which worker answers first
            assert _curve(tmp_path / f"sockets-{mode}") == _curve(tmp_path / f"calls-{mode}")
            for name, value in direct[1].items():
                assert torch.equal(value, calls[1][name]), name
        assert direct[0]["ledger"]["accepted_steps"] == calls[0]["ledger"]["accepted_steps"] == 512


def test_training_again_on_the_same_workers_drops_the_fragments_still_owed(cluster, tmp_path):
    # An asynchronous run can end with requests ahead; a second train() on the same session resets
    # the workers: what they still owe through their sockets must not be taken for new fragments.
    from policygrad.training import build_session, train

    spec = resolve_run("ppo", "CartPole-v1", overrides={**SMALL, "workers": 2, "worker_mode": "async", "max_lag": 1},
                       flags={"total_steps": 512})
    session = build_session(spec)
    try:
        (tmp_path / "run").mkdir()
        train(session, tmp_path / "run", quiet=True)
        collector = session.collector
        assert collector.transports() == {"sockets": 2, "actor_calls": 0}
        collector.reset(seed=3)
        collector._request_idle(session.algorithm.updates)  # what a collect asks for ahead
        owed = [r for r in collector._pending if r.fragment is None]
        assert len(owed) == 2 and all(r.channel is not None for r in owed)
        collector.reset(seed=7)
        assert not collector._pending
        before = collector.ledger.state()["fragments"]
        for i in range(3):
            rollout = collector.collect()
            assert rollout.log_probs.shape == (SMALL["num_steps"], SMALL["num_envs"])
            if i == 0:  # collected from the reset: CartPole starts every state variable in ±0.05
                assert float(rollout.observations[0].abs().max()) <= 0.05
        state = collector.ledger.state()
        assert state["fragments"] == before + 6 and state["duplicates"] == 0
    finally:
        session.close()


def test_asynchronous_fragments_stay_within_the_lag_bound(cluster, tmp_path):
    summary, _, _ = _train(tmp_path / "run", workers=2, worker_mode="async", max_lag=1, total_steps=2048)
    ledger = summary["ledger"]
    assert ledger["accepted_steps"] == 2048 and ledger["fragments"] == 32
    assert ledger["duplicates"] == ledger["stale"] == 0
    assert set(ledger["lags"]) <= {"0", "1"} and ledger["lags"].get("1", 0) > 0  # it did run ahead


def test_impala_learns_from_asynchronous_workers_through_the_python_api(cluster, tmp_path):
    import policygrad as pg

    model = pg.IMPALA("CartPole-v1", seed=0, num_envs=4, num_steps=16, workers=2, worker_mode="async", max_lag=2,
                      tensorboard=False)
    model.learn(1024, run_dir=tmp_path / "run")
    assert model.num_timesteps == 1024
    meta = json.loads((tmp_path / "run" / "checkpoints" / "last" / "meta.json").read_text())["meta"]
    ledger = meta["ledger"]
    assert ledger["accepted_steps"] == 1024 and ledger["fragments"] == 32 and ledger["duplicates"] == 0
    assert max(int(k) for k in ledger["lags"]) <= 2
    action, _ = model.predict(np.zeros(4, dtype=np.float32))
    assert action in (0, 1)


def test_a_killed_worker_is_replaced_and_no_step_is_lost(cluster, tmp_path):
    from policygrad.training import build_session, train

    spec = resolve_run("ppo", "CartPole-v1", overrides=SMALL, flags={"total_steps": 2048, "workers": 2})
    session = build_session(spec)
    killed = []

    class Kill:
        def on_rollout_end(self, step):
            if step == 512:  # between two collections: worker 1 is idle, and its next request fails
                killed.append(session.collector.pids[1])
                os.kill(killed[0], signal.SIGKILL)

    try:
        (tmp_path / "run").mkdir()
        summary = train(session, tmp_path / "run", quiet=True, callback=Kill())
        new_pid = session.collector.pids[1]
    finally:
        session.close()
    assert killed and new_pid != killed[0]
    ledger = summary["ledger"]
    assert ledger["accepted_steps"] == 2048 and ledger["fragments"] == 32 and ledger["replaced"] == 1
    assert ledger["duplicates"] == 0 and ledger["incarnations"] == {"0": 1, "1": 2}
    assert summary["recoveries"][0]["worker"] == 1


def test_a_fragment_the_ledger_refuses_is_collected_again(cluster, tmp_path):
    from policygrad.training import build_session, train

    spec = resolve_run("ppo", "CartPole-v1", overrides=SMALL, flags={"total_steps": 1024, "workers": 2})
    session = build_session(spec)

    class Replayed(Ledger):
        """Refuses worker 1's third fragment as a duplicate, once (a replay the scheduling never makes)."""

        def accept(self, key, version, learner_version, steps):
            if key == FragmentKey(1, 0, 2) and not self.duplicates:
                self.duplicates += 1
                raise Rejected("replayed")
            return super().accept(key, version, learner_version, steps)

    session.collector.ledger = Replayed(max_lag=0, incarnations=dict(session.collector.ledger.incarnations))
    try:
        (tmp_path / "run").mkdir()
        summary = train(session, tmp_path / "run", quiet=True)
    finally:
        session.close()
    ledger = summary["ledger"]
    assert ledger["accepted_steps"] == 1024 and ledger["fragments"] == 16 and ledger["duplicates"] == 1
    assert [1, 0, 8] in ledger["last_seq"]  # worker 1 made one fragment more than it delivered


def test_a_raising_environment_stops_the_run_unless_workers_are_restarted(cluster, tmp_path):
    mark = cluster / "raised"
    mark.unlink(missing_ok=True)
    with pytest.raises(TrainingError, match=r"rollout worker \d: the environment raised at step \d+ .*"
                                            r"ValueError: the simulator diverged"):
        _train(tmp_path / "stops", env="pg_ray_envs:RaisesOnce", workers=2)
    mark = cluster / "raised-more"
    mark.unlink(missing_ok=True)
    summary, _, _ = _train(tmp_path / "goes-on", env="pg_ray_envs:RaisesOnceMore", workers=2,
                           restart_failed_workers=True)
    ledger = summary["ledger"]
    assert mark.exists() and ledger["replaced"] == 1 and ledger["accepted_steps"] == 1024


def test_a_run_resumes_with_another_number_of_workers(cluster, tmp_path):
    from policygrad.rundir import reopen_run
    from policygrad.runconfig import read_run_config
    from policygrad.training import train
    import dataclasses

    run = tmp_path / "run"
    _train(run, workers=2, total_steps=1024)
    spec = read_run_config(run)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, workers=1, total_steps=2048))
    session = reopen_run(run, spec, lock=True)
    try:
        summary = train(session, run, resumed=True, quiet=True)
    finally:
        session.close()
    ledger = summary["ledger"]
    assert summary["step"] == ledger["accepted_steps"] == 2048 and ledger["fragments"] == 16 + 8
    assert ledger["incarnations"] == {"0": 2, "1": 1}  # slot 0 lives again; its keys are new ones
    assert [w for w, i, s in ledger["last_seq"]] == [0, 0, 1]
    assert math.isfinite(summary["eval_returns"][0])

