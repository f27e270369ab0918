"""The learner's side of the rollout workers: a collector that gathers fragments from Ray actors.

:class:`WorkerCollector` stands where a run's :class:`~policygrad.rollout.RolloutCollector`
stands, with its interface (``collect``, ``reset``, ``steps``, ``pop_episodes``,
``reward_per_step``, ``stop``), so the training loop and every algorithm are unchanged: each
``collect`` returns one :class:`~policygrad.types.Rollout` of ``[T, num_envs]`` steps, the
fragments of ``[T, envs_per_worker]`` side by side.

Scheduling. Fragments are numbered in the order they are requested, and each update trains on
the ``workers`` oldest. A worker is asked for a fragment only when that fragment will be trained
on at most ``max_lag`` updates after the policy it is given (the fragments requested before it
fill the batches in between): the workers are paced, and no fragment is thrown away for its age.
Synchronous mode is ``max_lag = 0``: every fragment of an update is collected by the current
policy, and the fragments are put in worker order.

Transport. A worker on the learner's node gets its requests and returns its fragments through a
Unix socket of its own (:meth:`~policygrad.distributed.worker.RolloutWorker.serve`), opened when it
starts: on a 2-core machine a CartPole request and its fragment spend about 0.4 ms in transit,
where one Ray actor call (there and back, nothing in it) costs about 0.9 ms, a tenth of a CartPole
update. Workers on other nodes, and a worker whose socket does not connect, use actor calls. What
a fragment holds does not depend on the transport; a worker whose process dies closes its socket,
which the learner sees at once.

Faults. A worker whose process dies (killed, or lost with its node) is replaced by a new
incarnation of its slot; the fragment it owed is requested again from the new one. A worker
whose environment raised stops the run with that error (``TrainingError``), unless
``restart_failed_workers`` asks for a replacement. The :class:`~policygrad.distributed.ledger.Ledger`
accepts each fragment once, by its key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from policygrad.distributed.ledger import FragmentKey, Ledger, Rejected
from policygrad.distributed.worker import ROLLOUT_FIELDS, pack_arrays, unpack_arrays
from policygrad.errors import TrainingError, describe_error

__all__ = ["WorkerCollector", "REPLACE_KEY"]

REPLACE_KEY = 4
"""The :func:`~policygrad.seeding.derive_seed` key of a replaced worker's reset and sampling seed."""

INLINE_BYTES = 64 * 1024
"""Policy weights up to this size are sent inside each request; larger ones through one ``ray.put``."""

MAX_FAILURES = 5
"""Replacements of one worker slot in a row, without a fragment of it accepted between them, before
the run stops: a worker that fails whenever it starts is an error, not a fault to ride out."""

READY_TIMEOUT = 120.0
"""Seconds a new worker may take to start (import, build its environments) before the run stops."""

DIRECT_CHANNELS = True
"""Whether workers on the learner's node get a socket of their own (False: every worker takes actor
calls; what the fragments hold is the same)."""

CONNECT_TIMEOUT = 10.0
"""Seconds a started worker on the learner's node may take to connect its socket before it is
given actor calls instead."""


@dataclass
class _Request:
    worker: int
    key: FragmentKey
    version: int  # of the policy that collects it
    ref: Any
    fragment: dict | None = None
    accepted: bool = False
    channel: Any = None  # the worker's socket (a Connection) when the request went through it
    broken: bool = False  # the request could not be sent: the worker's process has ended


class WorkerCollector:
    """Collects ``[T, num_envs]`` rollouts from ``workers`` Ray actors (see the module docstring).

    Args:
        spec: the run (:class:`~policygrad.runconfig.RunSpec`); its ``train`` holds the workers'
            settings.
        algorithm: the learner's algorithm: its ``updates`` is the policy version, its backend's
            name the workers' acting backend.
        obs_normalizer, reward_scaler: the learner's statistics (or None): given to the workers
            with each request, merged back from each fragment in batch order.
        cluster: a connected :class:`policygrad.distributed.cluster.Cluster`.
        device: where the rollouts go.
    """

    def __init__(self, spec: Any, algorithm: Any, obs_normalizer: Any, reward_scaler: Any, cluster: Any,
                 device: Any = "cpu") -> None:
        import ray

        from policygrad.distributed.worker import RolloutWorker

        self._ray = ray
        tcfg, cfg = spec.train, spec.config
        self.spec = spec
        self.algorithm = algorithm
        self.policy = algorithm.policy
        self.obs_normalizer = obs_normalizer
        self.reward_scaler = reward_scaler
        self.cluster = cluster
        self.device = torch.device(device)
        self.workers = int(tcfg.workers)
        self.num_envs = int(cfg.num_envs)
        self.copies = self.num_envs // self.workers
        self.synchronous = tcfg.worker_mode == "sync"
        self.max_lag = 0 if self.synchronous else int(tcfg.max_lag)
        self.restart_failed = bool(tcfg.restart_failed_workers)
        self.ledger = Ledger(max_lag=self.max_lag)
        self.stop: Any = None
        self.episode_returns: list[float] = []
        self.episode_lengths: list[int] = []
        self.reward_per_step = float("nan")
        self.recoveries: list[dict[str, Any]] = []
        """One entry per replaced worker: slot, incarnation, why, seconds from the failure
        being seen to the new worker being ready."""
        self._run = spec.to_json()
        self._backend = algorithm.backend.name
        self._actor_class = ray.remote(RolloutWorker).options(max_restarts=0, max_task_retries=0)
        self._actors: list[Any] = [None] * self.workers
        self._incarnation = [0] * self.workers
        self._seq = [0] * self.workers
        self._pending: list[_Request] = []  # requested, not yet trained on, in request order
        self._packed: tuple[int, Any] | None = None  # (version, the policy's weights as pack_arrays packs them)
        self._put: Any = None  # the packed weights in the object store (large weights, actor calls), or None
        self._taken = -1  # the version whose batch was last taken
        self._seed: int | None = None
        self._spare: tuple[Any, Any] | None = None  # (actor, its ready() reference)
        self._first_incarnation = [0] * self.workers  # each slot's incarnation at the last reset
        self._failures = [0] * self.workers  # replacements of each slot since its last accepted fragment
        self.pids: list[int] = [0] * self.workers
        """The process id of each worker slot's current incarnation."""
        self.nodes: list[str] = [""] * self.workers
        """The Ray node id of each worker slot's current incarnation."""
        self._channels: list[Any] = [None] * self.workers  # each slot's socket, or None: actor calls
        self._node = ray.get_runtime_context().get_node_id()
        self._server: Any = None
        self._socket_dir: str | None = None
        self._sockets_off = False  # the learner's socket could not be made: actor calls for all
        self._start(list(range(self.workers)))

    # --- workers ------------------------------------------------------------------------------

    def _start(self, slots: list[int]) -> None:
        """Start a new incarnation in each of ``slots`` (the spare first, if it is alive) and wait
        until all are built; then build a new spare in the background. A new worker that dies while
        starting (placed on a node that is being lost) is started again, up to
        :data:`MAX_FAILURES` times."""
        ray = self._ray
        started = list(slots)
        for attempt in range(MAX_FAILURES + 1):
            refs = {}
            for w in slots:
                self._incarnation[w] = self.ledger.new_incarnation(w)
                self._seq[w] = 0
                self._actors[w], refs[w] = self._take_spare() or self._new_actor()
            died = []
            for w, ref in refs.items():
                try:
                    self.pids[w], self.nodes[w] = ray.get(ref, timeout=READY_TIMEOUT)
                except ray.exceptions.GetTimeoutError:
                    raise TrainingError(f"rollout workers did not start within {READY_TIMEOUT:.0f} s (does the "
                                        f"Ray cluster have {len(slots)} free CPUs?)") from None
                except ray.exceptions.RayTaskError as err:
                    raise TrainingError(f"a rollout worker failed to start: {_cause(err)}") from None
                except ray.exceptions.RayError as err:
                    died.append(w)
                    why = describe_error(err, first_line=True)
                    _kill(ray, self._actors[w])
            if not died:
                break
            slots = died
        else:
            raise TrainingError(f"a rollout worker failed to start {MAX_FAILURES + 1} times: {why}")
        for w in started:
            self._connect(w)
        if self._seed is not None:
            self._merge_statistics(ray.get([self._reset_ref(w) for w in started]))
        if self._spare is None:
            # Built while the others work, the spare takes the place of the next worker to fail
            # at once: recovering then costs a reset, not a process start.
            self._spare = self._new_actor()

    def transports(self) -> dict[str, int]:
        """How many of the current workers take their requests through a socket of their own, and
        how many through actor calls."""
        sockets = sum(c is not None for c in self._channels)
        return {"sockets": sockets, "actor_calls": self.workers - sockets}

    def processes(self) -> list[tuple[int, str]]:
        """``(process id, Ray node id)`` of every worker process of the run: the workers' and the
        spare's (waiting until the spare is built)."""
        out = list(zip(self.pids, self.nodes))
        if self._spare is not None:
            try:
                out.append(tuple(self._ray.get(self._spare[1], timeout=READY_TIMEOUT)))
            except self._ray.exceptions.RayError:
                pass
        return out

    def _new_actor(self) -> tuple[Any, Any]:
        actor = self._actor_class.remote(self._run, self._backend, self.copies)
        return actor, actor.ready.remote()

    def _connect(self, w: int) -> None:
        """Give worker ``w`` a socket of its own if it runs on the learner's node (see the module
        docstring); if it does not connect within :data:`CONNECT_TIMEOUT`, it keeps actor calls."""
        import socket
        from multiprocessing.connection import Connection

        self._close_channel(w)
        if not DIRECT_CHANNELS or self._sockets_off or self.nodes[w] != self._node:
            return
        if self._server is None:
            import shutil
            import tempfile

            self._socket_dir = tempfile.mkdtemp(prefix="policygrad-")  # mode 0700: this user's alone
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                server.bind(f"{self._socket_dir}/learner.sock")
                server.listen()
            except OSError:  # a temporary directory whose path is too long for a socket: actor calls
                server.close()
                shutil.rmtree(self._socket_dir, ignore_errors=True)
                self._socket_dir, self._sockets_off = None, True
                return
            self._server = server
        hello = (w, self._incarnation[w])
        ref = self._actors[w].serve.remote(f"{self._socket_dir}/learner.sock", hello)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:  # a late connection of a worker given up on says another hello: closed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._server.settimeout(remaining)
            try:
                sock, _ = self._server.accept()
            except OSError:  # the worker cannot reach the socket (another file system): actor calls
                return
            sock.setblocking(True)
            conn = Connection(sock.detach())
            try:
                if conn.poll(remaining) and conn.recv() == hello:
                    break
            except (EOFError, OSError):
                pass
            conn.close()
        try:
            self._ray.get(ref, timeout=CONNECT_TIMEOUT)
        except self._ray.exceptions.RayError:
            conn.close()
            return
        self._channels[w] = conn

    def _close_channel(self, w: int) -> None:
        conn, self._channels[w] = self._channels[w], None
        if conn is not None:
            conn.close()

    def _take_spare(self) -> tuple[Any, Any] | None:
        """The spare worker and a new ``ready()`` call of it (which fails if it died since it was
        built); None if there is no spare, or it never came up."""
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        try:
            self._ray.get(spare[1], timeout=READY_TIMEOUT)
        except self._ray.exceptions.RayError:
            _kill(self._ray, spare[0])
            return None
        return spare[0], spare[0].ready.remote()

    def _reset_ref(self, w: int) -> Any:
        """Reset worker ``w``: incarnation 0 as the run's collector would reset its copies, later
        incarnations (replacements) from a seed of their own."""
        from policygrad.seeding import derive_seed

        incarnation = self._incarnation[w]
        stats = (_stats(self.obs_normalizer), _stats(self.reward_scaler))
        seed = self._seed if incarnation == self._first_incarnation[w] else derive_seed(self._seed, REPLACE_KEY, w,
                                                                                          incarnation)
        return self._actors[w].reset.remote(seed, w, w * self.copies, self.num_envs, *stats)

    def _replace(self, failed: dict[int, str]) -> None:
        """Replace the workers of the slots ``failed`` names (slot: why), all at once."""
        for w, why in failed.items():
            self._failures[w] += 1
            if self._failures[w] > MAX_FAILURES:
                raise TrainingError(f"rollout worker {w} failed {MAX_FAILURES + 1} times in a row, the last: {why}")
        t0 = time.perf_counter()
        for w in failed:
            self._close_channel(w)
            _kill(self._ray, self._actors[w])
        self.ledger.replaced += len(failed)
        self._pending = [r for r in self._pending if r.worker not in failed]
        self._start(sorted(failed))
        for w, why in failed.items():
            self.recoveries.append({"worker": w, "incarnation": self._incarnation[w], "why": why,
                                    "seconds": time.perf_counter() - t0, "at": time.time()})

    # --- the collector's interface ------------------------------------------------------------

    @property
    def steps(self) -> int:
        """Environment steps of the accepted fragments."""
        return self.ledger.accepted_steps

    @steps.setter
    def steps(self, value: int) -> None:
        self.ledger.accepted_steps = int(value)

    def reset(self, seed: int | None = None) -> None:
        """Reset every worker's environments (a run's start or resume): worker w resets the copies
        it holds as one collector of all the copies would, and samples from stream w."""
        from policygrad.seeding import derive_seed

        if seed is None:
            seed = derive_seed(self.spec.seed, 0)
        self._seed = int(seed)
        self._first_incarnation = list(self._incarnation)
        self._drain()
        self._pending.clear()
        self._merge_statistics(self._ray.get([self._reset_ref(w) for w in range(self.workers)]))

    def _drain(self) -> None:
        """Wait for the fragments still owed through sockets (an asynchronous run's requests ahead,
        when training starts again on the same workers) and drop them: a worker collects one
        fragment at a time, and an answer left in its socket would be taken for the next one's."""
        for r in self._pending:
            if r.channel is not None and r.fragment is None and not r.broken:
                try:
                    r.channel.recv()
                except (EOFError, OSError):
                    pass  # the worker is gone: its reset fails and says so

    def load_ledger(self, meta: Any) -> None:
        """Go on from a checkpoint's ledger; the running workers become new incarnations of their
        slots, so that no key of theirs repeats one of the checkpoint's run."""
        self.ledger = Ledger.from_state(meta, self.max_lag)
        for w in range(self.workers):
            self._incarnation[w] = self.ledger.new_incarnation(w)
            self._seq[w] = 0

    def pop_episodes(self) -> tuple[list[float], list[int]]:
        returns, lengths = self.episode_returns, self.episode_lengths
        self.episode_returns, self.episode_lengths = [], []
        return returns, lengths

    def collect(self) -> Any:
        """The next batch: the ``workers`` oldest fragments requested, as one rollout."""
        from policygrad.rollout import CollectionStopped

        if self._seed is None:
            self.reset()
        version = self.algorithm.updates
        self._request_idle(version)
        while True:
            batch = self._pending[: self.workers]
            waiting = [r for r in batch if r.fragment is None]
            if len(batch) == self.workers and not waiting:
                refused = self._accept(batch, version)
                if not refused:
                    break
                self._pending = [r for r in self._pending if r not in refused]  # and asked again
                self._request_idle(version)
                continue
            if self.stop is not None and self.stop.signum is not None:
                raise CollectionStopped(f"collection stopped at step {self.steps}")
            if not waiting:  # fewer requests than a batch: a slot was just replaced
                self._request_idle(version)
                continue
            failed: dict[int, str] = {}
            direct = [r for r in self._pending if r.fragment is None and r.channel is not None]
            refs = [r.ref for r in self._pending if r.fragment is None and r.channel is None]
            if direct:
                ready = _wait_channels([r.channel for r in direct if not r.broken], 0.2 if not refs else 0.0)
                for r in direct:
                    if r.broken or r.channel in ready:
                        self._receive_direct(r, failed)
            if refs:
                done, _ = self._ray.wait(refs, num_returns=1, timeout=0.2 if not direct else 0.001)
                if done:  # and whatever else is ready: the workers lost with one node fail together
                    done, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
                for ref in done:
                    self._receive(next(r for r in self._pending if r.ref is ref), failed)
            if failed:
                self._replace(failed)
            self._request_idle(version)
        self._pending = self._pending[self.workers:]
        self._taken = version
        if self.synchronous:
            batch.sort(key=lambda r: r.worker)
        self._request_idle(version)  # asynchronous: the next fragments run during the update
        return self._assemble([r.fragment for r in batch])

    def _accept(self, batch: list[_Request], version: int) -> list[_Request]:
        """Account for the batch's fragments in the ledger; those it refuses (never, while the
        scheduling keeps its promises) are returned, to be collected again."""
        refused = []
        for r in batch:
            if r.accepted:
                continue
            try:
                self.ledger.accept(r.key, r.version, version, r.fragment["steps"])
            except Rejected:
                refused.append(r)
                continue
            r.accepted = True
            self._failures[r.worker] = 0
        return refused

    def close(self) -> None:
        """End the workers (and the cluster, if this run started it)."""
        for w in range(self.workers):
            self._close_channel(w)
        if self._server is not None:
            import shutil

            self._server.close()
            self._server = None
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        for actor in self._actors:
            _kill(self._ray, actor)
        if self._spare is not None:
            _kill(self._ray, self._spare[0])
            self._spare = None
        self._actors = [None] * self.workers
        self.cluster.close()

    # --- scheduling ---------------------------------------------------------------------------

    def _lag_of_next(self, version: int) -> int:
        """The lag a fragment requested now would be trained at: the batches before it, plus one
        if this version's batch is already taken."""
        ahead = len(self._pending) // self.workers
        return ahead + (1 if self._taken == version else 0)

    def _request_idle(self, version: int) -> None:
        # A worker collects one fragment at a time; synchronous, it also owes each batch exactly one.
        busy = {r.worker for r in self._pending if r.fragment is None or self.synchronous}
        for w in range(self.workers):
            if w in busy or self._lag_of_next(version) > self.max_lag:
                continue
            self._request(w, version)

    def _request(self, w: int, version: int) -> None:
        if self._packed is None or self._packed[0] != version:  # one byte string (pack_arrays) per version
            self._packed = (version, pack_arrays({k: v.detach().cpu().numpy()
                                                  for k, v in self.policy.state_dict().items()}))
            self._put = None
        key = FragmentKey(w, self._incarnation[w], self._seq[w])
        self._seq[w] += 1
        stats = (_stats(self.obs_normalizer), _stats(self.reward_scaler))
        conn = self._channels[w]
        if conn is None:
            # Small weights travel inside each actor call, larger ones are put in the object store
            # once per version; a socket takes them as they are.
            weights = self._packed[1]
            if len(weights[0]) > INLINE_BYTES:
                if self._put is None:
                    self._put = self._ray.put(weights)
                weights = self._put
            ref = self._actors[w].sample.remote(weights, *stats)
            self._pending.append(_Request(w, key, version, ref))
            return
        request = _Request(w, key, version, None, channel=conn)
        try:
            conn.send(((key.worker, key.incarnation, key.seq), self._packed[1], *stats))
        except OSError:  # the worker's process has ended: seen as its failure when the batch waits
            request.broken = True
        self._pending.append(request)

    def _receive_direct(self, request: _Request, failed: dict[int, str]) -> None:
        """Take the fragment of a request sent through the worker's socket, or note its worker in
        ``failed``: its process ended (the socket closed) or its environment raised."""
        try:
            if request.broken:
                raise EOFError
            key, kind, value = request.channel.recv()
        except (EOFError, OSError):
            failed[request.worker] = "its process ended (its socket closed)"
            return
        if key != (request.key.worker, request.key.incarnation, request.key.seq):
            return  # the answer to an earlier request, dropped: this one's comes next
        if kind == "error":
            if not self.restart_failed:
                raise TrainingError(f"rollout worker {request.worker}: {value}")
            failed[request.worker] = value
            return
        request.fragment = value

    def _receive(self, request: _Request, failed: dict[int, str]) -> None:
        """Take the fragment of a finished request, or note its worker in ``failed``."""
        ray = self._ray
        try:
            request.fragment = ray.get(request.ref)
        except ray.exceptions.RayTaskError as err:
            cause = _cause(err)
            if not self.restart_failed:
                raise TrainingError(f"rollout worker {request.worker}: {cause}") from None
            failed[request.worker] = cause
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.NodeDiedError, ray.exceptions.OwnerDiedError) as err:
            failed[request.worker] = type(err).__name__

    # --- one rollout from the fragments ---------------------------------------------------------

    def _assemble(self, fragments: list[dict]) -> Any:
        from policygrad.types import Rollout

        unpacked = [unpack_arrays(*f["rollout"]) for f in fragments]

        def joined(name: str) -> torch.Tensor | None:
            parts = [f[name] for f in unpacked]
            if parts[0] is None:
                return None
            # A copy (also of one part: what Ray hands back is read-only).
            return torch.from_numpy(np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0].copy())

        rollout = Rollout(**{name: joined(name) for name in ROLLOUT_FIELDS})
        for f in fragments:
            self.episode_returns.extend(f["episode_returns"])
            self.episode_lengths.extend(f["episode_lengths"])
        if len(fragments) == 1:
            self.reward_per_step = fragments[0]["reward_per_step"]
        else:
            valid = sum(f["valid_steps"] for f in fragments)
            self.reward_per_step = sum(f["reward_per_step"] * f["valid_steps"] for f in fragments) / max(1, valid)
        self._merge_statistics(fragments)
        return rollout if self.device.type == "cpu" else rollout.to(self.device)

    def _merge_statistics(self, gains: list[dict]) -> None:
        """Add what each worker's statistics gained (a fragment, a reset), in the order given.
        One synchronous worker's statistics are taken as they are: exactly one collector's."""
        for name, normalizer in (("obs_norm", self.obs_normalizer), ("reward_norm", self.reward_scaler)):
            if normalizer is None:
                continue
            if self.synchronous and self.workers == 1:
                normalizer.rms.set_moments(*gains[-1][name]["end"])
                continue
            for gain in gains:
                mean, var, count = gain[name]["delta"]
                if count > 0:
                    normalizer.rms.update_from_moments(mean, var, count)


def _wait_channels(channels: list, timeout: float) -> list:
    """The sockets of ``channels`` with something to read (a fragment, or the end of a worker)."""
    from multiprocessing.connection import wait

    return wait(channels, timeout) if channels else []


def _kill(ray: Any, actor: Any) -> None:
    """End ``actor`` (if any), quietly: it may be dead already."""
    if actor is None:
        return
    try:
        ray.kill(actor, no_restart=True)
    except Exception:
        pass


def _stats(normalizer: Any) -> tuple | None:
    """The normaliser's ``(mean, var, count)``, or None without one."""
    return None if normalizer is None else normalizer.rms.moments()


def _cause(err: Any) -> str:
    """The one-line error a worker's task raised (a TrainingError's message as it is)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, TrainingError):
        return str(cause)
    if cause is not None:
        return describe_error(cause, first_line=True)
    return describe_error(err, first_line=True)

