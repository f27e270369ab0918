"""The training loop that serves every algorithm, and the live objects of a run.

One iteration of :func:`train` is

    rollout = collector.collect()          # [T, N] experience of the current policy
    metrics = algorithm.update(rollout)    # Ψ from policygrad.returns, a surrogate from losses
    log, evaluate, checkpoint

and nothing in it depends on which algorithm it is. :func:`build_session` builds what a
:class:`~policygrad.runconfig.RunSpec` names (environments, policy, algorithm, collector) and
limits the process's compute threads (:mod:`policygrad.threads`); :func:`checkpoint_state`,
:func:`restore_session` and :func:`restore_policy` move a session to and from a checkpoint.
Evaluations (the target-return checks, the final one, ``policygrad eval``) run
:func:`policygrad.evaluation.evaluate` with the session's policy.

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

from policygrad.errors import InputError, TrainingError, check_seed, shown
from policygrad.runconfig import RunSpec, derive_seed, read_run_config, seed_everything

if TYPE_CHECKING:
    from policygrad.evaluation import Evaluation

__all__ = [
    "METRIC_COLUMNS",
    "WALL_CLOCK_COLUMNS",
    "Session",
    "build_session",
    "policy_module",
    "checkpoint_state",
    "load_run_checkpoint",
    "restore_policy",
    "restore_session",
    "evaluate_session",
    "measure_reward_per_step",
    "train",
    "evaluate_run",
    "evaluate_run_steps",
]

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
)
"""Columns of metrics.csv. ``episode_*`` are the raw (unnormalised) returns and lengths of the
episodes that finished during the update's rollout (blank if none did); ``reward_per_step`` is the
raw reward per step of the rollout (the curve of continuing tasks); ``wall_time`` is seconds since
the run started, ``steps_per_second`` the rate of this invocation so far."""

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

    def close(self) -> None:
        for envs in (self.envs, self.eval_envs):
            if envs is not None:
                try:
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
                  env: Any = None, policy: Any = None) -> Session:
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

    Raises:
        InputError: an unknown environment, an unsupported space, a bad device, a run of a
            user's network without that network.
    """

    from policygrad.algorithms import make_algorithm
    from policygrad.envs import make_vec_env
    from policygrad.normalize import ObservationNormalizer, RewardScaler
    from policygrad.rollout import RolloutCollector
    from policygrad.threads import limit_threads

    cfg, tcfg = spec.config, spec.train
    device = _device(device_name)
    limit_threads(tcfg.torch_threads, tcfg.blas_threads)
    seed_everything(spec.seed)
    threads = (tcfg.torch_threads, tcfg.blas_threads)  # of each async worker process
    envs = eval_envs = None
    # Evaluation is occasional: worker processes for it would mostly idle.
    eval_vectorization = "sync" if tcfg.vectorization == "async" else tcfg.vectorization
    try:
        # Seeding resets the environments once: one that fails there fails before any run
        # directory exists. Training reseeds them from (seed, step).
        source = spec.env if env is None else env
        eval_envs = make_vec_env(
            source, min(tcfg.eval_episodes, 32), spec.seed, time_limit=tcfg.time_limit,
            vectorization=eval_vectorization, worker_threads=threads, env_kwargs=spec.env_kwargs,
        )
        policy, encoder = _make_policy(spec, eval_envs, policy)
        policy.to(device)
        obs_normalizer = ObservationNormalizer(policy.obs_dim) if cfg.normalize_obs else None
        if not training:
            return Session(spec, None, eval_envs, policy, encoder, None, obs_normalizer, None, None, device)
        envs = make_vec_env(
            source, cfg.num_envs, spec.seed, time_limit=tcfg.time_limit, vectorization=tcfg.vectorization,
            worker_threads=threads, env_kwargs=spec.env_kwargs,
        )
        total_updates = max(1, math.ceil(tcfg.total_steps / cfg.batch_size))
        algorithm = make_algorithm(spec.algo, policy, cfg, total_updates)
        reward_scaler = RewardScaler(cfg.num_envs, cfg.gamma) if cfg.normalize_reward else None
        collector = RolloutCollector(
            envs,
            policy,
            cfg.num_steps,
            encoder=encoder,
            obs_normalizer=obs_normalizer,
            reward_scaler=reward_scaler,
            device=device,
            sde_sample_freq=cfg.sde_sample_freq,
            actor=algorithm.backend,
        )
    except BaseException:
        for e in (envs, eval_envs):
            if e is not None:
                e.close()
        raise
    return Session(spec, envs, eval_envs, policy, encoder, algorithm, obs_normalizer, reward_scaler, collector, device)


def _make_policy(spec: RunSpec, envs: Any, module: Any) -> tuple[Any, Any]:
    """The network and the observation encoder: the built-in actor-critic of ``spec.config``, or
    the user's ``module`` adapted to what the algorithms call."""
    from policygrad.policies import ModuleActorCritic, make_encoder
    from policygrad.rollout import make_policy

    cfg = spec.config
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    if spec.policy is None:
        if module is not None:
            raise InputError("this run trains the built-in actor-critic; it takes no policy module")
        return make_policy(obs_space, action_space, cfg.hidden_sizes, cfg.activation,
                           use_sde=cfg.use_sde, log_std_init=cfg.log_std_init)
    if module is None:
        raise InputError(
            f"this run trained its own network ({spec.policy}), which a run directory does not re-create; "
            "load it from Python, passing the network: policygrad.load(run_dir, policy=...)"
        )
    if cfg.use_sde:
        raise InputError("use_sde needs the built-in Gaussian actor; a custom policy brings its own distribution")
    encoder = make_encoder(obs_space)
    if isinstance(module, ModuleActorCritic):
        return module, encoder
    return ModuleActorCritic(module, encoder.obs_dim, action_space), encoder


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
    return tensors, meta


def load_run_checkpoint(path: Path) -> tuple[dict, dict]:
    """``load_checkpoint`` plus a check that it is a training checkpoint of this library."""
    from policygrad.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(path)
    step = meta.get("step")
    if meta.get("kind") != "policygrad-run" or isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(f"checkpoint {path} is not a policygrad training checkpoint")
    return tensors, meta


def restore_policy(session: Session, tensors: dict, meta: dict) -> None:
    """Load the policy weights and the observation normaliser (what evaluation needs)."""
    from policygrad.checkpoint import load_module_state

    if meta.get("algo") != session.spec.algo or meta.get("env") != session.spec.env:
        raise InputError(
            f"checkpoint is of {shown(meta.get('algo'))} on {shown(meta.get('env'))}, the run is "
            f"{shown(session.spec.algo)} on {shown(session.spec.env)}"
        )
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
    wall_time = meta.get("wall_time", 0.0)
    session.step = int(meta["step"])
    session.wall_time = float(wall_time) if isinstance(wall_time, (int, float)) else 0.0


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

    seed = derive_seed(session.spec.seed, 1) if seed is None else check_seed(seed)
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


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


def train(session: Session, run_dir: Path, *, resumed: bool = False, quiet: bool = False,
          callback: Any = None) -> dict[str, Any]:
    """Run the loop until ``total_steps`` (or the target return), logging and checkpointing.

    ``callback``, if given, is a function called after every update with the metrics row just
    logged (a dict), or an object with any of ``on_rollout_end(step)`` (after a rollout, before
    its update), ``on_update(row)`` (after the update is logged) and ``on_eval(step, returns)``
    (after an evaluation of the target-return check). Any of them returning ``False`` stops the
    run there; a checkpoint is saved, as at the end.

    Returns:
        A summary: ``step``, ``seconds``, ``stopped_early``, ``eval_returns`` (of the final
        policy, deterministic).

    Raises:
        InputError: setting up the logs failed (nothing was trained).
        TrainingError: non-finite values or an environment that raised; the last checkpoint
            is left as it was.
    """
    from policygrad.checkpoint import checkpoint_path, save_checkpoint
    from policygrad.logging import MetricsLogger, ProgressBar

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

    bar = ProgressBar(total, initial=min(start_step, total), enabled=not quiet)
    if not quiet:
        backend = algorithm.backend
        bar.write(f"backend: {backend.name} ({backend.reason})")
    next_eval = start_step + (tcfg.eval_every or 1)  # adaptive: after the first update
    eval_returns: list[float] | None = None
    next_checkpoint = _next_multiple(start_step, checkpoint_every)
    stopped_early = False
    t0 = time.perf_counter()
    wall0 = session.wall_time
    try:
        collector.reset(seed=derive_seed(spec.seed, start_step))
        collector.steps = start_step
        while session.step < total:
            rollout = collector.collect()
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
            }
            for key in METRIC_COLUMNS:
                if key not in row:
                    row[key] = _finite_or_none(metrics.get(key, math.nan))
            logger.log(row)
            rate = row["reward_per_step"] if continuing else None  # the learning signal of a continuing task only
            bar.update(session.step - previous, row["episode_return_mean"],
                       None if rate is None else {"reward/step": rate})
            if tcfg.target_return is not None and session.step >= next_eval:
                stats: dict[str, Any] = {}
                returns = evaluate_session(session, tcfg.eval_episodes, stats=stats)
                score = float(np.mean(returns))
                bar.write(f"step {session.step}: evaluation return {score:.2f} (target {tcfg.target_return:g})")
                if on_eval is not None and on_eval(session.step, list(returns)) is False:
                    stopped_early = True
                    break
                if score >= tcfg.target_return:
                    # Confirmed on as many other episodes, so that one lucky set of starts does
                    # not end the run (evaluations are frequent).
                    other = evaluate_session(session, tcfg.eval_episodes, seed=derive_seed(spec.seed, 2), stats=stats)
                    if float(np.mean(other)) >= tcfg.target_return:
                        stopped_early = True
                        eval_returns = returns  # the final evaluation's seed and policy: the same returns
                        break
                next_eval = session.step + (tcfg.eval_every or stats["steps"])
            if on_update is not None and on_update(row) is False:
                stopped_early = True
                break
            if session.step >= next_checkpoint and session.step < total:
                next_checkpoint = _next_multiple(session.step, checkpoint_every)
                save(kept=True)
        save(kept=False)
        if eval_returns is None:
            eval_returns = evaluate_session(session, tcfg.eval_episodes)
    except InputError as err:  # raised by something the environment produced (e.g. an action mask)
        if not resumed and not saved:
            # Nothing of this run exists yet (e.g. criterion='average' on an episodic task, seen
            # at its first termination): bad input, so the caller removes the run directory.
            raise
        raise TrainingError(f"training stopped at step {session.step}: {err}") from None
    finally:
        bar.close()
        logger.close()
    return {
        "step": session.step,
        "seconds": time.perf_counter() - t0,
        "stopped_early": stopped_early,
        "eval_returns": eval_returns,
    }


# --------------------------------------------------------------------------------------------
# Evaluating a saved run
# --------------------------------------------------------------------------------------------


def _open_run(run_dir: Path, copies: int) -> Session:
    """An evaluation session (``copies`` environment copies, at most 32) with the policy and the
    frozen observation normaliser of ``run_dir``'s last checkpoint."""
    from policygrad.checkpoint import latest_checkpoint

    spec = read_run_config(run_dir)
    path = latest_checkpoint(run_dir)
    if path is None:
        raise InputError(f"{run_dir} has no checkpoint")
    tensors, meta = load_run_checkpoint(path)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, eval_episodes=copies))
    session = build_session(spec, "cpu", training=False)
    try:
        restore_policy(session, tensors, meta)
    except BaseException:
        session.close()
        raise
    if session.obs_normalizer is not None:
        session.obs_normalizer.frozen = True
    return session


def evaluate_run(run_dir: str | os.PathLike, episodes: int = 20, *, deterministic: bool = False, seed: int | None = None) -> list[float]:
    """Raw returns of ``episodes`` episodes of the policy in ``run_dir``'s last checkpoint."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise InputError(f"--episodes must be a positive int, got {shown(episodes)}")
    if seed is not None:
        check_seed(seed, "--seed")
    session = _open_run(Path(run_dir), episodes)
    try:
        return evaluate_session(session, episodes, deterministic=deterministic, seed=seed)
    finally:
        session.close()


def evaluate_run_steps(
    run_dir: str | os.PathLike, steps: int, copies: int = 1, *, deterministic: bool = False,
    seed: int | None = None,
) -> tuple[float, int]:
    """:func:`measure_reward_per_step` of the policy in ``run_dir``'s last checkpoint, over
    ``copies`` (at most 32) environment copies that each take ⌈steps / copies⌉ steps."""
    if seed is not None:
        check_seed(seed, "--seed")
    session = _open_run(Path(run_dir), copies)
    try:
        return measure_reward_per_step(session, steps, deterministic=deterministic, seed=seed)
    finally:
        session.close()
