"""The training loop that serves every algorithm, and the live objects of a run.

One iteration of :func:`train` is

    rollout = collector.collect()          # [T, N] experience of the current policy
    metrics = algorithm.update(rollout)    # Ψ from policygrad.returns, a surrogate from losses
    log, evaluate, checkpoint

and nothing in it depends on which algorithm it is. :func:`build_session` builds what a
:class:`~policygrad.runconfig.RunSpec` names (environments, policy, algorithm, collector) and
limits the process's compute threads (:mod:`policygrad.threads`); :func:`checkpoint_state`,
:func:`restore_session` and :func:`restore_policy` move a session to and from a checkpoint.
Evaluations (those during training, every ``eval_every`` steps or for the target return, the
final one, ``policygrad eval``) run :func:`policygrad.evaluation.evaluate` with the session's
policy, the deterministic one during training.

Evaluation during training. At the first update at or past each multiple of ``eval_every``
environment steps (or adaptively, for a ``target_return`` without ``eval_every``), the
deterministic policy runs ``eval_episodes`` episodes on the session's own evaluation environments,
reset with the seed :func:`evaluation_seed` derives from (seed, step). The mean return goes to
metrics.csv's ``eval_return`` column (TensorBoard's ``eval/return``); a mean above every earlier
one of the run, resumed invocations included, replaces ``checkpoints/best``, a training checkpoint
whose meta adds ``eval_return`` and ``eval_seed``; then the target return is checked and the
callback's ``on_eval`` called. Evaluating takes nothing from training's generators and
environments: a run trains the same with or without it.

Determinism. Environments are (re)seeded from (seed, step) when a run starts or resumes, and the
torch/NumPy/Python generator states are part of each checkpoint. On the CPU the same seed and
config give the same metrics.csv apart from the wall-clock columns, and resuming one checkpoint
twice gives the same run twice.

Failure. Everything is validated and the environments, policy and algorithm are built before the
run directory is created (:mod:`policygrad.rundir`); a failure during training (non-finite
values, an environment that raises) stops the run with a
:class:`~policygrad.errors.TrainingError`, leaving the last checkpoint as it was.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policygrad.errors import InputError, Interrupted, TrainingError, check_seed, shown
from policygrad.runconfig import RunSpec, derive_seed, read_run_config, seed_everything

if TYPE_CHECKING:
    from policygrad.evaluation import Evaluation

__all__ = [
    "EVAL_COLUMN",
    "METRIC_COLUMNS",
    "WALL_CLOCK_COLUMNS",
    "Session",
    "build_session",
    "policy_module",
    "checkpoint_state",
    "load_run_checkpoint",
    "write_failure",
    "check_fits_run",
    "restore_policy",
    "restore_session",
    "evaluate_session",
    "evaluation_seed",
    "measure_reward_per_step",
    "train",
    "locate_checkpoint",
    "evaluate_run",
    "evaluate_run_steps",
]

EVAL_COLUMN = "eval_return"
"""The metrics.csv column of the evaluations during training."""

METRIC_COLUMNS = (
    "step",
    "wall_time",
    "episode_return_mean",
    "episode_length_mean",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
    "grad_norm",
    "steps_per_second",
    "reward_per_step",
    EVAL_COLUMN,
)
"""Columns of metrics.csv. ``episode_*`` are the raw (unnormalised) returns and lengths of the
episodes that finished during the update's rollout (blank if none did); ``reward_per_step`` is the
raw reward per step of the rollout (the curve of continuing tasks); ``wall_time`` is seconds since
the run started, ``steps_per_second`` the rate of this invocation so far; ``eval_return`` is the
mean raw return of the deterministic policy's evaluation after the update (blank in rows without
one; see ``eval_every``)."""

_EVAL_KEY, _CONFIRM_KEY = 1, 2  # derive_seed keys: the evaluations' seeds, apart from training's

WALL_CLOCK_COLUMNS = ("wall_time", "steps_per_second")
"""The columns that differ between two runs with the same seed and config."""


# --------------------------------------------------------------------------------------------
# The pieces of a run
# --------------------------------------------------------------------------------------------


@dataclass
class Session:
    """The live objects of a run. For evaluation only, ``envs``, ``algorithm``, ``reward_scaler``
    and ``collector`` are None."""

    spec: RunSpec
    envs: Any
    eval_envs: Any
    policy: Any
    encoder: Any
    algorithm: Any
    obs_normalizer: Any
    reward_scaler: Any
    collector: Any
    device: Any
    step: int = 0
    """Environment steps trained so far."""
    wall_time: float = 0.0
    """Seconds of training so far, over all invocations."""
    acting: Any = None
    """An evaluation-only session's acting backend (see :func:`acting_backend`)."""
    acting_policy: Any = None
    """The :class:`policygrad.policies.Policy` of :func:`policy_module`, once built."""
    lock: Any = None
    """The run directory's :class:`policygrad.rundir.RunLock` while this session writes it."""

    def close(self) -> None:
        """Close the environments (and rollout workers) and give up the run directory's lock (if held)."""
        for envs in (self.envs, self.eval_envs):
            if envs is not None:
                _close_envs(envs)
        close = getattr(self.collector, "close", None)
        if close is not None:
            close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _close_envs(envs: Any) -> None:
    """Close a vector environment, at once and quietly when a step failed under way (async
    workers that raised, died or hang are terminated instead of awaited)."""
    import warnings

    from gymnasium.vector import AsyncVectorEnv
    from gymnasium.vector.async_vector_env import AsyncState

    try:
        inner = envs.unwrapped
        broken = isinstance(inner, AsyncVectorEnv) and (
            inner._state != AsyncState.DEFAULT or any(p is None for p in inner.parent_pipes)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if broken:
                inner._state = AsyncState.DEFAULT  # do not wait for the step that failed
                inner.close(terminate=True)
            else:
                envs.close()
    except Exception:
        pass


def _device(name: str | None) -> Any:
    """The torch device ``name`` (default cpu), once a tensor has been written to it and read back:
    a device that holds no data (meta) or cannot be used here is an InputError before anything of
    a run exists."""
    import torch

    def reason(err: Exception) -> str:  # torch's message may echo the name: its first 200 characters
        return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]

    try:
        device = torch.device(name or "cpu")
    except (RuntimeError, TypeError, ValueError) as err:
        raise InputError(f"unknown device {shown(name)} ({reason(err)})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {shown(name)} requested but CUDA is not available")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"device {shown(name)} requested but MPS is not available")
    try:
        torch.ones(1, device=device).cpu()
    except Exception as err:  # meta: NotImplementedError; a missing index or backend: RuntimeError
        raise InputError(f"device {shown(name)} cannot hold the run's tensors ({reason(err)})") from None
    return device


def build_session(spec: RunSpec, device_name: str | None = None, *, training: bool = True,
                  env: Any = None, policy: Any = None, recorder: Any = None) -> Session:
    """Limit the threads, seed, then build the environments, policy, algorithm and collector of ``spec``.

    Args:
        spec: the run.
        device_name: "cpu" (default), "cuda", "cuda:1", ...
        training: False builds only what evaluation needs (evaluation envs, policy, normaliser).
        env: what the environments are built from when ``spec.env`` cannot re-create them (an
            object or factory given in Python; see :func:`policygrad.envs.describe_env`); None:
            ``spec.env``.
        policy: a user's own actor-critic network (:class:`policygrad.policies.ModuleActorCritic`
            states the protocol), for a ``spec`` whose ``policy`` names one; None: the built-in one.
        recorder: evaluation only: a :class:`policygrad.evaluation.VideoRecorder`. The
            evaluation environment is then one copy, stepped in this process, rendering RGB
            frames, wrapped by the recorder and not reset here, so that the recorded episodes are
            those the evaluation runs.

    Raises:
        InputError: an unknown environment, an unsupported space, a bad device, a run of a
            user's network without that network.
    """

    from policygrad.algorithms import make_algorithm
    from policygrad.atari import AtariOptions
    from policygrad.distributed import check_workers
    from policygrad.envs import make_vec_env
    from policygrad.normalize import ObservationNormalizer, RewardScaler
    from policygrad.rollout import RolloutCollector
    from policygrad.runconfig import make_run_policy
    from policygrad.threads import limit_threads

    cfg, tcfg = spec.config, spec.train
    if training:
        check_workers(spec)
    device = _device(device_name)
    limit_threads(tcfg.torch_threads, tcfg.blas_threads)
    seed_everything(spec.seed)
    threads = (tcfg.torch_threads, tcfg.blas_threads)  # of each async worker process
    envs = eval_envs = None
    # Evaluation is occasional: worker processes for it would mostly idle.
    eval_vectorization = "sync" if tcfg.vectorization == "async" else tcfg.vectorization
    atari = AtariOptions.from_train(tcfg)  # None unless atari_preprocessing
    eval_atari = None if atari is None else atari.for_evaluation()  # whole games
    try:
        # Seeding resets the environments once: one that fails there fails before any run
        # directory exists. Training reseeds them from (seed, step).
        source = spec.env if env is None else env
        if recorder is None:
            eval_envs = make_vec_env(
                source, min(tcfg.eval_episodes, 32), spec.seed, time_limit=tcfg.time_limit,
                vectorization=eval_vectorization, worker_threads=threads, env_kwargs=spec.env_kwargs,
                atari=eval_atari,
            )
        else:
            if training:
                raise InputError("a video recorder is for evaluation sessions (training=False)")
            eval_envs = make_vec_env(source, 1, None, time_limit=tcfg.time_limit, vectorization="sync",
                                     env_kwargs=spec.env_kwargs, render_mode="rgb_array", wrappers=[recorder],
                                     atari=eval_atari)
        policy, encoder = make_run_policy(spec, eval_envs, policy)
        if cfg.normalize_obs and getattr(policy, "trunk", None) is not None:
            raise InputError("normalize_obs does not apply to image observations (the network scales pixels "
                             "by 1/255); set normalize_obs = false")
        policy.to(device)
        obs_normalizer = ObservationNormalizer(policy.obs_dim) if cfg.normalize_obs else None
        if not training:
            return Session(spec, None, eval_envs, policy, encoder, None, obs_normalizer, None, None, device)
        total_updates = max(1, math.ceil(tcfg.total_steps / cfg.batch_size))
        algorithm = make_algorithm(spec.algo, policy, cfg, total_updates)
        reward_scaler = RewardScaler(cfg.num_envs, cfg.gamma) if cfg.normalize_reward else None
        if tcfg.workers is not None:  # the environments live in the workers
            from policygrad.distributed import make_worker_collector

            collector = make_worker_collector(spec, algorithm, obs_normalizer, reward_scaler, device)
            return Session(spec, None, eval_envs, policy, encoder, algorithm, obs_normalizer, reward_scaler,
                           collector, device)
        envs = make_vec_env(
            source, cfg.num_envs, spec.seed, time_limit=tcfg.time_limit, vectorization=tcfg.vectorization,
            worker_threads=threads, env_kwargs=spec.env_kwargs, atari=atari,
        )
        collector = RolloutCollector(
            envs,
            policy,
            cfg.num_steps,
            encoder=encoder,
            obs_normalizer=obs_normalizer,
            reward_scaler=reward_scaler,
            clip_reward=tcfg.clip_reward,
            device=device,
            sde_sample_freq=cfg.sde_sample_freq,
            actor=algorithm.backend,
            step_timeout=tcfg.env_step_timeout or None,
        )
    except BaseException:
        for e in (envs, eval_envs):
            if e is not None:
                e.close()
        raise
    return Session(spec, envs, eval_envs, policy, encoder, algorithm, obs_normalizer, reward_scaler, collector, device)


def policy_module(session: Session) -> Any:
    """The session's :class:`policygrad.policies.Policy`: encoding, normaliser and network as one
    module (built once; its normaliser buffers are views of the session's statistics)."""
    if session.acting_policy is None:
        from policygrad.policies import Policy

        session.acting_policy = Policy(session.policy, session.encoder, session.eval_envs.single_action_space,
                                       session.obs_normalizer)
    return session.acting_policy


def checkpoint_state(session: Session) -> tuple[dict, dict]:
    """Tensors and meta of a checkpoint of ``session`` (policy, algorithm, normalisers, RNGs, counters)."""
    from policygrad.checkpoint import module_state, rng_state

    tensors = dict(module_state(session.policy, "policy"))
    algo_tensors, algo_meta = session.algorithm.state()
    tensors.update(algo_tensors)
    rng_tensors, rng_meta = rng_state("rng")
    tensors.update(rng_tensors)
    meta: dict[str, Any] = {
        "kind": "policygrad-run",
        "step": session.step,
        "wall_time": session.wall_time,
        "algo": session.spec.algo,
        "env": session.spec.env,
        "run": session.spec.to_json(),
        "algorithm": algo_meta,
        "rng": rng_meta,
        "obs_norm": None,
        "reward_norm": None,
    }
    if session.obs_normalizer is not None:
        t, m = session.obs_normalizer.state("obs_norm")
        tensors.update(t)
        meta["obs_norm"] = m
    if session.reward_scaler is not None:
        t, m = session.reward_scaler.state("reward_norm")
        tensors.update(t)
        meta["reward_norm"] = m
    ledger = getattr(session.collector, "ledger", None)
    if ledger is not None:
        meta["ledger"] = ledger.state()
    return tensors, meta


_TENSOR_PREFIXES = ("policy.", "algo.", "rng.", "obs_norm.", "reward_norm.")
_MAX_COUNTER = 2**62  # steps, updates: far beyond any run, and safe as int64 (TensorBoard's step)


def load_run_checkpoint(path: Path, run_dir: Path | None = None) -> tuple[dict, dict]:
    """``load_checkpoint`` plus every check of a training checkpoint of this library that needs no
    live objects, so that a checkpoint is used whole or not at all (``policygrad eval`` refuses one
    whose optimiser or generator state is malformed, though it uses neither).

    Checked: ``kind``; ``step`` a whole number >= 0 and ``wall_time`` a finite number >= 0;
    ``algo`` and ``env`` strings; the algorithm's state (its name the checkpoint's ``algo``, an
    ``updates`` count >= 0, a ``backend`` name, the optimiser's state as
    :func:`policygrad.checkpoint.check_optimizer_state` checks it, every number in it finite); the
    generators' states (:func:`policygrad.checkpoint.check_rng_state`); the normalisers'
    statistics (:func:`policygrad.normalize.check_running_stats`); in ``checkpoints/best``,
    ``eval_return`` finite and ``eval_seed`` a 32-bit seed; every tensor under one of the names
    the library writes, of a dtype it writes. What needs the live objects (the policy's shapes and
    finite weights, the optimiser's fit) :func:`restore_policy` and :func:`restore_session` check.

    Args:
        path: the checkpoint directory.
        run_dir: the run directory it belongs to, if any: then ``path`` must resolve to a place
            inside it (a symlink received with the run may not lead elsewhere).

    Raises:
        InputError: one line naming what is wrong.
    """
    from policygrad.checkpoint import FLOAT_DTYPES, check_optimizer_state, check_rng_state, load_checkpoint
    from policygrad.files import check_inside
    from policygrad.normalize import check_running_stats

    path = Path(path)
    if run_dir is not None:
        check_inside(run_dir, path, "checkpoint")
    tensors, meta = load_checkpoint(path)

    def bad(why: str) -> InputError:
        return InputError(f"checkpoint {path} is not a valid policygrad training checkpoint: {why}")

    step = meta.get("step")
    if meta.get("kind") != "policygrad-run" or isinstance(step, bool) or not isinstance(step, int):
        raise InputError(f"checkpoint {path} is not a policygrad training checkpoint")
    if not 0 <= step <= _MAX_COUNTER:
        raise bad(f"step {step} is out of range")
    wall_time = meta.get("wall_time", 0.0)
    if not _is_number(wall_time) or wall_time < 0:
        raise bad(f"wall_time must be a finite number >= 0, got {shown(wall_time)}")
    for key in ("algo", "env"):
        if not isinstance(meta.get(key), str):
            raise bad(f"{key} must be a string, got {shown(meta.get(key))}")
    if "run" in meta and not isinstance(meta["run"], dict):
        raise bad("run must be an object")
    algorithm = meta.get("algorithm")
    if not isinstance(algorithm, dict) or algorithm.get("algorithm") != meta["algo"]:
        raise bad(f"its algorithm state is missing or not of {shown(meta['algo'])}")
    updates = algorithm.get("updates")
    if isinstance(updates, bool) or not isinstance(updates, int) or not 0 <= updates <= _MAX_COUNTER:
        raise bad(f"the algorithm's update counter must be a whole number >= 0, got {shown(updates)}")
    if not isinstance(algorithm.get("backend"), str):
        raise bad("the algorithm state names no backend")
    non_finite = _non_finite(algorithm, "algorithm")
    if non_finite is not None:
        raise bad(f"{non_finite} is not a finite number")
    check_optimizer_state(tensors, algorithm.get("optimizer"), "algo.optim")
    check_rng_state(tensors, meta.get("rng"), "rng")
    for key in ("obs_norm", "reward_norm"):
        if meta.get(key) is not None:
            check_running_stats(tensors, meta[key], key)
    if meta.get("ledger") is not None:
        from policygrad.distributed.ledger import Ledger

        Ledger.from_state(meta["ledger"], 0)
    if "eval_return" in meta and not _is_number(meta["eval_return"]):
        raise bad(f"eval_return must be a finite number, got {shown(meta['eval_return'])}")
    eval_seed = meta.get("eval_seed", 0)
    if isinstance(eval_seed, bool) or not isinstance(eval_seed, int) or not 0 <= eval_seed < 2**32:
        raise bad(f"eval_seed must be a 32-bit seed, got {shown(eval_seed)}")
    for name, value in tensors.items():
        if not name.startswith(_TENSOR_PREFIXES):
            raise bad(f"it holds a tensor {shown(name)} of no part of a run")
        if value.is_complex() or (value.is_floating_point() and value.dtype not in FLOAT_DTYPES):
            raise bad(f"tensor {shown(name)} has dtype {value.dtype}")
    return tensors, meta


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _non_finite(value: Any, where: str) -> str | None:
    """The path of the first float in the JSON ``value`` that is NaN or infinite, or None."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return at
        if isinstance(item, dict):
            stack += [(v, f"{at}.{k}") for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(v, f"{at}[{i}]") for i, v in enumerate(item)]
    return None


def check_fits_run(spec: RunSpec, tensors: dict, meta: dict) -> None:
    """InputError unless the checkpoint ``(tensors, meta)`` can be of the run ``spec`` describes:
    the same algorithm and environment, and, for the built-in network, no more parameters in the
    network ``spec.config.hidden_sizes`` describes than the checkpoint holds (checked before the
    network is built, so that a config.json with hidden_sizes [100000, 100000] does not allocate
    tens of gigabytes to be refused afterwards)."""
    if meta.get("algo") != spec.algo or meta.get("env") != spec.env:
        raise InputError(
            f"checkpoint is of {shown(meta.get('algo'))} on {shown(meta.get('env'))}, the run is "
            f"{shown(spec.algo)} on {shown(spec.env)}"
        )
    if spec.policy is not None:
        return
    sizes = list(spec.config.hidden_sizes)
    # Actor and critic: each at least one input and one output, the hidden layers, their biases.
    least = 2 * (sizes[0] + sum(a * b for a, b in zip(sizes, sizes[1:])) + sum(sizes) + sizes[-1] + 1)
    held = sum(value.numel() for name, value in tensors.items() if name.startswith("policy."))
    if least > held:
        raise InputError(
            f"checkpoint does not fit the run: hidden_sizes {tuple(sizes)} need at least {least} network "
            f"parameters, the checkpoint holds {held}"
        )


def restore_policy(session: Session, tensors: dict, meta: dict) -> None:
    """Load the policy weights and the observation normaliser (what evaluation needs)."""
    from policygrad.checkpoint import load_module_state

    check_fits_run(session.spec, tensors, meta)
    load_module_state(session.policy, tensors, "policy")
    if session.obs_normalizer is not None:
        if not isinstance(meta.get("obs_norm"), dict):
            raise InputError("checkpoint lacks the observation normaliser's statistics")
        session.obs_normalizer.load_state(tensors, meta["obs_norm"], "obs_norm")


def restore_session(session: Session, tensors: dict, meta: dict) -> None:
    """Load everything :func:`checkpoint_state` saved."""
    from policygrad.checkpoint import set_rng_state

    restore_policy(session, tensors, meta)
    session.algorithm.load_state(tensors, meta.get("algorithm"))
    if session.reward_scaler is not None:
        if not isinstance(meta.get("reward_norm"), dict):
            raise InputError("checkpoint lacks the reward scaler's statistics")
        session.reward_scaler.load_state(tensors, meta["reward_norm"], "reward_norm")
    if not isinstance(meta.get("rng"), dict):
        raise InputError("checkpoint lacks the random-generator state")
    set_rng_state(tensors, meta["rng"], "rng")
    load_ledger = getattr(session.collector, "load_ledger", None)
    if load_ledger is not None and meta.get("ledger") is not None:
        load_ledger(meta["ledger"])
    session.step = int(meta["step"])
    session.wall_time = float(meta.get("wall_time", 0.0))  # checked by load_run_checkpoint


def evaluate_session(
    session: Session,
    episodes: int,
    *,
    deterministic: bool = True,
    seed: int | None = None,
    stats: dict[str, Any] | None = None,
) -> list[float]:
    """Raw returns of ``episodes`` evaluation episodes of the session's policy.

    The observation normaliser is applied as it stands and not updated. The default seed is
    fixed per run, so evaluations during a run differ only by the policy. ``stats`` receives the
    evaluation's environment steps under ``"steps"``.
    """
    result = _evaluate(session, deterministic, seed, episodes=episodes,
                       max_episode_steps=session.spec.train.eval_max_episode_steps)
    if stats is not None:
        stats["steps"] = result.env_steps
    return result.returns


def evaluation_seed(seed: int, step: int) -> int:
    """The reset seed of the evaluation during training at ``step`` of a run seeded ``seed``:
    fresh starts at each evaluation, the same ones when a resumed run evaluates that step again."""
    return derive_seed(seed, _EVAL_KEY, step)


def measure_reward_per_step(
    session: Session, steps: int, *, deterministic: bool = False, seed: int | None = None
) -> tuple[float, int]:
    """Raw reward per step of the session's policy over ``steps`` environment steps.

    The evaluation environments (N copies) each take ⌈steps / N⌉ steps from a seeded reset,
    auto-resetting through any episode end; the rewards of all valid steps (not the dummy steps of
    a next-step auto-reset) are summed and divided by their number. The observation normaliser is
    applied as it stands, not updated.

    Returns:
        ``(reward per step, steps counted)``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"--steps must be a positive number of environment steps, got {shown(steps)}")
    result = _evaluate(session, deterministic, seed, steps=steps)
    return result.reward_per_step, result.steps


def acting_backend(session: Session) -> Any:
    """The backend the session acts through: its algorithm's, or (an evaluation-only session) one
    built once for acting, chosen as ``backend=auto`` would."""
    if session.algorithm is not None:
        return session.algorithm.backend
    if session.acting is None:
        from policygrad.backends import make_backend, resolve_backend

        name, reason = resolve_backend("auto", session.policy)
        session.acting = make_backend(name, session.policy, reason=reason)
    return session.acting


def _evaluate(session: Session, deterministic: bool, seed: int | None, **how: Any) -> Evaluation:
    """:func:`policygrad.evaluation.evaluate` of the session's policy on its evaluation envs; the
    default seed is the run's evaluation seed."""
    import torch

    from policygrad.evaluation import ArrayActor, evaluate

    seed = derive_seed(session.spec.seed, _EVAL_KEY) if seed is None else check_seed(seed)
    generator = None if deterministic else torch.Generator(device=session.device).manual_seed(seed)
    # On the CPU, act through the backend (the training forward; the NumPy one where it serves);
    # elsewhere through the policy's torch modules.
    actor: Any = session.policy
    if session.device.type == "cpu":
        backend = acting_backend(session)
        backend.prepare()
        actor = ArrayActor(backend)
    return evaluate(
        actor,
        session.eval_envs,
        encoder=session.encoder,
        obs_normalizer=session.obs_normalizer,
        deterministic=deterministic,
        seed=seed,
        generator=generator,
        device=session.device,
        step_timeout=session.spec.train.env_step_timeout or None,
        **how,
    )


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _is_function(callback: Any) -> bool:
    """A plain callable (called after every update), not a callback object with ``on_*`` methods."""
    return callable(callback) and not any(hasattr(callback, name) for name in ("on_rollout_end", "on_update", "on_eval"))


class StopSignals:
    """While active, SIGINT and SIGTERM ask the training loop to stop at its next safe point
    instead of killing it: the collector stops before its next step, an update under way
    finishes, a checkpoint is written. A second signal stops at once (:class:`Interrupted`),
    leaving the previous checkpoint as it was. Only the main thread can receive signals; elsewhere
    this does nothing.

    Attributes:
        signum: the first signal received, or None.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._receive)
        return self

    def _receive(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


def _best_return(run_dir: Path) -> float | None:
    """The ``eval_return`` of ``run_dir``'s ``checkpoints/best``; None if there is none that loads
    (the next evaluation then writes one)."""
    from policygrad.checkpoint import best_checkpoint_path

    path = best_checkpoint_path(run_dir)
    if not path.is_dir():
        return None
    try:
        _, meta = load_run_checkpoint(path, run_dir)
    except InputError:
        return None
    score = meta.get("eval_return")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        return None
    return float(score)


def train(session: Session, run_dir: Path, *, resumed: bool = False, quiet: bool = False,
          callback: Any = None) -> dict[str, Any]:
    """Run the loop until ``total_steps`` (or the target return), logging and checkpointing.

    ``callback``, if given, is a function called after every update with the metrics row just
    logged (a dict), or an object with any of ``on_rollout_end(step)`` (after a rollout, before
    its update), ``on_update(row)`` (after the update is logged) and ``on_eval(step, returns)``
    (after each evaluation during training, with its episodes' returns, once
    ``checkpoints/best`` is up to date). Any of them returning ``False`` stops the run there; a
    checkpoint is saved, as at the end.

    SIGINT and SIGTERM stop the loop at its next safe point (:class:`StopSignals`): a
    checkpoint of the last complete update is written, and the summary's ``interrupted`` names the
    signal; a second signal raises :class:`~policygrad.errors.Interrupted` at once.

    Returns:
        A summary: ``step``, ``seconds``, ``stopped_early``, ``eval_returns`` (of the final
        policy; empty after a signal), ``eval_deterministic`` (how it chose its actions),
        ``interrupted`` (the signal's number, or
        None).

    Raises:
        InputError: setting up the logs failed (nothing was trained).
        TrainingError: non-finite values, an environment that raised, a write that failed (a
            full disk: the message names the path and the newest intact checkpoint); the last
            checkpoint is left as it was.
    """
    from policygrad.checkpoint import (
        best_checkpoint_path,
        checkpoint_path,
        save_checkpoint,
    )
    from policygrad.logging import MetricsLogger, ProgressBar
    from policygrad.rollout import CollectionStopped

    spec, tcfg = session.spec, session.spec.train
    continuing = spec.config.criterion == "average"
    on_rollout_end = getattr(callback, "on_rollout_end", None)
    on_update = getattr(callback, "on_update", None) if callback is not None and not _is_function(callback) else callback
    on_eval = getattr(callback, "on_eval", None)
    total = tcfg.total_steps
    checkpoint_every = tcfg.checkpoint_every or max(1, math.ceil(total / 5))
    start_step = session.step
    collector, algorithm = session.collector, session.algorithm
    try:
        logger = MetricsLogger(
            run_dir, METRIC_COLUMNS, tensorboard=tcfg.tensorboard, resume=resumed,
            resume_step=start_step if resumed else None, continuing=continuing,
            tensorboard_every=tcfg.tensorboard_every,
        )
    except OSError as err:
        raise InputError(f"cannot write to {run_dir}: {err}") from None

    saved = False

    def save(kept: bool) -> None:
        nonlocal saved
        saved = True
        tensors, meta = checkpoint_state(session)
        if kept:
            save_checkpoint(checkpoint_path(run_dir, session.step), tensors, meta)
        save_checkpoint(checkpoint_path(run_dir), tensors, meta)

    def save_best(score: float, seed: int) -> None:
        tensors, meta = checkpoint_state(session)
        save_checkpoint(best_checkpoint_path(run_dir), tensors, {**meta, "eval_return": score, "eval_seed": seed})

    bar = ProgressBar(total, initial=min(start_step, total), enabled=not quiet)
    if not quiet:
        backend = algorithm.backend
        bar.write(f"backend: {backend.name} ({backend.reason})")
    evaluating = tcfg.eval_every is not None or tcfg.target_return is not None
    # A schedule of the step alone, which a resumed run keeps; adaptive: after the first update.
    next_eval = _next_multiple(start_step, tcfg.eval_every) if tcfg.eval_every else start_step + 1
    best_return = _best_return(run_dir) if resumed else None
    next_checkpoint = _next_multiple(start_step, checkpoint_every)
    stopped_early = False
    t0 = time.perf_counter()
    wall0 = session.wall_time
    signals = StopSignals()
    try:
        signals.__enter__()
        collector.stop = signals
        collector.reset(seed=derive_seed(spec.seed, start_step))
        collector.steps = start_step
        while session.step < total and signals.signum is None:
            try:
                rollout = collector.collect()
            except CollectionStopped:
                break
            if on_rollout_end is not None and on_rollout_end(collector.steps) is False:
                stopped_early = True
                break
            try:
                metrics = algorithm.update(rollout)
            except TrainingError as err:
                raise TrainingError(f"{err} (after environment step {collector.steps})") from None
            previous, session.step = session.step, collector.steps
            elapsed = time.perf_counter() - t0
            session.wall_time = wall0 + elapsed
            returns, lengths = collector.pop_episodes()
            row: dict[str, Any] = {
                "step": session.step,
                "wall_time": session.wall_time,
                "episode_return_mean": _mean(returns),
                "episode_length_mean": _mean(lengths),
                "steps_per_second": (session.step - start_step) / max(elapsed, 1e-9),
                "reward_per_step": _finite_or_none(collector.reward_per_step),
                EVAL_COLUMN: None,
            }
            for key in METRIC_COLUMNS:
                if key not in row:
                    row[key] = _finite_or_none(metrics.get(key, math.nan))
            evaluation: list[float] | None = None
            if evaluating and session.step >= next_eval:
                stats: dict[str, Any] = {}
                eval_seed = evaluation_seed(spec.seed, session.step)
                evaluation = evaluate_session(session, tcfg.eval_episodes, seed=eval_seed, stats=stats,
                                              deterministic=tcfg.eval_deterministic)
                row[EVAL_COLUMN] = score = float(np.mean(evaluation))
                next_eval = (_next_multiple(session.step, tcfg.eval_every) if tcfg.eval_every
                             else session.step + stats["steps"])
            logger.log(row)
            rate = row["reward_per_step"] if continuing else None  # the learning signal of a continuing task only
            bar.update(session.step - previous, row["episode_return_mean"],
                       None if rate is None else {"reward/step": rate})
            if evaluation is not None:
                improved = best_return is None or score > best_return
                if improved:
                    save_best(score, eval_seed)
                    best_return = score
                target = "" if tcfg.target_return is None else f", target {tcfg.target_return:g}"
                bar.write(f"step {session.step}: evaluation return {score:.2f} "
                          f"({'new best' if improved else f'best {best_return:.2f}'}{target})")
                if on_eval is not None and on_eval(session.step, list(evaluation)) is False:
                    stopped_early = True
                    break
                if tcfg.target_return is not None and score >= tcfg.target_return:
                    # Confirmed on as many other episodes, so that one lucky set of starts does
                    # not end the run (evaluations are frequent).
                    other = evaluate_session(session, tcfg.eval_episodes, deterministic=tcfg.eval_deterministic,
                                             seed=derive_seed(spec.seed, _CONFIRM_KEY, session.step))
                    if float(np.mean(other)) >= tcfg.target_return:
                        stopped_early = True
                        break
            if on_update is not None and on_update(row) is False:
                stopped_early = True
                break
            if session.step >= next_checkpoint and session.step < total and signals.signum is None:
                next_checkpoint = _next_multiple(session.step, checkpoint_every)
                save(kept=True)
        save(kept=False)
        # After a signal, the checkpoint is what matters: no final evaluation.
        eval_returns = (evaluate_session(session, tcfg.eval_episodes, deterministic=tcfg.eval_deterministic)
                        if signals.signum is None else [])
    except InputError as err:  # raised by something the environment produced (e.g. an action mask)
        if not resumed and not saved:
            # Nothing of this run exists yet (e.g. criterion='average' on an episodic task, seen
            # at its first termination): bad input, so the caller removes the run directory.
            raise
        raise TrainingError(f"training stopped at step {session.step}: {err}") from None
    except OSError as err:  # a full disk, a vanished directory: one line, and where to go on from
        raise TrainingError(write_failure(run_dir, err)) from None
    finally:
        collector.stop = None
        signals.__exit__()
        bar.close()
        try:
            logger.close()
        except OSError:
            pass
    summary = {
        "step": session.step,
        "seconds": time.perf_counter() - t0,
        "stopped_early": stopped_early or signals.signum is not None,
        "eval_returns": eval_returns,
        "eval_deterministic": tcfg.eval_deterministic,
        "interrupted": signals.signum,
    }
    ledger = getattr(collector, "ledger", None)
    if ledger is not None:  # rollout workers: what was accepted, and the workers replaced
        summary["ledger"] = ledger.state()
        summary["recoveries"] = list(collector.recoveries)
        summary["transport"] = collector.transports()
    return summary


def write_failure(run_dir: Path, err: OSError) -> str:
    """``cannot write <path>: <cause>; the newest intact checkpoint is <path> (step N)``."""
    from policygrad.checkpoint import latest_checkpoint
    from policygrad.files import read_json

    where = err.filename or run_dir
    cause = err.strerror or str(err)
    try:
        newest = latest_checkpoint(run_dir)
        step = read_json(newest / "meta.json", "checkpoint")["meta"]["step"] if newest else None
    except (OSError, ValueError, KeyError, TypeError):  # InputError is a ValueError
        newest, step = None, None
    kept = f"the newest intact checkpoint is {newest} (step {step})" if newest is not None else "no checkpoint was written"
    return f"cannot write {where}: {cause}; {kept}"


# --------------------------------------------------------------------------------------------
# Evaluating a saved run
# --------------------------------------------------------------------------------------------


def locate_checkpoint(path: str | os.PathLike) -> tuple[Path, Path]:
    """The run directory ``path`` is or lies in, and the checkpoint ``path`` names: the checkpoint
    directory it is or lies in (``RUN/checkpoints/best``, ``RUN/checkpoints/step_N/meta.json``),
    else the run's latest (``checkpoints/last``).

    Raises:
        InputError: ``path`` is missing, has no config.json in it or above it, or names no
            checkpoint (a path under the run's ``checkpoints/`` that holds none, a run without one).
    """
    from policygrad.checkpoint import is_checkpoint, latest_checkpoint
    from policygrad.runconfig import CONFIG_FILE

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    checkpoint: Path | None = None
    for run_dir in (path, *path.parents[:3]):  # RUN/checkpoints/best/meta.json lies 3 below RUN
        if os.path.lexists(run_dir / CONFIG_FILE):  # whatever it is: read_run_config says what is wrong
            break
        if checkpoint is None and is_checkpoint(run_dir):
            checkpoint = run_dir
    else:
        raise InputError(f"{path} is not a policygrad run directory (no {CONFIG_FILE} in it or above it)")
    if checkpoint is None:
        if (run_dir / "checkpoints") in path.parents:
            raise InputError(f"{path} is not a checkpoint (no meta.json in it or above it)")
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise InputError(f"{run_dir} has no checkpoint")
    return run_dir, checkpoint


def _open_run(path: Path, copies: int, recorder: Any = None, env: str | None = None, trust: bool = False) -> Session:
    """An evaluation session (``copies`` environment copies, at most 32; one with a ``recorder``,
    see :func:`build_session`) with the policy and the frozen observation normaliser of the
    checkpoint ``path`` names (:func:`locate_checkpoint`). ``env`` replaces the recorded
    environment; a recorded one that imports a module needs ``env`` or ``trust``
    (:func:`policygrad.runconfig.guard_run_code`)."""
    from policygrad.runconfig import check_run_code

    run_dir, checkpoint = locate_checkpoint(path)
    spec = read_run_config(run_dir)
    check_run_code(spec, env, trust)
    tensors, meta = load_run_checkpoint(checkpoint, run_dir)
    check_fits_run(spec, tensors, meta)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, eval_episodes=copies))
    session = build_session(spec, "cpu", training=False, recorder=recorder, env=env)
    try:
        restore_policy(session, tensors, meta)
    except BaseException:
        session.close()
        raise
    if session.obs_normalizer is not None:
        session.obs_normalizer.frozen = True
    return session


def evaluate_run(path: str | os.PathLike, episodes: int = 20, *, deterministic: bool = False,
                 seed: int | None = None, video: str | os.PathLike | None = None, env: str | None = None,
                 trust: bool = False) -> list[float]:
    """Raw returns of ``episodes`` episodes of the policy in a run directory's last checkpoint, or
    in the checkpoint of a run that ``path`` names (``RUN/checkpoints/best``; see
    :func:`locate_checkpoint`).

    With ``video`` (a folder), every episode is also recorded there as ``eval-episode-<i>.mp4``
    (:class:`policygrad.evaluation.VideoRecorder`; needs moviepy). The episodes then run one after
    another on one environment copy, where without video they run side by side on up to 32, so
    the same seed gives other episodes.
    """
    from policygrad.evaluation import VideoRecorder

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise InputError(f"--episodes must be a positive int, got {shown(episodes)}")
    if seed is not None:
        check_seed(seed, "--seed")
    recorder = VideoRecorder(video, episodes) if video is not None else None
    session = _open_run(Path(path), episodes, recorder, env=env, trust=trust)
    try:
        return evaluate_session(session, episodes, deterministic=deterministic, seed=seed)
    finally:
        session.close()


def evaluate_run_steps(
    path: str | os.PathLike, steps: int, copies: int = 1, *, deterministic: bool = False,
    seed: int | None = None, env: str | None = None, trust: bool = False,
) -> tuple[float, int]:
    """:func:`measure_reward_per_step` of the policy in the checkpoint ``path`` names (as for
    :func:`evaluate_run`), over ``copies`` (at most 32) environment copies that each take
    ⌈steps / copies⌉ steps."""
    if seed is not None:
        check_seed(seed, "--seed")
    session = _open_run(Path(path), copies, env=env, trust=trust)
    try:
        return measure_reward_per_step(session, steps, deterministic=deterministic, seed=seed)
    finally:
        session.close()
