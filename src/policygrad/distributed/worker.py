"""A rollout worker: a vector environment, a copy of the policy, and the one rollout collector.

:class:`RolloutWorker` is a plain class; :mod:`policygrad.distributed.collector` runs it as a Ray
actor. It collects with :class:`policygrad.rollout.RolloutCollector`, the same code a run without
workers steps its environments with, so a fragment is what that collector would have filled for
the worker's environment copies. Nothing here imports Ray.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from policygrad.normalize import moments_delta
from policygrad.types import Rollout

__all__ = ["ROLLOUT_FIELDS", "RolloutWorker", "pack_arrays", "unpack_arrays"]

ROLLOUT_FIELDS = tuple(f.name for f in dataclasses.fields(Rollout))
"""The fields of a :class:`~policygrad.types.Rollout`, as a fragment carries them."""


def pack_arrays(arrays: dict[str, np.ndarray | None]) -> tuple[bytes, list]:
    """Arrays as one byte string and its layout ``[(name, dtype, shape, offset) or (name, None)]``:
    one buffer crosses between processes faster than many (each pickled array costs ~0.03 ms)."""
    layout, parts, offset = [], [], 0
    for name, array in arrays.items():
        if array is None:
            layout.append((name, None, None, None))
            continue
        array = np.ascontiguousarray(array)
        layout.append((name, array.dtype.str, array.shape, offset))
        parts.append(array.reshape(-1).view(np.uint8))
        offset += array.nbytes
    return (np.concatenate(parts).tobytes() if parts else b""), layout


def unpack_arrays(data: bytes, layout: list) -> dict[str, np.ndarray | None]:
    """What :func:`pack_arrays` packed, as read-only views of ``data``."""
    out: dict[str, np.ndarray | None] = {}
    for name, dtype, shape, offset in layout:
        if dtype is None:
            out[name] = None
            continue
        count = int(np.prod(shape, dtype=np.int64))
        out[name] = np.frombuffer(data, dtype=np.dtype(dtype), count=count, offset=offset).reshape(shape)
    return out


class RolloutWorker:
    """``copies`` environment copies of a run, and a policy to act; which of the run's copies they
    are is given by :meth:`reset` (a spare worker is built before it has a slot).

    Args:
        run: the run's :meth:`policygrad.runconfig.RunSpec.to_json`.
        backend: the learner's backend name, so that acting runs the same forward pass.
        copies: environment copies of this worker.
    """

    def __init__(self, run: dict, backend: str, copies: int) -> None:
        from policygrad.atari import AtariOptions
        from policygrad.backends import make_backend
        from policygrad.envs import make_vec_env
        from policygrad.normalize import ObservationNormalizer, RewardScaler
        from policygrad.rollout import RolloutCollector
        from policygrad.runconfig import make_run_policy, spec_from_json
        from policygrad.threads import limit_threads
        
        spec = spec_from_json(run, "the run")
        cfg, tcfg = spec.config, spec.train
        limit_threads(tcfg.torch_threads, tcfg.blas_threads)
        threads = (tcfg.torch_threads, tcfg.blas_threads)
        self.envs = make_vec_env(spec.env, copies, None, time_limit=tcfg.time_limit, vectorization=tcfg.vectorization,
                                 worker_threads=threads, env_kwargs=spec.env_kwargs,
                                 atari=AtariOptions.from_train(tcfg))
        policy, encoder = make_run_policy(spec, self.envs, None)
        for p in policy.parameters():
            p.requires_grad_(False)
        self.policy = policy
        self.obs_normalizer = ObservationNormalizer(policy.obs_dim) if cfg.normalize_obs else None
        self.reward_scaler = RewardScaler(copies, cfg.gamma) if cfg.normalize_reward else None
        self.collector = RolloutCollector(
            self.envs, policy, cfg.num_steps, encoder=encoder, obs_normalizer=self.obs_normalizer,
            reward_scaler=self.reward_scaler, clip_reward=tcfg.clip_reward, sde_sample_freq=cfg.sde_sample_freq,
            actor=make_backend(backend, policy), step_timeout=tcfg.env_step_timeout or None,
        )
        # The tensors new weights are copied into: taken once the backend is built (the NumPy
        # backend may move the parameters into one buffer of its own).
        self._state = policy.state_dict()

    def ready(self) -> tuple[int, str]:
        """The worker's process id and Ray node id, once it is built."""
        import os

        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def serve(self, path: str, hello: tuple) -> None:
        """Connect to the learner's Unix socket at ``path``, say ``hello``, and answer :meth:`sample`
        requests that arrive on it from a thread of this process until the learner closes it: the
        direct channel of a worker on the learner's node (``policygrad.distributed.collector``).
        Each request is its fragment's key followed by :meth:`sample`'s arguments; each answer the
        key with ``"fragment", fragment`` or ``"error", one line``. The learner makes no other call
        to the worker while a request is out."""
        import socket
        import threading
        from multiprocessing.connection import Connection

        from policygrad.errors import TrainingError, describe_error

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        conn = Connection(sock.detach())
        conn.send(hello)

        def answer() -> None:
            while True:
                try:
                    key, *request = conn.recv()
                except (EOFError, OSError):
                    return
                try:
                    reply = (key, "fragment", self.sample(*request))
                except Exception as err:  # the environment's error, reported as an actor call reports it
                    reply = (key, "error",
                             str(err) if isinstance(err, TrainingError) else describe_error(err, first_line=True))
                try:
                    conn.send(reply)
                except OSError:
                    return

        threading.Thread(target=answer, name="policygrad-channel", daemon=True).start()

    def reset(self, seed: int, stream: int, first_copy: int, total_copies: int, obs_stats: tuple | None,
              reward_stats: tuple | None) -> dict[str, Any]:
        """Reset the environments as a run's collector resets copies ``first_copy ..`` of
        ``total_copies`` with ``seed``, and seed the sampling with ``stream``. The first
        observations enter the statistics, as in the run's collector: what they gained is
        returned as :meth:`sample` returns it."""
        starts = self._set_statistics(obs_stats, reward_stats)
        self.collector.reset(seed, first_copy=first_copy, total_copies=total_copies, stream=stream)
        return self._gains(starts)

    def sample(self, weights: tuple[bytes, list] | None, obs_stats: tuple | None, reward_stats: tuple | None
               ) -> dict[str, Any]:
        """One fragment ``[T, copies]`` collected by the policy ``weights`` (its state dict as
        :func:`pack_arrays` packs it; None: the last ones), normalising with the statistics given
        (each ``(mean, var, count)`` or None).

        Returns:
            The rollout's fields packed (``"rollout"``: :func:`pack_arrays`), the finished episodes,
            the raw reward per valid step, and what the statistics gained (:func:`policygrad.normalize.moments_delta`)
            with their end state.
        """
        if weights is not None:
            import torch

            with torch.no_grad():
                for name, value in unpack_arrays(*weights).items():
                    self._state[name].copy_(torch.from_numpy(value))
        starts = self._set_statistics(obs_stats, reward_stats)
        rollout = self.collector.collect()
        returns, lengths = self.collector.pop_episodes()
        valid = None if rollout.valid is None else rollout.valid.numpy()
        fragment: dict[str, Any] = {
            "rollout": pack_arrays({name: (None if getattr(rollout, name) is None else getattr(rollout, name).numpy())
                                    for name in ROLLOUT_FIELDS}),
        }
        fragment.update(
            episode_returns=returns,
            episode_lengths=lengths,
            reward_per_step=self.collector.reward_per_step,
            valid_steps=int(valid.sum()) if valid is not None else int(rollout.log_probs.numel()),
            steps=int(rollout.log_probs.numel()),
        )
        fragment.update(self._gains(starts))
        return fragment

    def _set_statistics(self, obs_stats: tuple | None, reward_stats: tuple | None) -> list:
        """Take the learner's statistics; their state as taken."""
        starts = []
        for normalizer, stats in ((self.obs_normalizer, obs_stats), (self.reward_scaler, reward_stats)):
            if normalizer is not None and stats is not None:
                normalizer.rms.set_moments(*stats)
            starts.append(None if normalizer is None else normalizer.rms.moments())
        return starts

    def _gains(self, starts: list) -> dict[str, Any]:
        """``{"obs_norm" / "reward_norm": {"delta": ..., "end": ...}}`` since ``starts``."""
        out = {}
        for name, normalizer, start in (("obs_norm", self.obs_normalizer, starts[0]),
                                        ("reward_norm", self.reward_scaler, starts[1])):
            if normalizer is not None:
                end = normalizer.rms.moments()
                out[name] = {"delta": moments_delta(start, end), "end": end}
        return out
