"""The standard Atari preprocessing for ale-py's ``ALE/<Game>-v5`` environments.

``pip install 'policygrad[atari]'`` installs ale-py (its wheels carry the game ROMs). The steps,
each a key of :class:`policygrad.runconfig.TrainConfig` that the Atari presets set (Mnih et al.
2015, "Human-level control through deep reinforcement learning"; Machado et al. 2018, "Revisiting
the Arcade Learning Environment"):

====================  =======  ===========================================================
key                   preset   step
====================  =======  ===========================================================
atari_preprocessing   true     apply the steps below (ALE environments only)
noop_max              30       each game starts with a random number (1 .. noop_max) of no-ops
fire_reset            true     FIRE is pressed once as each game starts, in games that have it
frame_skip            4        each action is repeated 4 frames; the observation is the
                               pixelwise max of the last two (Atari sprites flicker)
screen_size           84       frames resized to 84 × 84 ...
grayscale             true     ... in grayscale
frame_stack           4        the last 4 frames stacked: observations ``[4, 84, 84]`` uint8
terminal_on_life_loss true     a lost life ends the episode for training (the game goes on,
                               :class:`LifeLossTermination`); evaluation plays whole games
max_episode_frames    108000   a game is truncated after 108,000 frames (27,000 steps at
                               frame skip 4, 30 minutes of play)
clip_reward           true     training sees ``sign(r)``; metrics.csv reports raw returns
====================  =======  ===========================================================

The v5 ids keep their sticky actions (an action repeats the previous one with probability 0.25)
and their minimal action sets.

How the copies are stepped. ale-py's own vector environment (``AtariVectorEnv``: the games and
the preprocessing in C++ threads) does the same steps; it is used for ``vectorization`` "auto" and
"vector" (about 1.6× Gymnasium's sync vector env on two cores, see
``benchmarks/atari_vector.py``). "sync" and "async" wrap each copy in Gymnasium's
``AtariPreprocessing`` and ``FrameStackObservation`` instead (which need OpenCV, installed by the
extra), with :class:`FireReset` for ``fire_reset``. ale-py's vector env is told not to clip
rewards and not to end episodes on a life loss itself: the collector clips (:class:`policygrad.rollout.RolloutCollector`
``clip_reward``), so that the returns it reports stay raw, and the same
:class:`LifeLossTermination` serves both ways of stepping.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from policygrad.errors import InputError, shown

__all__ = ["AtariOptions", "LifeLossTermination", "is_atari", "make_atari_vec_env"]

# The largest value of each key: beyond them an observation or an episode would not fit in memory
# or in ale-py's 32-bit counters.
_LIMITS = {"noop_max": 100_000, "frame_skip": 1_000, "screen_size": 1_024, "frame_stack": 64,
           "max_episode_frames": 2**31 - 1}

# Keyword arguments of an ALE v5 id that ale-py's vector environment takes as they are.
_VECTOR_KWARGS = ("game", "repeat_action_probability", "full_action_space")


@dataclasses.dataclass(frozen=True)
class AtariOptions:
    """The preprocessing steps (see the module docstring; the defaults are the standard ones)."""

    noop_max: int = 30
    """Start each game with a random number (1 .. noop_max) of no-op actions; 0: none."""
    fire_reset: bool = False
    """Press FIRE once (one frame) as each game starts, before the no-ops, in games with FIRE."""
    frame_skip: int = 4
    """Frames each action is repeated; the observation is the max of the last two."""
    screen_size: int = 84
    """Frames are resized to screen_size × screen_size."""
    grayscale: bool = True
    """Frames in grayscale (else RGB, a last axis of 3)."""
    frame_stack: int = 4
    """The last frame_stack frames form an observation (a first axis of frame_stack)."""
    terminal_on_life_loss: bool = True
    """A lost life ends the episode (training only: evaluation plays whole games)."""
    max_episode_frames: int = 108_000
    """A game is truncated after this many emulator frames."""

    def __post_init__(self) -> None:
        for name, low in (("noop_max", 0), ("frame_skip", 1), ("screen_size", 1), ("frame_stack", 1),
                          ("max_episode_frames", 1)):
            value, high = getattr(self, name), _LIMITS[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InputError(f"{name} must be an int in [{low}, {high:,}], got {shown(value)}")

    @classmethod
    def from_train(cls, train: Any) -> AtariOptions | None:
        """The options a :class:`~policygrad.runconfig.TrainConfig` asks for (None: its
        ``atari_preprocessing`` is off)."""
        if not train.atari_preprocessing:
            return None
        return cls(**{f.name: getattr(train, f.name) for f in dataclasses.fields(cls)})

    def for_evaluation(self) -> AtariOptions:
        """The same steps with whole games (no end of episode at a lost life)."""
        return dataclasses.replace(self, terminal_on_life_loss=False)


def is_atari(spec: gym.envs.registration.EnvSpec) -> bool:
    """Whether ``spec`` is one of ale-py's Atari environments."""
    entry = spec.entry_point
    return spec.namespace == "ALE" or (isinstance(entry, str) and entry.startswith("ale_py"))


class LifeLossTermination(gym.vector.VectorWrapper):
    """Ends an episode when a life is lost while the game goes on (``terminated`` set, no reset):
    the value of the next state is not bootstrapped across a lost life, which speeds up learning
    in games where losing a life is bad (Mnih et al. 2015). ``info["life_loss"]`` marks those
    steps, so that the episode statistics still count whole games
    (:class:`policygrad.rollout.RolloutCollector`).

    Reads ``info["lives"]`` of a same-step auto-resetting vector environment: a copy whose game
    ended is reset in the same step and reports its new game's lives, which are not fewer.
    """

    def __init__(self, env: VectorEnv) -> None:
        super().__init__(env)
        if env.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise InputError("terminal_on_life_loss needs a vector environment with same-step auto-reset")
        self._lives = np.zeros(env.num_envs, dtype=np.int64)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._lives = _lives(info, self.num_envs)
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        lives = _lives(info, self.num_envs)
        life_loss = (lives < self._lives) & ~terminated & ~truncated  # [N]
        self._lives = lives
        info = dict(info)
        info["life_loss"], info["_life_loss"] = life_loss, np.ones(self.num_envs, dtype=bool)
        return obs, reward, terminated | life_loss, truncated, info


def _lives(info: dict[str, Any], num_envs: int) -> np.ndarray:
    if "lives" not in info:
        raise InputError("terminal_on_life_loss needs an environment that reports info['lives'] (an ALE game)")
    return np.array(info["lives"], dtype=np.int64).reshape(num_envs)


def make_atari_vec_env(
    spec: gym.envs.registration.EnvSpec,
    num_envs: int,
    options: AtariOptions,
    vectorization: str,
    kwargs: dict[str, Any],
    make_async: Any,
    wrappers: tuple[Any, ...] = (),
) -> VectorEnv:
    """``num_envs`` preprocessed copies of the ALE game of ``spec`` (see the module docstring).

    Args:
        spec: an ALE id's spec (:func:`is_atari`).
        num_envs: N.
        options: the preprocessing.
        vectorization: "auto" or "vector" (ale-py's vector env), "sync" or "async" (Gymnasium's,
            with wrappers); "auto" falls back to "sync" when ``kwargs`` hold keywords that
            ale-py's vector env does not take.
        kwargs: the environment's keyword arguments beyond the spec's (``env_kwargs``).
        make_async: ``make_async(make_one, num_envs)`` builds an async vector env of ``make_one()``
            copies (:func:`policygrad.envs.make_vec_env` passes its own).
        wrappers: applied to each preprocessed copy (a video recorder); they need "sync" or
            "async" ("auto" then means "sync").

    Returns:
        A same-step auto-resetting vector environment with observations
        ``[N, frame_stack, screen_size, screen_size]`` uint8 (``[..., 3]`` in RGB).
    """
    merged = {**spec.kwargs, **kwargs}
    if ("render_mode" in kwargs or wrappers) and vectorization == "auto":
        vectorization = "sync"
    extra = sorted(k for k in merged if k not in (*_VECTOR_KWARGS, "frameskip", "max_num_frames_per_episode"))
    if vectorization == "vector" and extra:
        raise InputError(f"environment {spec.id!r}: ale-py's vector env does not take {', '.join(extra)}; "
                         "use vectorization sync or async")
    if vectorization == "auto":
        vectorization = "sync" if extra else "vector"
    if vectorization == "vector":
        from ale_py.vector_env import AtariVectorEnv

        envs: VectorEnv = AtariVectorEnv(
            num_envs=num_envs,
            **{k: merged[k] for k in _VECTOR_KWARGS if k in merged},
            max_num_frames_per_episode=options.max_episode_frames,
            noop_max=options.noop_max,
            frameskip=options.frame_skip,
            maxpool=True,
            img_height=options.screen_size,
            img_width=options.screen_size,
            grayscale=options.grayscale,
            stack_num=options.frame_stack,
            episodic_life=False,  # resets the game at a lost life; LifeLossTermination does not
            life_loss_info=False,
            reward_clipping=False,  # the collector clips, after recording the raw reward
            use_fire_reset=options.fire_reset,
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
    else:
        make_one = functools.partial(_preprocessed, spec, options, kwargs, tuple(wrappers))
        if vectorization == "async":
            envs = make_async(make_one, num_envs)
        else:
            envs = gym.vector.SyncVectorEnv([make_one] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    if options.terminal_on_life_loss:
        envs = LifeLossTermination(envs)
    return envs


class FireReset(gym.Wrapper):
    """Presses FIRE for one frame after each reset of a game that has a FIRE action, as ale-py's
    vector env does with ``use_fire_reset`` (the no-ops of ``AtariPreprocessing`` follow)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        self._fire = meanings.index("FIRE") if "FIRE" in meanings else None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        if self._fire is not None:
            obs, _, terminated, truncated, info = self.env.step(self._fire)
            if terminated or truncated:  # a game over at its first frame: start again, no FIRE
                obs, info = self.env.reset()
        return obs, info


def _preprocessed(spec: gym.envs.registration.EnvSpec, options: AtariOptions, kwargs: dict[str, Any],
                  wrappers: tuple[Any, ...] = ()) -> gym.Env:
    """One copy through Gymnasium's ``AtariPreprocessing`` and ``FrameStackObservation``: the
    emulator steps single frames (``frameskip=1``), the wrapper repeats and max-pools."""
    env = gym.make(spec, disable_env_checker=True,
                   **{**kwargs, "frameskip": 1, "max_num_frames_per_episode": options.max_episode_frames})
    if options.fire_reset:
        env = FireReset(env)
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=options.noop_max,
        frame_skip=options.frame_skip,
        screen_size=options.screen_size,
        terminal_on_life_loss=False,  # it would reset the game; LifeLossTermination does not
        grayscale_obs=options.grayscale,
    )
    env = gym.wrappers.FrameStackObservation(env, options.frame_stack)
    for wrap in wrappers:
        env = wrap(env)
    return env
