"""Support graphs of finite Markov chains: reachability, closed classes, states that may never stop.

Every function takes boolean adjacency matrices ``[S, S]`` (``adjacency[s, s']`` is True when
``s'`` can follow ``s`` in one step with positive probability) and is pure.
"""

from __future__ import annotations

import numpy as np

__all__ = ["reachability", "closed_classes", "avoidable_termination", "certain_termination"]


def reachability(adjacency: np.ndarray) -> np.ndarray:
    """Reflexive-transitive closure of a directed graph.

    Args:
        adjacency: ``[S, S]`` bool, one-step edges.

    Returns:
        ``[S, S]`` bool, ``reach[s, s']`` True when ``s'`` is reachable from ``s`` in zero or more
        steps. Computed by repeated squaring (at most ⌈log2 S⌉ + 1 matrix products).
    """
    num_states = adjacency.shape[0]
    reach = adjacency.astype(bool) | np.eye(num_states, dtype=bool)
    while True:
        as_float = reach.astype(np.float64)
        grown = (as_float @ as_float) > 0
        if np.array_equal(grown, reach):
            return reach
        reach = grown


def closed_classes(adjacency: np.ndarray) -> list[tuple[int, ...]]:
    """Closed communicating classes (the recurrent classes of a finite Markov chain).

    A state s is recurrent iff every state reachable from s can reach s back; its class is then
    the set of states reachable from it, which no edge leaves.

    Args:
        adjacency: ``[S, S]`` bool, one-step edges.

    Returns:
        The classes as sorted tuples of state indices, ordered by their smallest state.
    """
    reach = reachability(adjacency)
    classes: set[tuple[int, ...]] = set()
    for s in range(adjacency.shape[0]):
        if np.all(reach[:, s][reach[s]]):  # everything reachable from s leads back to s
            classes.add(tuple(int(t) for t in np.flatnonzero(reach[s])))
    return sorted(classes)


def avoidable_termination(transitions: np.ndarray, terminal_mask: np.ndarray) -> np.ndarray:
    """States from which some policy keeps the episode going forever.

    The greatest set X of non-terminal states such that from every s in X some action a keeps all
    next-state mass inside X (P(X | s, a) = 1). A deterministic policy choosing such an action
    never leaves X; from any state outside X, every policy (even history-dependent) reaches a
    terminal state with probability 1 (Bertsekas & Tsitsiklis 1991, stochastic shortest paths).

    Args:
        transitions: ``[S, A, S]`` P[s, a, s'].
        terminal_mask: ``[S]`` bool, True at terminal states.

    Returns:
        ``[S]`` bool mask of X.
    """
    positive = transitions > 0  # [S, A, S]
    inside = ~terminal_mask
    while True:
        leaks = positive[:, :, ~inside].any(axis=-1)  # [S, A]: action a may leave the set
        kept = inside & (~leaks).any(axis=1)
        if np.array_equal(kept, inside):
            return inside
        inside = kept


def certain_termination(adjacency: np.ndarray, terminal_mask: np.ndarray) -> np.ndarray:
    """Non-terminal states from which a Markov chain reaches a terminal state with probability 1.

    In a finite chain, absorption is certain from s iff every state reachable from s can still
    reach a terminal state.

    Args:
        adjacency: ``[S, S]`` bool, one-step edges of the chain (terminal states absorbing).
        terminal_mask: ``[S]`` bool, True at terminal states.

    Returns:
        ``[S]`` bool mask; False at terminal states.
    """
    reach = reachability(adjacency)
    if terminal_mask.any():
        stuck = ~terminal_mask & ~reach[:, terminal_mask].any(axis=1)  # cannot reach any terminal
    else:
        stuck = np.ones_like(terminal_mask)
    return ~terminal_mask & ~reach[:, stuck].any(axis=1)
