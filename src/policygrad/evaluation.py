"""The one routine that steps environments to evaluate a policy.

``policygrad eval``, the evaluations during training (the target-return checks and the final
evaluation) and the reward-per-step measurement of continuing tasks all run :func:`evaluate`.
It acts through a duck-typed actor: any object with

    actor.act(obs, action_mask=None, deterministic=False, generator=None) -> (actions, log_prob, value)

where ``obs`` is a float tensor ``[N, obs_dim]`` of encoded (and normalised) observations on the
actor's device, ``action_mask`` a bool tensor ``[N, A]`` (True = allowed) or None, and
``actions`` a tensor or array ``[N]`` / ``[N, D]`` (Box actions unclipped: they are clipped to
the bounds here). :class:`~policygrad.policies.ActorCritic` is one.

Two ways to stop (N environment copies, auto-reset NEXT_STEP or SAME_STEP):

* ``episodes=K``: environment i runs ⌈(K − i)/N⌉ episodes, so that short episodes do not crowd
  out long ones; an episode that lasts ``max_episode_steps`` steps counts as ended there, so a
  continuing task is evaluated over windows of that length instead of forever.
* ``steps=K``: every copy takes ⌈K/N⌉ steps from the seeded reset, auto-resetting through any
  episode end; the quantity of interest is the reward per step.

Rewards are the environment's raw ones; the dummy steps of a NEXT_STEP auto-reset count for
nothing. The observation normaliser is applied as it stands and never updated.

Video. :class:`VideoRecorder` wraps an environment copy in Gymnasium's ``RecordVideo``, which
writes each of its first K episodes as an MP4 file (through moviepy) while :func:`evaluate`
steps it. Evaluated episode by episode on one copy built with ``render_mode="rgb_array"`` and not
reset before :func:`evaluate` resets it, the files are exactly the evaluated episodes.
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from torch import Tensor

from policygrad.errors import InputError, TrainingError, shown
from policygrad.normalize import ObservationNormalizer
from policygrad.rollout import EnvStepper

__all__ = ["VIDEO_EXTRA", "VIDEO_PREFIX", "Actor", "ArrayActor", "Evaluation", "VideoRecorder", "evaluate"]

VIDEO_EXTRA = "pip install 'policygrad[video]'"
"""What installs the packages that recording video needs (moviepy; pygame for Gymnasium's
classic-control and toy-text drawings)."""

VIDEO_PREFIX = "eval"
"""Video files are named ``eval-episode-<i>.mp4``, i = 0, 1, ... in the order evaluated."""


class Actor(Protocol):
    """What :func:`evaluate` acts through (see the module docstring)."""

    def act(
        self,
        obs: Tensor,
        action_mask: Tensor | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Any, Any, Any]: ...


class ArrayActor:
    """An :class:`Actor` made of one that acts on NumPy arrays (such as a
    :class:`policygrad.backends.Backend`): CPU tensors in, their arrays passed on (no copy).

    Args:
        actor: has ``act(obs [N, obs_dim] array, action_mask [N, A] bool array | None,
            deterministic, generator) -> (actions, log_prob, value)``.
    """

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def act(
        self,
        obs: Tensor,
        action_mask: Tensor | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Any, Any, Any]:
        mask = None if action_mask is None else action_mask.numpy()
        return self.actor.act(obs.numpy(), mask, deterministic, generator)


class VideoRecorder:
    """Wraps an environment copy in Gymnasium's ``RecordVideo``, recording its first ``episodes``
    episodes (those that start at its first ``episodes`` resets) to ``folder`` as
    ``eval-episode-<i>.mp4``; files of those names are replaced.

    Pass it in ``make_vec_env(..., render_mode="rgb_array", wrappers=[recorder])``.

    Args:
        folder: where the files go (created if missing).
        episodes: how many episodes to record.

    Raises:
        InputError: moviepy missing (naming the extra to install); when a copy is wrapped, an
            environment that does not render RGB frames, with the reason in one line.
    """

    def __init__(self, folder: str | os.PathLike, episodes: int) -> None:
        try:
            importlib.import_module("moviepy")
        except ImportError:
            raise InputError(f"recording video needs the package 'moviepy': {VIDEO_EXTRA}") from None
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise InputError(f"the number of episodes to record must be a positive int, got {shown(episodes)}")
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"--video {self.folder} exists and is not a directory")
        self.episodes = episodes

    def __call__(self, env: Any) -> Any:
        from gymnasium.wrappers import RecordVideo

        name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        if env.render_mode != "rgb_array":
            raise InputError(f"environment {shown(name)} does not render RGB frames (render_mode {shown(env.render_mode)}); "
                             "recording video needs render_mode 'rgb_array'")
        # One frame first, so that an environment that cannot draw (pygame missing, say) fails
        # here with its reason rather than in the middle of the evaluation.
        try:
            env.reset()
            frame = env.render()
        except Exception as err:  # noqa: BLE001  (whatever the environment raises, in one line)
            text = str(err).strip().splitlines()
            detail = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
            raise InputError(f"environment {shown(name)} cannot render a frame ({detail}); {VIDEO_EXTRA} "
                             "installs pygame for Gymnasium's own environments") from None
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3):
            raise InputError(f"environment {shown(name)} renders {type(frame).__name__}, not an RGB frame [H, W, 3]")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overwriting existing videos" in an existing folder
            return RecordVideo(env, str(self.folder), episode_trigger=self._records, name_prefix=VIDEO_PREFIX,
                               disable_logger=True)

    def _records(self, episode: int) -> bool:
        return episode < self.episodes


@dataclass(frozen=True)
class Evaluation:
    """What one :func:`evaluate` measured."""

    returns: list[float]
    """Undiscounted raw returns of the episodes (or windows of ``max_episode_steps``) that ended,
    environment by environment; with ``episodes=K`` exactly K of them."""
    reward_per_step: float
    """Raw reward per counted step (NaN if none was counted)."""
    steps: int
    """Steps counted: valid steps (not the dummies of a NEXT_STEP auto-reset) of environments
    that were still evaluating."""
    env_steps: int
    """Environment steps taken in all (N per vector step, dummies and finished copies included)."""


@torch.no_grad()
def evaluate(
    actor: Actor,
    envs: VectorEnv,
    *,
    episodes: int | None = None,
    steps: int | None = None,
    encoder: Callable[[Tensor, torch.dtype], Tensor] | None = None,
    obs_normalizer: ObservationNormalizer | None = None,
    deterministic: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    max_episode_steps: int = 10_000,
    step_timeout: float | None = None,
) -> Evaluation:
    """Run ``actor`` on ``envs`` for ``episodes`` episodes or ``steps`` environment steps.

    Args:
        actor: acts on encoded observations (see the module docstring).
        envs: the vector environment (auto-reset NEXT_STEP or SAME_STEP); reset here.
        episodes: how many episodes (exactly one of ``episodes`` and ``steps``).
        steps: how many environment steps in all (rounded up to whole vector steps).
        encoder: raw observations -> ``[N, obs_dim]`` floats (the policy's preprocessing, as for
            :class:`~policygrad.rollout.RolloutCollector`); None: flat float observations.
        obs_normalizer: the training run's observation normaliser, or None.
        deterministic: take the policy's mode instead of sampling.
        seed: reset seed of the environments.
        generator: random-number generator of the sampled actions (None: torch's global one).
        device: where the actor lives.
        max_episode_steps: the longest an evaluated episode (or window) lasts.
        step_timeout: seconds one vectorised step may take (None: unbounded).

    Returns:
        The :class:`Evaluation`.

    Raises:
        InputError: a bad count, or an action mask that does not fit.
        TrainingError: non-finite observations or rewards, or an environment that raised.
    """
    if (episodes is None) == (steps is None):
        raise InputError("evaluate takes either episodes or steps")
    for name, value in (("the number of episodes", episodes), ("the number of steps", steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"{name} must be a positive int, got {shown(value)}")
    if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 1:
        raise InputError(f"max_episode_steps must be a positive int, got {shown(max_episode_steps)}")
    if encoder is None:
        from policygrad.policies import FlattenObservation

        encoder = FlattenObservation(envs.single_observation_space.shape)
    io = EnvStepper(envs, encoder, step_timeout)
    N = io.num_envs
    device = torch.device(device)
    next_step = io.mode == AutoresetMode.NEXT_STEP
    if episodes is not None:
        targets = np.array([len(range(i, episodes, N)) for i in range(N)])
        vector_steps = None
    else:
        targets = np.full(N, np.iinfo(np.int64).max)  # episodes are recorded, never awaited
        vector_steps = -(-steps // N)
    counts = np.zeros(N, dtype=np.int64)
    returns: list[list[float]] = [[] for _ in range(N)]
    ep_return = np.zeros(N, dtype=np.float64)
    ep_length = np.zeros(N, dtype=np.int64)
    dummy = np.zeros(N, dtype=bool)
    reward_sum, counted = 0.0, 0

    try:
        obs, info = envs.reset(seed=seed)
    except Exception as err:
        raise TrainingError(f"the environment raised on reset: {type(err).__name__}: {err}") from None
    # Masks are passed once the environment has given one (an environment without one allows all).
    mask_np = np.ones((N, io.mask_actions), dtype=bool) if io.mask_actions is not None else None
    masked = mask_np is not None and "action_mask" in info
    env_actions = None
    taken = 0
    while (counts < targets).any() if vector_steps is None else taken < vector_steps:
        io.check_observations(obs)
        obs_t = torch.from_numpy(io.policy_inputs(obs, obs_normalizer)).to(device)
        mask_t = None
        if mask_np is not None and (masked or "action_mask" in info):
            masked = True
            io.masks(info, mask_np)
            mask_t = torch.from_numpy(mask_np).to(device)
        actions, _, _ = actor.act(obs_t, mask_t, deterministic=deterministic, generator=generator)
        if isinstance(actions, Tensor):
            actions = actions.cpu()
        if env_actions is None and io.low is not None:
            env_actions = np.zeros(tuple(actions.shape), dtype=np.float32)
        obs, reward, terminated, truncated, info = io.step(io.env_actions(actions, env_actions))
        taken += 1
        if not np.isfinite(reward).all():
            i = int(np.nonzero(~np.isfinite(reward))[0][0])
            raise TrainingError(f"non-finite reward at evaluation step {io.steps} (environment {i}): {reward[i]}")
        counting = counts < targets
        if next_step:
            counting &= ~dummy
        reward_sum += float(np.sum(reward[counting]))
        counted += int(counting.sum())
        ep_return += np.where(counting, reward, 0.0)
        ep_length += counting
        done = (terminated | truncated | (ep_length >= max_episode_steps)) & counting
        for i in np.nonzero(done)[0]:
            returns[i].append(float(ep_return[i]))
            counts[i] += 1
            ep_return[i] = 0.0
            ep_length[i] = 0
        if next_step:
            dummy = terminated | truncated
    return Evaluation(
        returns=[r for per_env in returns for r in per_env],
        reward_per_step=reward_sum / counted if counted else float("nan"),
        steps=counted,
        env_steps=io.steps,
    )
