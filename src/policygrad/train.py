"""The training loop that serves every algorithm, and ``policygrad train`` / ``policygrad eval``.

One iteration of :func:`train` is

    rollout = collector.collect()          # [T, N] experience of the current policy
    metrics = algorithm.update(rollout)    # Ψ from policygrad.returns, a surrogate from losses
    log, evaluate, checkpoint

and nothing in it depends on which algorithm it is.

A run directory holds::

    config.json          algo, env, seed, the fully resolved hyperparameters, library versions
    metrics.csv          one row per update (see METRIC_COLUMNS)
    tb/                  the same values as TensorBoard scalars
    checkpoints/last/    the latest checkpoint (rewritten at every save)
    checkpoints/step_N/  periodic checkpoints, kept
    learning_curve.png   episode return against environment steps

Hyperparameters come from, in increasing precedence: the preset of (algo, env)
(``policygrad.algorithms.get_preset``), a TOML file (``--config``), ``--set key=value`` and the
explicit flags (``--seed``, ``--steps``, ``--target-return``). Keys are the algorithm's config
fields plus those of :class:`TrainConfig`.

Determinism. Every generator is seeded from the run's seed; environments are (re)seeded from
(seed, step) when a run starts or resumes, and the torch/NumPy/Python generator states are part of
each checkpoint. On the CPU the same seed and config give the same metrics.csv apart from the
wall-clock columns, and resuming one checkpoint twice gives the same run twice.

Failure. Everything is validated and the environments, policy and algorithm are built before the
run directory is created; if setting it up fails, what this invocation created is removed. A
failure during training (non-finite values, an environment that raises) stops the run with a
:class:`~policygrad.errors.TrainingError`, leaving the last checkpoint as it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np

from policygrad import __version__
from policygrad.errors import InputError, PolicygradError, TrainingError

__all__ = [
    "METRIC_COLUMNS",
    "TrainConfig",
    "RunSpec",
    "resolve_run",
    "train",
    "evaluate_run",
    "main_train",
    "main_eval",
    "derive_seed",
    "measure_reward_per_step",
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

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the training loop (algorithm-independent); keys for --set and --config like
    the algorithm's."""

    total_steps: int = 100_000
    """Environment steps to train for (N per vector step; rounded up to whole rollouts)."""
    target_return: float | None = None
    """Stop once the deterministic policy's mean evaluation return reaches this, on eval_episodes
    episodes and then on as many others (None: never)."""
    eval_every: int | None = None
    """Environment steps between evaluations when target_return is set (rounded up to whole rollouts);
    None: adaptive, as many environment steps as the last evaluation took (at least one rollout), so
    that evaluating costs a small share of the run and a reached target is noticed soon."""
    eval_episodes: int = 10
    """Episodes per evaluation (also of the final one)."""
    eval_max_episode_steps: int = 10_000
    """An evaluation episode ends after this many steps at the latest (continuing tasks are
    evaluated over windows of this length)."""
    checkpoint_every: int | None = None
    """Environment steps between kept checkpoints (checkpoints/step_N); None: a fifth of the run."""
    time_limit: int | None = None
    """Truncate episodes after this many steps, replacing the registered limit (None: keep it; 0: no
    limit, a continuing run whose episodes end only by termination)."""
    vectorization: Literal["auto", "sync", "async", "vector"] = "auto"
    """How the environment copies are stepped: auto, sync, async or vector (see policygrad.envs)."""
    torch_threads: int = 1
    """CPU threads of torch (1 is fastest for small networks and leaves cores to the environments)."""
    tensorboard: bool = True
    """Also write the metrics as TensorBoard scalars under tb/."""

    def __post_init__(self) -> None:
        from policygrad.algorithms.config import check_types  # the algorithms' type checks

        check_types(self)
        for name in ("total_steps", "eval_episodes", "eval_max_episode_steps", "torch_threads"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.eval_every is not None and not self.eval_every > 0:
            raise InputError(f"eval_every must be > 0 or None, got {self.eval_every}")
        if self.checkpoint_every is not None and not self.checkpoint_every > 0:
            raise InputError(f"checkpoint_every must be > 0 or None, got {self.checkpoint_every}")
        if self.time_limit is not None and not self.time_limit >= 0:
            raise InputError(f"time_limit must be > 0, 0 (no limit) or None, got {self.time_limit}")
        if self.target_return is not None and not math.isfinite(self.target_return):
            raise InputError(f"target_return must be a finite number, got {self.target_return}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run: what config.json holds."""

    algo: str
    env: str
    seed: int
    config: Any
    """The algorithm's frozen config (policygrad.algorithms)."""
    train: TrainConfig

    def to_json(self) -> dict[str, Any]:
        return {
            "algo": self.algo,
            "env": self.env,
            "seed": self.seed,
            "config": self.config.to_dict(),
            "train": self.train.to_dict(),
            "versions": library_versions(),
        }


def library_versions() -> dict[str, str]:
    import gymnasium
    import torch

    return {
        "policygrad": __version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def derive_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed determined by ``seed`` and ``keys`` (e.g. the step a run resumes from)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, *keys]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Resolving hyperparameters
# --------------------------------------------------------------------------------------------


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict; values are TOML literals (``[64, 64]``, ``true``, ``3e-4``),
    anything else a string."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        out[key] = value
    return out


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """The top-level table of a TOML file; InputError (one line) if missing or invalid."""
    import tomllib

    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"config file {path} is a directory") from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"bad TOML in {path}: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read config file {path}: {err}") from None
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise InputError(f"config file {path}: expected flat key = value pairs, found the table [{nested[0]}]")
    return data


def resolve_run(
    algo: str | None = None,
    env: str | None = None,
    *,
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> RunSpec:
    """Merge preset < config file < overrides < flags into a validated :class:`RunSpec`.

    ``algo`` and ``env`` come from the arguments, else the config file's ``algo`` / ``env``
    keys, else ``ppo`` / ``CartPole-v1``.

    Raises:
        InputError: an unknown algorithm or key (the valid ones listed), a value out of range.
    """
    from policygrad.algorithms import ALGORITHMS, CONFIGS, get_preset, make_config

    file_values = dict(read_toml(config_file)) if config_file is not None else {}
    algo = algo or file_values.pop("algo", None) or "ppo"
    env = env or file_values.pop("env", None) or "CartPole-v1"
    file_values.pop("algo", None)
    file_values.pop("env", None)
    if algo not in ALGORITHMS:
        raise InputError(f"unknown algorithm {algo!r}; valid: {', '.join(ALGORITHMS)}")
    if not isinstance(env, str):
        raise InputError(f"env must be a string, got {env!r}")
    given = {**file_values, **(overrides or {})}
    merged: dict[str, Any] = get_preset(algo, env, criterion=given.get("criterion"))
    algo_keys = [f.name for f in dataclasses.fields(CONFIGS[algo])]
    for source, values in (("config file", file_values), ("--set", overrides or {})):
        for key in values:
            if key not in algo_keys and key not in TRAIN_KEYS:
                valid = ", ".join(sorted(set(algo_keys) | set(TRAIN_KEYS)))
                raise InputError(f"unknown {algo} hyperparameter {key!r} in {source}; valid: {valid}")
        merged.update(values)
    if merged.get("criterion") == "average" and "gamma" in given:
        raise InputError("gamma has no meaning under criterion='average' (nothing is discounted); drop it")
    merged.update({k: v for k, v in (flags or {}).items() if v is not None})
    train_values = {k: merged.pop(k) for k in list(merged) if k in TRAIN_KEYS}
    train_config = _train_config(train_values)
    config = make_config(algo, merged)
    return RunSpec(algo=algo, env=env, seed=int(config.seed), config=config, train=train_config)


def _train_config(values: dict[str, Any]) -> TrainConfig:
    import typing

    from policygrad.algorithms.config import parse_value  # the algorithms' parsing of "--set" strings

    hints = typing.get_type_hints(TrainConfig)
    converted = {k: parse_value(k, v, hints[k]) if isinstance(v, str) else v for k, v in values.items()}
    return TrainConfig(**converted)


def spec_from_json(data: Any, where: str) -> RunSpec:
    """The :class:`RunSpec` saved as config.json; InputError if it is not one."""
    from policygrad.algorithms import make_config

    if not isinstance(data, dict) or not {"algo", "env", "config", "train"} <= set(data):
        raise InputError(f"{where} is not a policygrad run configuration")
    try:
        config = make_config(data["algo"], data["config"])
        train_config = _train_config(dict(data["train"]))
    except (TypeError, ValueError) as err:  # InputError is a ValueError
        raise InputError(f"{where}: {err}") from None
    if not isinstance(data["env"], str):
        raise InputError(f"{where}: env must be a string")
    return RunSpec(algo=data["algo"], env=data["env"], seed=int(config.seed), config=config, train=train_config)


def read_run_config(run_dir: Path) -> RunSpec:
    if not run_dir.exists():
        raise InputError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is not a directory")
    path = run_dir / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{run_dir} is not a policygrad run directory (no {CONFIG_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({err})") from None
    return spec_from_json(data, str(path))


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

    def close(self) -> None:
        for envs in (self.envs, self.eval_envs):
            if envs is not None:
                try:
                    envs.close()
                except Exception:
                    pass


def _device(name: str | None) -> Any:
    import torch

    try:
        device = torch.device(name or "cpu")
    except (RuntimeError, TypeError, ValueError) as err:
        raise InputError(f"unknown device {name!r} ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"device {name!r} requested but MPS is not available")
    return device


def build_session(spec: RunSpec, device_name: str | None = None, *, training: bool = True) -> Session:
    """Seed, then build the environments, policy, algorithm and collector of ``spec``.

    Args:
        spec: the run.
        device_name: "cpu" (default), "cuda", "cuda:1", ...
        training: False builds only what evaluation needs (evaluation envs, policy, normaliser).

    Raises:
        InputError: an unknown environment, an unsupported space, a bad device.
    """
    import torch

    from policygrad.algorithms import make_algorithm
    from policygrad.envs import make_vec_env
    from policygrad.normalize import ObservationNormalizer, RewardScaler
    from policygrad.rollout import RolloutCollector, make_policy

    cfg, tcfg = spec.config, spec.train
    device = _device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(tcfg.torch_threads)
    seed_everything(spec.seed)
    envs = eval_envs = None
    # Evaluation is occasional: worker processes for it would mostly idle.
    eval_vectorization = "sync" if tcfg.vectorization == "async" else tcfg.vectorization
    try:
        # Seeding resets the environments once: one that fails there fails before any run
        # directory exists. Training reseeds them from (seed, step).
        eval_envs = make_vec_env(
            spec.env, min(tcfg.eval_episodes, 32), spec.seed, time_limit=tcfg.time_limit,
            vectorization=eval_vectorization,
        )
        policy, encoder = make_policy(
            eval_envs.single_observation_space, eval_envs.single_action_space, cfg.hidden_sizes, cfg.activation,
            use_sde=cfg.use_sde, log_std_init=cfg.log_std_init,
        )
        policy.to(device)
        obs_normalizer = ObservationNormalizer(policy.obs_dim) if cfg.normalize_obs else None
        if not training:
            return Session(spec, None, eval_envs, policy, encoder, None, obs_normalizer, None, None, device)
        envs = make_vec_env(spec.env, cfg.num_envs, spec.seed, time_limit=tcfg.time_limit, vectorization=tcfg.vectorization)
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
        )
    except BaseException:
        for e in (envs, eval_envs):
            if e is not None:
                e.close()
        raise
    return Session(spec, envs, eval_envs, policy, encoder, algorithm, obs_normalizer, reward_scaler, collector, device)


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
            f"checkpoint is of {meta.get('algo')!r} on {meta.get('env')!r}, the run is "
            f"{session.spec.algo!r} on {session.spec.env!r}"
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
    import torch

    from policygrad.rollout import evaluate_policy

    seed = derive_seed(session.spec.seed, 1) if seed is None else seed
    generator = None if deterministic else torch.Generator(device=session.device).manual_seed(seed)
    return evaluate_policy(
        session.policy,
        session.eval_envs,
        episodes,
        encoder=session.encoder,
        obs_normalizer=session.obs_normalizer,
        deterministic=deterministic,
        seed=seed,
        generator=generator,
        device=session.device,
        max_episode_steps=session.spec.train.eval_max_episode_steps,
        stats=stats,
    )


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _next_multiple(step: int, every: int) -> int:
    return (step // every + 1) * every


def train(session: Session, run_dir: Path, *, resumed: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Run the loop until ``total_steps`` (or the target return), logging and checkpointing.

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
    total = tcfg.total_steps
    checkpoint_every = tcfg.checkpoint_every or max(1, math.ceil(total / 5))
    start_step = session.step
    collector, algorithm = session.collector, session.algorithm
    try:
        logger = MetricsLogger(
            run_dir, METRIC_COLUMNS, tensorboard=tcfg.tensorboard, resume=resumed,
            resume_step=start_step if resumed else None,
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
            rate = row["reward_per_step"]
            bar.update(session.step - previous, row["episode_return_mean"],
                       None if rate is None else {"reward/step": rate})
            if tcfg.target_return is not None and session.step >= next_eval:
                stats: dict[str, Any] = {}
                returns = evaluate_session(session, tcfg.eval_episodes, stats=stats)
                score = float(np.mean(returns))
                bar.write(f"step {session.step}: evaluation return {score:.2f} (target {tcfg.target_return:g})")
                if score >= tcfg.target_return:
                    # Confirmed on as many other episodes, so that one lucky set of starts does
                    # not end the run (evaluations are frequent).
                    other = evaluate_session(session, tcfg.eval_episodes, seed=derive_seed(spec.seed, 2), stats=stats)
                    if float(np.mean(other)) >= tcfg.target_return:
                        stopped_early = True
                        eval_returns = returns  # the final evaluation's seed and policy: the same returns
                        break
                next_eval = session.step + (tcfg.eval_every or stats["steps"])
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
# Run directories
# --------------------------------------------------------------------------------------------


def default_run_dir(algo: str, env: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", env).strip("_") or "env"
    base = Path("runs") / f"{algo}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


def _check_new_run_dir(path: Path) -> None:
    if path.exists():
        if not path.is_dir():
            raise InputError(f"--out {path} exists and is not a directory")
        if any(path.iterdir()):
            raise InputError(f"--out {path} already exists and is not empty; continue it with --resume {path} or choose another --out")


class _CreatedPaths:
    """Creates a run directory and remembers what it created, so that a failed set-up can undo it."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.top: Path | None = None  # the outermost directory this invocation created
        self.existed = run_dir.exists()

    def create(self) -> None:
        missing = [p for p in [self.run_dir, *self.run_dir.parents] if not p.exists()]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.top = missing[-1] if missing else None

    def undo(self) -> None:
        if self.top is not None:
            shutil.rmtree(self.top, ignore_errors=True)
        elif self.existed and self.run_dir.is_dir():
            for entry in self.run_dir.iterdir():  # it was empty before this invocation
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def _write_json_atomically(path: Path, data: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def main_train(args: argparse.Namespace) -> int:
    """``policygrad train``: see the module docstring."""
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be a positive number of environment steps, got {args.steps}")
    flags = {"total_steps": args.steps, "target_return": args.target_return}
    if args.resume is not None:
        conflicting = [
            name
            for name, value in (("--algo", args.algo), ("--env", args.env), ("--config", args.config),
                                ("--set", args.overrides), ("--seed", args.seed), ("--out", args.out))
            if value
        ]
        if conflicting:
            raise InputError(f"--resume continues a run with its saved settings; drop {', '.join(conflicting)}")
        return _resume(Path(args.resume), flags, args.device, args.quiet)

    spec = resolve_run(
        args.algo,
        args.env,
        config_file=args.config,
        overrides=parse_set(args.overrides),
        flags={"seed": args.seed, **flags},
    )
    run_dir = Path(args.out) if args.out else default_run_dir(spec.algo, spec.env)
    _check_new_run_dir(run_dir)
    session = build_session(spec, args.device)  # every InputError up to here leaves no trace
    created = _CreatedPaths(run_dir)
    try:
        try:
            created.create()
            _write_json_atomically(run_dir / CONFIG_FILE, spec.to_json())
        except OSError as err:
            created.undo()
            raise InputError(f"cannot create run directory {run_dir}: {err}") from None
        try:
            summary = train(session, run_dir, quiet=args.quiet)
        except InputError:  # only set-up failures: training turns them into TrainingError
            created.undo()
            raise
    finally:
        session.close()
    _finish(run_dir, summary, args.quiet)
    return 0


def _resume(run_dir: Path, flags: dict[str, Any], device: str | None, quiet: bool) -> int:
    from policygrad.checkpoint import latest_checkpoint

    spec = read_run_config(run_dir)
    changed = {k: v for k, v in flags.items() if v is not None}
    if changed:
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, **changed))
    path = latest_checkpoint(run_dir)
    if path is None:
        raise InputError(f"{run_dir} has no checkpoint to resume from")
    tensors, meta = load_run_checkpoint(path)
    session = build_session(spec, device)
    try:
        restore_session(session, tensors, meta)
        if changed:
            _write_json_atomically(run_dir / CONFIG_FILE, spec.to_json())
        if session.step >= spec.train.total_steps:
            if not quiet:
                print(f"{run_dir}: already trained for {session.step} steps (total_steps {spec.train.total_steps}); pass --steps to train longer")
            return 0
        summary = train(session, run_dir, resumed=True, quiet=quiet)
    finally:
        session.close()
    _finish(run_dir, summary, quiet)
    return 0


def _finish(run_dir: Path, summary: dict[str, Any], quiet: bool) -> None:
    from policygrad.plots import plot_learning_curve

    try:
        plot_learning_curve(run_dir)
    except PolicygradError as err:
        if not quiet:
            print(f"policygrad: note: no learning curve ({err})", file=sys.stderr)
    if quiet:
        return
    returns = summary["eval_returns"]
    how = " (target return reached)" if summary["stopped_early"] else ""
    print(
        f"{run_dir}: {summary['step']} steps in {summary['seconds']:.1f} s{how}; deterministic evaluation "
        f"return {np.mean(returns):.2f} ± {np.std(returns):.2f} over {len(returns)} episodes"
    )


def evaluate_run(run_dir: str | os.PathLike, episodes: int = 20, *, deterministic: bool = False, seed: int | None = None) -> list[float]:
    """Raw returns of ``episodes`` episodes of the policy in ``run_dir``'s last checkpoint."""
    from policygrad.checkpoint import latest_checkpoint

    run_dir = Path(run_dir)
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise InputError(f"--episodes must be a positive int, got {episodes}")
    spec = read_run_config(run_dir)
    path = latest_checkpoint(run_dir)
    if path is None:
        raise InputError(f"{run_dir} has no checkpoint")
    tensors, meta = load_run_checkpoint(path)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, eval_episodes=episodes))
    session = build_session(spec, "cpu", training=False)
    try:
        restore_policy(session, tensors, meta)
        if session.obs_normalizer is not None:
            session.obs_normalizer.frozen = True
        return evaluate_session(session, episodes, deterministic=deterministic, seed=seed)
    finally:
        session.close()


DEFAULT_EVAL_STEPS = 10_000
"""Environment steps over which ``policygrad eval`` measures the reward per step of a continuing run."""


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
    import torch

    from policygrad.rollout import _EnvStepper

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"--steps must be a positive number of environment steps, got {steps!r}")
    envs, policy, device = session.eval_envs, session.policy, session.device
    io = _EnvStepper(envs, session.encoder)
    seed = derive_seed(session.spec.seed, 1) if seed is None else seed
    generator = None if deterministic else torch.Generator(device=device).manual_seed(seed)
    next_step = io.mode.name == "NEXT_STEP"
    try:
        obs, info = envs.reset(seed=seed)
    except Exception as err:
        raise TrainingError(f"the environment raised on reset: {type(err).__name__}: {err}") from None
    mask = np.ones((io.num_envs, io.mask_actions), dtype=bool) if io.mask_actions is not None else None
    dummy = np.zeros(io.num_envs, dtype=bool)
    total, counted = 0.0, 0
    env_actions = None
    for _ in range(-(-steps // io.num_envs)):
        io.check_observations(obs)
        encoded = io.encode(obs)
        if session.obs_normalizer is not None:
            encoded = session.obs_normalizer.normalize(encoded)
        x = torch.from_numpy(np.ascontiguousarray(encoded, dtype=np.float32)).to(device)
        mask_t = None
        if mask is not None and "action_mask" in info:
            io.masks(info, mask)
            mask_t = torch.from_numpy(mask).to(device)
        actions, _, _ = policy.act(x, mask_t, deterministic=deterministic, generator=generator)
        actions = actions.cpu()
        if env_actions is None and io.low is not None:
            env_actions = np.zeros(tuple(actions.shape), dtype=np.float32)
        obs, reward, terminated, truncated, info = io.step(io.env_actions(actions, env_actions))
        if not np.isfinite(reward).all():
            raise TrainingError(f"non-finite reward at evaluation step {io.steps}")
        valid = ~dummy if next_step else np.ones(io.num_envs, dtype=bool)
        total += float(np.sum(reward[valid]))
        counted += int(valid.sum())
        if next_step:
            dummy = terminated | truncated
    return total / max(1, counted), counted


def evaluate_run_steps(
    run_dir: str | os.PathLike, steps: int, copies: int = 1, *, deterministic: bool = False,
    seed: int | None = None,
) -> tuple[float, int]:
    """:func:`measure_reward_per_step` of the policy in ``run_dir``'s last checkpoint, over
    ``copies`` (at most 32) environment copies that each take ⌈steps / copies⌉ steps."""
    from policygrad.checkpoint import latest_checkpoint

    run_dir = Path(run_dir)
    spec = read_run_config(run_dir)
    path = latest_checkpoint(run_dir)
    if path is None:
        raise InputError(f"{run_dir} has no checkpoint")
    tensors, meta = load_run_checkpoint(path)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, eval_episodes=copies))
    session = build_session(spec, "cpu", training=False)
    try:
        restore_policy(session, tensors, meta)
        if session.obs_normalizer is not None:
            session.obs_normalizer.frozen = True
        return measure_reward_per_step(session, steps, deterministic=deterministic, seed=seed)
    finally:
        session.close()


def main_eval(args: argparse.Namespace) -> int:
    """``policygrad eval RUN_DIR``: a table, or one JSON object with ``--json``.

    On a continuing run (``time_limit = 0``) or with ``--steps K``, the reward per step over K
    environment steps (default :data:`DEFAULT_EVAL_STEPS`) is measured as well and reported as
    ``reward_per_step``: ``--episodes`` environment copies (at most 32) each run K / copies steps
    from a seeded reset, as they run one window each in the episode evaluation.
    """
    from policygrad.logging import format_table

    steps = getattr(args, "steps", None)
    if steps is not None and steps < 1:
        raise InputError(f"--steps must be a positive number of environment steps, got {steps}")
    returns = evaluate_run(args.run_dir, args.episodes, deterministic=args.deterministic, seed=args.seed)
    mean, std = float(np.mean(returns)), float(np.std(returns))
    rate: tuple[float, int] | None = None
    if steps is not None or read_run_config(Path(args.run_dir)).train.time_limit == 0:
        rate = evaluate_run_steps(args.run_dir, steps or DEFAULT_EVAL_STEPS, min(args.episodes, 32),
                                  deterministic=args.deterministic, seed=args.seed)
    if args.json:
        payload: dict[str, Any] = {"mean_return": mean, "std_return": std, "episodes": len(returns)}
        if rate is not None:
            payload.update({"reward_per_step": rate[0], "steps": rate[1]})
        print(json.dumps(payload))
    else:
        row: dict[str, Any] = {
            "episodes": len(returns),
            "mean_return": mean,
            "std_return": std,
            "min_return": float(np.min(returns)),
            "max_return": float(np.max(returns)),
        }
        if rate is not None:
            row.update({"reward_per_step": rate[0], "steps": rate[1]})
        row["policy"] = "deterministic" if args.deterministic else "stochastic"
        print(format_table([row], list(row)))
    return 0
