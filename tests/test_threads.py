"""Compute threads: a session and every async environment worker limit theirs (policygrad.threads)."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
import threadpoolctl
import torch
from gymnasium import spaces

from policygrad.envs import make_vec_env
from policygrad.errors import InputError
from policygrad.runconfig import TrainConfig, resolve_run
from policygrad.threads import ThreadLimited, limit_threads
from policygrad.training import build_session


class ThreadProbe(gym.Env):
    """A one-step task whose ``threads()`` reports the thread limits of the process it runs in."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 1.0, True, False, {}

    def threads(self) -> dict[str, object]:
        return {"torch": torch.get_num_threads(), "blas": _blas_threads()}


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]


@pytest.fixture(autouse=True)
def _restore_limits():
    """Put this process's limits back as they were (other tests run in it too)."""
    torch_threads = torch.get_num_threads()
    pools = {pool["prefix"]: pool["num_threads"] for pool in threadpoolctl.threadpool_info()}
    yield
    threadpoolctl.threadpool_limits(limits=pools)
    torch.set_num_threads(torch_threads)


def test_limit_threads_sets_torch_and_blas() -> None:
    assert _blas_threads(), "NumPy's BLAS should be visible to threadpoolctl"
    limit_threads(3, 2)
    assert torch.get_num_threads() == 3 and set(_blas_threads()) == {2}
    limit_threads(1, 1)
    assert torch.get_num_threads() == 1 and set(_blas_threads()) == {1}
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(InputError, match="must be a positive int"):
            limit_threads(bad, 1)
        with pytest.raises(InputError, match="must be a positive int"):
            limit_threads(1, bad)


def test_building_a_session_applies_the_keys() -> None:
    limit_threads(1, 1)
    spec = resolve_run("ppo", "CartPole-v1", overrides={"torch_threads": 3, "blas_threads": "2"})
    assert (spec.train.torch_threads, spec.train.blas_threads) == (3, 2)
    session = build_session(spec, training=False)
    session.close()
    assert torch.get_num_threads() == 3 and set(_blas_threads()) == {2}


def test_keys_are_validated_and_default_to_one() -> None:
    assert (TrainConfig().torch_threads, TrainConfig().blas_threads) == (1, 1)
    with pytest.raises(InputError, match="blas_threads must be > 0, got 0"):
        resolve_run("ppo", "CartPole-v1", overrides={"blas_threads": 0})
    with pytest.raises(InputError, match="blas_threads must be an int"):
        resolve_run("ppo", "CartPole-v1", overrides={"blas_threads": 1.5})


def test_async_workers_limit_their_threads() -> None:
    # The parent runs wider than the workers are told to, so a worker that merely inherited its
    # parent's limits would report 2.
    limit_threads(2, 2)
    envs = make_vec_env(ThreadProbe, 2, 0, vectorization="async", worker_threads=(1, 1))
    try:
        reports = envs.call("threads")
    finally:
        envs.close()
    assert len(reports) == 2
    for report in reports:
        assert report["torch"] == 1 and report["blas"] and set(report["blas"]) == {1}


def test_async_session_workers_get_the_keys() -> None:
    spec = resolve_run("ppo", "test_threads:ThreadProbe", overrides={
        "vectorization": "async", "num_envs": 2, "num_steps": 4, "minibatch_size": 8, "eval_episodes": 1,
        "torch_threads": 2, "blas_threads": 1,
    })
    session = build_session(spec)
    try:
        reports = session.envs.call("threads")
    finally:
        session.close()
    assert [r["torch"] for r in reports] == [2, 2] and all(set(r["blas"]) == {1} for r in reports)


def test_the_worker_factory_pickles() -> None:
    factory = ThreadLimited(ThreadProbe, 1, 1)
    copy = pickle.loads(pickle.dumps(factory))
    assert copy == factory and isinstance(copy(), ThreadProbe)


def test_bad_worker_threads_are_one_input_error() -> None:
    for bad in ((0, 1), [1, 1], (1,), (True, 1)):
        with pytest.raises(InputError, match="worker_threads must be"):
            make_vec_env("CartPole-v1", 1, worker_threads=bad)
