"""A finite MDP as a black-box Gymnasium environment, single and numpy-vectorised.

Observations are state indices, actions are action indices. A step from state s with action a
draws s' ~ P(·|s, a), pays r(s, a), and reports ``terminated`` when s' is a terminal state and
``truncated`` when the episode has taken ``max_episode_steps`` steps (as Gymnasium's ``TimeLimit``
does, both can be True at once). Terminal states are absorbing with zero reward.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from policygrad.errors import InputError, shown
from policygrad.tabular.mdp import FiniteMDP

__all__ = ["FiniteMDPEnv", "FiniteMDPVectorEnv"]


def _cumulative_rows(probabilities: np.ndarray) -> np.ndarray:
    """Cumulative sums along the last axis, scaled so that each row ends at exactly 1.0.

    With u ~ U[0, 1), the sampled index is the number of entries ≤ u; a zero-probability entry
    repeats its predecessor's value and can never be drawn.
    """
    cumulative = np.cumsum(probabilities, axis=-1)
    return cumulative / cumulative[..., -1:]


def _sample_rows(cumulative: np.ndarray, uniforms: np.ndarray,
                 rows: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    """One index per draw: the number of entries ≤ u in the draw's row, at most S − 1.

    Args:
        cumulative: rows ending at 1.0 (:func:`_cumulative_rows`), ``[N, S]`` one per draw, or any
            ``[..., S]`` table whose row for draw i is ``cumulative[rows][i]``.
        uniforms: ``[N]`` u ~ U[0, 1).
        rows: ``None`` (row i for draw i), or index arrays, each ``[N]``, into the leading axes.

    Returns:
        ``[N]`` int64. A binary search (rows are non-decreasing), ⌈log2(S + 1)⌉ gathers of N
        entries: the same index as counting every entry, without reading S entries per draw.
    """
    if rows is None:
        rows = (np.arange(len(uniforms)),)
    size = cumulative.shape[-1]
    lo = np.zeros(len(uniforms), dtype=np.int64)  # the count lies in [lo, hi]
    hi = np.full(len(uniforms), size, dtype=np.int64)
    for _ in range(size.bit_length()):
        mid = (lo + hi) // 2
        below = cumulative[(*rows, np.minimum(mid, size - 1))] <= uniforms  # [N]
        searching = lo < hi
        lo = np.where(searching & below, mid + 1, lo)
        hi = np.where(searching & ~below, mid, hi)
    return np.minimum(lo, size - 1)


def _check_max_episode_steps(max_episode_steps: int | None) -> int | None:
    if max_episode_steps is None:
        return None
    if isinstance(max_episode_steps, bool) or int(max_episode_steps) != max_episode_steps or max_episode_steps < 1:
        raise InputError(f"max_episode_steps must be a positive integer or None, got {shown(max_episode_steps)}")
    return int(max_episode_steps)


class FiniteMDPEnv(gymnasium.Env):
    """One copy of a :class:`FiniteMDP` as a ``gymnasium.Env``.

    ``reset`` draws s0 ~ μ0; ``step(a)`` returns ``(s', r(s, a), s' is terminal, step count reached
    max_episode_steps, {})``. Stepping on after termination stays in the absorbing terminal state
    with reward 0.

    Args:
        mdp: the MDP.
        max_episode_steps: truncate episodes after this many steps (None: never).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, mdp: FiniteMDP, *, max_episode_steps: int | None = None) -> None:
        if not isinstance(mdp, FiniteMDP):
            raise InputError(f"mdp must be a FiniteMDP, got {type(mdp).__name__}")
        self.mdp = mdp
        self.max_episode_steps = _check_max_episode_steps(max_episode_steps)
        self.observation_space = spaces.Discrete(mdp.num_states)
        self.action_space = spaces.Discrete(mdp.num_actions)
        self._cumulative = _cumulative_rows(mdp.effective_transitions)  # [S, A, S]
        self._initial_cumulative = _cumulative_rows(mdp.initial)  # [S]
        self._state: int | None = None
        self._elapsed = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[int, dict]:
        """Draws s0 ~ μ0; ``seed`` reseeds the generator (``np.random.default_rng``)."""
        super().reset(seed=seed)
        u = self.np_random.random(1)
        self._state = int(_sample_rows(self._initial_cumulative[None, :], u)[0])
        self._elapsed = 0
        return self._state, {}

    def step(self, action: Any) -> tuple[int, float, bool, bool, dict]:
        """Takes ``action`` in the current state; see the class docstring for the returned tuple."""
        if self._state is None:
            raise ResetNeeded("call reset() before step()")
        if isinstance(action, (bool, np.bool_)) or not np.issubdtype(np.asarray(action).dtype, np.integer) \
                or np.ndim(action) != 0:
            raise InputError(f"action must be an integer in 0..{self.mdp.num_actions - 1}, got {shown(action)}")
        a = int(action)
        if not 0 <= a < self.mdp.num_actions:
            raise InputError(f"action {a} is out of range for {self.mdp.num_actions} actions")
        s = self._state
        reward = float(self.mdp.effective_rewards[s, a])
        u = self.np_random.random(1)
        self._state = int(_sample_rows(self._cumulative[s, a][None, :], u)[0])
        self._elapsed += 1
        terminated = bool(self.mdp.terminal_mask[self._state])
        truncated = self.max_episode_steps is not None and self._elapsed >= self.max_episode_steps
        return self._state, reward, terminated, bool(truncated), {}


class FiniteMDPVectorEnv(gymnasium.vector.VectorEnv):
    """``num_envs`` independent copies of a :class:`FiniteMDP`, stepped together with numpy.

    Each step draws one uniform per copy and picks the next states from the cumulative sums of
    the rows P[s_i, a_i] — no Python loop over copies. Observations are int64 ``[num_envs]``,
    rewards float64 ``[num_envs]``, flags bool ``[num_envs]``.

    Autoreset modes (``autoreset_mode``, also in ``metadata["autoreset_mode"]``):

    * ``NEXT_STEP`` (default, Gymnasium's convention): after a copy's episode ends, its next
      ``step`` ignores the action and resets it: the observation is s0 ~ μ0, reward 0,
      terminated and truncated False.
    * ``SAME_STEP``: a copy whose episode ends is reset within the same step; the returned
      observation is the new s0, reward and flags are those of the final transition.
      ``info["final_obs"]`` (int64 ``[num_envs]``) holds the state each copy reached before any
      reset, ``info["_final_obs"]`` (bool) marks the copies that were reset;
      ``info["final_info"]`` is ``{}`` with mask ``info["_final_info"]`` (Gymnasium's layout).
    * ``DISABLED``: no autoreset. A copy whose episode ended is frozen: its observation stays (a
      terminated copy sits in its absorbing terminal state), reward 0, and its terminated /
      truncated flags stay True until ``reset(options={"reset_mask": mask})`` resets it.

    ``reset(options={"reset_mask": mask})`` (bool ``[num_envs]``) resets only the masked copies in
    any mode; the others keep their state. ``reset(seed=...)`` reseeds the single generator
    (``np.random.default_rng``) that drives every copy, which makes runs reproducible.

    Args:
        mdp: the MDP.
        num_envs: number of copies N ≥ 1.
        max_episode_steps: truncate each copy's episode after this many steps (None: never).
        autoreset_mode: an ``AutoresetMode`` or its string value.
    """

    def __init__(self, mdp: FiniteMDP, num_envs: int, *, max_episode_steps: int | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP) -> None:
        if not isinstance(mdp, FiniteMDP):
            raise InputError(f"mdp must be a FiniteMDP, got {type(mdp).__name__}")
        if isinstance(num_envs, bool) or int(num_envs) != num_envs or num_envs < 1:
            raise InputError(f"num_envs must be a positive integer, got {shown(num_envs)}")
        try:
            mode = autoreset_mode if isinstance(autoreset_mode, AutoresetMode) else AutoresetMode(autoreset_mode)
        except ValueError:
            choices = ", ".join(m.value for m in AutoresetMode)
            raise InputError(f"unknown autoreset_mode {shown(autoreset_mode)}; choose one of {choices}") from None
        self.mdp = mdp
        self.num_envs = int(num_envs)
        self.max_episode_steps = _check_max_episode_steps(max_episode_steps)
        self.autoreset_mode = mode
        self.metadata = {"autoreset_mode": mode}
        self.single_observation_space = spaces.Discrete(mdp.num_states)
        self.single_action_space = spaces.Discrete(mdp.num_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        self._cumulative = _cumulative_rows(mdp.effective_transitions)  # [S, A, S]
        self._initial_cumulative = _cumulative_rows(mdp.initial)  # [S]
        self._states: np.ndarray | None = None  # [N] int64
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)  # [N] steps in the current episode
        self._terminated = np.zeros(self.num_envs, dtype=bool)  # [N] flags of the last step
        self._truncated = np.zeros(self.num_envs, dtype=bool)  # [N]

    def _draw_initial(self, count: int) -> np.ndarray:
        cumulative = np.broadcast_to(self._initial_cumulative, (count, self.mdp.num_states))
        return _sample_rows(cumulative, self.np_random.random(count))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Resets all copies (or those in ``options["reset_mask"]``); returns ``(obs [N], {})``."""
        if seed is not None:
            self._np_random = np.random.default_rng(seed)
            self._np_random_seed = seed
        elif self._np_random is None:
            self._np_random = np.random.default_rng()
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if options:
            raise InputError(f"unknown reset option(s) {', '.join(map(repr, options))}; only 'reset_mask' is known")
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        else:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
                raise InputError(
                    f"reset_mask must be a bool array of shape ({self.num_envs},), got dtype {mask.dtype} "
                    f"and shape {mask.shape}"
                )
            if self._states is None and not mask.all():
                raise ResetNeeded("the first reset() must reset every copy")
        if self._states is None:
            self._states = np.zeros(self.num_envs, dtype=np.int64)
        self._states[mask] = self._draw_initial(int(mask.sum()))
        self._elapsed[mask] = 0
        self._terminated[mask] = False
        self._truncated[mask] = False
        return self._states.copy(), {}

    def _check_actions(self, actions: Any) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise InputError(f"actions must have shape ({self.num_envs},), got shape {actions.shape}")
        if not np.issubdtype(actions.dtype, np.integer):
            raise InputError(f"actions must be integers, got dtype {actions.dtype}")
        if actions.size and (actions.min() < 0 or actions.max() >= self.mdp.num_actions):
            bad = actions[(actions < 0) | (actions >= self.mdp.num_actions)][0]
            raise InputError(f"action {bad} is out of range for {self.mdp.num_actions} actions")
        return actions.astype(np.int64)

    def _transition(self, moving: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Steps the copies in ``moving`` (bool ``[N]``) in place; fills their rewards and flags."""
        idx = np.flatnonzero(moving)
        s, a = self._states[idx], actions[idx]
        rewards[idx] = self.mdp.effective_rewards[s, a]
        next_states = _sample_rows(self._cumulative, self.np_random.random(idx.size), rows=(s, a))
        self._states[idx] = next_states
        self._elapsed[idx] += 1
        self._terminated[idx] = self.mdp.terminal_mask[next_states]
        if self.max_episode_steps is None:
            self._truncated[idx] = False
        else:
            self._truncated[idx] = self._elapsed[idx] >= self.max_episode_steps

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Steps every copy; returns ``(obs, rewards, terminated, truncated, info)``, each ``[N]``."""
        if self._states is None:
            raise ResetNeeded("call reset() before step()")
        actions = self._check_actions(actions)
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        ended = self._terminated | self._truncated  # [N] episodes that ended at the previous step
        info: dict[str, Any] = {}
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._transition(~ended, actions, rewards)
            if ended.any():
                self._states[ended] = self._draw_initial(int(ended.sum()))
                self._elapsed[ended] = 0
                self._terminated[ended] = False
                self._truncated[ended] = False
        elif self.autoreset_mode == AutoresetMode.DISABLED:
            self._transition(~ended, actions, rewards)  # ended copies stay frozen with reward 0
        else:  # SAME_STEP
            self._transition(np.ones(self.num_envs, dtype=bool), actions, rewards)
            done = self._terminated | self._truncated
            info = {"final_obs": self._states.copy(), "_final_obs": done.copy(),
                    "final_info": {}, "_final_info": done.copy()}
            terminated, truncated = self._terminated.copy(), self._truncated.copy()
            if done.any():
                self._states[done] = self._draw_initial(int(done.sum()))
                self._elapsed[done] = 0
                self._terminated[done] = False
                self._truncated[done] = False
            return self._states.copy(), rewards, terminated, truncated, info
        return self._states.copy(), rewards, self._terminated.copy(), self._truncated.copy(), info


def policy_table(policy: Any, encoder: Any, num_states: int) -> tuple[np.ndarray, np.ndarray]:
    """A trained policy over a finite MDP's states, as the exact tools take it.

    Args:
        policy: an ActorCritic (``policygrad.policies``) with a categorical actor over the MDP's
            actions.
        encoder: its observation encoder (states are observed as their indices).
        num_states: S.

    Returns:
        ``(pi, greedy)``, both float64 ``[S, A]``: π(a|s) (rows renormalised to sum to 1 in
        float64) and the deterministic policy that takes argmax_a π(a|s).
    """
    import torch

    with torch.no_grad():
        probs = policy.distribution(encoder(torch.arange(num_states), torch.float32)).probs
    pi = probs.double().numpy()
    pi /= pi.sum(axis=1, keepdims=True)
    return pi, np.eye(pi.shape[1])[pi.argmax(axis=1)]
