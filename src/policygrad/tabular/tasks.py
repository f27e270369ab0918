"""Continuing tasks with known optima, as finite MDPs for the exact tools.

Each builder returns a :class:`FiniteMDP` valid for the ``"average"`` criterion (no terminal states,
unichain; γ = 1 and unused). Their optimal average reward ρ* is computed exactly by
:func:`optimal_average_reward` (relative value iteration) and attained by the deterministic policy
of :func:`optimal_average_policy`. The Gymnasium environments of :mod:`policygrad.tasks` are built
from these MDPs.

==================================  ==  ==  =========  ===============  ============================
task (defaults)                     S   A   ρ*         ρ of uniform π   a short-horizon agent's ρ
==================================  ==  ==  =========  ===============  ============================
:func:`access_control_mdp`          44  2   2.747642   1.698242         2.181413 (always accept)
:func:`recycling_robot_mdp`         2   3   2.5        1.2              1 (waits when low)
:func:`river_swim_mdp`              10  2   0.666678   0.018185         0.05 (stays at the bank)
==================================  ==  ==  =========  ===============  ============================

(Rounded; the tests recompute them.) In each task the average-reward optimum gives up something
now for more later: access control turns low-priority customers away to keep servers for
high-priority ones, the robot recharges instead of waiting, and the swimmer leaves a small sure
reward for a large one far upstream.

References:
    Sutton & Barto (2018), Reinforcement Learning: An Introduction, 2nd ed., MIT Press (Example 3.3,
    the recycling robot; Example 10.2, the access-control queuing task).
    Strehl & Littman (2008), An analysis of model-based interval estimation for Markov decision
    processes, Journal of Computer and System Sciences 74(8) (the RiverSwim chain).
    Puterman (1994), Markov Decision Processes, Wiley (§8.4, the optimality equation and conserving
    policies).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from policygrad.errors import InputError, shown
from policygrad.tabular.exact import relative_value_iteration
from policygrad.tabular.mdp import FiniteMDP, validate_setting

__all__ = [
    "REJECT",
    "ACCEPT",
    "access_control_mdp",
    "access_control_state",
    "access_control_decode",
    "HIGH",
    "LOW",
    "SEARCH",
    "WAIT",
    "RECHARGE",
    "recycling_robot_mdp",
    "SWIM_LEFT",
    "SWIM_RIGHT",
    "river_swim_mdp",
    "optimal_average_reward",
    "optimal_average_policy",
]

REJECT = 0
"""Access control: turn the customer at the head of the queue away (reward 0)."""
ACCEPT = 1
"""Access control: give the customer a free server (reward = its priority), or reject if none is free."""

HIGH = 0
"""Recycling robot: the battery is high."""
LOW = 1
"""Recycling robot: the battery is low."""
SEARCH = 0
"""Recycling robot: search for cans."""
WAIT = 1
"""Recycling robot: wait for someone to bring a can."""
RECHARGE = 2
"""Recycling robot: go back to the dock and recharge."""

SWIM_LEFT = 0
"""River swim: swim with the current (always succeeds)."""
SWIM_RIGHT = 1
"""River swim: swim against the current (often fails)."""


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {shown(value)}")
    return int(value)


def _check_real(value: object, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {shown(value)}")
    return float(value)


def _check_probability(value: object, name: str, *, open_low: bool = False) -> float:
    p = _check_real(value, name)
    if not (0.0 < p <= 1.0 if open_low else 0.0 <= p <= 1.0):
        raise InputError(f"{name} must lie in {'(0, 1]' if open_low else '[0, 1]'}, got {p}")
    return p


# ----------------------------------------------------------------------------------------------
# Access control (Sutton & Barto 2018, Example 10.2)


def access_control_state(free: int, priority_index: int, *, num_servers: int = 10, num_priorities: int = 4) -> int:
    """State index of the access-control task: ``free * num_priorities + priority_index``.

    Args:
        free: number of free servers, 0..num_servers.
        priority_index: index into ``priorities`` of the customer at the head of the queue.
        num_servers: k, the number of servers of the task.
        num_priorities: ``len(priorities)`` of the task.

    Returns:
        The state index in 0..(num_servers + 1) * num_priorities − 1.

    Raises:
        InputError: an argument is out of range.
    """
    num_servers = _check_count(num_servers, "num_servers", 1)
    num_priorities = _check_count(num_priorities, "num_priorities", 1)
    free = _check_count(free, "free", 0)
    priority_index = _check_count(priority_index, "priority_index", 0)
    if free > num_servers:
        raise InputError(f"free = {free} exceeds num_servers = {num_servers}")
    if priority_index >= num_priorities:
        raise InputError(f"priority_index = {priority_index} is out of range for {num_priorities} priorities")
    return free * num_priorities + priority_index


def access_control_decode(state: int, *, num_servers: int = 10, num_priorities: int = 4) -> tuple[int, int]:
    """Inverse of :func:`access_control_state`: ``state -> (free, priority_index)``.

    Raises:
        InputError: ``state`` is out of range for the task's size.
    """
    num_servers = _check_count(num_servers, "num_servers", 1)
    num_priorities = _check_count(num_priorities, "num_priorities", 1)
    state = _check_count(state, "state", 0)
    num_states = (num_servers + 1) * num_priorities
    if state >= num_states:
        raise InputError(f"state {state} is out of range for {num_states} states (valid: 0..{num_states - 1})")
    free, priority_index = divmod(state, num_priorities)
    return free, priority_index


def access_control_mdp(num_servers: int = 10, priorities: Sequence[float] = (1, 2, 4, 8),
                       free_prob: float = 0.06) -> FiniteMDP:
    """The access-control queuing task (Sutton & Barto 2018, Example 10.2) as a finite MDP.

    k servers serve customers from a queue that never empties. The state is (number of free
    servers f = 0..k, priority of the customer at the head of the queue), encoded as

        s = f · m + i,   m = len(priorities),  i = index of the priority

    (:func:`access_control_state`, :func:`access_control_decode`). Actions: 0 = reject, 1 = accept.
    One step, in this order:

    1. Accepting with f > 0 pays r = priorities[i] and occupies a server (f ← f − 1); rejecting,
       or accepting with f = 0, pays 0 and leaves f unchanged.
    2. Each busy server, including one occupied in step 1, becomes free with probability
       p = ``free_prob``, independently: with f counted after step 1, the number freed is
       Binomial(k − f, p).
    3. The next customer's priority is uniform over ``priorities``.

    The book says only that the head customer is accepted or rejected on each step and that each
    busy server frees with probability p on each step; the order above (accept, then servers free)
    is one reading of it, under which a customer accepted now may leave by the next step. Episodes
    start with every server free and a uniform priority. The task is continuing (no terminal
    states, γ = 1, unused) and unichain: from any state, all servers free at once with positive
    probability under every policy.

    With the defaults the optimal policy never accepts priority 1, accepts priority 2 only while
    at least 4 servers are free, and accepts priorities 4 and 8 whenever a server is free:
    ρ* ≈ 2.7476, against 2.1814 for accepting everyone (the myopic policy) and 2.6731 for the
    discounted optimum with γ = 0.9.

    Args:
        num_servers: k ≥ 1.
        priorities: the rewards of the m ≥ 1 customer classes (finite numbers).
        free_prob: p in (0, 1].

    Returns:
        A :class:`FiniteMDP` with S = (k + 1) · m states and A = 2 actions.

    Raises:
        InputError: bad arguments.
    """
    k = _check_count(num_servers, "num_servers", 1)
    try:
        values = [] if isinstance(priorities, (str, bytes)) else list(priorities)
    except TypeError:
        values = []
    if not values:
        raise InputError(f"priorities must be a non-empty sequence of numbers, got {shown(priorities)}")
    rewards_by_class = np.array([_check_real(v, "each priority") for v in values])  # [m]
    p = _check_probability(free_prob, "free_prob", open_low=True)
    m = rewards_by_class.size
    num_states = (k + 1) * m

    def freed(busy: int) -> np.ndarray:
        """``[busy + 1]`` Binomial(busy, p) probabilities of freeing j = 0..busy servers."""
        return np.array([math.comb(busy, j) * p**j * (1.0 - p) ** (busy - j) for j in range(busy + 1)])

    transitions = np.zeros((num_states, 2, num_states))
    rewards = np.zeros((num_states, 2))
    for free in range(k + 1):
        for action in (REJECT, ACCEPT):
            accepted = action == ACCEPT and free > 0
            after = free - 1 if accepted else free  # free servers once the customer is placed
            next_free = np.zeros(k + 1)  # [k + 1] distribution of the next f
            next_free[after:] = freed(k - after)
            row = np.repeat(next_free, m) / m  # [S], next priority uniform and independent
            for i in range(m):
                s = free * m + i
                transitions[s, action] = row
                rewards[s, action] = rewards_by_class[i] if accepted else 0.0
    initial = np.zeros(num_states)
    initial[k * m:] = 1.0 / m
    mdp = FiniteMDP(transitions=transitions, rewards=rewards, initial=initial, gamma=1.0)
    validate_setting(mdp, "average")
    return mdp


# ----------------------------------------------------------------------------------------------
# Recycling robot (Sutton & Barto 2018, Example 3.3), continuing


def recycling_robot_mdp(*, alpha: float = 0.8, beta: float = 0.4, r_search: float = 3.0, r_wait: float = 1.0,
                        rescue_reward: float = -3.0) -> FiniteMDP:
    """The recycling robot (Sutton & Barto 2018, Example 3.3) as a continuing task.

    States: 0 = high battery, 1 = low battery. Actions: 0 = search, 1 = wait, 2 = recharge.

    ==========  ========  =====================================  ======================
    state       action    next state                             reward
    ==========  ========  =====================================  ======================
    high        search    high w.p. α, low w.p. 1 − α            r_search
    low         search    low w.p. β; else rescued, to high      r_search; rescue_reward
    either      wait      unchanged                              r_wait
    low         recharge  high                                   0
    high        recharge  high (the battery is already full)     0
    ==========  ========  =====================================  ======================

    The book offers no recharge in the high state; here it is a no-op paying 0, which waiting
    dominates whenever r_wait ≥ 0. The expected reward of searching when low is
    β r_search + (1 − β) rescue_reward.

    With the defaults (α = 0.8, β = 0.4, r_search = 3, r_wait = 1, rescue −3) the optimal policy
    searches when high and recharges when low: the chain alternates high → low (w.p. 1 − α) →
    high, so ρ* = r_search / (2 − α) = 2.5. A myopic agent waits when low (r_wait = 1 now beats
    recharging's 0 and searching's expected −0.6), never leaves the low state again, and earns
    ρ = 1. The discounted optimum does so for γ < 5/14, where r_wait / (1 − γ) (wait forever)
    exceeds γ V(high) (recharge, then search when high).

    Episodes start in the high state.

    Raises:
        InputError: α or β outside [0, 1], or a non-finite reward.
    """
    alpha = _check_probability(alpha, "alpha")
    beta = _check_probability(beta, "beta")
    r_search = _check_real(r_search, "r_search")
    r_wait = _check_real(r_wait, "r_wait")
    rescue_reward = _check_real(rescue_reward, "rescue_reward")
    transitions = np.zeros((2, 3, 2))
    rewards = np.zeros((2, 3))
    transitions[HIGH, SEARCH] = [alpha, 1.0 - alpha]
    transitions[LOW, SEARCH] = [1.0 - beta, beta]
    transitions[HIGH, WAIT, HIGH] = transitions[LOW, WAIT, LOW] = 1.0
    transitions[HIGH, RECHARGE, HIGH] = transitions[LOW, RECHARGE, HIGH] = 1.0
    rewards[HIGH, SEARCH] = r_search
    rewards[LOW, SEARCH] = beta * r_search + (1.0 - beta) * rescue_reward
    rewards[:, WAIT] = r_wait
    mdp = FiniteMDP(transitions=transitions, rewards=rewards, initial=np.array([1.0, 0.0]), gamma=1.0)
    validate_setting(mdp, "average")
    return mdp


# ----------------------------------------------------------------------------------------------
# River swim (after Strehl & Littman 2008)

_RIGHT_ADVANCE = 0.3
"""River swim: probability that swimming right moves one state right (stays at the far end)."""
_RIGHT_SLIP = 0.1
"""River swim: probability that swimming right is carried one state left (stays at the left bank)."""


def river_swim_mdp(num_states: int = 10, *, small_reward: float = 0.05, large_reward: float = 1.0) -> FiniteMDP:
    """A river-swim chain (after Strehl & Littman 2008): a small sure reward against a large far one.

    States 0..n−1 lie along a river flowing left. Actions: 0 = swim left (with the current),
    1 = swim right (against it).

    * left: moves one state left (stays in state 0); swimming left in state 0 pays ``small_reward``.
    * right: moves one state right w.p. 0.3, is carried one state left w.p. 0.1, else stays (moves
      that would leave the chain stay instead: in state 0 it stays w.p. 0.7, in state n − 1 w.p.
      0.9). Swimming right in state n − 1 pays ``large_reward``.

    Every other step pays 0; episodes start in state 0. Swimming left in state 0 earns ρ =
    small_reward. Always swimming right is a birth–death chain with d(s + 1) / d(s) = 0.3 / 0.1 = 3,
    so it earns

        ρ = large_reward · d(n − 1) = large_reward · 2 · 3^(n−1) / (3^n − 1)

    (2/3 for large n), which is optimal with the defaults: ρ* = 39366/59048 ≈ 0.66668, thirteen
    times the bank's 0.05. From state 0 the far end takes 42.5 steps of swimming right on average
    (n = 10), too far for a discounted agent with γ = 0.9: its optimal policy swims left in state 0
    and, started there, earns ρ = 0.05. The discounted optimum swims right in state 0 from
    γ ≈ 0.924 on.

    Args:
        num_states: n ≥ 2.
        small_reward: reward of swimming left in state 0.
        large_reward: reward of swimming right in state n − 1.

    Raises:
        InputError: bad arguments.
    """
    n = _check_count(num_states, "num_states", 2)
    small_reward = _check_real(small_reward, "small_reward")
    large_reward = _check_real(large_reward, "large_reward")
    transitions = np.zeros((n, 2, n))
    rewards = np.zeros((n, 2))
    for s in range(n):
        transitions[s, SWIM_LEFT, max(s - 1, 0)] = 1.0
        transitions[s, SWIM_RIGHT, min(s + 1, n - 1)] += _RIGHT_ADVANCE
        transitions[s, SWIM_RIGHT, max(s - 1, 0)] += _RIGHT_SLIP
        transitions[s, SWIM_RIGHT, s] += 1.0 - _RIGHT_ADVANCE - _RIGHT_SLIP
    rewards[0, SWIM_LEFT] = small_reward
    rewards[n - 1, SWIM_RIGHT] = large_reward
    initial = np.zeros(n)
    initial[0] = 1.0
    mdp = FiniteMDP(transitions=transitions, rewards=rewards, initial=initial, gamma=1.0)
    validate_setting(mdp, "average")
    return mdp


# ----------------------------------------------------------------------------------------------
# Exact optimum


def optimal_average_reward(mdp: FiniteMDP, *, tol: float = 1e-10) -> float:
    """ρ* = max over policies of the average reward, by :func:`relative_value_iteration`.

    Args:
        mdp: an MDP valid for the average-reward criterion.
        tol: span tolerance of relative value iteration; ρ* is exact to about this.

    Returns:
        ρ* as a Python float.

    Raises:
        InputError: the MDP is not a continuing unichain task, or relative value iteration fails.
    """
    return relative_value_iteration(mdp, tol=tol)[0]


def optimal_average_policy(mdp: FiniteMDP, *, tol: float = 1e-10) -> np.ndarray:
    """A deterministic gain-optimal policy: greedy in the bias h of :func:`relative_value_iteration`.

        π*(s) = argmax_a [ r(s, a) + Σ_s' P(s'|s, a) h(s') ]

    A policy attaining the maximum in the optimality equation h + ρ* = max_a [r + P h] has gain
    ρ* on each of its recurrent classes (Puterman 1994, §8.4). Ties go to the lowest action index
    (access control with no free server: reject).

    Args:
        mdp: an MDP valid for the average-reward criterion.
        tol: span tolerance of relative value iteration.

    Returns:
        ``[S, A]`` one-hot action probabilities, for :func:`policygrad.tabular.evaluate_policy`.
    """
    _, h = relative_value_iteration(mdp, tol=tol)
    q = mdp.rewards + mdp.transitions @ h  # [S, A]
    policy = np.zeros((mdp.num_states, mdp.num_actions))
    policy[np.arange(mdp.num_states), q.argmax(axis=1)] = 1.0
    return policy
