"""Steps per second of the ways to step N preprocessed Atari games (the choice in
:mod:`policygrad.atari`).

Each variant produces the same observations (84×84 grayscale, 4 stacked frames, frame skip 4 with
max-pooling, up to 30 no-op resets, sticky actions 0.25 as in the v5 ids) and takes random actions:

* ``ale-vector``: ale-py's ``AtariVectorEnv`` (C++ threads, preprocessing in C++);
* ``sync`` / ``async``: Gymnasium's ``SyncVectorEnv`` / ``AsyncVectorEnv`` of ``ALE/<game>-v5``
  copies wrapped in ``AtariPreprocessing`` and ``FrameStackObservation``.

Run: ``python benchmarks/atari_vector.py [--game Breakout] [--envs 8] [--steps 10000]``; ``--steps``
counts environment steps (agent steps, all copies together). Needs ``policygrad[atari]``.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym


def ale_vector(game: str, num_envs: int, threads: int) -> gym.vector.VectorEnv:
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(game=game.lower(), num_envs=num_envs, num_threads=threads, repeat_action_probability=0.25,
                          reward_clipping=False, use_fire_reset=False, autoreset_mode="SameStep")


def wrapped(game: str, num_envs: int, mode: str) -> gym.vector.VectorEnv:
    import ale_py

    gym.register_envs(ale_py)

    def make() -> gym.Env:
        env = gym.make(f"ALE/{game}-v5", frameskip=1, disable_env_checker=True)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True)
        return gym.wrappers.FrameStackObservation(env, 4)

    cls = gym.vector.SyncVectorEnv if mode == "sync" else gym.vector.AsyncVectorEnv
    return cls([make] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def measure(envs: gym.vector.VectorEnv, steps: int) -> float:
    envs.reset(seed=0)
    envs.action_space.seed(0)
    vector_steps = -(-steps // envs.num_envs)
    actions = [envs.action_space.sample() for _ in range(vector_steps)]
    t0 = time.perf_counter()
    for a in actions:
        obs, *_ = envs.step(a)
    elapsed = time.perf_counter() - t0
    assert obs.shape[1:] == (4, 84, 84), obs.shape
    envs.close()
    return vector_steps * envs.num_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=0, help="ale-vector threads (0: all cores)")
    args = parser.parse_args()
    for name in ("ale-vector", "sync", "async"):
        envs = ale_vector(args.game, args.envs, args.threads) if name == "ale-vector" else wrapped(args.game, args.envs, name)
        rate = measure(envs, args.steps)
        print(f"{name:>10}: {rate:8.0f} env steps/s ({args.envs} envs, {args.steps} steps)", flush=True)


if __name__ == "__main__":
    main()
