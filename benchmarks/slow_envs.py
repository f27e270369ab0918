"""Environments for the rollout-worker measurements (benchmarks/workers.py), importable by workers."""

from __future__ import annotations

import time

import gymnasium as gym


class _Wait(gym.Wrapper):
    def step(self, action):
        time.sleep(0.001)
        return self.env.step(action)


def slow_cartpole(**kwargs):
    """CartPole-v1 whose every step waits 1 ms first: an environment bound by waiting (a remote
    simulator), not by computing."""
    return _Wait(gym.make("CartPole-v1", **kwargs))
