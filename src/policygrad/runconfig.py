"""What defines a run: its settings, resolved from presets, files and flags, and config.json.

Hyperparameters come from, in increasing precedence: the preset of (algo, env)
(``policygrad.algorithms.get_preset``), a TOML file (``--config``), ``--set key=value`` and the
explicit flags (``--seed``, ``--steps``, ``--target-return``, ``--eval-every``). Keys are the algorithm's config
fields plus those of :class:`TrainConfig`. :func:`resolve_run` merges them into a validated
:class:`RunSpec`, which a run directory keeps as ``config.json`` (:func:`read_run_config`).

Determinism. Every generator is seeded from the run's seed (:func:`seed_everything`); other
seeds are derived from it and a few integers (:func:`derive_seed`), e.g. the step a run resumes
from. Derived seeds lie below 2³⁰, so that the seeds of N environment copies (``seed + i``) are
valid for every simulator (:func:`env_seed`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np

from policygrad.version import __version__
from policygrad.errors import InputError, shown
from policygrad.seeding import derive_seed, env_seed

__all__ = [
    "CONFIG_FILE",
    "TrainConfig",
    "TRAIN_KEYS",
    "RunSpec",
    "resolve_run",
    "parse_set",
    "parse_env_kwargs",
    "split_env_keys",
    "read_toml",
    "spec_from_json",
    "read_run_config",
    "check_run_code",
    "derive_seed",
    "env_seed",
    "seed_everything",
    "library_versions",
    "make_run_policy",
]

CONFIG_FILE = "config.json"
"""The file of a run directory that holds its :class:`RunSpec` (:meth:`RunSpec.to_json`)."""

MAX_CONFIG_BYTES = 1_000_000
"""Largest ``--config`` TOML file read (1 MB); a larger one is refused before it is parsed."""
MAX_THREADS = 1024
"""Most threads of torch_threads and blas_threads (more than any machine's cores; torch crashes
when asked for 100,000)."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the training loop (algorithm-independent); keys for --set and --config like
    the algorithm's."""

    total_steps: int = 100_000
    """Environment steps to train for (N per vector step; rounded up to whole rollouts)."""
    target_return: float | None = None
    """Stop once the evaluation policy's mean return reaches this, on eval_episodes
    episodes and then on as many others (None: never). Checked at every evaluation (eval_every)."""
    eval_every: int | None = None
    """Evaluate the policy (eval_deterministic) on eval_episodes episodes at the first update at or past
    every multiple of this many environment steps (so rounded up to whole rollouts): the mean return
    goes to metrics.csv's eval_return column and the best policy so far to checkpoints/best. None: no
    evaluations during training, unless target_return is set: then adaptively, as many environment
    steps apart as the last evaluation took (at least one rollout), so that evaluating costs a small
    share of the run and a reached target is noticed soon."""
    eval_deterministic: bool = True
    """Evaluations during training and the final one take the most likely action (false: sample
    from the policy, seeded, as the Atari presets do: the RL Zoo's choice for Atari, where a
    deterministic policy can stall a game, e.g. by never pressing FIRE)."""
    eval_episodes: int = 10
    """Episodes per evaluation (during training and the final one)."""
    eval_max_episode_steps: int = 10_000
    """An evaluation episode ends after this many steps at the latest (continuing tasks are
    evaluated over windows of this length)."""
    checkpoint_every: int | None = None
    """Environment steps between kept checkpoints (checkpoints/step_N); None: a fifth of the run."""
    time_limit: int | None = None
    """Truncate episodes after this many steps, replacing the registered limit (None: keep it; 0: no
    limit, a continuing run whose episodes end only by termination)."""
    clip_reward: bool = False
    """Train on sign(r) in {-1, 0, 1} instead of r (the Atari presets); the episode returns in
    metrics.csv and the evaluations stay raw."""
    atari_preprocessing: bool = False
    """Apply the Atari preprocessing of the keys below to an ALE/... environment (the Atari presets
    set it; see policygrad.atari). Evaluation uses it too, without terminal_on_life_loss."""
    noop_max: int = 30
    """Atari: start each game with a random number (1 .. noop_max) of no-op actions (0: none)."""
    frame_skip: int = 4
    """Atari: repeat each action this many frames; the observation is the pixelwise max of the last
    two (the emulator then steps single frames, whatever the id's own frameskip)."""
    screen_size: int = 84
    """Atari: frames are resized to screen_size x screen_size."""
    grayscale: bool = True
    """Atari: frames in grayscale (false: RGB)."""
    frame_stack: int = 4
    """Atari: an observation is the last frame_stack frames, [frame_stack, screen_size, screen_size]."""
    fire_reset: bool = False
    """Atari: press FIRE once at the start of each game, in games with a FIRE action (Breakout and
    others need it to start; ale-py's, SB3's and CleanRL's default). Not after a lost life: the
    policy learns to serve again."""
    terminal_on_life_loss: bool = True
    """Atari: a lost life ends the episode for training (the game goes on; no bootstrap across it).
    metrics.csv still reports whole games, and evaluation plays whole games."""
    max_episode_frames: int = 108_000
    """Atari: a game is truncated after this many emulator frames (108,000 = 27,000 steps at frame skip
    4 = 30 minutes of play); takes the place of time_limit, which must then stay unset."""
    vectorization: Literal["auto", "sync", "async", "vector"] = "auto"
    """How the environment copies are stepped: auto, sync, async or vector (see policygrad.envs)."""
    torch_threads: int = 1
    """CPU threads of torch's intra-op pool (1 is fastest for small networks and leaves cores to the
    environments); also in each async environment worker. 1 to 1024."""
    blas_threads: int = 1
    """CPU threads of NumPy's BLAS library and of OpenMP runtimes (the NumPy update path's matrix
    products); also in each async environment worker. 1 to 1024."""
    env_step_timeout: float = 60.0
    """Seconds one vectorised environment step may take before training stops with an error
    naming the step (0: no bound). Async workers that overrun are shut down."""
    workers: int | None = None
    """Rollout workers on Ray (pip install policygrad[ray]; see docs/scaling-out.md): each a
    process holding envs_per_worker of the num_envs environment copies and a copy of the policy.
    None: the environments are stepped in this process and nothing imports Ray. A run can be
    resumed with another number of workers (one that divides num_envs)."""
    envs_per_worker: int | None = None
    """Environment copies per rollout worker (None: num_envs / workers). Given when a run starts,
    it sets num_envs = workers * envs_per_worker."""
    address: str = "local"
    """The Ray cluster of the workers: local (a private one started for the run), auto (the
    running cluster this machine belongs to) or HOST:PORT (a cluster's head)."""
    worker_mode: Literal["sync", "async"] = "sync"
    """sync: every update trains on one fragment of each worker, all collected with the current
    policy (the mathematics of one process with num_envs copies). async: workers collect
    continuously and the learner trains on fragments as they come, up to max_lag policy versions
    old; only for algorithms that correct for the lag (ppo, impala)."""
    max_lag: int = 2
    """worker_mode async: no fragment collected more than this many policy versions (updates)
    before the one it trains is trained on; the workers are paced, never a fragment thrown away."""
    restart_failed_workers: bool = False
    """Replace a worker whose environment raised and collect its fragment again (default: stop the
    run with the error, as in one process). A worker that dies (its process killed, its node lost)
    is always replaced."""
    tensorboard: bool = True
    """Also write the metrics as TensorBoard scalars under tb/."""
    tensorboard_every: int = 1000
    """Environment steps between TensorBoard points at the least (metrics.csv keeps every row): a row
    is written when its step is this far past the last one written, and the last row always. Each
    event costs about 0.2 ms (tensorboard's writer checksums it in pure Python), which A2C's row
    every 40 steps would pay 2,500 times per 100k steps. 0: every row."""

    def __post_init__(self) -> None:
        from policygrad.algorithms.config import check_types  # the algorithms' type checks

        check_types(self)
        for name in ("total_steps", "eval_episodes", "eval_max_episode_steps", "torch_threads", "blas_threads"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("torch_threads", "blas_threads"):
            if getattr(self, name) > MAX_THREADS:
                raise InputError(f"{name} must be at most {MAX_THREADS}, got {getattr(self, name):,}")
        if not self.env_step_timeout >= 0:
            raise InputError(f"env_step_timeout must be >= 0 (0: no bound), got {self.env_step_timeout}")
        if not self.tensorboard_every >= 0:
            raise InputError(f"tensorboard_every must be >= 0, got {self.tensorboard_every}")
        if self.eval_every is not None and not self.eval_every > 0:
            raise InputError(f"eval_every must be > 0 or None, got {self.eval_every}")
        if self.checkpoint_every is not None and not self.checkpoint_every > 0:
            raise InputError(f"checkpoint_every must be > 0 or None, got {self.checkpoint_every}")
        if self.time_limit is not None and not self.time_limit >= 0:
            raise InputError(f"time_limit must be > 0, 0 (no limit) or None, got {self.time_limit}")
        if self.workers is not None and not self.workers >= 1:
            raise InputError(f"workers must be at least 1 (leave it unset to step the environments in this process), "
                             f"got {self.workers}")
        if self.envs_per_worker is not None and not self.envs_per_worker >= 1:
            raise InputError(f"envs_per_worker must be at least 1, got {self.envs_per_worker}")
        if not self.max_lag >= 0:
            raise InputError(f"max_lag must be >= 0, got {self.max_lag}")
        if not self.address.strip():
            raise InputError("address must be local, auto or HOST:PORT, got an empty string")
        if self.workers is None:
            defaults = TrainConfig.__dataclass_fields__
            for name in ("envs_per_worker", "address", "worker_mode", "max_lag", "restart_failed_workers"):
                if getattr(self, name) != defaults[name].default:
                    raise InputError(f"{name} applies to rollout workers; set workers (--workers N) too")
        if self.target_return is not None and not math.isfinite(self.target_return):
            raise InputError(f"target_return must be a finite number, got {self.target_return}")
        from policygrad.atari import AtariOptions

        AtariOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(AtariOptions)})  # checks them
        if self.atari_preprocessing and self.time_limit is not None:
            raise InputError("with atari_preprocessing the time limit is max_episode_frames; leave time_limit unset")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))
"""The keys of :class:`TrainConfig`, accepted by ``--set`` and ``--config`` beside the algorithm's."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run: what config.json holds."""

    algo: str
    env: str
    """The environment as :func:`policygrad.envs.describe_env` records it: an id, "module:attr",
    or "<...>" for an object given in Python, which nothing re-creates from this name."""
    seed: int
    config: Any
    """The algorithm's frozen config (policygrad.algorithms)."""
    train: TrainConfig
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments of the environment's constructor (JSON values)."""
    policy: str | None = None
    """None: the built-in actor-critic (hidden_sizes, activation, ...); else the "module:class"
    of a user's own network, recorded for the reader and never imported (it is trained from
    Python and loaded with ``policygrad.load(run_dir, policy=...)``)."""

    def to_json(self) -> dict[str, Any]:
        data = {
            "algo": self.algo,
            "env": self.env,
            "env_kwargs": dict(self.env_kwargs),
            "seed": self.seed,
            "config": self.config.to_dict(),
            "train": self.train.to_dict(),
            "versions": library_versions(),
        }
        if self.policy is not None:
            data["policy"] = self.policy
        return data


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


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Resolving hyperparameters
# --------------------------------------------------------------------------------------------


def split_env_keys(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config keys, env_kwargs)``: ``env.KEY`` entries (``--set env.is_slippery=false``) are the
    environment's keyword arguments."""
    config = {k: v for k, v in values.items() if not k.startswith("env.")}
    env_kwargs = {k[len("env."):]: v for k, v in values.items() if k.startswith("env.")}
    empty = [k for k in env_kwargs if not k]
    if empty:
        raise InputError("env. needs a keyword name: --set env.KEY=VALUE")
    return config, env_kwargs


def parse_env_kwargs(text: str) -> dict[str, Any]:
    """``--env-kwargs '{"is_slippery": false}'``: a JSON object of the environment's keyword arguments."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"--env-kwargs is not valid JSON ({err})") from None
    except (ValueError, RecursionError, MemoryError) as err:  # e.g. an int of 5,000 digits; nesting
        raise InputError(f"--env-kwargs cannot be read ({_reason(err)})") from None
    if not isinstance(value, dict):
        raise InputError(f"--env-kwargs must be a JSON object of keyword arguments, got {type(value).__name__}")
    return value


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict; values are TOML literals (``[64, 64]``, ``true``, ``3e-4``),
    anything else a string. A value longer than ``MAX_VALUE_CHARS`` (10,000 characters) or nested
    too deeply to parse is an InputError."""
    from policygrad.algorithms.config import MAX_VALUE_CHARS

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the tomli backport (a dependency there)
        import tomli as tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set expects KEY=VALUE, got {shown(item)}")
        if len(text) > MAX_VALUE_CHARS:
            raise InputError(
                f"--set {shown(key)}: a value of {len(text):,} characters exceeds the limit of {MAX_VALUE_CHARS:,}"
            )
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except ValueError:  # not a TOML literal (TOMLDecodeError), or an int beyond int()'s digits
            value = text.strip()
        except (RecursionError, MemoryError) as err:
            raise InputError(f"--set {shown(key)}: the value cannot be parsed ({_reason(err)})") from None
        out[key] = value
    return out


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """The top-level table of a TOML file, an ``[env_kwargs]`` table's entries as ``env.KEY``; InputError
    (one line) if missing, invalid, nested too deeply or larger than :data:`MAX_CONFIG_BYTES`."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the tomli backport (a dependency there)
        import tomli as tomllib

    path = Path(path)
    try:
        raw = read_limited(path, MAX_CONFIG_BYTES, "config file")
        data = tomllib.loads(raw.decode("utf-8"))
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"config file {path} is a directory") from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"bad TOML in {path}: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read config file {path}: {err}") from None
    except (ValueError, RecursionError, MemoryError) as err:  # an int of 5,000 digits; deep nesting
        raise InputError(f"cannot read config file {path}: {_reason(err)}") from None
    # The environment's keyword arguments: an [env_kwargs] table.
    env_table = data.pop("env_kwargs", None) if isinstance(data.get("env_kwargs"), dict) else None
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise InputError(
            f"config file {path}: expected flat key = value pairs (and an [env_kwargs] table), found the table "
            f"{shown(nested[0])}"
        )
    data.update({f"env.{k}": v for k, v in (env_table or {}).items()})
    return data


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """The bytes of the file ``path``, InputError if it holds more than ``limit`` bytes. Reads at
    most ``limit`` + 1 bytes, so a device or pipe without end costs no more than a large file.

    Raises:
        InputError: the file is larger than ``limit``; OSError as ``open`` raises it.
    """
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{what} {path} is larger than the limit of {limit:,} bytes")
    return data


def _reason(err: BaseException) -> str:
    """A short reason for a parser's failure that is no fault of the syntax."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if isinstance(err, MemoryError):
        return "out of memory"
    text = str(err)
    return text if len(text) <= 200 else text[:197] + "..."


def resolve_run(
    algo: str | None = None,
    env: str | None = None,
    *,
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    policy: str | None = None,
) -> RunSpec:
    """Merge preset < config file < overrides < flags into a validated :class:`RunSpec`.

    ``algo`` and ``env`` come from the arguments, else the config file's ``algo`` / ``env``
    keys, else ``ppo`` / ``CartPole-v1``. The environment's keyword arguments are the config
    file's and the overrides' ``env.KEY`` entries, then ``env_kwargs``.

    Raises:
        InputError: an unknown algorithm or key (the valid ones listed), a value out of range.
    """
    from policygrad.algorithms import ALGORITHMS, CONFIGS, get_preset, make_config

    file_values = dict(read_toml(config_file)) if config_file is not None else {}
    algo = algo or file_values.pop("algo", None) or "ppo"
    env = env or file_values.pop("env", None) or "CartPole-v1"
    file_values.pop("algo", None)
    file_values.pop("env", None)
    if not isinstance(algo, str) or algo not in ALGORITHMS:
        raise InputError(f"unknown algorithm {shown(algo)}; valid: {', '.join(ALGORITHMS)}")
    if not isinstance(env, str):
        raise InputError(f"env must be a string, got {shown(env)}")
    file_values, file_env = split_env_keys(file_values)
    overrides, set_env = split_env_keys(overrides or {})
    env_values = {**file_env, **set_env, **(env_kwargs or {})}
    try:
        json.dumps(env_values, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InputError(f"env_kwargs must be JSON values (a run directory records them): {err}") from None
    given = {**file_values, **(overrides or {})}
    merged: dict[str, Any] = get_preset(algo, env, criterion=given.get("criterion"))
    algo_keys = [f.name for f in dataclasses.fields(CONFIGS[algo])]
    for source, values in (("config file", file_values), ("--set", overrides or {})):
        for key in values:
            if key not in algo_keys and key not in TRAIN_KEYS:
                valid = ", ".join(sorted(set(algo_keys) | set(TRAIN_KEYS)))
                raise InputError(f"unknown {algo} hyperparameter {shown(key)} in {source}; valid: {valid}")
        merged.update(values)
    if merged.get("criterion") == "average" and "gamma" in given:
        raise InputError("gamma has no meaning under criterion='average' (nothing is discounted); drop it")
    merged.update({k: v for k, v in (flags or {}).items() if v is not None})
    train_values = {k: merged.pop(k) for k in list(merged) if k in TRAIN_KEYS}
    train_config = _train_config(train_values)
    if train_config.workers is not None and train_config.envs_per_worker is not None:
        copies = train_config.workers * train_config.envs_per_worker
        if "num_envs" in given and str(given["num_envs"]).strip() != str(copies):
            raise InputError(f"num_envs {given['num_envs']} disagrees with workers x envs_per_worker = {copies}; "
                             "give one or the other")
        merged["num_envs"] = copies
    config = make_config(algo, merged)
    return RunSpec(algo=algo, env=env, seed=int(config.seed), config=config, train=train_config,
                   env_kwargs=env_values, policy=policy)


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
    for key in ("config", "train"):
        if not isinstance(data[key], dict):
            raise InputError(f"{where}: {key} must be an object")
    try:
        config = make_config(data["algo"], data["config"])
        train_config = _train_config(dict(data["train"]))
    except (TypeError, ValueError) as err:  # InputError is a ValueError
        raise InputError(f"{where}: {err}") from None
    if not isinstance(data["env"], str):
        raise InputError(f"{where}: env must be a string")
    env_kwargs = data.get("env_kwargs", {})
    if not isinstance(env_kwargs, dict):
        raise InputError(f"{where}: env_kwargs must be an object")
    policy = data.get("policy")
    if policy is not None and not isinstance(policy, str):
        raise InputError(f"{where}: policy must be a string")
    return RunSpec(algo=data["algo"], env=data["env"], seed=int(config.seed), config=config, train=train_config,
                   env_kwargs=env_kwargs, policy=policy)


def check_run_code(spec: RunSpec, env: Any = None, trust: bool = False, *, how: str = "cli") -> None:
    """InputError unless the run ``spec``, read from a run directory, is safe to build: a run
    directory is data, and what it names is imported only when the user names it too.

    An environment ``"module:attr"`` (or Gymnasium's ``"module:EnvId"``) imports ``module``.
    A recorded one is built only if the user passes an environment again (``env``, which is then
    built instead) or trusts the run (``trust``).

    Args:
        how: "cli" or "api", for the message (which flags or arguments to pass).
    """
    if env is not None or trust or ":" not in spec.env:
        return
    module = spec.env.partition(":")[0]
    remedy = (f"pass --env {spec.env} (or --trust-run-code) to run it" if how == "cli"
              else f"pass env={spec.env!r} (or trust_run_code=True) to run it")
    raise InputError(f"this run's environment {spec.env!r} would import module {module!r}, named by the run "
                     f"directory and not by you; {remedy}")


def read_run_config(run_dir: Path) -> RunSpec:
    """The :class:`RunSpec` in ``run_dir``'s config.json; InputError (one line) if there is none.

    config.json is read as :func:`policygrad.files.read_json` reads JSON (a regular file, not a
    symlink; at most 4 MiB; nesting, UTF-8 and duplicate keys checked), then every setting is
    validated as ``--set`` values are, and beyond that: no NaN anywhere (±Infinity goes to the
    settings' own checks, as from ``--set``), no integer outside the 64-bit range.
    """
    from policygrad.files import read_json

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise InputError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is not a directory")
    path = run_dir / CONFIG_FILE
    try:
        data = read_json(path, "run configuration")
    except FileNotFoundError:
        raise InputError(f"{run_dir} is not a policygrad run directory (no {CONFIG_FILE})") from None
    bad = _first_unreadable_number(data, "")
    if bad is not None:
        raise InputError(f"{path}: {bad}")
    return spec_from_json(data, str(path))


def _first_unreadable_number(value: Any, where: str) -> str | None:
    """What is wrong with the first NaN or out-of-range integer in the JSON ``value``, or None."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, float) and math.isnan(item):
            return f"{at.lstrip('.') or 'the value'} is NaN"
        if isinstance(item, int) and not isinstance(item, bool) and not -(2**63) <= item < 2**63:
            return f"{at.lstrip('.') or 'the value'} is an integer out of the 64-bit range"
        if isinstance(item, dict):
            stack += [(v, f"{at}.{k}") for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(v, f"{at}[{i}]") for i, v in enumerate(item)]
    return None


def make_run_policy(spec: RunSpec, envs: Any, module: Any) -> tuple[Any, Any]:
    """The network and the observation encoder of a run: the built-in actor-critic of
    ``spec.config`` for the spaces of ``envs``, or the user's ``module`` adapted to what the
    algorithms call (a rollout worker builds its copy of the policy with it too)."""
    from policygrad.policies import ModuleActorCritic, make_encoder
    from policygrad.rollout import make_policy

    cfg = spec.config
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    if spec.policy is None:
        if module is not None:
            raise InputError("this run trains the built-in actor-critic; it takes no policy module")
        return make_policy(obs_space, action_space, cfg.hidden_sizes, cfg.activation,
                           use_sde=cfg.use_sde, log_std_init=cfg.log_std_init, image_obs=cfg.image_obs,
                           share_encoder=cfg.share_encoder, ortho_init=cfg.ortho_init)
    if module is None:
        raise InputError(
            f"this run trained its own network ({spec.policy}), which a run directory does not re-create; "
            "load it from Python, passing the network: policygrad.load(run_dir, policy=...)"
        )
    if cfg.use_sde:
        raise InputError("use_sde needs the built-in Gaussian actor; a custom policy brings its own distribution")
    # A user's network reads the flat float encoding: images flattened, pixels 0..255 unscaled.
    encoder = make_encoder(obs_space, "no")
    if isinstance(module, ModuleActorCritic):
        return module, encoder
    return ModuleActorCritic(module, encoder.obs_dim, action_space), encoder
