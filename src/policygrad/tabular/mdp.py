"""Finite Markov decision processes: the container, its JSON format, checks per criterion, examples.

Symbols and shapes (S states, A actions):

==========  =========  ===========================================================================
name        shape      meaning
==========  =========  ===========================================================================
P           [S, A, S]  ``transitions[s, a, s'] = Pr(s_{t+1} = s' | s_t = s, a_t = a)``
r           [S, A]     ``rewards[s, a]``, the expected reward of taking a in s
μ0          [S]        ``initial[s] = Pr(s_0 = s)``
γ           scalar     ``gamma`` in (0, 1]
terminal    tuple      absorbing terminal states: entering one ends the episode
==========  =========  ===========================================================================

Terminal states are absorbing with zero reward: their own rows of P and r are ignored (only their
finiteness and non-negativity are checked) and replaced by a self-loop with reward 0 in
:attr:`FiniteMDP.effective_transitions` / :attr:`FiniteMDP.effective_rewards`. Episodes start in
non-terminal states.

Three criteria (``setting``), checked by :func:`validate_setting`:

* ``"episodic"``: J = E[Σ_t γ^t r_t] up to termination, γ ≤ 1; every policy must terminate with
  probability 1 from every state reachable from μ0.
* ``"discounted"``: J = E[Σ_t γ^t r_t], γ < 1; terminal states are allowed.
* ``"average"``: ρ = lim_T (1/T) E[Σ_{t<T} r_t]; a continuing (no terminal states), unichain task.

JSON format (:func:`load_mdp_json`)::

    {"transitions": S×A×S, "rewards": S×A, "initial": S, "gamma": float,
     "terminal": [state indices] (optional, default []), "theta": S×A logits (optional)}

A file is read only up to :data:`MAX_MDP_FILE_BYTES` and an MDP up to :data:`MAX_MDP_ENTRIES`
transition probabilities (S·A·S), checked before the arrays are built.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from policygrad.errors import InputError, shown
from policygrad.tabular.graph import avoidable_termination, closed_classes, reachability

__all__ = [
    "SETTINGS",
    "MAX_MDP_ENTRIES",
    "MAX_MDP_FILE_BYTES",
    "FiniteMDP",
    "load_mdp_json",
    "validate_setting",
    "validate_theta",
    "example_mdp",
    "random_mdp",
]

SETTINGS = ("episodic", "discounted", "average")

ROW_SUM_TOL = 1e-8
"""Largest |Σ_s' P[s, a, s'] − 1| (and |Σ_s μ0(s) − 1|) accepted."""

MAX_MDP_ENTRIES = 1_000_000
"""Largest MDP read from JSON or verified: S·A·S transition probabilities (S = 1000 states with one
action, 316 with ten). ``policygrad verify`` on it stays within the time and memory of docs/verify.md."""

MAX_MDP_FILE_BYTES = 64_000_000
"""Largest MDP file read (64 MB): 1,000,000 probabilities of up to ~25 characters each, with room
for indentation; a larger file is refused before it is read."""

_REQUIRED_KEYS = ("transitions", "rewards", "initial", "gamma")
_OPTIONAL_KEYS = ("terminal", "theta")


def _fmt_index(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def _float_array(value: Any, name: str, ndim: int, expected: str) -> np.ndarray:
    """``value`` as a fresh float64 array with ``ndim`` dimensions, or an InputError naming ``name``."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"'{name}' must be a numeric array of shape {expected}: {str(exc)[:200]}") from None
    if array.ndim != ndim:
        raise InputError(f"'{name}' must have shape {expected}, got shape {array.shape}")
    return array


def _check_finite(array: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(np.argwhere(bad)[0])
        raise InputError(f"'{name}' contains a non-finite value ({array[index]}) at {_fmt_index(index)}")


def _check_non_negative(array: np.ndarray, name: str) -> None:
    bad = array < 0
    if bad.any():
        index = tuple(np.argwhere(bad)[0])
        raise InputError(f"'{name}' has a negative probability {array[index]:g} at {_fmt_index(index)}")


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class FiniteMDP:
    """A finite MDP; every instance is checked on construction (bad input raises InputError).

    Arrays are stored as read-only float64 copies; ``terminal`` is stored sorted.
    """

    transitions: np.ndarray
    """``[S, A, S]`` P[s, a, s']; rows of non-terminal states sum to 1 (tolerance 1e-8)."""
    rewards: np.ndarray
    """``[S, A]`` expected reward r(s, a) of taking action a in state s."""
    initial: np.ndarray
    """``[S]`` μ0, the distribution of the first state; zero on terminal states."""
    gamma: float
    """Discount factor γ in (0, 1]; irrelevant for the average-reward criterion."""
    terminal: tuple[int, ...] = ()
    """Absorbing terminal states: entering one ends the episode; their rows and rewards are ignored."""

    def __post_init__(self) -> None:
        transitions = _float_array(self.transitions, "transitions", 3, "(S, A, S)")
        num_states, num_actions, num_next = transitions.shape
        if num_states == 0 or num_actions == 0 or num_next != num_states:
            raise InputError(
                f"'transitions' must have shape (S, A, S) with S, A >= 1, got shape {transitions.shape}"
            )
        rewards = _float_array(self.rewards, "rewards", 2, f"(S, A) = ({num_states}, {num_actions})")
        if rewards.shape != (num_states, num_actions):
            raise InputError(
                f"'rewards' has shape {rewards.shape}, expected (S, A) = ({num_states}, {num_actions}) "
                "from 'transitions'"
            )
        initial = _float_array(self.initial, "initial", 1, f"(S,) = ({num_states},)")
        if initial.shape != (num_states,):
            raise InputError(
                f"'initial' has shape {initial.shape}, expected (S,) = ({num_states},) from 'transitions'"
            )
        for name, array in (("transitions", transitions), ("rewards", rewards), ("initial", initial)):
            _check_finite(array, name)
        _check_non_negative(transitions, "transitions")
        _check_non_negative(initial, "initial")

        gamma = self.gamma
        if isinstance(gamma, (bool, np.bool_)) or not isinstance(gamma, (int, float, np.integer, np.floating)):
            raise InputError(f"'gamma' must be a number in (0, 1], got {shown(gamma)}")
        try:
            gamma = float(gamma)
        except OverflowError:  # an int beyond the float range
            raise InputError(f"'gamma' must lie in (0, 1], got {shown(self.gamma)}") from None
        if not (0.0 < gamma <= 1.0):  # also rejects NaN
            raise InputError(f"'gamma' must lie in (0, 1], got {gamma}")

        terminal = self._checked_terminal(num_states)
        terminal_mask = np.zeros(num_states, dtype=bool)
        terminal_mask[list(terminal)] = True

        row_sums = transitions.sum(axis=-1)  # [S, A]
        bad_rows = (np.abs(row_sums - 1.0) > ROW_SUM_TOL) & ~terminal_mask[:, None]
        if bad_rows.any():
            s, a = np.argwhere(bad_rows)[0]
            raise InputError(
                f"transition row (s={s}, a={a}) sums to {row_sums[s, a]:.12g}, expected 1 "
                f"(tolerance {ROW_SUM_TOL:g})"
            )
        total = initial.sum()
        if abs(total - 1.0) > ROW_SUM_TOL:
            raise InputError(
                f"'initial' must be a probability distribution: it sums to {total:.12g}, expected 1 "
                f"(tolerance {ROW_SUM_TOL:g})"
            )
        on_terminal = initial[terminal_mask]
        if (on_terminal > 0).any():
            s = terminal[int(np.argmax(on_terminal > 0))]
            raise InputError(
                f"'initial' puts probability {initial[s]:g} on terminal state {s}; episodes must start "
                "in a non-terminal state"
            )

        object.__setattr__(self, "transitions", _readonly(transitions))
        object.__setattr__(self, "rewards", _readonly(rewards))
        object.__setattr__(self, "initial", _readonly(initial))
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(self, "terminal", terminal)

    def _checked_terminal(self, num_states: int) -> tuple[int, ...]:
        values = self.terminal
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise InputError(f"'terminal' must be a list of state indices, got {shown(values)}")
        seen: set[int] = set()
        for value in values:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise InputError(f"'terminal' must hold integer state indices, got {shown(value)}")
            index = int(value)
            if not 0 <= index < num_states:
                raise InputError(
                    f"terminal state {index} is out of range for {num_states} states (valid: 0..{num_states - 1})"
                )
            if index in seen:
                raise InputError(f"terminal state {index} is listed more than once in 'terminal'")
            seen.add(index)
        return tuple(sorted(seen))

    @property
    def num_states(self) -> int:
        """S."""
        return self.transitions.shape[0]

    @property
    def num_actions(self) -> int:
        """A."""
        return self.transitions.shape[1]

    @cached_property
    def terminal_mask(self) -> np.ndarray:
        """``[S]`` bool, True at terminal states."""
        mask = np.zeros(self.num_states, dtype=bool)
        mask[list(self.terminal)] = True
        return _readonly(mask)

    @cached_property
    def effective_transitions(self) -> np.ndarray:
        """``[S, A, S]`` P with every terminal state's rows replaced by a self-loop (absorbing)."""
        transitions = self.transitions.copy()
        for s in self.terminal:
            transitions[s] = 0.0
            transitions[s, :, s] = 1.0
        return _readonly(transitions)

    @cached_property
    def effective_rewards(self) -> np.ndarray:
        """``[S, A]`` r with zero reward in terminal states."""
        rewards = self.rewards.copy()
        rewards[self.terminal_mask] = 0.0
        return _readonly(rewards)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> FiniteMDP:
        """Builds an MDP from the JSON format described in the module docstring.

        A ``"theta"`` entry is checked (shape ``[S, A]``, finite) but not returned; use
        :func:`load_mdp_json` to get it.

        Raises:
            InputError: missing or unknown keys, non-numeric or ragged arrays, wrong shapes, invalid
                probabilities, γ outside (0, 1], bad terminal indices, bad theta.
        """
        return _parse_document(document)[0]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready document that :meth:`from_dict` reads back."""
        return {
            "transitions": self.transitions.tolist(),
            "rewards": self.rewards.tolist(),
            "initial": self.initial.tolist(),
            "gamma": self.gamma,
            "terminal": list(self.terminal),
        }


def _nested_array(value: Any, name: str, ndim: int, expected: str, max_entries: int | None = None) -> np.ndarray:
    """A JSON value (nested lists of numbers) as a float64 array; clear errors for anything else,
    including more than ``max_entries`` entries (checked before the lists are walked)."""
    if max_entries is not None:
        _check_entries(value, name, ndim, max_entries)
    shape = _json_shape(value, name, ndim, expected)
    if len(shape) != ndim:
        raise InputError(f"'{name}' must be a {ndim}-D array of shape {expected}, got shape {shape}")
    return np.array(value, dtype=np.float64)


def _check_entries(value: Any, name: str, ndim: int, max_entries: int) -> None:
    """InputError if the shape read along the first entries (``value[0][0]...``) holds more than
    ``max_entries`` entries; :func:`_json_shape` then visits no more than that."""
    dims: list[int] = []
    while isinstance(value, list) and len(dims) < ndim:
        dims.append(len(value))
        value = value[0] if value else None
    entries = int(np.prod(dims, dtype=object)) if dims else 1
    if entries <= max_entries:
        return
    if name == "transitions" and len(dims) == 3 and dims[0] == dims[2]:
        raise InputError(
            f"the MDP has {dims[0]:,} states and {dims[1]:,} actions: S·A·S = {entries:,} transition probabilities, "
            f"above the limit of {max_entries:,}"
        )
    raise InputError(
        f"'{name}' has {entries:,} entries (shape {tuple(dims)} by its first rows), above the limit of {max_entries:,}"
    )


def _json_shape(value: Any, name: str, ndim: int, expected: str) -> tuple[int, ...]:
    """Shape of nested lists of numbers at most ``ndim`` deep; InputError naming the first ragged,
    non-numeric or too deep entry. Level by level, without recursion: any nesting is safe, and the
    work is the number of entries."""
    shape: list[int] = []
    level = [value]  # every entry at depth len(shape), in C order
    while True:
        is_list = [isinstance(item, list) for item in level]
        if not any(is_list):
            for i, item in enumerate(level):
                if isinstance(item, bool) or not isinstance(item, (int, float)):
                    where = f" at {_fmt_index(np.unravel_index(i, shape))}" if shape else ""
                    raise InputError(f"'{name}' has a non-numeric entry {shown(item)}{where}")
                if isinstance(item, int) and abs(item) > sys.float_info.max:
                    where = f" at {_fmt_index(np.unravel_index(i, shape))}" if shape else ""
                    raise InputError(f"'{name}' has an integer too large for a float{where}")
            return tuple(shape)
        if not all(is_list):
            i = is_list.index(False) if is_list[0] else is_list.index(True)
            raise InputError(
                f"'{name}' is ragged: entry {_fmt_index(np.unravel_index(i, shape))} and entry "
                f"{_fmt_index(np.unravel_index(0, shape))} differ in depth"
            )
        if len(shape) == ndim:
            raise InputError(f"'{name}' must be a {ndim}-D array of shape {expected}, got more dimensions")
        length = len(level[0])
        for i, item in enumerate(level):
            if len(item) != length:
                raise InputError(
                    f"'{name}' is ragged: entry {_fmt_index(np.unravel_index(i, shape))} has length {len(item)}, "
                    f"entry {_fmt_index(np.unravel_index(0, shape))} has length {length}"
                )
        shape.append(length)
        if length == 0:
            return tuple(shape)
        level = [entry for item in level for entry in item]


def _parse_document(document: Any, max_entries: int | None = None) -> tuple[FiniteMDP, np.ndarray | None]:
    """The MDP and θ of a JSON document; ``max_entries`` bounds S·A·S (and every other array) before
    any array is walked."""
    if not isinstance(document, Mapping):
        raise InputError(
            f"an MDP document must be a JSON object with keys {', '.join(_REQUIRED_KEYS)}, "
            f"got {type(document).__name__}"
        )
    known = _REQUIRED_KEYS + _OPTIONAL_KEYS
    unknown = [key for key in document if key not in known]
    if unknown:
        raise InputError(
            f"unknown key(s) {', '.join(shown(k) for k in unknown[:5])}"
            f"{f' and {len(unknown) - 5:,} more' if len(unknown) > 5 else ''} in MDP document; "
            f"expected {', '.join(_REQUIRED_KEYS)} and optionally {', '.join(_OPTIONAL_KEYS)}"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in document]
    if missing:
        raise InputError(f"missing key(s) {', '.join(repr(k) for k in missing)} in MDP document")

    transitions = _nested_array(document["transitions"], "transitions", 3, "(S, A, S)", max_entries)
    rewards = _nested_array(document["rewards"], "rewards", 2, "(S, A)", max_entries)
    initial = _nested_array(document["initial"], "initial", 1, "(S,)", max_entries)
    gamma = document["gamma"]
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise InputError(f"'gamma' must be a number in (0, 1], got {shown(gamma)}")
    terminal = document.get("terminal", [])
    if not isinstance(terminal, list):
        raise InputError(f"'terminal' must be a list of state indices, got {shown(terminal)}")
    mdp = FiniteMDP(transitions=transitions, rewards=rewards, initial=initial, gamma=gamma,
                    terminal=tuple(terminal))
    theta = None
    if document.get("theta") is not None:
        theta = _nested_array(document["theta"], "theta", 2, f"(S, A) = ({mdp.num_states}, {mdp.num_actions})",
                              max_entries)
        theta = validate_theta(mdp, theta)
    return mdp, theta


def load_mdp_json(path: str | Path) -> tuple[FiniteMDP, np.ndarray | None]:
    """Reads an MDP (and optional softmax logits θ) from a JSON file.

    Args:
        path: file in the format of the module docstring.

    Returns:
        ``(mdp, theta)``; theta is ``[S, A]`` float64 or None when the file has none.

    Raises:
        InputError: the file is missing or unreadable, larger than :data:`MAX_MDP_FILE_BYTES`, is not
            valid JSON (or nested too deeply to parse), or describes an invalid MDP or one of more
            than :data:`MAX_MDP_ENTRIES` transition probabilities.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"MDP file not found: {path}")
    if not path.is_file():
        raise InputError(f"MDP path is not a file: {path}")
    try:
        size = path.stat().st_size
        if size > MAX_MDP_FILE_BYTES:
            raise InputError(f"MDP file {path} has {size:,} bytes, above the limit of {MAX_MDP_FILE_BYTES:,}")
        with open(path, "rb") as f:
            raw = f.read(MAX_MDP_FILE_BYTES + 1)  # the file may have grown since
        if len(raw) > MAX_MDP_FILE_BYTES:
            raise InputError(f"MDP file {path} is larger than the limit of {MAX_MDP_FILE_BYTES:,} bytes")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read MDP file {path}: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"MDP file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InputError(f"MDP file {path} is nested too deeply to parse") from None
    except ValueError as exc:  # an integer literal beyond int()'s 4300 digits
        raise InputError(f"MDP file {path} cannot be read: {str(exc)[:200]}") from None
    except MemoryError:
        raise InputError(f"MDP file {path} is too large to parse") from None
    return _parse_document(document, MAX_MDP_ENTRIES)


def validate_theta(mdp: FiniteMDP, theta: Any) -> np.ndarray:
    """θ as a float64 ``[S, A]`` array of finite logits, or an InputError."""
    expected = f"(S, A) = ({mdp.num_states}, {mdp.num_actions})"
    try:
        theta = np.array(theta, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"'theta' must be a numeric array of shape {expected}: {exc}") from None
    if theta.shape != (mdp.num_states, mdp.num_actions):
        raise InputError(f"'theta' has shape {theta.shape}, expected {expected}")
    _check_finite(theta, "theta")
    return theta


def union_support(mdp: FiniteMDP) -> np.ndarray:
    """``[S, S]`` bool one-step support of the chain under any full-support policy (terminals absorbing)."""
    return (mdp.effective_transitions > 0).any(axis=1)


def _format_classes(classes: list[tuple[int, ...]], limit: int = 4) -> str:
    shown = ["{" + ", ".join(map(str, c)) + "}" for c in classes[:limit]]
    more = f" and {len(classes) - limit} more" if len(classes) > limit else ""
    return ", ".join(shown) + more


def validate_setting(mdp: FiniteMDP, setting: str, theta: Any = None) -> None:
    """Checks that ``mdp`` (and θ, if given) suits the criterion ``setting``.

    * ``"episodic"``: at least one terminal state; no state reachable from μ0 lets some policy avoid
      termination forever (see :func:`policygrad.tabular.graph.avoidable_termination`).
    * ``"discounted"``: γ < 1; terminal states allowed (absorbing, zero reward).
    * ``"average"``: no terminal states; under the softmax policy (full support, so the chain's
      support is the union over actions) exactly one closed communicating class (unichain), which
      makes the stationary distribution unique.

    Args:
        mdp: the MDP.
        setting: ``"episodic"``, ``"discounted"`` or ``"average"``.
        theta: optional ``[S, A]`` logits; checked for shape and finiteness.

    Raises:
        InputError: naming the first problem found.
    """
    if setting not in SETTINGS:
        raise InputError(f"unknown setting {shown(setting)}; choose one of {', '.join(SETTINGS)}")
    if theta is not None:
        validate_theta(mdp, theta)
    if setting == "episodic":
        if not mdp.terminal:
            raise InputError("episodic criterion needs at least one terminal state; 'terminal' is empty")
        trapped = avoidable_termination(mdp.transitions, mdp.terminal_mask)
        reachable = reachability(union_support(mdp))[mdp.initial > 0].any(axis=0)
        bad = trapped & reachable
        if bad.any():
            s = int(np.argmax(bad))
            raise InputError(
                f"episodic criterion needs every policy to terminate, but from state {s} (reachable from "
                "'initial') some policy never reaches a terminal state"
            )
    elif setting == "discounted":
        if mdp.gamma >= 1.0:
            raise InputError(f"discounted criterion needs gamma < 1, got gamma = {mdp.gamma}")
    else:
        if mdp.terminal:
            raise InputError(
                "average-reward criterion needs a continuing task without terminal states, got terminal "
                f"states {list(mdp.terminal)}"
            )
        classes = closed_classes(union_support(mdp))
        if len(classes) != 1:
            raise InputError(
                f"average-reward criterion needs a unichain MDP (one closed class), but the chain has "
                f"{len(classes)} closed classes: {_format_classes(classes)}"
            )


# ----------------------------------------------------------------------------------------------
# Built-in examples


def _episodic_example() -> FiniteMDP:
    """A windy cliff path: walk safely, run and risk the ravine, or scout for a hidden lift.

    States 0–3 lie along a path, 4 is the goal and 5 the ravine (both terminal); γ = 1. Every step
    costs 1; reaching the goal pays +10, falling into the ravine costs 8 (folded into r(s, a) as
    expectations).

    * action 0, walk: one step forward w.p. 0.45, else stay.
    * action 1, run: two steps forward w.p. 0.5, one w.p. 0.15, into the ravine w.p. 0.1 (0.3 from
      state 3, at the cliff's edge), else stay.
    * action 2, scout: from states 0 and 1, finds the hidden lift to state 3 w.p. 0.2, is blown one
      step back w.p. 0.5, else stays; from states 2 and 3, one step forward or back w.p. 0.5 each.

    Episodes start in state 0 (w.p. 0.8) or 1 and last about 5.6 steps under the uniform policy.
    The optimal policy uses every action: scout in state 0, run in states 1 and 2, walk in state 3.
    """
    num_states, num_actions = 6, 3
    goal, ravine = 4, 5
    P = np.zeros((num_states, num_actions, num_states))
    for s in range(4):
        forward1, forward2, back = min(s + 1, goal), min(s + 2, goal), max(s - 1, 0)
        P[s, 0, forward1] += 0.45
        P[s, 0, s] += 0.55
        fall = 0.3 if s == 3 else 0.1
        P[s, 1, forward2] += 0.5
        P[s, 1, forward1] += 0.15
        P[s, 1, ravine] += fall
        P[s, 1, s] += 0.35 - fall
        if s < 2:
            P[s, 2, 3] += 0.2
            P[s, 2, back] += 0.5
            P[s, 2, s] += 0.3
        else:
            P[s, 2, forward1] += 0.5
            P[s, 2, back] += 0.5
    P[goal, :, goal] = 1.0
    P[ravine, :, ravine] = 1.0
    rewards = -1.0 + 10.0 * P[:, :, goal] - 8.0 * P[:, :, ravine]
    rewards[goal] = rewards[ravine] = 0.0
    initial = np.array([0.8, 0.2, 0.0, 0.0, 0.0, 0.0])
    return FiniteMDP(transitions=P, rewards=rewards, initial=initial, gamma=1.0, terminal=(goal, ravine))


def _discounted_example() -> FiniteMDP:
    """Machine maintenance (a classic replacement problem), γ = 0.9.

    The state is the machine's wear, 0 (new) to 5 (broken).

    * action 0, operate: earns [10, 9, 7, 5, 2, 0][s]; wear grows by one w.p. 0.15 + 0.1 s and by two
      w.p. 0.05 (a broken machine stays broken).
    * action 1, service: earns half the operating income minus 1 and repairs one level of wear
      w.p. 0.7 (stays w.p. 0.3); a broken machine cannot be serviced (stays, earns −1).
    * action 2, replace: costs 12 and gives a new machine (wear 0 w.p. 0.9, 1 w.p. 0.1).

    The first state is new w.p. 0.5 and otherwise spread over wear 1–3.
    """
    num_states, num_actions = 6, 3
    broken = num_states - 1
    income = np.array([10.0, 9.0, 7.0, 5.0, 2.0, 0.0])
    P = np.zeros((num_states, num_actions, num_states))
    rewards = np.zeros((num_states, num_actions))
    for s in range(num_states):
        if s == broken:
            P[s, 0, s] = 1.0
            P[s, 1, s] = 1.0
            rewards[s, 1] = -1.0
        else:
            up1, up2 = 0.15 + 0.1 * s, 0.05
            P[s, 0, min(s + 1, broken)] += up1
            P[s, 0, min(s + 2, broken)] += up2
            P[s, 0, s] += 1.0 - up1 - up2
            P[s, 1, max(s - 1, 0)] += 0.7
            P[s, 1, s] += 0.3
            rewards[s, 1] = 0.5 * income[s] - 1.0
        rewards[s, 0] = income[s]
        P[s, 2, 0] = 0.9
        P[s, 2, 1] = 0.1
        rewards[s, 2] = -12.0
    initial = np.array([0.5, 0.2, 0.2, 0.1, 0.0, 0.0])
    return FiniteMDP(transitions=P, rewards=rewards, initial=initial, gamma=0.9)


def _average_example() -> FiniteMDP:
    """Inventory control with lost sales (Puterman 1994, §3.2), average reward.

    The state is the stock s = 0..5; the action orders a = 0, 1 or 2 units, delivered at once (at
    most up to the capacity 5; units beyond it are paid for and lost). Demand D takes 0, 1, 2, 3
    with probabilities 0.3, 0.35, 0.25, 0.1; next stock max(y − D, 0) with y = min(s + a, 5).
    Reward: 4 per unit sold, minus 1.5 per order placed plus 1 per unit ordered, minus 0.3 per
    unit held after delivery.
    """
    num_states, num_actions, capacity = 6, 3, 5
    demand = np.array([0.3, 0.35, 0.25, 0.1])
    P = np.zeros((num_states, num_actions, num_states))
    rewards = np.zeros((num_states, num_actions))
    for s in range(num_states):
        for a in range(num_actions):
            y = min(s + a, capacity)
            expected_sales = 0.0
            for k, p in enumerate(demand):
                P[s, a, max(y - k, 0)] += p
                expected_sales += p * min(k, y)
            order_cost = (1.5 + 1.0 * a) if a > 0 else 0.0
            rewards[s, a] = 4.0 * expected_sales - order_cost - 0.3 * y
    initial = np.full(num_states, 1.0 / num_states)
    return FiniteMDP(transitions=P, rewards=rewards, initial=initial, gamma=1.0)


def example_mdp(setting: str) -> FiniteMDP:
    """A small built-in MDP (6 states, 3 actions) suited to ``setting``.

    * ``"episodic"``: a windy cliff path with a goal and a ravine (two terminal states), γ = 1.
    * ``"discounted"``: machine maintenance and replacement, γ = 0.9, no terminal states.
    * ``"average"``: inventory control, a unichain continuing task (γ = 1, unused).

    Each is fully deterministic; see the private builders' docstrings for the dynamics.
    """
    builders = {"episodic": _episodic_example, "discounted": _discounted_example, "average": _average_example}
    if setting not in builders:
        raise InputError(f"unknown setting {shown(setting)}; choose one of {', '.join(SETTINGS)}")
    mdp = builders[setting]()
    validate_setting(mdp, setting)
    return mdp


def random_mdp(num_states: int, num_actions: int, *, seed: int, setting: str,
               gamma: float | None = None) -> FiniteMDP:
    """A random MDP valid for ``setting``, reproducible from ``seed``.

    Transition rows have random sparse support (each next state kept w.p. 1/2, at least one) with
    Gamma(1) weights; rewards are standard normal; μ0 is random over a random non-empty support.

    * ``"episodic"``: max(1, S // 5) terminal states; every non-terminal row sends a fraction
      q ~ U(0.15, 0.4) of its mass to the terminal states, so every policy terminates (mean length
      at most 1/0.15 ≈ 7 steps); default γ = 1.
    * ``"discounted"``: no terminal states; default γ = 0.9.
    * ``"average"``: no terminal states; a random cyclic order of the states is added to the
      support (through one random action per state), so the chain under any full-support policy is
      irreducible; γ defaults to 1 and is unused.

    Args:
        num_states: S (at least 2 for episodic, else at least 1).
        num_actions: A ≥ 1.
        seed: seed of ``np.random.default_rng``.
        setting: ``"episodic"``, ``"discounted"`` or ``"average"``.
        gamma: discount factor; must be < 1 for ``"discounted"``.

    Returns:
        A :class:`FiniteMDP` that passes :func:`validate_setting` for ``setting``.
    """
    if setting not in SETTINGS:
        raise InputError(f"unknown setting {shown(setting)}; choose one of {', '.join(SETTINGS)}")
    min_states = 2 if setting == "episodic" else 1
    if int(num_states) != num_states or num_states < min_states:
        raise InputError(f"num_states must be an integer >= {min_states} for setting {shown(setting)}, got {shown(num_states)}")
    if int(num_actions) != num_actions or num_actions < 1:
        raise InputError(f"num_actions must be an integer >= 1, got {shown(num_actions)}")
    if gamma is None:
        gamma = 0.9 if setting == "discounted" else 1.0
    S, A = int(num_states), int(num_actions)
    rng = np.random.default_rng(seed)

    support = rng.random((S, A, S)) < 0.5
    forced = rng.integers(S, size=(S, A))  # one guaranteed next state per row
    support[np.arange(S)[:, None], np.arange(A)[None, :], forced] = True
    weights = rng.gamma(1.0, size=(S, A, S)) * support

    terminal: tuple[int, ...] = ()
    if setting == "episodic":
        num_terminal = max(1, S // 5)
        terminal = tuple(sorted(int(t) for t in rng.choice(S, size=num_terminal, replace=False)))
        is_terminal = np.zeros(S, dtype=bool)
        is_terminal[list(terminal)] = True
        weights[:, :, is_terminal] = 0.0
        empty = weights.sum(axis=-1) == 0  # rows whose support was all terminal
        fallback = rng.choice(np.flatnonzero(~is_terminal), size=(S, A))
        rows, cols = np.nonzero(empty)
        weights[rows, cols, fallback[rows, cols]] = 1.0
        P = weights / weights.sum(axis=-1, keepdims=True)
        to_terminal = rng.gamma(1.0, size=(S, A, num_terminal))
        to_terminal /= to_terminal.sum(axis=-1, keepdims=True)
        q = rng.uniform(0.15, 0.4, size=(S, A, 1))
        P = (1.0 - q) * P
        P[:, :, is_terminal] = q * to_terminal
        P[is_terminal] = 0.0  # terminal rows are ignored; store clean self-loops
        P[terminal, :, terminal] = 1.0
    else:
        if setting == "average":
            order = rng.permutation(S)
            successor = np.empty(S, dtype=np.int64)
            successor[order] = np.roll(order, -1)
            action = rng.integers(A, size=S)
            weights[np.arange(S), action, successor] += rng.gamma(1.0, size=S) + 0.1
        P = weights / weights.sum(axis=-1, keepdims=True)
        is_terminal = np.zeros(S, dtype=bool)

    rewards = rng.normal(size=(S, A))
    rewards[is_terminal] = 0.0
    start = (rng.random(S) < 0.5) & ~is_terminal
    start[rng.choice(np.flatnonzero(~is_terminal))] = True
    initial = rng.gamma(1.0, size=S) * start
    initial /= initial.sum()
    mdp = FiniteMDP(transitions=P, rewards=rewards, initial=initial, gamma=float(gamma), terminal=terminal)
    validate_setting(mdp, setting)
    return mdp
