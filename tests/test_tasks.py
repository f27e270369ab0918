"""Continuing tasks: encodings, dynamics by hand, exact optima against brute force, Gymnasium ids."""

import itertools
import warnings

import gymnasium
import numpy as np
import pytest

import policygrad.tasks  # registers the ids
from policygrad.errors import InputError
from policygrad.tabular import (
    FiniteMDP,
    FiniteMDPEnv,
    FiniteMDPVectorEnv,
    evaluate_policy,
    exact_solution,
    validate_setting,
    value_iteration,
)
from policygrad.tabular.tasks import (
    ACCEPT,
    HIGH,
    LOW,
    RECHARGE,
    REJECT,
    SEARCH,
    SWIM_LEFT,
    SWIM_RIGHT,
    WAIT,
    access_control_decode,
    access_control_mdp,
    access_control_state,
    optimal_average_policy,
    optimal_average_reward,
    recycling_robot_mdp,
    river_swim_mdp,
)
from policygrad.tasks import TASK_IDS, register_tasks

BUILDERS = {
    "policygrad/AccessControl-v0": access_control_mdp,
    "policygrad/RecyclingRobot-v0": recycling_robot_mdp,
    "policygrad/RiverSwim-v0": river_swim_mdp,
}


def _with_gamma(mdp, gamma):
    return FiniteMDP(transitions=mdp.transitions, rewards=mdp.rewards, initial=mdp.initial, gamma=gamma)


def _deterministic(actions, num_actions):
    """``[S, A]`` one-hot policy from one action per state."""
    return np.eye(num_actions)[np.asarray(actions)]


# ------------------------------------------------------------------------------------------------
# Access control: encoding and dynamics


@pytest.mark.parametrize("num_servers, num_priorities", [(10, 4), (3, 2), (1, 1)])
def test_access_control_encoding_round_trip(num_servers, num_priorities):
    sizes = dict(num_servers=num_servers, num_priorities=num_priorities)
    states = []
    for free in range(num_servers + 1):
        for i in range(num_priorities):
            s = access_control_state(free, i, **sizes)
            assert s == free * num_priorities + i
            assert access_control_decode(s, **sizes) == (free, i)
            states.append(s)
    assert states == list(range((num_servers + 1) * num_priorities))


@pytest.mark.parametrize("call", [
    lambda: access_control_state(11, 0),
    lambda: access_control_state(0, 4),
    lambda: access_control_state(-1, 0),
    lambda: access_control_state(True, 0),
    lambda: access_control_state(0, 0, num_servers=0),
    lambda: access_control_decode(44),
    lambda: access_control_decode(-1),
    lambda: access_control_decode(2.0),
])
def test_access_control_encoding_rejects_bad_input(call):
    with pytest.raises(InputError):
        call()


def test_access_control_rows_by_hand():
    # k = 2 servers, priorities (1, 5), p = 0.5; next priority uniform (1/2 each).
    mdp = access_control_mdp(2, (1, 5), 0.5)
    sizes = dict(num_servers=2, num_priorities=2)

    def row(free_next_probs):
        """Expected P[s, a, ·] from the distribution of the next number of free servers."""
        expected = np.zeros(6)
        for free, prob in free_next_probs.items():
            for i in range(2):
                expected[access_control_state(free, i, **sizes)] = prob / 2
        return expected

    s = access_control_state(1, 1, **sizes)  # one free server, priority 5 at the head
    # Accept: pays 5, no server free; both busy servers free w.p. 1/2 each -> Binomial(2, 1/2).
    assert mdp.rewards[s, ACCEPT] == 5.0
    np.testing.assert_allclose(mdp.transitions[s, ACCEPT], row({0: 0.25, 1: 0.5, 2: 0.25}))
    # Reject: pays 0, one busy server frees w.p. 1/2.
    assert mdp.rewards[s, REJECT] == 0.0
    np.testing.assert_allclose(mdp.transitions[s, REJECT], row({1: 0.5, 2: 0.5}))
    # No free server: accepting acts as rejecting.
    s = access_control_state(0, 1, **sizes)
    assert mdp.rewards[s, ACCEPT] == mdp.rewards[s, REJECT] == 0.0
    np.testing.assert_allclose(mdp.transitions[s, ACCEPT], row({0: 0.25, 1: 0.5, 2: 0.25}))
    np.testing.assert_array_equal(mdp.transitions[s, ACCEPT], mdp.transitions[s, REJECT])
    # Episodes start with every server free, priority uniform.
    np.testing.assert_allclose(mdp.initial, row({2: 1.0}))


def test_access_control_order_of_events():
    # Servers free after the action: with p = 1 the server a customer just took is free again by the
    # next step, so every next state has all k servers free.
    k, m = 3, 2
    mdp = access_control_mdp(k, (1, 2), 1.0)
    s = access_control_state(k, 0, num_servers=k, num_priorities=m)
    assert mdp.rewards[s, ACCEPT] == 1.0
    all_free = [access_control_state(k, i, num_servers=k, num_priorities=m) for i in range(m)]
    assert mdp.transitions[s, ACCEPT, all_free].sum() == pytest.approx(1.0)


def test_access_control_is_unichain_under_uniform_policy():
    mdp = access_control_mdp()
    assert mdp.num_states == 44 and mdp.num_actions == 2 and mdp.terminal == ()
    validate_setting(mdp, "average")
    uniform = exact_solution(mdp, np.zeros((44, 2)), "average")
    # Irreducible, not just unichain: every state has positive stationary probability.
    assert (uniform.d > 0).all()
    assert uniform.d.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name, mdp", [
    ("access control", access_control_mdp()),
    ("access control small", access_control_mdp(3, (1, 2, 4), 0.2)),
    ("recycling robot", recycling_robot_mdp()),
    ("recycling robot extremes", recycling_robot_mdp(alpha=1.0, beta=0.0)),
    ("river swim", river_swim_mdp()),
    ("river swim short", river_swim_mdp(2)),
])
def test_transition_rows_are_distributions(name, mdp):
    assert (mdp.transitions >= 0).all()
    np.testing.assert_allclose(mdp.transitions.sum(axis=-1), 1.0, atol=1e-12)
    assert mdp.initial.sum() == pytest.approx(1.0)
    assert mdp.terminal == ()
    validate_setting(mdp, "average")


# ------------------------------------------------------------------------------------------------
# Exact optima


@pytest.mark.slow
def test_access_control_rho_star_equals_best_threshold_policy():
    # Threshold policies: accept priority class i iff at least t_i servers are free (t_i = 11: never),
    # with thresholds that do not increase with the priority: C(14, 4) = 1001 policies.
    mdp = access_control_mdp()
    rho_star = optimal_average_reward(mdp)
    free = np.arange(11)[:, None]  # [k + 1, 1]
    best_rho, best_thresholds = -np.inf, None
    for descending in itertools.combinations_with_replacement(range(11, 0, -1), 4):
        thresholds = np.array(descending)  # t_1 >= t_2 >= t_4 >= t_8
        accept = (free >= thresholds[None, :]).reshape(-1)  # [44] in state order f * 4 + i
        rho = evaluate_policy(mdp, _deterministic(accept.astype(int), 2), "average").rho
        assert rho <= rho_star + 1e-9  # ρ* bounds every policy
        if rho > best_rho:
            best_rho, best_thresholds = rho, tuple(descending)
    assert best_rho == pytest.approx(rho_star, abs=1e-9)
    assert best_thresholds == (11, 4, 1, 1)  # never priority 1; priority 2 from 4 free servers
    assert rho_star == pytest.approx(2.747642, abs=1e-6)

    greedy = optimal_average_policy(mdp)
    free_of_state = np.repeat(np.arange(11), 4)
    expected = free_of_state >= np.tile(np.array(best_thresholds), 11)
    np.testing.assert_array_equal(greedy.argmax(axis=1), expected.astype(int))


def test_small_access_control_rho_star_equals_best_deterministic_policy():
    # Every deterministic policy of k = 3, priorities (1, 2, 4): with no server free both actions
    # coincide, so 2^9 distinct policies over the 9 states with a free server.
    mdp = access_control_mdp(3, (1, 2, 4), 0.2)
    rho_star = optimal_average_reward(mdp)
    rhos = [evaluate_policy(mdp, _deterministic((0, 0, 0) + bits, 2), "average").rho
            for bits in itertools.product((REJECT, ACCEPT), repeat=9)]
    assert max(rhos) == pytest.approx(rho_star, abs=1e-9)
    assert max(rhos) <= rho_star + 1e-9


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_greedy_policy_attains_rho_star(env_id):
    mdp = BUILDERS[env_id]()
    rho_star = optimal_average_reward(mdp)
    values = evaluate_policy(mdp, optimal_average_policy(mdp), "average")
    assert values.rho == pytest.approx(rho_star, abs=1e-8)
    uniform = exact_solution(mdp, np.zeros((mdp.num_states, mdp.num_actions)), "average").objective
    assert uniform < rho_star


def test_recycling_robot_optimum_by_hand():
    # Search when high, recharge when low: the chain high -> low (w.p. 1 − α) -> high spends
    # 1 / (2 − α) of the time high, earning r_search there: ρ* = r_search / (2 − α).
    for alpha, beta, r_search, r_wait in [(0.8, 0.4, 3.0, 1.0), (0.5, 0.3, 2.0, 0.5)]:
        mdp = recycling_robot_mdp(alpha=alpha, beta=beta, r_search=r_search, r_wait=r_wait)
        rho_star = optimal_average_reward(mdp)
        assert rho_star == pytest.approx(r_search / (2 - alpha), abs=1e-9)
        np.testing.assert_array_equal(optimal_average_policy(mdp).argmax(axis=1), [SEARCH, RECHARGE])
        # Every deterministic policy whose chain is unichain: not those that stay high (wait or
        # recharge) and also wait when low, which have two closed classes.
        rhos = []
        for actions in itertools.product(range(3), repeat=2):
            if actions[HIGH] in (WAIT, RECHARGE) and actions[LOW] == WAIT:
                continue
            rhos.append(evaluate_policy(mdp, _deterministic(actions, 3), "average").rho)
        assert max(rhos) == pytest.approx(rho_star, abs=1e-9)
    mdp = recycling_robot_mdp()
    uniform = exact_solution(mdp, np.zeros((2, 3)), "average").objective
    assert uniform == pytest.approx(1.2, abs=1e-12)
    # Low battery, searching: β r_search + (1 − β) rescue = 0.4 · 3 − 0.6 · 3 = −0.6.
    assert mdp.rewards[LOW, SEARCH] == pytest.approx(-0.6)
    assert mdp.transitions[HIGH, RECHARGE, HIGH] == 1.0 and mdp.rewards[HIGH, RECHARGE] == 0.0


def test_recycling_robot_short_horizon_agent_waits():
    # Waiting forever when low is worth r_wait / (1 − γ); recharging is worth γ V(high). They cross
    # at 2.8 γ² − 3.8 γ + 1 = 0, γ = 5/14 ≈ 0.357 (α = 0.8, r_search = 3, r_wait = 1).
    mdp = recycling_robot_mdp()
    _, q_short = value_iteration(_with_gamma(mdp, 0.35))
    _, q_long = value_iteration(_with_gamma(mdp, 0.36))
    assert q_short.argmax(axis=1).tolist() == [SEARCH, WAIT]
    assert q_long.argmax(axis=1).tolist() == [SEARCH, RECHARGE]
    short_sighted = evaluate_policy(mdp, _deterministic([SEARCH, WAIT], 3), "average")
    assert short_sighted.rho == pytest.approx(1.0)  # stuck waiting in the low state


@pytest.mark.parametrize("num_states", [2, 6, 10])
def test_river_swim_optimum_by_hand(num_states):
    # Always swimming right is a birth–death chain with d(s + 1) / d(s) = 0.3 / 0.1 = 3:
    # ρ = d(n − 1) = 2 · 3^(n−1) / (3^n − 1).
    mdp = river_swim_mdp(num_states)
    rho_star = optimal_average_reward(mdp)
    assert rho_star == pytest.approx(2 * 3 ** (num_states - 1) / (3**num_states - 1), abs=1e-9)
    # Every deterministic policy: any action may carry the swimmer left, so all are unichain.
    rhos = [evaluate_policy(mdp, _deterministic(actions, 2), "average").rho
            for actions in itertools.product((SWIM_LEFT, SWIM_RIGHT), repeat=num_states)]
    assert max(rhos) == pytest.approx(rho_star, abs=1e-9)
    assert optimal_average_policy(mdp).argmax(axis=1).tolist() == [SWIM_RIGHT] * num_states


def test_river_swim_discounted_agent_stays_at_the_bank():
    mdp = river_swim_mdp()
    _, q_short = value_iteration(_with_gamma(mdp, 0.9))
    _, q_long = value_iteration(_with_gamma(mdp, 0.99))
    assert q_short[0].argmax() == SWIM_LEFT
    assert q_long.argmax(axis=1).tolist() == [SWIM_RIGHT] * 10
    # The γ = 0.9 policy never leaves state 0 once there: ρ = small_reward from the start state.
    stay = _deterministic([SWIM_LEFT] * 10, 2)
    assert evaluate_policy(mdp, stay, "average").rho == pytest.approx(0.05)
    assert optimal_average_reward(mdp) > 13 * 0.05


def test_documented_values():
    # The table in policygrad.tabular.tasks: ρ*, ρ of the uniform policy, ρ of a short-horizon policy.
    access = access_control_mdp()
    assert exact_solution(access, np.zeros((44, 2)), "average").objective == pytest.approx(1.698242, abs=1e-6)
    always_accept = np.tile([0.0, 1.0], (44, 1))
    assert evaluate_policy(access, always_accept, "average").rho == pytest.approx(2.181413, abs=1e-6)
    _, q = value_iteration(_with_gamma(access, 0.9))
    discounted = evaluate_policy(access, _deterministic(q.argmax(axis=1), 2), "average").rho
    assert discounted == pytest.approx(2.6731, abs=1e-4)
    swim = river_swim_mdp()
    assert exact_solution(swim, np.zeros((10, 2)), "average").objective == pytest.approx(0.018185, abs=1e-6)
    assert optimal_average_reward(swim) == pytest.approx(39366 / 59048, abs=1e-9)
    # Priorities as a numpy array build the same task.
    np.testing.assert_array_equal(access_control_mdp(priorities=np.array([1, 2, 4, 8])).rewards, access.rewards)


@pytest.mark.parametrize("call", [
    lambda: access_control_mdp(0),
    lambda: access_control_mdp(2.5),
    lambda: access_control_mdp(priorities=()),
    lambda: access_control_mdp(priorities="1248"),
    lambda: access_control_mdp(priorities=(1, float("nan"))),
    lambda: access_control_mdp(free_prob=0.0),
    lambda: access_control_mdp(free_prob=1.5),
    lambda: recycling_robot_mdp(alpha=-0.1),
    lambda: recycling_robot_mdp(beta=2.0),
    lambda: recycling_robot_mdp(r_wait=float("inf")),
    lambda: river_swim_mdp(1),
    lambda: river_swim_mdp(small_reward="a"),
])
def test_builders_reject_bad_arguments(call):
    with pytest.raises(InputError):
        call()


# ------------------------------------------------------------------------------------------------
# Gymnasium


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_make_steps_without_end(env_id):
    env = gymnasium.make(env_id)
    mdp = env.unwrapped.mdp
    assert isinstance(env.unwrapped, FiniteMDPEnv)
    assert env.spec.max_episode_steps is None
    assert env.observation_space == gymnasium.spaces.Discrete(mdp.num_states)
    assert env.action_space == gymnasium.spaces.Discrete(mdp.num_actions)
    np.testing.assert_array_equal(mdp.transitions, BUILDERS[env_id]().transitions)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        obs, reward, terminated, truncated, _ = env.step(int(rng.integers(mdp.num_actions)))
        assert env.observation_space.contains(obs)
        assert not terminated and not truncated


@pytest.mark.parametrize("env_id", TASK_IDS)
def test_make_vec_matches_uniform_policy_average_reward(env_id):
    num_envs, num_steps, burn_in = 64, 2000, 200
    envs = gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    assert isinstance(envs, FiniteMDPVectorEnv) and envs.num_envs == num_envs
    mdp = envs.unwrapped.mdp
    rho_uniform = exact_solution(mdp, np.zeros((mdp.num_states, mdp.num_actions)), "average").objective
    envs.reset(seed=123)
    rng = np.random.default_rng(7)
    rewards = np.zeros((num_steps, num_envs))  # [T, N]
    for t in range(num_steps):
        _, rewards[t], terminated, truncated, _ = envs.step(rng.integers(mdp.num_actions, size=num_envs))
        assert not terminated.any() and not truncated.any()
    per_copy = rewards[burn_in:].mean(axis=0)  # [N], independent copies
    standard_error = per_copy.std(ddof=1) / np.sqrt(num_envs)
    assert abs(per_copy.mean() - rho_uniform) < 4 * standard_error


def test_make_vec_defaults_to_vector_entry_point_and_passes_arguments():
    envs = gymnasium.make_vec("policygrad/AccessControl-v0", num_envs=3, num_servers=4,
                              max_episode_steps=5, autoreset_mode="SameStep")
    assert isinstance(envs, FiniteMDPVectorEnv)
    assert envs.mdp.num_states == 5 * 4
    envs.reset(seed=0)
    for t in range(5):
        _, _, terminated, truncated, info = envs.step(np.ones(3, dtype=np.int64))
    assert truncated.all() and not terminated.any() and info["_final_obs"].all()
    sync = gymnasium.make_vec("policygrad/RiverSwim-v0", num_envs=2, vectorization_mode="sync")
    assert sync.reset(seed=0)[0].tolist() == [0, 0]


def test_make_passes_task_arguments_and_rejects_bad_ones():
    env = gymnasium.make("policygrad/AccessControl-v0", num_servers=3, priorities=(1, 2))
    assert env.unwrapped.mdp.num_states == 8
    with pytest.raises(InputError):
        gymnasium.make("policygrad/RecyclingRobot-v0", alpha=1.5)


def test_register_tasks_is_idempotent():
    specs = {env_id: gymnasium.spec(env_id) for env_id in TASK_IDS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Gymnasium warns when an id is registered over
        register_tasks()
        register_tasks()
    for env_id in TASK_IDS:
        assert gymnasium.spec(env_id) is specs[env_id]
        assert specs[env_id].vector_entry_point is not None
    env = gymnasium.make("policygrad.tasks:policygrad/RiverSwim-v0")
    assert isinstance(env.unwrapped, FiniteMDPEnv)
    assert policygrad.tasks.TASK_IDS == TASK_IDS
