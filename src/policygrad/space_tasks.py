"""Small tasks for image, Dict and MultiBinary spaces, registered under ``policygrad/``.

Importing :mod:`policygrad.tasks` registers them (with a time limit of 8 steps for the line tasks):

=============================  ==============================================  ======================
id                             observation                                     action
=============================  ==============================================  ======================
``policygrad/PixelLine-v0``    ``Box(0, 255, (36, 36, 1), uint8)`` image        ``Discrete(2)``
``policygrad/DictLine-v0``     ``Dict(agent: Discrete(6), target: Box(0, 5))``  ``Discrete(2)``
``policygrad/BitMatch-v0``     ``MultiBinary(4)``: the target pattern          ``MultiBinary(4)``
=============================  ==============================================  ======================

The line tasks: an agent and a target sit on two different cells of a line of 6; action 0 moves
the agent left, 1 right. A step towards the target earns +1, any other step −1, and the episode
ends on the target, so the best return is the starting distance (3.5 on average with the target
on the right or the left at random, 1..5 cells away). ``PixelLine`` shows the line as a 36×36
grey image, each cell a 6-pixel-wide column: the agent's at 96, the target's at 255.
``DictLine`` gives the agent's cell as a Discrete and the target's as a Box: neither alone
tells which way to go.

``BitMatch``: one step per episode; the reward is the fraction of the 4 action bits equal to the
observed pattern's (best 1, uniformly random bits 0.5).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = ["LineTask", "PixelLine", "DictLine", "BitMatch", "SPACE_TASK_IDS", "register_space_tasks"]

CELLS = 6
CELL_PIXELS = 6


class LineTask(gymnasium.Env):
    """The line task's dynamics; subclasses choose what the agent observes (:meth:`observe`)."""

    action_space = spaces.Discrete(2)

    def __init__(self) -> None:
        self.agent = self.target = 0

    def observe(self) -> Any:
        raise NotImplementedError

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.agent, self.target = (int(i) for i in self.np_random.choice(CELLS, size=2, replace=False))
        return self.observe(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        before = abs(self.agent - self.target)
        self.agent = int(np.clip(self.agent + (1 if int(action) == 1 else -1), 0, CELLS - 1))
        reward = 1.0 if abs(self.agent - self.target) < before else -1.0
        return self.observe(), reward, self.agent == self.target, False, {}


class PixelLine(LineTask):
    """The line task seen as a ``[36, 36, 1]`` uint8 image (H×W×C)."""

    observation_space = spaces.Box(0, 255, (CELLS * CELL_PIXELS, CELLS * CELL_PIXELS, 1), np.uint8)

    def observe(self) -> np.ndarray:
        image = np.zeros(self.observation_space.shape, dtype=np.uint8)
        image[:, self.agent * CELL_PIXELS:(self.agent + 1) * CELL_PIXELS] = 96
        image[:, self.target * CELL_PIXELS:(self.target + 1) * CELL_PIXELS] = 255
        return image


class DictLine(LineTask):
    """The line task seen as ``{"agent": cell, "target": [cell]}``."""

    observation_space = spaces.Dict({
        "agent": spaces.Discrete(CELLS),
        "target": spaces.Box(0.0, CELLS - 1.0, (1,), np.float32),
    })

    def observe(self) -> dict[str, Any]:
        return {"agent": self.agent, "target": np.array([self.target], dtype=np.float32)}


class BitMatch(gymnasium.Env):
    """Match the observed 4-bit pattern with a MultiBinary action (one step per episode)."""

    observation_space = spaces.MultiBinary(4)
    action_space = spaces.MultiBinary(4)

    def __init__(self) -> None:
        self.pattern = np.zeros(4, dtype=np.int8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.pattern = self.np_random.integers(0, 2, size=4, dtype=np.int8)
        return self.pattern.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(np.mean(np.asarray(action) == self.pattern))
        return self.pattern.copy(), reward, True, False, {}


_TASKS = (
    ("policygrad/PixelLine-v0", "PixelLine", 8),
    ("policygrad/DictLine-v0", "DictLine", 8),
    ("policygrad/BitMatch-v0", "BitMatch", None),
)

SPACE_TASK_IDS: tuple[str, ...] = tuple(env_id for env_id, _, _ in _TASKS)
"""The Gymnasium ids that :func:`register_space_tasks` registers."""


def register_space_tasks() -> None:
    """Registers every id in :data:`SPACE_TASK_IDS`; calling it again changes nothing."""
    for env_id, name, limit in _TASKS:
        entry_point = f"{__name__}:{name}"
        existing = gymnasium.registry.get(env_id)
        if existing is not None and existing.entry_point == entry_point:
            continue
        gymnasium.register(id=env_id, entry_point=entry_point, max_episode_steps=limit)
