"""Continuing tasks with known optima as Gymnasium environments, registered under ``policygrad/``.

Importing this module registers (see :func:`register_tasks`):

================================  ===================================  =============
id                                builder in policygrad.tabular.tasks  ρ* (defaults)
================================  ===================================  =============
``policygrad/AccessControl-v0``   ``access_control_mdp``               2.747642
``policygrad/RecyclingRobot-v0``  ``recycling_robot_mdp``              2.5
``policygrad/RiverSwim-v0``       ``river_swim_mdp``                   0.666678
================================  ===================================  =============

The tasks are continuing: episodes never terminate and are registered without a time limit
(``max_episode_steps=None``); pass ``max_episode_steps`` to ``gymnasium.make`` / ``make_vec`` to cut
them into episodes. Observations are ``Discrete(S)`` state indices, actions ``Discrete(A)``.
Keyword arguments of ``make`` other than Gymnasium's own go to the task's MDP builder, e.g.
``gymnasium.make("policygrad/AccessControl-v0", num_servers=5)``.

Each environment exposes its MDP as ``env.unwrapped.mdp`` (a :class:`FiniteMDP`), so the exact
optimum is one call away::

    import gymnasium
    import policygrad.tasks  # registers the ids
    from policygrad.tabular.tasks import optimal_average_reward

    env = gymnasium.make("policygrad/AccessControl-v0")
    rho_star = optimal_average_reward(env.unwrapped.mdp)
    envs = gymnasium.make_vec("policygrad/AccessControl-v0", num_envs=8,
                              vectorization_mode="vector_entry_point")  # a FiniteMDPVectorEnv

``make_vec`` with ``vectorization_mode="vector_entry_point"`` (the default for these ids) builds one
numpy :class:`FiniteMDPVectorEnv`; it also accepts ``autoreset_mode``. ``"sync"`` and ``"async"``
work too, through the single-copy entry point. Without importing this module first, the ids are
reachable as ``gymnasium.make("policygrad.tasks:policygrad/AccessControl-v0")``.
"""

from __future__ import annotations

from typing import Any

import gymnasium
from gymnasium.vector import AutoresetMode

from policygrad.tabular.env import FiniteMDPEnv, FiniteMDPVectorEnv
from policygrad.tabular.tasks import access_control_mdp, recycling_robot_mdp, river_swim_mdp

__all__ = [
    "TASK_IDS",
    "register_tasks",
    "access_control_env",
    "access_control_vector_env",
    "recycling_robot_env",
    "recycling_robot_vector_env",
    "river_swim_env",
    "river_swim_vector_env",
]

_TASKS = (
    ("policygrad/AccessControl-v0", "access_control"),
    ("policygrad/RecyclingRobot-v0", "recycling_robot"),
    ("policygrad/RiverSwim-v0", "river_swim"),
)

TASK_IDS: tuple[str, ...] = tuple(env_id for env_id, _ in _TASKS)
"""The Gymnasium ids that :func:`register_tasks` registers."""


def access_control_env(*, max_episode_steps: int | None = None, **mdp_kwargs: Any) -> FiniteMDPEnv:
    """One access-control environment; ``mdp_kwargs`` go to :func:`access_control_mdp`."""
    return FiniteMDPEnv(access_control_mdp(**mdp_kwargs), max_episode_steps=max_episode_steps)


def access_control_vector_env(num_envs: int, *, max_episode_steps: int | None = None,
                              autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                              **mdp_kwargs: Any) -> FiniteMDPVectorEnv:
    """``num_envs`` access-control copies stepped together; ``mdp_kwargs`` go to :func:`access_control_mdp`."""
    return FiniteMDPVectorEnv(access_control_mdp(**mdp_kwargs), num_envs, max_episode_steps=max_episode_steps,
                              autoreset_mode=autoreset_mode)


def recycling_robot_env(*, max_episode_steps: int | None = None, **mdp_kwargs: Any) -> FiniteMDPEnv:
    """One recycling-robot environment; ``mdp_kwargs`` go to :func:`recycling_robot_mdp`."""
    return FiniteMDPEnv(recycling_robot_mdp(**mdp_kwargs), max_episode_steps=max_episode_steps)


def recycling_robot_vector_env(num_envs: int, *, max_episode_steps: int | None = None,
                               autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                               **mdp_kwargs: Any) -> FiniteMDPVectorEnv:
    """``num_envs`` recycling-robot copies stepped together; ``mdp_kwargs`` go to :func:`recycling_robot_mdp`."""
    return FiniteMDPVectorEnv(recycling_robot_mdp(**mdp_kwargs), num_envs, max_episode_steps=max_episode_steps,
                              autoreset_mode=autoreset_mode)


def river_swim_env(*, max_episode_steps: int | None = None, **mdp_kwargs: Any) -> FiniteMDPEnv:
    """One river-swim environment; ``mdp_kwargs`` go to :func:`river_swim_mdp`."""
    return FiniteMDPEnv(river_swim_mdp(**mdp_kwargs), max_episode_steps=max_episode_steps)


def river_swim_vector_env(num_envs: int, *, max_episode_steps: int | None = None,
                          autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                          **mdp_kwargs: Any) -> FiniteMDPVectorEnv:
    """``num_envs`` river-swim copies stepped together; ``mdp_kwargs`` go to :func:`river_swim_mdp`."""
    return FiniteMDPVectorEnv(river_swim_mdp(**mdp_kwargs), num_envs, max_episode_steps=max_episode_steps,
                              autoreset_mode=autoreset_mode)


def register_tasks() -> None:
    """Registers every id in :data:`TASK_IDS` with Gymnasium; calling it again changes nothing.

    Each id gets a single-copy entry point (for ``gymnasium.make`` and the ``"sync"`` / ``"async"``
    vectorization modes) and a vector entry point (``"vector_entry_point"`` mode), no time limit.
    An id already registered with the same entry points is left alone.
    """
    for env_id, name in _TASKS:
        entry_point = f"{__name__}:{name}_env"
        vector_entry_point = f"{__name__}:{name}_vector_env"
        existing = gymnasium.registry.get(env_id)
        if existing is not None and existing.entry_point == entry_point \
                and existing.vector_entry_point == vector_entry_point:
            continue
        gymnasium.register(id=env_id, entry_point=entry_point, vector_entry_point=vector_entry_point,
                           max_episode_steps=None)


register_tasks()

from policygrad.space_tasks import register_space_tasks  # noqa: E402  (the tasks of image, Dict, MultiBinary spaces)

register_space_tasks()
