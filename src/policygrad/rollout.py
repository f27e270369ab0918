"""Collecting experience from Gymnasium vector environments into time-major rollouts.

A :class:`RolloutCollector` steps N environments T times with the current policy and returns a
frozen :class:`Rollout` of ``[T, N, ...]`` tensors, the input of every algorithm's update.

The fields and their shapes are tabled in :mod:`policygrad.types`.

Auto-reset modes (``env.metadata["autoreset_mode"]``, Gymnasium 1.x):

* SAME_STEP: the step that ends an episode returns the next episode's first observation and
  the final one in ``info["final_obs"]``. At a truncation the collector runs one extra critic
  forward pass on just the truncated environments' final observations.
* NEXT_STEP: the step that ends an episode returns the final observation, and the environment's
  next step is a dummy transition that ignores its action and returns the new first observation
  (reward 0). Its row is kept so that the buffers stay [T, N], marked ``valid = False``, and
  dropped by the algorithms before any loss. V(final observation) is then simply values[t+1].

Raw (unscaled) episode returns and lengths are tracked separately for the metrics.

Speed. The buffers are allocated once per collector and reused by every :meth:`collect`; the
per-step work is one ``torch.from_numpy`` of the observations, one policy call (actions,
log-probabilities and values together, no graph), and NumPy writes into NumPy views of the
torch buffers.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from torch import Tensor

from policygrad.errors import InputError, Interrupted, TrainingError, describe_error, shown
from policygrad.normalize import ObservationNormalizer, RewardScaler
from policygrad.numeric import all_finite
from policygrad.seeding import derive_seed, env_seed
from policygrad.types import Rollout

__all__ = [
    "SAMPLING_KEY", "Rollout", "RolloutCollector", "CollectionStopped", "EnvStepper", "make_policy", "autoreset_mode",
    "stack_observations",
]

SAMPLING_KEY = 3
"""The :func:`~policygrad.seeding.derive_seed` key of a collector's sampling generator (the
training loop's other keys: 1 evaluations, 2 their confirmations)."""

Encoder = Callable[[Tensor, torch.dtype], Tensor]
"""Raw observations ``[N, *obs_shape]`` -> ``[N, obs_dim]`` (``policygrad.policies`` encoders): floats,
or an image's raw pixels in the encoder's ``store_dtype``."""


def make_policy(
    observation_space: spaces.Space,
    action_space: spaces.Space,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    use_sde: bool = False,
    log_std_init: float = 0.0,
    image_obs: str = "auto",
    share_encoder: bool = True,
    ortho_init: bool = True,
) -> tuple[torch.nn.Module, Encoder]:
    """The actor-critic for a single environment's spaces, split from its observation encoder.

    The returned policy acts on *encoded* observations ``[..., obs_dim]`` (a flat Box): the
    collector encodes (flattens a Box, one-hot encodes a Discrete) and normalises first, and
    stores exactly what the policy saw, so an algorithm can feed ``rollout.observations`` back to
    the policy unchanged.

    ``use_sde`` gives Box actions gSDE exploration (:class:`~policygrad.policies.MLPGSDEPolicy`);
    ``log_std_init`` is their initial log σ. Observations with images: the encoder flattens an
    image without converting it (the collector stores its raw uint8 pixels) and the policy's
    first module, its trunk, scales and convolves it (``image_obs``, ``share_encoder``: see
    :func:`~policygrad.policies.make_actor_critic`).

    Raises:
        InputError: an unsupported observation or action space (named in the message).
    """
    from policygrad.policies import ActorCritic, FlattenObservation, make_actor_critic

    full = make_actor_critic(observation_space, action_space, tuple(hidden_sizes), activation, log_std_init, use_sde,
                             image_obs, share_encoder, ortho_init)
    policy = ActorCritic(FlattenObservation((full.obs_dim,)), full.actor, full.critic, full.trunk, full.critic_trunk)
    return policy, full.encoder


def autoreset_mode(envs: VectorEnv) -> AutoresetMode:
    """The env's auto-reset mode; InputError unless it is NEXT_STEP or SAME_STEP."""
    mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if isinstance(mode, str):
        try:
            mode = AutoresetMode(mode)
        except ValueError:
            pass
    if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
        raise InputError(f"vector environments must auto-reset (NEXT_STEP or SAME_STEP), this one has {mode!r}")
    return mode


def _num_mask_actions(action_space: spaces.Space) -> int | None:
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(np.sum(action_space.nvec))
    return None


def _action_buffer_spec(action_space: spaces.Space) -> tuple[tuple[int, ...], torch.dtype]:
    if isinstance(action_space, spaces.Discrete):
        return (), torch.long
    if isinstance(action_space, spaces.MultiDiscrete):
        return (int(action_space.nvec.shape[0]),), torch.long
    if isinstance(action_space, spaces.MultiBinary):
        return (int(action_space.shape[0]),), torch.long
    if isinstance(action_space, spaces.Box):
        return (int(action_space.shape[0]),), torch.float32
    raise InputError(f"unsupported action space {action_space!r}")


def stack_observations(observations: Sequence[Any]) -> Any:
    """Single observations -> a batch: arrays stacked, dicts and tuples part by part."""
    first = observations[0]
    if isinstance(first, dict):
        return {key: stack_observations([o[key] for o in observations]) for key in first}
    if isinstance(first, tuple):
        return tuple(stack_observations([o[k] for o in observations]) for k in range(len(first)))
    return np.stack(observations)


def _float_parts(obs: Any, what: str) -> Any:
    """``(label, array)`` for each floating-point array of a (nested) dict or tuple of arrays."""
    for key, part in (obs.items() if isinstance(obs, dict) else enumerate(obs)):
        label = f"{what} part {key!r}"
        if isinstance(part, (dict, tuple)):
            yield from _float_parts(part, label)
        elif np.issubdtype(np.asarray(part).dtype, np.floating):
            yield label, np.asarray(part)


class EnvStepper:
    """What the collector and the evaluation (:mod:`policygrad.evaluation`) share: actions out,
    observations in, checked.

    Args:
        envs: a Gymnasium vector environment with NEXT_STEP or SAME_STEP auto-reset.
        encoder: raw observations -> ``[N, obs_dim]`` floats (see :func:`make_policy`).
    """

    def __init__(self, envs: VectorEnv, encoder: Encoder, step_timeout: float | None = None) -> None:
        self.envs = envs
        self.encoder = encoder
        self.step_timeout = step_timeout or None
        """Seconds one vectorised step may take (None: no bound); see :meth:`step`."""
        self.env_interrupts = False
        """Whether a ``KeyboardInterrupt`` inside a step is the environment's own (training
        handles the user's SIGINT itself, so there it is) rather than the user's."""
        self._async = isinstance(envs.unwrapped, gym.vector.AsyncVectorEnv)
        # Stepped through its own step_async/step_wait (a bounded wait) only when nothing wraps it:
        # a vector wrapper's step must run. A wrapped one is bounded by the watchdog instead.
        self._bare_async = isinstance(envs, gym.vector.AsyncVectorEnv)
        self.num_envs = int(envs.num_envs)
        self.mode = autoreset_mode(envs)
        space = envs.single_observation_space
        self.check_obs = isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.floating)
        from policygrad.policies import FlattenObservation

        self.flat_box = (
            self.check_obs
            and len(space.shape) == 1
            and isinstance(encoder, FlattenObservation)
            and encoder.shape == space.shape
        )
        action_space = envs.single_action_space
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None
        if isinstance(action_space, spaces.Box):
            low, high = action_space.low.astype(np.float32), action_space.high.astype(np.float32)
            if np.isfinite(low).any() or np.isfinite(high).any():
                self.low, self.high = low, high
        self.binary_actions = isinstance(action_space, spaces.MultiBinary)
        """MultiBinary actions: the env takes int8 0/1 arrays."""
        self.store_dtype: torch.dtype = getattr(encoder, "store_dtype", torch.float32)
        """The dtype of what :meth:`encode` returns (uint8: raw pixels)."""
        self.structured = isinstance(space, (spaces.Dict, spaces.Tuple))
        """Dict or Tuple observations: the env returns a dict (tuple) of arrays."""
        self.mask_actions = _num_mask_actions(action_space)
        self.steps = 0
        """Environment steps taken (N per vector step); names the step in error messages."""

    def encode(self, obs: Any) -> np.ndarray:
        """Raw observations ``[N, *shape]`` (a dict or tuple of such arrays for Dict and Tuple
        spaces) -> ``[N, obs_dim]`` floats (a NumPy view where possible), or the raw uint8 pixels
        of an image observation (the encoder's ``store_dtype``).

        A flat float Box needs no encoding: its array is used as it is, without a round trip
        through torch.
        """
        if self.structured:
            return self.encoder(obs, self.store_dtype).numpy()
        obs = np.asarray(obs)
        if self.flat_box:
            return obs
        return self.encoder(torch.from_numpy(obs), self.store_dtype).numpy()

    def policy_inputs(self, obs: np.ndarray, obs_normalizer: ObservationNormalizer | None = None) -> np.ndarray:
        """Raw observations ``[N, *shape]`` -> what the policy reads: encoded, normalised with the
        statistics as they stand (not updated), as a contiguous float32 array."""
        encoded = self.encode(obs)
        if obs_normalizer is not None:
            encoded = obs_normalizer.normalize(encoded)
        return np.ascontiguousarray(encoded, dtype=np.float32)

    def check_observations(self, obs: Any, what: str = "observation") -> None:
        """TrainingError naming the step and the environment if ``obs [N, ...]`` has a NaN or inf
        (in a float Box, or in any floating-point part of a Dict or Tuple observation)."""
        if self.structured:
            for name, part in _float_parts(obs, what):
                self._check_finite(part, name)
        elif self.check_obs:
            self._check_finite(obs, what)

    def _check_finite(self, obs: np.ndarray, what: str) -> None:
        if not all_finite(obs):
            rows = np.asarray(obs).reshape(len(obs), -1)
            i = int(np.nonzero(~np.isfinite(rows).all(axis=1))[0][0])
            shown = f": {rows[i].tolist()}" if rows.shape[1] <= 8 else ""
            raise TrainingError(f"non-finite {what} at step {self.steps} (environment {i}){shown}")

    def env_actions(self, actions: Tensor | np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """The actions as the env takes them: NumPy, Box actions clipped to the bounds, MultiBinary
        ones as int8 0/1."""
        actions_np = actions.numpy() if isinstance(actions, Tensor) else actions
        if self.binary_actions:
            return np.asarray(actions_np, dtype=np.int8)
        if self.low is None:
            return actions_np
        return np.clip(actions_np, self.low, self.high, out=out)

    def step(self, actions_np: np.ndarray) -> tuple[Any, ...]:
        """One vectorised step.

        Raises:
            TrainingError: the environment raised anything (``SystemExit`` included), a worker
                process died, or the step took longer than ``step_timeout`` (async environments
                are then shut down). One line naming the step and, where known, the copy; the
                environment's own traceback is the error's ``detail``.
        """
        step = self.steps + self.num_envs
        level = gym.logger.min_level
        if self._async:  # a worker's error comes back as one line, not Gymnasium's log of it
            gym.logger.min_level = gym.logger.ERROR + 10
        try:
            if self._bare_async:
                result = self._step_async(actions_np, step)
            elif self.step_timeout is not None and (watchdog := _watchdog()) is not None:
                watchdog.begin(self.step_timeout)
                try:
                    result = self.envs.step(actions_np)
                finally:
                    watchdog.end()
            else:
                result = self.envs.step(actions_np)
        except (TrainingError, InputError, Interrupted):
            raise
        except StepTimeout:
            raise TrainingError(f"the environment did not finish step {step} within {self.step_timeout:g} s "
                                "(env_step_timeout)") from None
        except KeyboardInterrupt:
            if not self.env_interrupts:
                raise
            raise self._failure(sys.exc_info()[1], step) from None
        except BaseException as err:  # SystemExit too: an environment never ends the program
            raise self._failure(err, step) from None
        finally:
            gym.logger.min_level = level
        self.steps += self.num_envs
        return result

    def _step_async(self, actions_np: np.ndarray, step: int) -> tuple[Any, ...]:
        import multiprocessing

        envs = self.envs.unwrapped
        envs.step_async(actions_np)
        try:
            return envs.step_wait(timeout=self.step_timeout)
        except multiprocessing.TimeoutError:
            envs.close(terminate=True)  # the hung workers go now, not at exit
            raise StepTimeout() from None

    def _failure(self, err: BaseException, step: int) -> TrainingError:
        """The one line for an environment's failure at ``step`` (and its traceback as detail)."""
        import traceback

        detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        text = str(err).strip().splitlines()
        what = describe_error(err, 200, first_line=True)
        index = _copy_index(err)
        labelled = re.match(r"\[environment (\d+)\] (.*)", text[0]) if text else None
        if labelled:  # raised in an async worker (policygrad.envs labels it there)
            index, what = int(labelled.group(1)), labelled.group(2)  # cut in the worker
        else:
            dead = self._dead_worker()
            if dead is not None:
                index, code = dead
                return TrainingError(f"environment worker {index} died at step {step} (exit code {code})", detail=detail)
        where = f" (environment {index})" if index is not None else ""
        return TrainingError(f"the environment raised at step {step}{where}: {what}", detail=detail)

    def _dead_worker(self) -> tuple[int, int | None] | None:
        if not self._async:
            return None
        for i, process in enumerate(getattr(self.envs.unwrapped, "processes", [])):
            if not process.is_alive() and process.exitcode != 0:  # 0: it reported an error and returned
                return i, process.exitcode
        return None

    def masks(self, info: dict[str, Any], out: np.ndarray) -> None:
        """Write ``info["action_mask"]`` into ``out [N, A]``; environments without one allow all."""
        mask = info.get("action_mask")
        if mask is None:
            out[:] = True
            return
        mask = np.asarray(mask)
        if mask.dtype == object:
            mask = np.stack([np.ones(self.mask_actions, bool) if m is None else np.asarray(m) for m in mask])
        if mask.shape != out.shape:
            raise InputError(f"info['action_mask'] has shape {mask.shape}, expected {out.shape}")
        np.not_equal(mask, 0, out=out)
        present = info.get("_action_mask")
        if present is not None and not np.all(present):
            out[~np.asarray(present, dtype=bool)] = True


class StepTimeout(Exception):
    """An environment step ran past ``env_step_timeout`` (raised in the main thread by the
    watchdog's SIGALRM)."""


class _Watchdog:
    """Bounds the time of a synchronous step: a daemon thread watches the clock and, when a step
    overruns, sends SIGALRM to the main thread, whose handler raises :class:`StepTimeout` in the
    environment's code. One per process (:func:`_watchdog`), created on first use in the main
    thread; its SIGALRM handler passes any other alarm on to the handler it replaced. A step costs
    two clock reads; the thread wakes a few times a second."""

    def __init__(self) -> None:
        import signal
        import threading

        self.timeout = 0.0
        self.started: float | None = None
        self.fired = False
        self._main = threading.main_thread()
        self._previous = signal.signal(signal.SIGALRM, self._alarm)
        threading.Thread(target=self._run, name="policygrad-step-watchdog", daemon=True).start()

    def begin(self, timeout: float) -> None:
        self.timeout, self.fired = timeout, False
        self.started = time.monotonic()

    def end(self) -> None:
        self.started = None

    def _alarm(self, signum: int, frame: Any) -> None:
        if self.fired and self.started is not None:
            self.started = None
            raise StepTimeout()
        if callable(self._previous):
            self._previous(signum, frame)

    def _run(self) -> None:
        import signal

        while self._main.is_alive():
            time.sleep(0.1 if self.timeout < 2 else 0.5)
            started = self.started
            if started is not None and not self.fired and time.monotonic() - started > self.timeout:
                self.fired = True
                signal.pthread_kill(self._main.ident, signal.SIGALRM)


_WATCHDOG: list[_Watchdog] = []


def _watchdog() -> _Watchdog | None:
    """The process's step watchdog, or None off the main thread (only it receives signals)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    if not _WATCHDOG:
        _WATCHDOG.append(_Watchdog())
    return _WATCHDOG[0]


def _copy_index(err: BaseException) -> int | None:
    """Which copy of a vector environment raised ``err``: the loop index of Gymnasium's
    ``SyncVectorEnv.step`` in the traceback, or the index an async worker attached."""
    index = getattr(err, "env_index", None)
    if isinstance(index, int):
        return index
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name in ("step", "reset") and frame.f_code.co_filename.endswith("sync_vector_env.py"):
            i = frame.f_locals.get("i")
            return i if isinstance(i, int) else None
        tb = tb.tb_next
    return None


class CollectionStopped(Exception):
    """:meth:`RolloutCollector.collect` stopped before the rollout was complete, because its
    ``stop`` object asked it to (a signal during training); the partial rollout is dropped."""


class RolloutCollector:
    """Steps a vector environment with a policy and fills :class:`Rollout` buffers.

    Args:
        envs: a Gymnasium vector environment with NEXT_STEP or SAME_STEP auto-reset.
        policy: an ActorCritic acting on encoded observations (see :func:`make_policy`), with
            ``act(obs, action_mask) -> (actions, log_prob, value)`` and ``value(obs)``.
        num_steps: T, steps per environment per rollout.
        encoder: raw observations -> ``[N, obs_dim]`` floats (the second result of
            :func:`make_policy`). None: the observations are already flat floats.
        obs_normalizer: normalises the encoded observations (statistics updated while collecting).
        reward_scaler: scales the rewards (statistics updated while collecting).
        clip_reward: train on ``sign(r)`` ∈ {−1, 0, 1} instead of ``r`` (the Atari preprocessing,
            Mnih et al. 2015), before any scaling. The episode returns and ``reward_per_step`` stay
            those of the raw rewards.
        device: where the policy lives; the buffers stay on the CPU and the returned rollout is
            moved there.
        sde_sample_freq: a gSDE policy (``policy.sde``) gets new noise matrices at the start of
            every rollout and, if positive, every this many steps.
        actor: what acts: a :class:`~policygrad.backends.Backend` (the algorithm's, so that acting
            runs the network forward that training uses), anything with its ``act`` and ``value``
            on NumPy arrays. None: the torch backend on ``policy``.
        step_timeout: seconds one vectorised step may take (None: unbounded); see
            :meth:`EnvStepper.step`.

    Attributes:
        generator: the torch generator the actions are drawn from: the collector's own, apart
            from the learner's (minibatch shuffles use torch's global one), seeded by
            :meth:`reset` with a seed (None until then: torch's global generator). So the actions
            of a run do not depend on how many random numbers its updates drew, and a rollout
            worker in another process draws what this collector would (:mod:`policygrad.distributed`).
        steps: environment steps taken so far (T · N per rollout, dummy steps included).
        reward_per_step: raw reward per valid step of the last rollout.
        episode_returns, episode_lengths: raw returns and lengths of the episodes finished since
            the last :meth:`pop_episodes`, in the order they finished. A step whose
            ``info["life_loss"]`` is true (an Atari life lost while the game goes on; see
            :class:`policygrad.atari.LifeLossTermination`) ends the episode for training but not
            here: the game's return and length carry on to its real end.
    """

    def __init__(
        self,
        envs: VectorEnv,
        policy: torch.nn.Module,
        num_steps: int,
        *,
        encoder: Encoder | None = None,
        obs_normalizer: ObservationNormalizer | None = None,
        reward_scaler: RewardScaler | None = None,
        clip_reward: bool = False,
        device: torch.device | str = "cpu",
        sde_sample_freq: int = -1,
        actor: Any = None,
        step_timeout: float | None = None,
    ) -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise InputError(f"num_steps must be a positive int, got {shown(num_steps)}")
        if encoder is None:
            from policygrad.policies import FlattenObservation

            encoder = FlattenObservation(envs.single_observation_space.shape)
        self.policy = policy
        if actor is None:
            from policygrad.backends import TorchBackend

            actor = TorchBackend(policy)
        self.actor = actor
        self.sde_sample_freq = int(sde_sample_freq)
        self.generator: torch.Generator | None = None
        self.stop: Any = None
        """None, or an object whose ``signum`` turning non-None stops :meth:`collect` before its
        next step (:class:`CollectionStopped`)."""
        self.num_steps = T = num_steps
        self.device = torch.device(device)
        self.obs_normalizer = obs_normalizer
        self.reward_scaler = reward_scaler
        self.clip_reward = bool(clip_reward)
        self._io = io = EnvStepper(envs, encoder, step_timeout)
        self.envs = envs
        self.num_envs = N = io.num_envs
        if reward_scaler is not None and reward_scaler.returns.shape != (N,):
            raise InputError(f"the reward scaler tracks {reward_scaler.returns.shape[0]} environments, not {N}")
        if obs_normalizer is not None and obs_normalizer.rms.shape != (policy.obs_dim,):
            raise InputError(f"the observation normaliser has shape {obs_normalizer.rms.shape}, not ({policy.obs_dim},)")
        action_shape, action_dtype = _action_buffer_spec(envs.single_action_space)

        # Buffers, allocated once. observations and action_masks have a row T: the observation
        # after the last step, which becomes row 0 of the next rollout.
        # What the encoder gives is stored (raw uint8 pixels for images); the policy's first
        # module does the rest. Normalised observations are floats.
        store_dtype = io.store_dtype if obs_normalizer is None else torch.float32
        self._obs = torch.zeros(T + 1, N, policy.obs_dim, dtype=store_dtype)
        self._obs_rows = self._obs.unbind(0)  # views, so that a step does not index
        self._actions = torch.zeros(T, N, *action_shape, dtype=action_dtype)
        self._log_probs = torch.zeros(T, N)
        self._rewards = torch.zeros(T, N)
        self._terminated = torch.zeros(T, N, dtype=torch.bool)
        self._truncated = torch.zeros(T, N, dtype=torch.bool)
        self._values = torch.zeros(T, N)
        self._next_values = torch.zeros(T, N)
        self._next_values_np = self._next_values.numpy()
        self._episode_step = torch.zeros(T, N, dtype=torch.long)
        self._valid = torch.ones(T, N, dtype=torch.bool)
        self._masks: Tensor | None = None
        # NumPy views of the buffers (shared memory): a row write is one NumPy assignment.
        self._numpy_views = tuple(
            b.numpy()
            for b in (self._obs, self._rewards, self._terminated, self._truncated, self._episode_step,
                      self._valid, self._actions, self._log_probs, self._values)
        )
        self._env_actions = np.zeros((N, *action_shape), dtype=np.float32) if io.low is not None else None

        # Per-environment state between steps.
        self._dummy = np.zeros(N, dtype=bool)  # NEXT_STEP: the next step of env i is a reset
        self._ep_step = np.zeros(N, dtype=np.int64)  # steps since the episode's start
        self._ep_return = np.zeros(N, dtype=np.float64)
        self._started = False
        self._has_carry = False
        self.episode_returns: list[float] = []
        self.episode_lengths: list[int] = []
        self.reward_per_step = float("nan")
        """Raw reward per valid step of the last rollout (the learning signal of a continuing task)."""

    @property
    def steps(self) -> int:
        """Environment steps taken so far."""
        return self._io.steps

    @steps.setter
    def steps(self, value: int) -> None:
        self._io.steps = int(value)

    @property
    def autoreset_mode(self) -> AutoresetMode:
        return self._io.mode

    def reset(self, seed: int | None = None, *, first_copy: int = 0, total_copies: int | None = None,
              stream: int = 0) -> None:
        """Reset every environment and start new episodes.

        With a ``seed``, environment copy i is reset with ``env_seed(seed, total_copies) +
        first_copy + i`` and :attr:`generator` is seeded with ``derive_seed(seed,
        SAMPLING_KEY, stream)``. The defaults (copies 0 .. N − 1 of N, stream 0) are a run's one
        collector; a rollout worker holding copies ``first_copy ..`` of ``total_copies`` passes
        its share and its own stream, so that one worker holding all copies resets and draws
        exactly as this process would.
        """
        reset_seed = None
        if seed is not None:
            total = self.num_envs if total_copies is None else int(total_copies)
            reset_seed = env_seed(seed, total) + int(first_copy)
            if self.generator is None:
                self.generator = torch.Generator()
            self.generator.manual_seed(derive_seed(seed, SAMPLING_KEY, int(stream)))
        try:
            obs, info = self.envs.reset(seed=reset_seed)
        except Exception as err:
            raise TrainingError(f"the environment raised on reset: {describe_error(err)}") from None
        self._io.check_observations(obs)
        self._store_obs(obs, 0, None)
        if self._io.mask_actions is not None and "action_mask" in info:
            if self._masks is None:
                self._masks = torch.ones(self.num_steps + 1, self.num_envs, self._io.mask_actions, dtype=torch.bool)
            self._io.masks(info, self._masks[0].numpy())
        elif self._masks is not None:
            self._masks[0] = True
        self._dummy[:] = False
        self._ep_step[:] = 0
        self._ep_return[:] = 0.0
        if self.reward_scaler is not None:
            self.reward_scaler.reset()
        self._started = True
        self._has_carry = False

    def _store_obs(self, obs: np.ndarray, row: int, update_mask: np.ndarray | None) -> None:
        encoded = self._io.encode(obs)
        out = self._numpy_views[0][row]
        if self.obs_normalizer is not None:
            self.obs_normalizer(encoded, update_mask, out=out)
        else:
            out[:] = encoded

    def pop_episodes(self) -> tuple[list[float], list[int]]:
        """The raw returns and lengths of the episodes finished since the last call, then forget them."""
        returns, lengths = self.episode_returns, self.episode_lengths
        self.episode_returns, self.episode_lengths = [], []
        return returns, lengths

    @torch.no_grad()
    def collect(self) -> Rollout:
        """Step every environment ``num_steps`` times with the current policy.

        Returns:
            The :class:`Rollout` (its tensors are this collector's buffers; see :class:`Rollout`).

        Raises:
            TrainingError: a non-finite observation or reward (naming the step and the
                environment), or an environment that raised.
        """
        if not self._started:
            self.reset()
        T, N = self.num_steps, self.num_envs
        io, policy, device = self._io, self.policy, self.device
        on_cpu = device.type == "cpu"
        next_step = io.mode == AutoresetMode.NEXT_STEP
        obs_buf, masks = self._obs, self._masks
        obs_np, rewards_np, terminated_np, truncated_np, episode_step_np, valid_np, actions_np, log_probs_np, values_np = (
            self._numpy_views
        )
        values_buf = self._values
        masks_np = None if masks is None else masks.numpy()
        ep_return, ep_step, dummy = self._ep_return, self._ep_step, self._dummy
        reward_scaler = self.reward_scaler
        clip_reward = self.clip_reward
        bootstrap: list[tuple[int, np.ndarray, np.ndarray]] = []  # (t, truncated envs, V(final obs))
        reward_sum = np.zeros(N, dtype=np.float64)  # raw rewards of valid steps, per environment

        if self._has_carry:  # the observation after the previous rollout's last step
            obs_np[0] = obs_np[T]
            if masks_np is not None:
                masks_np[0] = masks_np[T]

        actor = self.actor
        prepare = getattr(actor, "prepare", None)
        if prepare is not None:
            prepare()
        sde = getattr(policy, "sde", False)
        resample = self.sde_sample_freq if sde and self.sde_sample_freq > 0 else 0
        generator = self.generator
        if sde:
            policy.actor.reset_noise(N, generator)
        # NEXT_STEP: while no environment owes a dummy step, every row is valid and needs no masking.
        pending_dummies = next_step and bool(dummy.any())
        if next_step:
            valid_np[:] = True
        plain_obs = self.obs_normalizer is None and io.flat_box  # observations go to the buffer as they are
        clip_free = io.low is None and not io.binary_actions  # the actions go to the env as they are
        stop = self.stop
        io.env_interrupts = stop is not None  # in training, SIGINT is handled: a KeyboardInterrupt is the env's
        for t in range(T):
            if stop is not None and stop.signum is not None:
                raise CollectionStopped(f"collection stopped at step {io.steps}")
            if resample and t and t % resample == 0:
                policy.actor.reset_noise(N, generator)
            actions_t, log_probs_np[t], values_np[t] = actor.act(obs_np[t], None if masks_np is None else masks_np[t],
                                                                  generator=generator)
            actions_np[t] = actions_t

            try:
                obs, reward, terminated, truncated, info = io.step(
                    actions_t if clip_free else io.env_actions(actions_t, self._env_actions)
                )
            except TrainingError:
                if stop is not None and stop.signum is not None:  # the signal reached the workers too
                    raise CollectionStopped(f"collection stopped at step {io.steps}") from None
                raise

            if not all_finite(reward):
                i = int(np.nonzero(~np.isfinite(reward))[0][0])
                raise TrainingError(f"non-finite reward at step {io.steps} (environment {i}): {reward[i]}")
            io.check_observations(obs)
            episode_step_np[t] = ep_step
            if pending_dummies:
                valid = ~dummy
                valid_np[t] = valid
                terminated = terminated & valid
                truncated = truncated & valid
                raw = np.where(valid, reward, 0.0)
                ep_return += raw
                reward_sum += raw
                ep_step += valid
            else:
                valid = None
                ep_return += reward
                reward_sum += reward
                ep_step += 1
            done = terminated | truncated
            terminated_np[t] = terminated
            truncated_np[t] = truncated
            if clip_reward:  # the episode statistics above took the raw rewards
                reward = np.sign(reward)
            if reward_scaler is None:
                rewards_np[t] = reward
            else:
                reward_scaler(reward, done, valid, out=rewards_np[t])

            any_done = bool(np.logical_or.reduce(done))
            if any_done:
                life_loss = info.get("life_loss")
                ended = np.nonzero(done if life_loss is None else done & ~life_loss)[0]  # games over
                self.episode_returns.extend(ep_return[ended].tolist())
                self.episode_lengths.extend(ep_step[ended].tolist())  # steps taken = length
                ep_return[ended] = 0.0
                ep_step[ended] = 0
                if next_step:
                    # The returned observation is the final one; it is not a state the policy
                    # is trained on (its row is a dummy), so it stays out of the statistics.
                    self._store_obs(obs, t + 1, ~done)
                else:
                    self._store_obs(obs, t + 1, None)
                    cut = np.nonzero(truncated & ~terminated)[0]
                    if len(cut):
                        final = stack_observations([info["final_obs"][i] for i in cut])
                        io.check_observations(final, "final observation")
                        bootstrap.append((t, cut, actor.value(io.policy_inputs(final, self.obs_normalizer))))
            elif plain_obs:
                obs_np[t + 1] = obs
            else:
                self._store_obs(obs, t + 1, None)
            if next_step and (any_done or pending_dummies):
                dummy[:] = done
                pending_dummies = any_done
            if masks_np is not None:
                io.masks(info, masks_np[t + 1])

        # V(s_{t+1}): values[t+1], the bootstrap V(s_T) at the end, V(final obs) at truncations
        # (SAME_STEP), 0 at terminations.
        next_values = self._next_values
        next_values_np = self._next_values_np
        next_values_np[:-1] = values_np[1:]
        next_values_np[-1] = actor.value(obs_np[T])
        for t, cut, value_final in bootstrap:
            next_values_np[t, cut] = value_final
        next_values_np[terminated_np] = 0.0
        self._has_carry = True
        valid_steps = int(valid_np.sum()) if next_step else T * N
        self.reward_per_step = float(reward_sum.sum()) / max(1, valid_steps)

        rollout = Rollout(
            observations=obs_buf[:T],
            actions=self._actions,
            log_probs=self._log_probs,
            rewards=self._rewards,
            terminated=self._terminated,
            truncated=self._truncated,
            values=values_buf,
            next_values=next_values,
            episode_step=self._episode_step,
            action_masks=None if masks is None else masks[:T],
            valid=self._valid if next_step else None,
        )
        return rollout if on_cpu else rollout.to(device)
