"""The Python API: one class per algorithm, with ``learn``, ``predict``, ``save`` and :func:`load`.

    import policygrad as pg

    model = pg.PPO("CartPole-v1", seed=0, learning_rate=3e-4)   # any config key as a keyword
    model.learn(100_000)                                         # a complete run directory under runs/
    action, _ = model.predict(obs, deterministic=True)           # raw observation(s) -> action(s)
    model.save("ppo_cartpole")                                   # a run directory: safetensors + JSON
    model = pg.load("ppo_cartpole")                              # predict works at once; learn continues
    model.export("cartpole.onnx")                                # predict(obs) as one ONNX graph

A model is a run: what it trains goes to a run directory that ``policygrad eval``, ``plot`` and
``train --resume`` read, as a run started from the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from policygrad.errors import InputError, shown

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Callback", "Model", "PPO", "A2C", "REINFORCE", "NPG", "TRPO", "IMPALA", "load", "SequenceModel", "GRPO",
           "RLOO", "DrGRPO", "ReMax", "ReinforcePP"]


class Callback:
    """Hooks into :meth:`Model.learn`; override any of them. Returning ``False`` from one stops
    training there (a checkpoint is saved, as at the end); ``None`` or ``True`` goes on."""

    def on_rollout_end(self, step: int) -> bool | None:
        """After a rollout is collected (``step`` environment steps so far), before its update."""
        return None

    def on_update(self, row: dict[str, Any]) -> bool | None:
        """After an update, with the metrics row just logged (metrics.csv's columns)."""
        return None

    def on_eval(self, step: int, returns: list[float]) -> bool | None:
        """After each evaluation during training (every ``eval_every`` steps, or the checks of a
        ``target_return``), with the deterministic policy's returns of its ``eval_episodes``
        episodes; ``checkpoints/best`` is up to date when it is called."""
        return None


class _ConfigClass:
    """``Model.config_class``: the algorithm's config dataclass, looked up when read (so that
    ``import policygrad`` does not import torch)."""

    def __get__(self, obj: Any, owner: type) -> type:
        from policygrad.algorithms import CONFIGS

        return CONFIGS[owner.algo]


class Model:
    """An algorithm on an environment, with its config, policy and run directory.

    Args:
        env: a Gymnasium id (``"CartPole-v1"``), ``"module:attr"`` naming an env class or
            factory, a ``gymnasium.Env`` object, or a class or function that makes one. What
            ``policygrad eval`` and ``train --resume`` can re-create is recorded in the run's
            config.json: an id (an env made by ``gymnasium.make`` is recorded as its id and
            keywords) or an importable class or function. Anything else (a lambda, an object
            built by hand, copied for each environment) trains as well, and its run is
            evaluated and continued from Python: ``pg.load(run_dir, env=...)``.
        policy: your own actor-critic network, a ``torch.nn.Module`` with ``distribution(x)``
            and ``value(x)`` (the protocol: :class:`policygrad.policies.ModuleActorCritic`),
            trained on the torch backend; None: the built-in MLPs (``hidden_sizes``,
            ``activation``, ...).
        env_kwargs: keyword arguments of the environment's constructor (JSON values, recorded).
        device: "cpu" (default), "cuda", ...
        **config: any key of :attr:`config_class` or of the training loop
            (:class:`policygrad.runconfig.TrainConfig`), e.g. ``seed=0``, ``learning_rate=3e-4``,
            ``backend="torch"``; the preset of (algorithm, environment) fills the rest.

    Raises:
        InputError: an unknown key (with the closest valid ones), a value out of range, an
            unknown environment, a network that does not follow the protocol.
    """

    algo: ClassVar[str]

    def __new__(cls, env: Any = "CartPole-v1", *args: Any, **kwargs: Any) -> Any:
        # PPO and REINFORCE on a sequence task ("seq:count") are sequence models.
        if isinstance(env, str) and env.startswith("seq:") and getattr(cls, "algo", None) in _SEQUENCE_MODELS:
            if args:
                raise InputError("a sequence model takes its settings as keywords")
            model = object.__new__(_SEQUENCE_MODELS[cls.algo])
            model.__init__(env, **kwargs)
            return model
        return super().__new__(cls)

    def __init__(self, env: Any = "CartPole-v1", *, policy: Any = None, env_kwargs: dict[str, Any] | None = None,
                 device: str | None = None, **config: Any) -> None:
        from policygrad.envs import describe_env
        from policygrad.runconfig import resolve_run

        _check_keys(self.algo, config)
        record = describe_env(env, env_kwargs)
        self.spec = resolve_run(self.algo, record.name, overrides=config, env_kwargs=record.kwargs,
                                policy=None if policy is None else _class_name(policy))
        self.device = device
        self._env = None if record.source is record.name else record.source
        self._net = policy
        self.run_dir: Path | None = None
        """The run directory this model trains in (None before the first :meth:`learn` or :meth:`save`)."""
        self._session: Any = None
        self._loaded_from: Path | None = None  # a checkpoint of run_dir other than its latest (pg.load)
        if policy is not None:
            self._ensure_session()  # check the network against the spaces now, not at learn()

    # --- what the model is ---------------------------------------------------------------------

    config_class: ClassVar[type] = _ConfigClass()  # type: ignore[assignment]
    """The algorithm's frozen config dataclass (``pg.PPO.config_class`` is ``PPOConfig``)."""

    @property
    def config(self) -> Any:
        """The resolved algorithm config (preset < keywords)."""
        return self.spec.config

    @property
    def env(self) -> str:
        return self.spec.env

    @property
    def num_timesteps(self) -> int:
        """Environment steps trained so far."""
        return 0 if self._session is None else self._session.step

    @property
    def observation_space(self) -> Any:
        """One environment's observation space (what :meth:`predict` takes one of)."""
        return self._ensure_session().eval_envs.single_observation_space

    @property
    def action_space(self) -> Any:
        """One environment's action space."""
        return self._ensure_session().eval_envs.single_action_space

    @property
    def policy(self) -> Any:
        """The policy as one torch module (:class:`policygrad.policies.Policy`): ``policy(obs)``
        encodes and normalises raw observations and returns the deterministic actions;
        ``policy.net`` is the trained network, and ``state_dict()`` holds the observation
        normaliser's statistics beside its weights."""
        from policygrad.training import policy_module

        return policy_module(self._ensure_session())

    # --- training -------------------------------------------------------------------------------

    def learn(self, total_steps: int, run_dir: str | os.PathLike | None = None,
              callback: Callback | Callable[[dict[str, Any]], bool | None] | None = None,
              progress_bar: bool = True) -> Model:
        """Train for ``total_steps`` more environment steps; returns the model.

        Args:
            total_steps: environment steps to add to what the model has trained.
            run_dir: where the run is written (config.json, metrics.csv, checkpoints, ...) the
                first time; None: ``runs/<algo>-<env>-<time>/``. A model that has a run directory
                (trained or loaded before) continues it, and ``run_dir`` must be None or that one.
            callback: a :class:`Callback` (``on_rollout_end``, ``on_update``, ``on_eval``), or a
                function called after every update with the metrics row just logged (a dict of
                metrics.csv's columns); returning ``False`` stops training there.
            progress_bar: show the progress bar (and the backend line).

        Raises:
            InputError: a bad ``total_steps`` or ``run_dir``.
            TrainingError: non-finite values or an environment that raised (the last checkpoint
                stays as it was).
        """
        from policygrad.rundir import default_run_dir, start_run
        from policygrad.training import train

        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise InputError(f"total_steps must be a positive int, got {shown(total_steps)}")
        if callback is not None and not (callable(callback) or isinstance(callback, Callback)):
            raise InputError(f"callback must be a function or a policygrad.Callback, got {type(callback).__name__}")
        if self._loaded_from is not None:
            raise InputError(
                f"this model was loaded from {self._loaded_from}, not from its run's last checkpoint, which "
                f"learn would continue; load {self.run_dir} to continue the run, or save this model as a new "
                f"run (model.save(DIR)) and learn on pg.load(DIR)"
            )
        if self.run_dir is not None:
            if run_dir is not None and Path(run_dir).resolve() != self.run_dir.resolve():
                raise InputError(f"this model trains in {self.run_dir}; save it there or load another run to train elsewhere")
            self._continue(self._session.step + total_steps if self._session is not None else total_steps)
            try:
                summary = train(self._session, self.run_dir, resumed=True, quiet=not progress_bar, callback=callback)
            finally:
                self._unlock()
            return self._after(summary)
        path = Path(run_dir) if run_dir is not None else default_run_dir(self.spec.algo, self.spec.env)
        spec = _with_total(self.spec, total_steps)
        self._close()
        self._session, summary = start_run(spec, path, self.device, quiet=not progress_bar, callback=callback,
                                           env=self._env, policy=self._net)
        self._unlock()
        self.spec, self.run_dir = spec, path
        return self._after(summary)

    def _after(self, summary: dict[str, Any]) -> Model:
        """The model; or, after a SIGINT or SIGTERM stopped training (its checkpoint saved), the
        signal again, to the handler in place outside training (``KeyboardInterrupt`` for
        SIGINT)."""
        signum = summary.get("interrupted")
        if signum:
            import signal
            import sys

            from policygrad.errors import signal_name

            print(f"policygrad: stopped by {signal_name(signum)} at step {summary['step']}; checkpoint saved in "
                  f"{self.run_dir}/checkpoints/last", file=sys.stderr)
            signal.raise_signal(signum)
        return self

    def _unlock(self) -> None:
        """Give up the run directory's lock between calls: the next ``learn`` re-reads the run's
        newest checkpoint anyway, so another process may continue the run meanwhile."""
        if self._session is not None and self._session.lock is not None:
            self._session.lock.release()
            self._session.lock = None

    def _continue(self, total: int) -> None:
        """Rebuild the session for a new total from the run's last checkpoint (as ``--resume``)."""
        from policygrad.rundir import reopen_run, write_run_config

        assert self.run_dir is not None
        spec = _with_total(self.spec, total)
        self._close()
        self._session = reopen_run(self.run_dir, spec, self.device, env=self._env, policy=self._net, lock=True)
        self.spec = spec
        write_run_config(self.run_dir, spec, self._session.algorithm.backend)

    # --- acting ---------------------------------------------------------------------------------

    def predict(self, observation: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Actions for raw observations, as the environment returns them.

        The policy's own preprocessing is applied (encoding, the observation normaliser as it
        stands, not updated), and Box actions are clipped to the action space's bounds.

        Args:
            observation: one observation, or a batch ``[n, *obs_shape]``; for a Dict (Tuple)
                space a dict (tuple) of such arrays, one per part, all single or all batches of
                the same n.
            deterministic: the policy's mode instead of a sample.

        Returns:
            ``(action, None)``: one action, or ``[n, ...]`` actions, as NumPy arrays (the
            ``None`` stands where recurrent policies return their state).

        Raises:
            InputError: an observation of the wrong shape for the observation space.
        """
        import numpy as np

        from policygrad.rollout import EnvStepper
        from policygrad.training import acting_backend

        session = self._ensure_session()
        space = session.eval_envs.single_observation_space
        obs, single = _observation_batch(space, observation, None)
        # The collector's and the evaluation's own conversions: observations in, actions out.
        io = EnvStepper(session.eval_envs, session.encoder)
        backend = acting_backend(session)
        backend.prepare()
        actions, _, _ = backend.act(io.policy_inputs(obs, session.obs_normalizer), deterministic=deterministic)
        actions = io.env_actions(np.asarray(actions), None)
        return (actions[0] if single else actions), None

    def export(self, path: str | os.PathLike, format: str = "onnx", *, overwrite: bool = False) -> Path:
        """Write the deterministic actor, with its preprocessing, as one graph to the file ``path``.

        The graph maps raw observations ``[n, *obs_shape]`` (any n; the observation space's dtype,
        int64 for Discrete) to what ``predict(obs, deterministic=True)`` returns for them:
        actions ``[n]`` or ``[n, K]`` int64 (Discrete, MultiDiscrete), or ``[n, D]`` float32 clipped
        to the Box bounds. It holds the observation encoding (flattening, one-hot), the observation
        normaliser with its statistics frozen as they stand, the policy's mode (argmax, or the
        Gaussian mean) and the clipping: :attr:`policy`'s forward, traced
        (:class:`policygrad.export.DeterministicActor`).

        Args:
            path: the file to write; written atomically (a reader never sees part of it).
            format: "onnx" (run it with onnxruntime; needs ``pip install 'policygrad[export]'``)
                or "torchscript" (``torch.jit.load``; TorchScript is deprecated in PyTorch and
                warns when loaded, but still loads).
            overwrite: replace ``path`` if it exists (otherwise an existing file is refused).

        Returns:
            ``path``.

        Raises:
            InputError: an unknown format, a missing extra (named), ``path`` an existing file
                without ``overwrite``, a directory, or in a missing directory.
        """
        from policygrad.export import DeterministicActor, check_format, export_actor

        check_format(format)  # before the session is built
        return export_actor(DeterministicActor.from_model(self), path, format, overwrite=overwrite)

    # --- saving ---------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Save the model as a run directory at ``path`` (config.json and a checkpoint of
        safetensors + JSON); a model that trains in ``path`` saves its checkpoint there. Returns
        the run directory.

        Raises:
            InputError: ``path`` exists and is not empty, nor this model's run directory; or it is
                the run directory of a model loaded from a checkpoint other than its last (whose
                place it would take).
        """
        from policygrad.checkpoint import checkpoint_path, save_checkpoint
        from policygrad.rundir import CreatedPaths, RunLock, check_new_run_dir, write_run_config
        from policygrad.training import checkpoint_state

        path = Path(path)
        session = self._ensure_session()
        own = self.run_dir is not None and path.resolve() == self.run_dir.resolve()
        if own and self._loaded_from is not None:
            raise InputError(f"this model was loaded from {self._loaded_from}; saving it into its run {path} would "
                             f"replace the run's last checkpoint; save it as a new run elsewhere")
        created = lock = None
        if own:
            lock = RunLock(path).acquire()
        else:
            check_new_run_dir(path)
            created = CreatedPaths(path)
        try:
            if created is not None:
                try:
                    created.create()
                except OSError as err:
                    created.undo()
                    raise InputError(f"cannot save to {path}: {err.strerror or err}") from None
                lock = RunLock(path).acquire()
                check_new_run_dir(path)
                try:
                    write_run_config(path, self.spec, session.algorithm.backend)
                except OSError as err:
                    created.undo()
                    raise InputError(f"cannot save to {path}: {err.strerror or err}") from None
            tensors, meta = checkpoint_state(session)
            try:
                save_checkpoint(checkpoint_path(path), tensors, meta)
            except OSError as err:
                if created is not None:
                    created.undo()
                raise InputError(f"cannot save to {path}: {err.strerror or err}") from None
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        if self.run_dir is None:
            self.run_dir = path
        lock.release()
        return path

    # --- internals ------------------------------------------------------------------------------

    def _ensure_session(self, rebuild: bool = False) -> Any:
        from policygrad.training import build_session

        if self._session is None or rebuild:
            self._close()
            self._session = build_session(self.spec, self.device, env=self._env, policy=self._net)
        return self._session

    def _close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __del__(self) -> None:
        try:
            self._close()
        except Exception:
            pass

    def __repr__(self) -> str:
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir is not None else ""
        return f"{type(self).__name__}({self.spec.env!r}, seed={self.spec.seed}{where})"


class PPO(Model):
    """Proximal Policy Optimization (:class:`policygrad.algorithms.PPO`)."""

    algo = "ppo"


class A2C(Model):
    """Synchronous advantage actor-critic (:class:`policygrad.algorithms.A2C`)."""

    algo = "a2c"


class REINFORCE(Model):
    """REINFORCE, with or without a learned baseline (:class:`policygrad.algorithms.Reinforce`)."""

    algo = "reinforce"


class NPG(Model):
    """Natural policy gradient (:class:`policygrad.algorithms.NPG`)."""

    algo = "npg"


class TRPO(Model):
    """Trust Region Policy Optimization (:class:`policygrad.algorithms.TRPO`)."""

    algo = "trpo"


class IMPALA(Model):
    """The V-trace actor-critic (:class:`policygrad.algorithms.IMPALA`)."""

    algo = "impala"


_MODELS: dict[str, type[Model]] = {cls.algo: cls for cls in (PPO, A2C, REINFORCE, NPG, TRPO, IMPALA)}


class SequenceModel:
    """An algorithm on a sequence task (``"seq:count"``, ``"seq:sort"``, ``"seq:reverse"``,
    ``"seq:add"``): :mod:`policygrad.sequence_training`. ``pg.GRPO("seq:count", seed=0).learn()``
    pretrains the small transformer, trains it and writes a run directory that ``policygrad eval``
    and ``train --resume`` read; ``pg.PPO`` and ``pg.REINFORCE`` on a ``seq:`` task are one too.

    Args:
        env: the task.
        env_kwargs: the task's settings (e.g. ``{"max_digits": 3}`` for ``seq:add``).
        **config: any key of :class:`policygrad.sequence_training.SequenceConfig` (``seed``,
            ``group_size``, ``beta``, ``reward="module:function"``, ``model=DIR``, ...); the
            algorithm's preset fills the rest.
    """

    algo: ClassVar[str]

    def __init__(self, env: str = "seq:count", *, device: str | None = None,
                 env_kwargs: dict[str, Any] | None = None, **config: Any) -> None:
        from policygrad.sequence_training import is_sequence_env, resolve_sequence_run

        if not is_sequence_env(env):
            raise InputError(f"{type(self).__name__} trains on sequence tasks (seq:count, ...), got {shown(env)}")
        if device not in (None, "cpu"):
            raise InputError(f"sequence runs train on the CPU, got device {shown(device)}")
        self.spec = resolve_sequence_run(self.algo, env, overrides=config, env_kwargs=env_kwargs)
        self.run_dir: Path | None = None
        self.summary: dict[str, Any] = {}
        """The last :meth:`learn`'s summary (``success_rate``, ``mean_return`` of its final evaluation)."""
        self._step = 0

    @property
    def env(self) -> str:
        return self.spec.env

    @property
    def config(self) -> Any:
        return self.spec.config

    @property
    def num_timesteps(self) -> int:
        """Updates trained so far."""
        return self._step

    def learn(self, total_steps: int | None = None, run_dir: str | os.PathLike | None = None,
              callback: Callable[[dict[str, Any]], bool | None] | None = None,
              progress_bar: bool = True) -> SequenceModel:
        """Train ``total_steps`` more updates (None: the preset's ``total_steps`` the first time);
        ``callback(row)`` after each update, ``False`` stops there."""
        import dataclasses as dc

        from policygrad.rundir import default_run_dir
        from policygrad.sequence_training import reopen_sequence_run, start_sequence_run, train_sequence

        if total_steps is not None and (isinstance(total_steps, bool) or not isinstance(total_steps, int)
                                        or total_steps < 1):
            raise InputError(f"total_steps must be a positive int, got {shown(total_steps)}")
        if self.run_dir is None:
            if total_steps is not None:
                self.spec = dc.replace(self.spec, config=dc.replace(self.spec.config, total_steps=total_steps))
            path = Path(run_dir) if run_dir is not None else default_run_dir(self.spec.algo, self.spec.env)
            session, summary = start_sequence_run(self.spec, path, quiet=not progress_bar, callback=callback)
            self.run_dir = path
        else:
            if run_dir is not None and Path(run_dir).resolve() != self.run_dir.resolve():
                raise InputError(f"this model trains in {self.run_dir}")
            from policygrad.sequence_training import write_sequence_config

            total = self._step + (total_steps or self.spec.config.total_steps)
            self.spec = dc.replace(self.spec, config=dc.replace(self.spec.config, total_steps=total))
            session = reopen_sequence_run(self.run_dir, self.spec, lock=True)
            try:
                write_sequence_config(self.run_dir, self.spec)
                summary = train_sequence(session, self.run_dir, resumed=True, quiet=not progress_bar,
                                         callback=callback)
            except BaseException:
                session.close()
                raise
        session.close()
        self._step, self.summary = summary["step"], summary
        return self

    def evaluate(self, prompts: int | None = None, seed: int | None = None) -> dict[str, Any]:
        """Greedy completions of held-out prompts: ``success_rate``, ``mean_return``, ..."""
        from policygrad.sequence_training import evaluate_sequence_run

        if self.run_dir is None:
            raise InputError("this model has not been trained yet: call learn() first")
        return evaluate_sequence_run(self.run_dir, prompts, seed=seed)

    def __repr__(self) -> str:
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir is not None else ""
        return f"{type(self).__name__}({self.spec.env!r}, seed={self.spec.seed}{where})"


class GRPO(SequenceModel):
    """Group Relative Policy Optimization on a sequence task."""

    algo = "grpo"


class RLOO(SequenceModel):
    """REINFORCE leave-one-out on a sequence task."""

    algo = "rloo"


class DrGRPO(SequenceModel):
    """Dr. GRPO (no standard-deviation scaling, sum aggregation) on a sequence task."""

    algo = "dr_grpo"


class ReMax(SequenceModel):
    """ReMax (the greedy completion's reward as baseline) on a sequence task."""

    algo = "remax"


class ReinforcePP(SequenceModel):
    """REINFORCE++ (batch-normalised group advantages) on a sequence task."""

    algo = "reinforce_pp"


class _SequencePPO(SequenceModel):
    algo = "ppo"


class _SequenceREINFORCE(SequenceModel):
    algo = "reinforce"


_SEQUENCE_MODELS: dict[str, type[SequenceModel]] = {"ppo": _SequencePPO, "reinforce": _SequenceREINFORCE}


def load(path: str | os.PathLike, device: str | None = None, *, env: Any = None, policy: Any = None,
         trust_run_code: bool = False) -> Model:
    """The model saved in the run directory ``path``, from its last checkpoint, or in a checkpoint
    of a run (``RUN/checkpoints/best``, ``RUN/checkpoints/step_N``, or a file in one), from that
    checkpoint: algorithm, config, policy, normaliser, optimiser and counters restored, so that
    ``predict`` works at once and ``learn`` continues the run. ``learn`` continues a run from its
    last checkpoint only, so a model loaded from another one refuses to learn (save it as a new
    run to train it on).

    Args:
        path: the run directory (its last checkpoint), or a checkpoint directory of it or a
            file in one (that checkpoint), or another path inside it (its last checkpoint).
        device: "cpu" (default), "cuda", ...
        env: the environment, for a run trained on one that its directory cannot re-create (an
            object or a function given in Python: config.json names it ``"<...>"``); it may also
            replace a recorded one with the same spaces. None: the recorded one.
        policy: the network, for a run that trained its own (config.json's ``"policy"``): a new
            instance of the same architecture, whose weights are then loaded.
        trust_run_code: build a recorded ``"module:attr"`` environment (which imports
            ``module``) without naming it again with ``env``.

    Raises:
        InputError: a missing path, or one that holds no run (config.json and a checkpoint) of
            this library; a run that needs ``env`` or ``policy``; a run whose environment would
            import a module that neither ``env`` nor ``trust_run_code`` allows. Nothing in a run
            directory is executed unless so allowed.
    """
    from policygrad.checkpoint import latest_checkpoint
    from policygrad.envs import describe_env
    from policygrad.runconfig import check_run_code, read_run_config
    from policygrad.rundir import reopen_run
    from policygrad.training import locate_checkpoint

    run_dir, checkpoint = locate_checkpoint(path)
    spec = read_run_config(run_dir)
    check_run_code(spec, env, trust_run_code, how="api")
    model = _MODELS[spec.algo].__new__(_MODELS[spec.algo])
    model.spec, model.device, model.run_dir = spec, device, run_dir
    model._env = None if env is None else describe_env(env, spec.env_kwargs if isinstance(env, str) else None).source
    model._net = policy
    model._session = None
    model._session = reopen_run(run_dir, spec, device, env=model._env, policy=policy, checkpoint=checkpoint)
    latest = latest_checkpoint(run_dir)
    model._loaded_from = None if latest is not None and latest.resolve() == checkpoint.resolve() else checkpoint
    return model


def _observation_batch(space: Any, observation: Any, path: str | None) -> tuple[Any, bool]:
    """``(a batch [n, ...] of observations, whether one observation was given)`` for ``space``:
    arrays checked for numbers and shape; a Dict's (Tuple's) parts part by part, all single or all
    batches of the same n.

    Raises:
        InputError: a wrong dtype, shape, missing part or mixed batch sizes (naming the part).
    """
    import numpy as np
    from gymnasium import spaces

    where = "" if path is None else f" part {path!r}"
    if isinstance(space, (spaces.Dict, spaces.Tuple)):
        is_dict = isinstance(space, spaces.Dict)
        keys = list(space.spaces) if is_dict else list(range(len(space.spaces)))
        if is_dict and not isinstance(observation, dict):
            raise InputError(f"observation{where} is a {type(observation).__name__}, expected a dict with keys "
                             f"{', '.join(map(repr, keys))} for {space}")
        if not is_dict and (not isinstance(observation, (tuple, list)) or len(observation) != len(keys)):
            raise InputError(f"observation{where} must be a tuple of {len(keys)} parts for {space}")
        parts, singles, sizes = {}, set(), set()
        for key in keys:
            if is_dict and key not in observation:
                raise InputError(f"observation{where} has no key {key!r}, expected {', '.join(map(repr, keys))}")
            name = str(key) if path is None else f"{path}.{key}"
            parts[key], single = _observation_batch(space[key], observation[key], name)
            singles.add(single)
            sizes.add(_batch_size(parts[key]))
        if len(singles) != 1 or len(sizes) != 1:
            raise InputError(f"the parts of observation{where} mix single observations and batches of different sizes")
        return (parts if is_dict else tuple(parts.values())), singles.pop()
    obs = np.asarray(observation)
    shape = tuple(space.shape or ())
    if obs.dtype.kind not in "biuf":
        raise InputError(f"observation{where} has dtype {obs.dtype}, expected numbers for {space}")
    single = obs.shape == shape
    if not single and obs.shape[1:] != shape:
        raise InputError(f"observation{where} has shape {obs.shape}, expected {shape} or "
                         f"[n, {', '.join(map(str, shape))}] for {space}")
    return (obs[None] if single else obs), single


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        return _batch_size(next(iter(batch.values())))
    if isinstance(batch, tuple):
        return _batch_size(batch[0])
    return int(batch.shape[0])


def _class_name(module: Any) -> str:
    """``"module:Class"`` of a user's network (recorded in config.json, never imported)."""
    cls = type(module)
    return f"{cls.__module__}:{cls.__qualname__}"


def _with_total(spec: Any, total_steps: int) -> Any:
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, total_steps=total_steps))


def _check_keys(algo: str, config: dict[str, Any]) -> None:
    """InputError for a keyword that is no config key, naming the closest ones."""
    from policygrad.algorithms import CONFIGS
    from policygrad.runconfig import TRAIN_KEYS

    valid = sorted({f.name for f in dataclasses.fields(CONFIGS[algo])} | set(TRAIN_KEYS))
    for key in config:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise InputError(f"unknown {algo} config key {shown(key)}{hint} (valid: {', '.join(valid)})")
