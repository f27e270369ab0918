"""Training policies on token sequences: the built-in tasks ``seq:count``, ``seq:sort``,
``seq:reverse``, ``seq:add`` with the group estimators of :mod:`policygrad.sequence.estimators`.

One step of :func:`train_sequence` is

    prompts   = task.sample_prompts(prompts_per_step)          # each repeated group_size times
    batch     = policy.sample(prompts, ...)                      # the rollout
    rewards   = task.score(batch, reward)                        # the task's, or --reward module:function
    loss      = sequence_surrogate(log π, log π_old, log π_ref, mask, rewards, ...)   # (ppo: + value head)
    log, checkpoint

A new run first pretrains the small transformer on the task's format (``pretrain_steps``
supervised steps); the frozen reference model π_ref is the policy after pretraining, kept in
memory and in every checkpoint (its sha256 in the checkpoint's meta). The run directory is that of
the classic path (:mod:`policygrad.rundir`): ``config.json`` (``"kind": "sequence"``),
``metrics.csv`` (:data:`SEQUENCE_COLUMNS`), ``tb/``, ``checkpoints/last`` and ``step_N``; it is
created only once everything is built and pretrained, so bad input leaves no trace.

Determinism. Prompts and samples are drawn from one torch generator seeded by the run's seed; its
state, the global generators', the optimiser's and the step are in each checkpoint, so the same
seed gives the same metrics.csv (apart from ``wall_time``) and ``--resume`` continues bit for bit.

Failure. A reward function that raises or returns a non-finite value, or a non-finite loss, stops
the run with a :class:`~policygrad.errors.TrainingError` (exit 1), the last checkpoint as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from policygrad.errors import InputError, TrainingError, describe_error, shown

__all__ = [
    "SEQUENCE_PREFIX", "SEQUENCE_ALGOS", "SEQUENCE_COLUMNS", "SEQUENCE_PRESETS", "SEQUENCE_TASK_PRESETS", "SequenceConfig",
    "SequenceSpec", "SequenceSession", "is_sequence_env", "is_sequence_run", "resolve_sequence_run", "read_sequence_config",
    "build_sequence_session", "write_sequence_config", "make_sequence_config", "start_sequence_run", "reopen_sequence_run", "train_sequence",
    "evaluate_sequence_session", "evaluate_sequence_run", "reference_hash",
]

SEQUENCE_PREFIX = "seq:"
"""Environments named ``seq:<task>`` are the built-in sequence tasks."""

SEQUENCE_ALGOS = ("reinforce", "rloo", "grpo", "dr_grpo", "remax", "reinforce_pp", "ppo")
"""The algorithms on sequences: the first six are group estimators (their advantage is the
algorithm's name), ``ppo`` is the clipped token ratio with a value head and token-level GAE."""

SEQUENCE_COLUMNS = ("step", "wall_time", "reward", "success_rate", "kl", "completion_length", "entropy", "loss",
                    "eval_success_rate")
"""metrics.csv of a sequence run: per update, the rollout's mean reward and success rate (the
task's success metric), the mean sequence KL to the reference (k1: Σ_t log π_old − log π_ref),
the mean completion length in tokens, the mean per-token entropy, and the loss; every
``eval_every`` updates also the greedy success rate on the held-out prompts (blank otherwise)."""

KIND = "sequence"

EVAL_SEED = 20_240_601
"""Seeds the held-out prompts of an evaluation (the same prompts for every run and checkpoint)."""

PAD, EOS = 0, 1
"""The padding and end-of-completion ids of every task's tokenizer (``policygrad.sequence.tasks``'s
PAD and EOS; kept here so that importing this module loads no torch; a test checks they agree)."""

_GEN_KEY = "gen.state"


@dataclass(frozen=True)
class SequenceConfig:
    """Hyperparameters of a sequence run (``--set KEY=VALUE``; the preset fills the rest)."""

    seed: int = 0
    total_steps: int = 100
    """Updates (RL steps) in total."""
    group_size: int = 8
    """Completions sampled per prompt (G)."""
    prompts_per_step: int = 16
    """Prompts per update; the batch is prompts_per_step × group_size completions."""
    learning_rate: float = 1e-3
    beta: float = 0.0
    """Weight of the KL to the reference model."""
    kl: str = "k1_reward"
    """How the KL enters: none, k1_reward (in the reward), k1_loss, k2_loss, k3_loss, k3_ratio_loss."""
    aggregation: str = "token_mean"
    """sum, token_mean or sequence_mean over a group's tokens."""
    max_new_tokens: int = 0
    """Longest completion; 0: the task's own."""
    temperature: float = 1.0
    clip_eps: float | None = None
    """PPO's ε on the token ratio (None: the plain ratio)."""
    epochs: int = 1
    """Optimisation passes over each batch."""
    gamma: float = 1.0
    gae_lambda: float = 0.95
    value_coef: float = 0.5
    max_grad_norm: float = 1.0
    pretrain_steps: int = 200
    """Supervised steps on the task's format before RL (0: none)."""
    pretrain_batch: int = 64
    pretrain_lr: float = 3e-3
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    max_context: int = 32
    """The transformer's context: prompt and completion together."""
    checkpoint_every: int | None = None
    """Updates between kept checkpoints (None: a fifth of the run)."""
    eval_prompts: int = 200
    """Held-out prompts of ``policygrad eval`` and of the final evaluation."""
    eval_every: int | None = None
    """Updates between greedy evaluations on the ``eval_prompts`` held-out prompts during training
    (metrics.csv's ``eval_success_rate``); None: only the final one. They draw nothing from the
    training's generator: the run is the same with or without them."""
    tensorboard: bool = True
    torch_threads: int = 1
    reward: str | None = None
    """``module:function`` replacing the task's reward (imported because the user named it)."""
    model: str | None = None
    """A Hugging Face model directory to train instead of the small transformer."""

    def __post_init__(self) -> None:
        positive = ("total_steps", "group_size", "prompts_per_step", "epochs", "pretrain_batch", "d_model",
                    "n_layers", "n_heads", "max_context", "eval_prompts", "torch_threads")
        for name in positive:
            if not getattr(self, name) >= 1:
                raise InputError(f"{name} must be >= 1, got {shown(getattr(self, name))}")
        for name in ("pretrain_steps", "max_new_tokens", "beta"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be >= 0, got {shown(getattr(self, name))}")
        for name in ("learning_rate", "pretrain_lr", "temperature", "max_grad_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a finite number > 0, got {shown(value)}")
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise InputError("gamma and gae_lambda must lie in [0, 1]")
        if self.clip_eps is not None and not (math.isfinite(self.clip_eps) and self.clip_eps > 0):
            raise InputError(f"clip_eps must be > 0 or unset, got {shown(self.clip_eps)}")
        for name in ("checkpoint_every", "eval_every"):
            value = getattr(self, name)
            if value is not None and not value >= 1:
                raise InputError(f"{name} must be >= 1 or unset, got {shown(value)}")
        if not math.isfinite(self.beta):
            raise InputError(f"beta must be finite, got {shown(self.beta)}")
        from policygrad.sequence.estimators import AGGREGATIONS as aggregations
        from policygrad.sequence.estimators import KL_MODES as kls

        if self.kl not in kls:
            raise InputError(f"kl must be one of {', '.join(kls)}, got {shown(self.kl)}")
        if self.aggregation not in aggregations:
            raise InputError(f"aggregation must be one of {', '.join(aggregations)}, got {shown(self.aggregation)}")
        if self.d_model % self.n_heads:
            raise InputError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_BASE_PRESET: dict[str, Any] = {
    "group_size": 8, "prompts_per_step": 16, "learning_rate": 1e-3, "beta": 0.0, "kl": "k1_reward",
    "aggregation": "token_mean", "pretrain_steps": 25, "total_steps": 450,
}

SEQUENCE_PRESETS: dict[str, dict[str, Any]] = {
    "reinforce": {**_BASE_PRESET, "aggregation": "sum", "learning_rate": 5e-4},
    "rloo": {**_BASE_PRESET},
    "grpo": {**_BASE_PRESET, "clip_eps": 0.2},
    "dr_grpo": {**_BASE_PRESET, "aggregation": "sum", "learning_rate": 5e-4},
    "remax": {**_BASE_PRESET},
    "reinforce_pp": {**_BASE_PRESET},
    "ppo": {**_BASE_PRESET, "group_size": 4, "prompts_per_step": 32, "clip_eps": 0.2, "epochs": 2},
}
"""The preset of each algorithm on the built-in tasks (group size, prompts per step, learning rate,
β, KL handling, aggregation, pretraining); ``max_new_tokens`` 0 takes the task's own."""

SEQUENCE_TASK_PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("grpo", "count"): {"prompts_per_step": 32},
}
"""Changes to an algorithm's preset on one task, keyed by (algorithm, task). GRPO on ``seq:count``
takes 32 prompts per update: with 16, the policy settles on off-by-one counts (the same count
wrong for every letter) before every count is learnt, and seeds 0, 1, 2 reached 0.675, 0.84 and
0.50 on held-out prompts; with 32, 1.00, 0.915 and 0.785 (docs/sequences.md, "Measured")."""

_KEYS = tuple(f.name for f in dataclasses.fields(SequenceConfig))


def is_sequence_env(env: Any) -> bool:
    return isinstance(env, str) and env.startswith(SEQUENCE_PREFIX)


@dataclass(frozen=True)
class SequenceSpec:
    """Everything that defines a sequence run: what its config.json holds."""

    algo: str
    env: str
    config: SequenceConfig
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The task's settings (its dataclass fields, e.g. ``{"max_digits": 3}`` for ``seq:add``):
    ``--env-kwargs``, as an environment's constructor arguments."""

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def task(self) -> str:
        return self.env[len(SEQUENCE_PREFIX):]

    def to_json(self) -> dict[str, Any]:
        from policygrad.runconfig import library_versions

        return {"kind": KIND, "algo": self.algo, "env": self.env, "env_kwargs": dict(self.env_kwargs),
                "seed": self.seed, "config": self.config.to_dict(), "versions": library_versions()}


def _convert(key: str, value: Any, hint: Any) -> Any:
    """``value`` (a TOML value or ``--set`` string) as the type of the config key ``key``."""
    from policygrad.algorithms.config import parse_value

    if isinstance(value, str):
        return parse_value(key, value, hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise InputError(f"{key} may not be unset")
    base = args[0]
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is str and isinstance(value, str):
        return value
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise InputError(f"{key} must be {getattr(base, '__name__', base)}, got {shown(value)}")
    return value


def make_sequence_config(values: Mapping[str, Any]) -> SequenceConfig:
    hints = typing.get_type_hints(SequenceConfig)
    for key in values:
        if key not in _KEYS:
            raise InputError(f"unknown sequence hyperparameter {shown(key)}; valid: {', '.join(sorted(_KEYS))}")
    return SequenceConfig(**{k: _convert(k, v, hints[k]) for k, v in values.items()})


def resolve_sequence_run(algo: str | None, env: str, *, overrides: Mapping[str, Any] | None = None,
                         flags: Mapping[str, Any] | None = None,
                         env_kwargs: Mapping[str, Any] | None = None) -> SequenceSpec:
    """preset (the algorithm's, changed by :data:`SEQUENCE_TASK_PRESETS` for the task) < overrides
    (``--set``, keywords) < flags, validated; the task is built once with ``env_kwargs`` (its
    settings) to check them.

    Raises:
        InputError: an unknown task or algorithm, an unknown key, a value out of range, a task
            setting it does not have or accept.
    """
    algo = algo or "grpo"
    if algo not in SEQUENCE_ALGOS:
        raise InputError(f"algorithm {shown(algo)} does not train on sequences; valid: {', '.join(SEQUENCE_ALGOS)}")
    env_kwargs = _task_settings(env_kwargs)
    _task(env, env_kwargs)
    values = {**SEQUENCE_PRESETS[algo], **SEQUENCE_TASK_PRESETS.get((algo, env.removeprefix(SEQUENCE_PREFIX)), {}),
              **(overrides or {})}
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    return SequenceSpec(algo, env, make_sequence_config(values), env_kwargs)


def _task_settings(env_kwargs: Any) -> dict[str, Any]:
    if env_kwargs is None:
        return {}
    if not isinstance(env_kwargs, Mapping) or not all(isinstance(k, str) for k in env_kwargs):
        raise InputError(f"a task's settings are a JSON object, got {shown(env_kwargs)}")
    return dict(env_kwargs)


def is_sequence_run(run_dir: Path) -> bool:
    """Whether ``run_dir``'s config.json (if any, readable) is that of a sequence run."""
    from policygrad.files import read_json
    from policygrad.runconfig import CONFIG_FILE

    try:
        data = read_json(Path(run_dir) / CONFIG_FILE, "run configuration")
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == KIND


def read_sequence_config(run_dir: Path) -> SequenceSpec:
    from policygrad.files import read_json
    from policygrad.runconfig import CONFIG_FILE

    path = Path(run_dir) / CONFIG_FILE
    try:
        data = read_json(path, "run configuration")
    except FileNotFoundError:
        raise InputError(f"{run_dir} is not a policygrad run directory (no {CONFIG_FILE})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND or not isinstance(data.get("config"), dict):
        raise InputError(f"{path} is not the configuration of a sequence run")
    algo, env = data.get("algo"), data.get("env")
    if algo not in SEQUENCE_ALGOS or not is_sequence_env(env):
        raise InputError(f"{path}: algo {shown(algo)} on {shown(env)} is no sequence run")
    env_kwargs = data.get("env_kwargs", {})
    if not isinstance(env_kwargs, dict):
        raise InputError(f"{path}: env_kwargs must be a JSON object, got {shown(env_kwargs)}")
    return SequenceSpec(algo, env, make_sequence_config(data["config"]), _task_settings(env_kwargs))


# --------------------------------------------------------------------------------------------
# The pieces of a run
# --------------------------------------------------------------------------------------------


def _task(name: str, settings: Mapping[str, Any] | None = None) -> Any:
    from policygrad.sequence.tasks import make_task

    return make_task(name, **(settings or {}))


@dataclass
class SequenceSession:
    """The live objects of a sequence run."""

    spec: SequenceSpec
    task: Any
    policy: Any
    reference: Any
    optimizer: Any
    generator: Any
    reward: Callable[[str, str], float] | None
    """A user's reward (prompt text, completion text) -> float; None: the task's."""
    max_new_tokens: int
    step: int = 0
    wall_time: float = 0.0
    lock: Any = None
    reference_sha256: str = ""

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def reference_hash(module: Any) -> str:
    """sha256 over the reference model's state (names, dtypes, shapes and bytes, in name order)."""
    import torch

    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _load_reward(name: str) -> Callable[..., Any]:
    from policygrad.sequence.tasks import load_reward

    return load_reward(name)


def _make_policy(spec: SequenceSpec, task: Any) -> Any:
    cfg = spec.config
    if cfg.model is not None:
        try:
            from policygrad.sequence.hf import HFPolicy
        except ImportError:
            raise InputError("--model needs the Hugging Face adapter (policygrad.sequence.hf), not available") from None
        if not Path(cfg.model).is_dir():
            raise InputError(f"--model {shown(cfg.model)} is not a directory")
        try:
            model = HFPolicy.from_pretrained(cfg.model, pad_id=PAD, value_head=spec.algo == "ppo")
        except InputError:
            raise
        except Exception as err:
            raise InputError(f"cannot load model {shown(cfg.model)}: {describe_error(err, first_line=True)}") from None
        if model.vocab_size != task.vocab_size:  # an id the task's tokenizer cannot decode would have no reward
            raise InputError(f"model {shown(cfg.model)} has {model.vocab_size} tokens and {spec.env}'s tokenizer "
                             f"{task.vocab_size}: save a model with vocab_size={task.vocab_size}")
        return model
    from policygrad.sequence.transformer import TransformerPolicy

    return TransformerPolicy(task.vocab_size, d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                             max_context=cfg.max_context, pad_id=PAD, value_head=spec.algo == "ppo",
                             seed=cfg.seed)


def build_sequence_session(spec: SequenceSpec, *, pretrain: bool = True, quiet: bool = True) -> SequenceSession:
    """Limit the threads, seed, build the task, policy, reward and optimiser; with ``pretrain``,
    run the supervised pretraining and freeze a copy as the reference model.

    Raises:
        InputError: an unknown task, a prompt that does not fit the model's context, a model or
            reward that does not load.
    """
    import copy

    import torch

    from policygrad.runconfig import seed_everything
    from policygrad.threads import limit_threads

    cfg = spec.config
    limit_threads(cfg.torch_threads, 1)
    seed_everything(cfg.seed)
    task = _task(spec.env, spec.env_kwargs)
    max_new = cfg.max_new_tokens or int(task.max_new_tokens)
    policy = _make_policy(spec, task)
    context = int(getattr(policy, "max_context", cfg.max_context))
    if task.max_prompt_length + max_new > context:
        raise InputError(f"prompts of {spec.env} take up to {task.max_prompt_length} tokens and completions "
                         f"{max_new}: more than the model's context of {context} tokens")
    reward = _load_reward(cfg.reward) if cfg.reward is not None else None
    generator = torch.Generator().manual_seed(cfg.seed)
    if pretrain and cfg.pretrain_steps:
        from policygrad.sequence.tasks import pretrain as pretrain_policy

        pretrain_policy(policy, task, cfg.pretrain_steps, cfg.pretrain_batch, cfg.pretrain_lr, generator)
    reference = copy.deepcopy(policy).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
    return SequenceSession(spec, task, policy, reference, optimizer, generator, reward, max_new,
                           reference_sha256=reference_hash(reference))


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def sequence_checkpoint_state(session: SequenceSession) -> tuple[dict, dict]:
    from policygrad.checkpoint import module_state, optimizer_state, rng_state

    tensors = dict(module_state(session.policy, "policy"))
    tensors.update(module_state(session.reference, "reference"))
    optim_tensors, optim_meta = optimizer_state(session.optimizer, "optim")
    tensors.update(optim_tensors)
    rng_tensors, rng_meta = rng_state("rng")
    tensors.update(rng_tensors)
    tensors[_GEN_KEY] = session.generator.get_state()
    meta = {
        "kind": "policygrad-sequence-run", "step": session.step, "wall_time": session.wall_time,
        "algo": session.spec.algo, "env": session.spec.env, "run": session.spec.to_json(),
        "optimizer": optim_meta, "rng": rng_meta, "reference_sha256": session.reference_sha256,
    }
    return tensors, meta


def load_sequence_checkpoint(path: Path, run_dir: Path | None = None) -> tuple[dict, dict]:
    from policygrad.checkpoint import check_optimizer_state, check_rng_state, load_checkpoint
    from policygrad.files import check_inside

    if run_dir is not None:
        check_inside(run_dir, path, "checkpoint")
    tensors, meta = load_checkpoint(path)
    step = meta.get("step")
    if meta.get("kind") != "policygrad-sequence-run" or isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(f"checkpoint {path} is not a policygrad sequence-run checkpoint")
    wall = meta.get("wall_time")
    if isinstance(wall, bool) or not isinstance(wall, (int, float)) or not math.isfinite(wall) or wall < 0:
        raise InputError(f"checkpoint {path}: wall_time must be a finite number >= 0")
    check_optimizer_state(tensors, meta.get("optimizer"), "optim")
    check_rng_state(tensors, meta.get("rng"), "rng")
    if _GEN_KEY not in tensors:
        raise InputError(f"checkpoint {path} lacks the sampling generator's state")
    return tensors, meta


def restore_sequence_session(session: SequenceSession, tensors: dict, meta: dict, *, resume: bool = True) -> None:
    """Load a checkpoint into ``session``; the reference model's hash must match its meta."""
    from policygrad.checkpoint import load_module_state, load_optimizer_state, set_rng_state

    if meta.get("algo") != session.spec.algo or meta.get("env") != session.spec.env:
        raise InputError(f"checkpoint is of {shown(meta.get('algo'))} on {shown(meta.get('env'))}, the run is "
                         f"{shown(session.spec.algo)} on {shown(session.spec.env)}")
    load_module_state(session.policy, tensors, "policy")
    load_module_state(session.reference, tensors, "reference")
    session.reference_sha256 = reference_hash(session.reference)
    if meta.get("reference_sha256") != session.reference_sha256:
        raise InputError("checkpoint's reference model does not match the sha256 its meta records")
    if not resume:
        return
    load_optimizer_state(session.optimizer, tensors, meta["optimizer"], "optim")
    set_rng_state(tensors, meta["rng"], "rng")
    try:
        session.generator.set_state(tensors[_GEN_KEY])
    except (RuntimeError, TypeError) as err:
        raise InputError(f"checkpoint's sampling generator state is malformed ({err})") from None
    session.step = int(meta["step"])
    session.wall_time = float(meta["wall_time"])


# --------------------------------------------------------------------------------------------
# Starting and continuing a run
# --------------------------------------------------------------------------------------------


def write_sequence_config(run_dir: Path, spec: SequenceSpec) -> None:
    """Write (or replace) ``run_dir``'s config.json atomically."""
    from policygrad.checkpoint import write_atomically
    from policygrad.runconfig import CONFIG_FILE

    write_atomically(Path(run_dir) / CONFIG_FILE, (json.dumps(spec.to_json(), indent=2) + "\n").encode("utf-8"))


def start_sequence_run(spec: SequenceSpec, run_dir: Path, *, quiet: bool = False,
                       callback: Any = None) -> tuple[SequenceSession, dict]:
    """Build and pretrain (before ``run_dir`` exists), write config.json and the step-0
    checkpoint, train. As :func:`policygrad.rundir.start_run`: bad input leaves no trace."""
    from policygrad.checkpoint import checkpoint_path, save_checkpoint
    from policygrad.rundir import check_new_run_dir, open_new_run

    check_new_run_dir(run_dir)
    t0 = time.perf_counter()
    session = build_sequence_session(spec, quiet=quiet)
    session.wall_time = time.perf_counter() - t0  # pretraining counts

    def write_first() -> None:
        write_sequence_config(run_dir, spec)
        tensors, meta = sequence_checkpoint_state(session)
        save_checkpoint(checkpoint_path(run_dir), tensors, meta)

    summary = open_new_run(run_dir, session, write_first,
                           lambda: train_sequence(session, run_dir, quiet=quiet, callback=callback))
    return session, summary


def reopen_sequence_run(run_dir: Path, spec: SequenceSpec, *, lock: bool = False) -> SequenceSession:
    """The session of ``spec`` with ``run_dir``'s newest checkpoint restored (``--resume``)."""
    from policygrad.rundir import RunLock, newest_checkpoint

    held = RunLock(run_dir).acquire() if lock else None
    try:
        found = newest_checkpoint(Path(run_dir), load_sequence_checkpoint)
        if found is None:
            raise InputError(f"{run_dir} has no checkpoint")
        session = build_sequence_session(spec, pretrain=False)
        restore_sequence_session(session, *found)
        session.lock = held
    except BaseException:
        if held is not None:
            held.release()
        raise
    return session


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _score(session: SequenceSession, completions: Any) -> tuple[Any, Any]:
    """``[B]`` float rewards and ``[B]`` float successes of ``completions``; TrainingError naming
    the step if the reward function raises or returns anything but a finite number."""
    try:
        rewards, successes = session.task.score(completions, session.reward)
    except TrainingError as err:
        raise TrainingError(f"step {session.step + 1}: {err}") from None
    except Exception as err:  # a reward whose result float() itself raises on
        raise TrainingError(f"step {session.step + 1}: the reward function failed: "
                            f"{describe_error(err, first_line=True)}") from None
    return rewards.float(), successes.float()


def sequence_update(session: SequenceSession) -> dict[str, float]:
    """One RL step: sample, score, optimise; the metrics of the row."""
    import torch

    from policygrad.sequence import estimators as est

    spec, cfg, task, policy = session.spec, session.spec.config, session.task, session.policy
    G = cfg.group_size
    prompts, plens = task.encode_prompts(task.sample_prompts(cfg.prompts_per_step, session.generator))
    prompts, plens = prompts.repeat_interleave(G, 0), plens.repeat_interleave(G, 0)
    policy.eval()
    batch = policy.sample(prompts, plens, max_new_tokens=session.max_new_tokens, eos=EOS,
                          temperature=cfg.temperature, generator=session.generator)
    rewards, success = _score(session, batch)
    mask = batch.mask
    with torch.no_grad():
        old = batch.log_probs
        ref = session.reference.token_log_probs(prompts, plens, batch.tokens, batch.lengths,
                                                temperature=cfg.temperature)
        baseline = None
        if spec.algo == "remax":
            first = torch.arange(0, prompts.shape[0], G)
            greedy = policy.sample(prompts[first], plens[first], max_new_tokens=session.max_new_tokens,
                                   eos=EOS, greedy=True)
            baseline = _score(session, greedy)[0]
        advantages = returns = None
        if spec.algo == "ppo":
            values = policy.values(prompts, plens, batch.tokens, batch.lengths)
            advantages, returns = est.token_gae(
                rewards, values, mask, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, log_probs=old, ref_log_probs=ref,
                beta=cfg.beta if cfg.kl == "k1_reward" else 0.0)
    policy.train()
    losses, entropies = [], []
    for _ in range(cfg.epochs):
        if spec.algo == "ppo":  # the token scores and the values from one pass of the shared trunk
            log_probs, entropy, v = policy.scores_and_values(prompts, plens, batch.tokens, batch.lengths,
                                                             temperature=cfg.temperature)
            pg = est.clipped_token_surrogate(log_probs, old, advantages, cfg.clip_eps or 0.2)
            loss = -est.aggregate(pg, mask, G, cfg.aggregation).mean()
            if cfg.kl not in ("none", "k1_reward") and cfg.beta:
                loss = loss + cfg.beta * est.aggregate(est.kl_term(log_probs, ref, cfg.kl), mask, G,
                                                       cfg.aggregation).mean()
            loss = loss + cfg.value_coef * (((v - returns) ** 2) * mask).sum() / mask.sum()
        else:
            log_probs, entropy = policy.token_log_probs(prompts, plens, batch.tokens, batch.lengths,
                                                        temperature=cfg.temperature, with_entropy=True)
            loss = est.sequence_surrogate(log_probs, old, ref, mask, rewards, group_size=G, advantage=spec.algo,
                                          kl=cfg.kl, aggregation=cfg.aggregation, beta=cfg.beta,
                                          clip_eps=cfg.clip_eps, baseline=baseline)
        if not bool(torch.isfinite(loss)):
            raise TrainingError(f"the loss is not finite at step {session.step + 1}")
        session.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
        session.optimizer.step()
        losses.append(float(loss.detach()))
        entropies.append(float((entropy.detach() * mask).sum() / mask.sum()))
    maskf = mask.float()
    return {
        "reward": float(rewards.mean()),
        "success_rate": float(success.mean()),
        "kl": float(((old - ref) * maskf).sum(1).mean()),
        "completion_length": float(batch.lengths.float().mean()),
        "entropy": entropies[0],
        "loss": losses[-1],
    }


def train_sequence(session: SequenceSession, run_dir: Path, *, resumed: bool = False, quiet: bool = False,
                   callback: Any = None) -> dict[str, Any]:
    """Run updates until ``total_steps``, logging every one and checkpointing; SIGINT/SIGTERM stop
    at the next update's end with a checkpoint (:class:`policygrad.training.StopSignals`).

    Returns:
        ``step``, ``seconds``, ``interrupted`` (signal number or None), ``success_rate`` and
        ``mean_return`` of the final greedy evaluation on held-out prompts (None after a signal).
    """
    from policygrad.checkpoint import checkpoint_path, save_checkpoint
    from policygrad.logging import MetricsLogger, ProgressBar
    from policygrad.training import StopSignals, write_failure

    cfg = session.spec.config
    total = cfg.total_steps
    every = cfg.checkpoint_every or max(1, math.ceil(total / 5))
    try:
        logger = MetricsLogger(run_dir, SEQUENCE_COLUMNS, tensorboard=cfg.tensorboard, resume=resumed,
                               resume_step=session.step if resumed else None)
    except OSError as err:
        raise InputError(f"cannot write to {run_dir}: {err}") from None

    def save(kept: bool) -> None:
        tensors, meta = sequence_checkpoint_state(session)
        if kept:
            save_checkpoint(checkpoint_path(run_dir, session.step), tensors, meta)
        save_checkpoint(checkpoint_path(run_dir), tensors, meta)

    bar = ProgressBar(total, initial=min(session.step, total), enabled=not quiet)
    signals = StopSignals()
    t0, wall0 = time.perf_counter(), session.wall_time
    result: dict[str, float] | None = None
    stopped = False
    try:
        signals.__enter__()
        while session.step < total and signals.signum is None:
            metrics = sequence_update(session)
            session.step += 1
            session.wall_time = wall0 + time.perf_counter() - t0
            row = {"step": session.step, "wall_time": session.wall_time, **metrics}
            if cfg.eval_every and session.step % cfg.eval_every == 0:
                row["eval_success_rate"] = evaluate_sequence_session(session, cfg.eval_prompts)["success_rate"]
            logger.log(row)
            bar.update(1, None, {"reward": metrics["reward"], "success": metrics["success_rate"]})
            if callback is not None and callback(row) is False:
                stopped = True
                break
            if session.step % every == 0 and session.step < total and signals.signum is None:
                save(kept=True)
        save(kept=False)
        if signals.signum is None:
            result = evaluate_sequence_session(session, cfg.eval_prompts)
    except OSError as err:
        raise TrainingError(write_failure(run_dir, err)) from None
    finally:
        signals.__exit__()
        bar.close()
        try:
            logger.close()
        except OSError:
            pass
    return {"step": session.step, "seconds": time.perf_counter() - t0, "interrupted": signals.signum,
            "stopped_early": stopped or signals.signum is not None, **(result or {})}


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def evaluate_sequence_session(session: SequenceSession, prompts: int, seed: int | None = None) -> dict[str, Any]:
    """Greedy completions of ``prompts`` held-out prompts: ``mean_return`` (mean reward),
    ``std_return``, ``success_rate`` and ``prompts``."""
    import torch

    task = session.task
    generator = torch.Generator().manual_seed(EVAL_SEED if seed is None else seed)
    x, lengths = task.encode_prompts(task.sample_prompts(prompts, generator, split="heldout"))
    session.policy.eval()
    with torch.no_grad():
        batch = session.policy.sample(x, lengths, max_new_tokens=session.max_new_tokens, eos=EOS, greedy=True)
    rewards, success = _score(session, batch)
    return {"mean_return": float(rewards.mean()), "std_return": float(rewards.std(unbiased=False)),
            "success_rate": float(success.mean()), "prompts": int(x.shape[0])}


def evaluate_sequence_run(path: Path, prompts: int | None = None, *, seed: int | None = None,
                          reward: str | None = None) -> dict[str, Any]:
    """:func:`evaluate_sequence_session` of the policy in the run's newest checkpoint (or the
    checkpoint ``path`` names). A run trained with a user's reward is scored with the task's
    unless ``reward`` names one again (a run directory imports nothing by itself)."""
    from policygrad.training import locate_checkpoint

    run_dir, checkpoint = locate_checkpoint(path)
    spec = read_sequence_config(run_dir)
    spec = dataclasses.replace(spec, config=dataclasses.replace(spec.config, reward=reward, pretrain_steps=0))
    tensors, meta = load_sequence_checkpoint(checkpoint, run_dir)
    session = build_sequence_session(spec, pretrain=False)
    restore_sequence_session(session, tensors, meta, resume=False)
    return evaluate_sequence_session(session, prompts or spec.config.eval_prompts, seed)
