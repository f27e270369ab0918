"""Finite MDPs: exact gradients against finite differences, Bellman identities, validation, envs."""

import dataclasses
import itertools
import json

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from policygrad.errors import InputError
from policygrad.tabular import (
    SETTINGS,
    FiniteMDP,
    FiniteMDPEnv,
    FiniteMDPVectorEnv,
    evaluate_policy,
    exact_solution,
    example_mdp,
    load_mdp_json,
    objective,
    random_mdp,
    relative_value_iteration,
    validate_setting,
    value_iteration,
)

RANDOM_CASES = [(setting, seed) for setting in SETTINGS for seed in (0, 1, 2, 3)]


def _random_case(setting, seed, num_states=5, num_actions=3):
    gamma = {"episodic": 1.0 if seed % 2 == 0 else 0.9, "discounted": 0.85, "average": None}[setting]
    mdp = random_mdp(num_states, num_actions, seed=seed, setting=setting, gamma=gamma)
    theta = np.random.default_rng(100 + seed).normal(scale=1.5, size=(num_states, num_actions))
    return mdp, theta


def _finite_difference_gradient(mdp, theta, setting, eps=1e-6):
    grad = np.zeros_like(theta)
    for index in np.ndindex(*theta.shape):
        step = np.zeros_like(theta)
        step[index] = eps
        grad[index] = (objective(mdp, theta + step, setting) - objective(mdp, theta - step, setting)) / (2 * eps)
    return grad


# ------------------------------------------------------------------------------------------------
# The Policy Gradient Theorem against central finite differences


@pytest.mark.parametrize("setting, seed", RANDOM_CASES)
def test_gradient_matches_finite_differences_random(setting, seed):
    mdp, theta = _random_case(setting, seed)
    exact = exact_solution(mdp, theta, setting)
    numeric = _finite_difference_gradient(mdp, theta, setting)
    np.testing.assert_allclose(exact.gradient, numeric, atol=1e-6, rtol=1e-6)
    assert np.abs(exact.gradient).max() > 1e-3  # not trivially zero


@pytest.mark.parametrize("setting", SETTINGS)
def test_gradient_matches_finite_differences_examples(setting):
    mdp = example_mdp(setting)
    for theta in (np.zeros((6, 3)), np.random.default_rng(7).normal(size=(6, 3))):
        exact = exact_solution(mdp, theta, setting)
        np.testing.assert_allclose(exact.gradient, _finite_difference_gradient(mdp, theta, setting),
                                   atol=1e-6, rtol=1e-6)


def test_gradient_is_zero_at_terminal_states():
    mdp, theta = _random_case("episodic", 0, num_states=10)
    assert len(mdp.terminal) == 2
    exact = exact_solution(mdp, theta, "episodic")
    assert (exact.gradient[list(mdp.terminal)] == 0).all()
    assert (exact.d[list(mdp.terminal)] == 0).all()
    assert (exact.V[list(mdp.terminal)] == 0).all()


# ------------------------------------------------------------------------------------------------
# Identities


def _forward_visitation(mdp, setting, pi, steps):
    """Σ_{t<steps} γ^t Pr(s_t = s), by propagating μ0 step by step (terminal states absorbing)."""
    P_pi = np.einsum("sa,sat->st", pi, mdp.effective_transitions)
    gamma = mdp.gamma
    mu, total = mdp.initial.copy(), np.zeros(mdp.num_states)
    for t in range(steps):
        total += gamma**t * mu
        mu = mu @ P_pi
    total[mdp.terminal_mask] = 0.0
    return total


@pytest.mark.parametrize("setting, seed", RANDOM_CASES + [(s, "example") for s in SETTINGS])
def test_bellman_identities(setting, seed):
    if seed == "example":
        mdp, theta = example_mdp(setting), np.random.default_rng(3).normal(size=(6, 3))
    else:
        mdp, theta = _random_case(setting, seed)
    sol = exact_solution(mdp, theta, setting)
    P, r = mdp.effective_transitions, mdp.effective_rewards
    pi = sol.pi
    np.testing.assert_allclose(pi.sum(axis=1), 1.0)
    np.testing.assert_allclose(sol.V, (pi * sol.Q).sum(axis=1), atol=1e-10)  # V = Σ_a π Q
    if setting == "average":
        # Q(s, a) = r(s, a) − ρ + Σ_s' P h(s'); d P_π = d; Σ d = 1; d · h = 0; ρ = Σ_s d Σ_a π r.
        np.testing.assert_allclose(sol.Q, r - sol.rho + P @ sol.V, atol=1e-10)
        P_pi = np.einsum("sa,sat->st", pi, P)
        np.testing.assert_allclose(sol.d @ P_pi, sol.d, atol=1e-12)
        assert sol.d.sum() == pytest.approx(1.0, abs=1e-12)
        assert (sol.d >= -1e-15).all()
        assert sol.d @ sol.V == pytest.approx(0.0, abs=1e-10)
        assert sol.rho == pytest.approx(float((sol.d[:, None] * pi * r).sum()), abs=1e-12)
        assert sol.objective == sol.rho
    else:
        # Q(s, a) = r(s, a) + γ Σ_s' P V(s') at non-terminal states; J = μ0 · V; d from forward sums.
        live = ~mdp.terminal_mask
        np.testing.assert_allclose(sol.Q[live], (r + mdp.gamma * P @ sol.V)[live], atol=1e-10)
        assert sol.objective == pytest.approx(float(mdp.initial @ sol.V), abs=1e-12)
        assert sol.rho is None
        forward = _forward_visitation(mdp, setting, pi, steps=600)
        np.testing.assert_allclose(sol.d, forward, atol=1e-9)
        # Σ d = E[Σ_t γ^t 1{s_t non-terminal}] (the expected episode length when γ = 1)
        assert sol.d.sum() == pytest.approx(forward.sum(), abs=1e-9)
        if setting == "discounted" and not mdp.terminal:
            assert sol.d.sum() == pytest.approx(1.0 / (1.0 - mdp.gamma))


def test_episodic_hand_computed_chain():
    # 0 → 1 → 2 (terminal), one action, rewards 1 and 2, γ = 1:
    # V(1) = 2, V(0) = 1 + V(1) = 3, J = V(0) = 3; visits d = [1, 1, 0]; gradient 0 (one action).
    P = np.zeros((3, 1, 3))
    P[0, 0, 1] = P[1, 0, 2] = 1.0
    mdp = FiniteMDP(transitions=P, rewards=[[1.0], [2.0], [5.0]], initial=[1.0, 0.0, 0.0], gamma=1.0,
                    terminal=(2,))
    sol = exact_solution(mdp, np.zeros((3, 1)), "episodic")
    np.testing.assert_allclose(sol.V, [3.0, 2.0, 0.0])
    np.testing.assert_allclose(sol.d, [1.0, 1.0, 0.0])
    assert sol.objective == pytest.approx(3.0)
    np.testing.assert_allclose(sol.gradient, 0.0)
    # With γ = 0.5: V(1) = 2, V(0) = 1 + 0.5·2 = 2; d = [1, 0.5, 0]. The terminal row's reward 5 is ignored.
    sol = exact_solution(FiniteMDP(P, mdp.rewards, mdp.initial, 0.5, (2,)), np.zeros((3, 1)), "discounted")
    np.testing.assert_allclose(sol.V, [2.0, 2.0, 0.0])
    np.testing.assert_allclose(sol.d, [1.0, 0.5, 0.0])


def test_two_state_hand_computed_gradient():
    # One state with two actions, both terminating at once: a=0 pays 1, a=1 pays 0; θ = 0 → π = ½.
    # J = ½; ∂J/∂θ0 = π0 (Q0 − V) = ½ (1 − ½) = ¼, ∂J/∂θ1 = −¼.
    P = np.zeros((2, 2, 2))
    P[:, :, 1] = 1.0
    mdp = FiniteMDP(P, [[1.0, 0.0], [0.0, 0.0]], [1.0, 0.0], 1.0, (1,))
    sol = exact_solution(mdp, np.zeros((2, 2)), "episodic")
    assert sol.objective == pytest.approx(0.5)
    np.testing.assert_allclose(sol.gradient, [[0.25, -0.25], [0.0, 0.0]])


def test_unreachable_trap_is_allowed_and_ignored():
    # State 2 loops forever but is unreachable from μ0: episodic validation passes, its value is
    # undefined (NaN), and it contributes nothing to J or the gradient.
    P = np.zeros((3, 2, 3))
    P[0, :, 1] = 1.0
    P[1, :, 1] = 1.0
    P[2, :, 2] = 1.0
    P[0, 1] = [0.5, 0.5, 0.0]
    mdp = FiniteMDP(P, [[1.0, 2.0], [0.0, 0.0], [3.0, 3.0]], [1.0, 0.0, 0.0], 1.0, (1,))
    validate_setting(mdp, "episodic")
    sol = exact_solution(mdp, np.zeros((3, 2)), "episodic")
    assert np.isnan(sol.V[2]) and sol.d[2] == 0 and np.isfinite(sol.gradient).all()
    V_star, Q_star = value_iteration(mdp)  # V*(0) = max(1, 2 + ½ V*(0)) ⇒ V*(0) = 4
    np.testing.assert_allclose(V_star[:2], [4.0, 0.0])
    assert np.isnan(V_star[2]) and np.isnan(Q_star[2]).all()
    np.testing.assert_allclose(sol.gradient, _finite_difference_gradient(mdp, np.zeros((3, 2)), "episodic"), atol=1e-6)


def test_evaluate_policy_matches_exact_solution():
    mdp, theta = _random_case("discounted", 5)
    sol = exact_solution(mdp, theta, "discounted")
    values = evaluate_policy(mdp, sol.pi, "discounted")
    np.testing.assert_allclose(values.V, sol.V)
    np.testing.assert_allclose(values.Q, sol.Q)


# ------------------------------------------------------------------------------------------------
# Optimal values


def _deterministic_policies(mdp):
    for choice in itertools.product(range(mdp.num_actions), repeat=mdp.num_states):
        yield np.eye(mdp.num_actions)[list(choice)]


def test_rvi_hand_computed_periodic_and_multichain_policy():
    # 0 ⇄ 1. In state 0: a=0 stays (reward 1), a=1 moves to 1 (reward 0). In state 1: a=0 stays
    # (reward 2), a=1 moves to 0 (reward 3). Staying at 1 earns 2 per step; cycling earns (0+3)/2
    # = 1.5; so ρ* = 2, and h(0) = h(1) − 2 + 0 ⇒ h = [−2, 0] + const. The cycling policy is
    # periodic, and "stay at 0" makes state 0 absorbing: plain RVI would oscillate.
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[0, 1, 1] = P[1, 0, 1] = P[1, 1, 0] = 1.0
    mdp = FiniteMDP(P, [[1.0, 0.0], [2.0, 3.0]], [1.0, 0.0], 1.0)
    rho_star, h = relative_value_iteration(mdp)
    assert rho_star == pytest.approx(2.0, abs=1e-8)
    np.testing.assert_allclose(h - h[1], [-2.0, 0.0], atol=1e-8)
    # A single periodic cycle with rewards 1 and 4: ρ* = 2.5.
    cycle = np.zeros((2, 1, 2))
    cycle[0, 0, 1] = cycle[1, 0, 0] = 1.0
    rho_cycle, _ = relative_value_iteration(FiniteMDP(cycle, [[1.0], [4.0]], [1.0, 0.0], 1.0))
    assert rho_cycle == pytest.approx(2.5, abs=1e-8)


@pytest.mark.parametrize("seed", [0, 1])
def test_rvi_equals_best_deterministic_policy(seed):
    # Dense rows: every deterministic policy is irreducible, so each has a well-defined ρ.
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(4), size=(4, 3))
    mdp = FiniteMDP(P, rng.normal(size=(4, 3)), np.full(4, 0.25), 1.0)
    best = max(evaluate_policy(mdp, pi, "average").rho for pi in _deterministic_policies(mdp))
    rho_star, h = relative_value_iteration(mdp)
    assert rho_star == pytest.approx(best, abs=1e-8)
    # the optimality equation h + ρ* = max_a [r + P h]
    np.testing.assert_allclose(h + rho_star, (mdp.rewards + P @ h).max(axis=1), atol=1e-8)


def test_rvi_on_average_example_beats_every_softmax_policy():
    mdp = example_mdp("average")
    rho_star, _ = relative_value_iteration(mdp)
    best = max(evaluate_policy(mdp, pi, "average").rho for pi in _deterministic_policies(mdp))
    assert rho_star == pytest.approx(best, abs=1e-8)
    assert rho_star > exact_solution(mdp, np.zeros((6, 3)), "average").rho + 0.5


@pytest.mark.parametrize("setting", ["episodic", "discounted"])
def test_value_iteration_equals_best_deterministic_policy(setting):
    mdp = example_mdp(setting)
    V_star, Q_star = value_iteration(mdp)
    values = [evaluate_policy(mdp, pi, setting).V for pi in _deterministic_policies(mdp)]
    np.testing.assert_allclose(V_star, np.max(values, axis=0), atol=1e-8)
    np.testing.assert_allclose(V_star, Q_star.max(axis=1), atol=1e-8)
    greedy = np.eye(3)[Q_star.argmax(axis=1)]
    assert len(set(Q_star.argmax(axis=1)[~mdp.terminal_mask].tolist())) > 1  # not one obvious action
    np.testing.assert_allclose(evaluate_policy(mdp, greedy, setting).V, V_star, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# Examples and random MDPs


def test_examples_are_as_documented():
    episodic, discounted, average = (example_mdp(s) for s in SETTINGS)
    for mdp in (episodic, discounted, average):
        assert (mdp.num_states, mdp.num_actions) == (6, 3)
    assert len(episodic.terminal) in (1, 2)
    length = exact_solution(episodic, np.zeros((6, 3)), "episodic").d.sum()  # γ = 1: mean length
    assert 5 <= length <= 15
    assert discounted.gamma == 0.9 and discounted.terminal == ()
    assert average.terminal == ()
    # deterministic: the same arrays every call
    np.testing.assert_array_equal(example_mdp("episodic").transitions, episodic.transitions)
    with pytest.raises(InputError, match="unknown setting"):
        example_mdp("finite-horizon")


@pytest.mark.parametrize("setting", SETTINGS)
def test_random_mdp_is_valid_and_reproducible(setting):
    for num_states in (2, 4, 11):
        a = random_mdp(num_states, 2, seed=4, setting=setting)
        b = random_mdp(num_states, 2, seed=4, setting=setting)
        validate_setting(a, setting)
        np.testing.assert_array_equal(a.transitions, b.transitions)
        np.testing.assert_array_equal(a.rewards, b.rewards)
    c = random_mdp(11, 2, seed=5, setting=setting)
    assert not np.array_equal(a.transitions, c.transitions)
    if setting == "discounted":
        with pytest.raises(InputError, match="gamma < 1"):
            random_mdp(3, 2, seed=0, setting=setting, gamma=1.0)


# ------------------------------------------------------------------------------------------------
# Validation


GOOD = {
    "transitions": [[[0.5, 0.5], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]],
    "rewards": [[1, 0], [0, 0]],
    "initial": [1.0, 0.0],
    "gamma": 0.9,
    "terminal": [1],
}


def _with(**changes):
    document = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        if value is None:
            document.pop(key)
        else:
            document[key] = value
    return document


def test_load_round_trip_with_theta(tmp_path):
    path = tmp_path / "mdp.json"
    mdp = example_mdp("episodic")
    theta = np.arange(18.0).reshape(6, 3) / 10
    path.write_text(json.dumps({**mdp.to_dict(), "theta": theta.tolist()}))
    loaded, loaded_theta = load_mdp_json(path)
    np.testing.assert_array_equal(loaded.transitions, mdp.transitions)
    np.testing.assert_array_equal(loaded_theta, theta)
    assert loaded.terminal == mdp.terminal and loaded.gamma == mdp.gamma
    path.write_text(json.dumps(GOOD))
    assert load_mdp_json(path)[1] is None


@pytest.mark.parametrize("document, match", [
    ([1, 2], "JSON object"),
    (_with(rewards=None), "missing key.*'rewards'"),
    (_with(colour="red"), "unknown key.*'colour'"),
    (_with(rewards=[[1, 0, 0], [0, 0, 0]]), r"'rewards' has shape \(2, 3\), expected \(S, A\) = \(2, 2\)"),
    (_with(initial=[1.0, 0.0, 0.0]), r"'initial' has shape \(3,\), expected"),
    (_with(transitions=[[0.5, 0.5], [0.0, 1.0]]), r"'transitions' must be a 3-D array"),
    (_with(transitions=[[[0.5, 0.5], [1.0, 0.0]], [[0.0, 1.0]]]), "'transitions' is ragged"),
    (_with(transitions=[[[0.5, 0.5], [1.0, 0.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]), "'transitions' is ragged"),
    (_with(transitions=[[[0.5, 0.5], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]]),
     r"shape \(S, A, S\)"),
    (_with(rewards=[[1, "x"], [0, 0]]), "'rewards' has a non-numeric entry 'x' at \\[0, 1\\]"),
    (_with(rewards=[[1, True], [0, 0]]), "'rewards' has a non-numeric entry True"),
    (_with(transitions=[[[0.5, 0.6], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]), r"row \(s=0, a=0\) sums to 1.1"),
    (_with(transitions=[[[1.5, -0.5], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]), r"negative probability -0.5 at \[0, 0, 1\]"),
    (_with(rewards=[[float("nan"), 0], [0, 0]]), "'rewards' contains a non-finite value"),
    (_with(transitions=[[[float("inf"), 0.5], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]), "non-finite"),
    (_with(initial=[0.5, 0.2]), "'initial' must be a probability distribution"),
    (_with(initial=[0.5, 0.5]), "terminal state 1"),
    (_with(gamma=0.0), r"'gamma' must lie in \(0, 1\]"),
    (_with(gamma=1.5), r"'gamma' must lie in \(0, 1\]"),
    (_with(gamma="0.9"), "'gamma' must be a number"),
    (_with(terminal=[2]), "terminal state 2 is out of range"),
    (_with(terminal=[1, 1]), "listed more than once"),
    (_with(terminal=[0.5]), "integer state indices"),
    (_with(terminal=1), "list of state indices"),
    (_with(theta=[[0.0, 0.0]]), r"'theta' has shape \(1, 2\), expected \(S, A\) = \(2, 2\)"),
    (_with(theta=[[0.0, "a"], [0.0, 0.0]]), "'theta' has a non-numeric entry"),
])
def test_bad_documents_raise_one_line_input_error(tmp_path, document, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match=match) as info:
        load_mdp_json(path)
    assert "\n" not in str(info.value)
    if isinstance(document, dict):
        with pytest.raises(InputError, match=match):
            FiniteMDP.from_dict(document)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_mdp_json(tmp_path / "missing.json")
    with pytest.raises(InputError, match="not a file"):
        load_mdp_json(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON.*line 1"):
        load_mdp_json(bad)


def test_terminal_rows_are_ignored():
    # A terminal state's own row may be anything non-negative (here all zeros) and its reward is 0.
    document = _with(transitions=[[[0.5, 0.5], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]], rewards=[[1, 0], [7, 7]])
    mdp = FiniteMDP.from_dict(document)
    np.testing.assert_array_equal(mdp.effective_transitions[1], [[0.0, 1.0], [0.0, 1.0]])
    np.testing.assert_array_equal(mdp.effective_rewards[1], [0.0, 0.0])


def _never_terminates():
    # From state 0, action 1 stays in state 0 forever; action 0 reaches the terminal state 1.
    return FiniteMDP.from_dict(GOOD)


def test_episodic_validation():
    with pytest.raises(InputError, match="from state 0 .*never reaches a terminal state"):
        validate_setting(_never_terminates(), "episodic")
    with pytest.raises(InputError, match="from state 0"):
        exact_solution(_never_terminates(), np.zeros((2, 2)), "episodic")
    # The same MDP is fine as a discounted task (γ = 0.9).
    validate_setting(_never_terminates(), "discounted")
    no_terminal = FiniteMDP(np.full((2, 1, 2), 0.5), [[1.0], [0.0]], [1.0, 0.0], 1.0)
    with pytest.raises(InputError, match="at least one terminal state"):
        validate_setting(no_terminal, "episodic")
    # A trap entered by chance: every action of state 0 may end the episode, but action 1 leads to
    # 1 w.p. ½, and 1 ⇄ 2 under action 1 forever. State 0 is safe; 1 (the first trapped) is named.
    P = np.zeros((4, 2, 4))
    P[:, 0, 3] = 1.0
    P[0, 1, 1] = P[0, 1, 3] = 0.5
    P[1, 1, 2] = P[2, 1, 1] = P[3, 1, 3] = 1.0
    with pytest.raises(InputError, match="from state 1 "):
        validate_setting(FiniteMDP(P, np.zeros((4, 2)), [1.0, 0, 0, 0], 1.0, (3,)), "episodic")


def test_discounted_validation():
    with pytest.raises(InputError, match="discounted criterion needs gamma < 1"):
        validate_setting(FiniteMDP(np.full((2, 1, 2), 0.5), [[1.0], [0.0]], [1.0, 0.0], 1.0), "discounted")


def test_average_validation():
    with pytest.raises(InputError, match="average-reward criterion needs a continuing task"):
        validate_setting(example_mdp("episodic"), "average")
    two_classes = FiniteMDP([[[1.0, 0.0]], [[0.0, 1.0]]], [[1.0], [0.0]], [0.5, 0.5], 1.0)
    with pytest.raises(InputError, match=r"unichain.*2 closed classes: \{0\}, \{1\}"):
        validate_setting(two_classes, "average")
    with pytest.raises(InputError, match="unichain"):
        relative_value_iteration(two_classes)
    # A transient state feeding one closed class is unichain.
    transient = FiniteMDP([[[0.5, 0.5, 0.0]], [[0.0, 0.5, 0.5]], [[0.0, 0.5, 0.5]]], [[1.0], [0.0], [2.0]],
                          [1.0, 0.0, 0.0], 1.0)
    validate_setting(transient, "average")
    sol = exact_solution(transient, np.zeros((3, 1)), "average")
    np.testing.assert_allclose(sol.d, [0.0, 0.5, 0.5], atol=1e-12)
    assert sol.d[0] == 0.0  # exactly: d can seed a valid FiniteMDP's initial distribution
    dataclasses.replace(transient, initial=sol.d)
    assert sol.rho == pytest.approx(1.0)


def test_setting_and_theta_validation():
    mdp = example_mdp("discounted")
    with pytest.raises(InputError, match="unknown setting 'finite'"):
        validate_setting(mdp, "finite")
    with pytest.raises(InputError, match=r"'theta' has shape \(6,\), expected \(S, A\) = \(6, 3\)"):
        exact_solution(mdp, np.zeros(6), "discounted")
    with pytest.raises(InputError, match="'theta' contains a non-finite value"):
        objective(mdp, np.full((6, 3), np.nan), "discounted")
    with pytest.raises(InputError, match="policy row 0 sums to"):
        evaluate_policy(mdp, np.full((6, 3), 0.5), "discounted")


def test_mdp_is_frozen_and_read_only():
    mdp = example_mdp("discounted")
    with pytest.raises(Exception):
        mdp.gamma = 0.5
    with pytest.raises(ValueError):
        mdp.transitions[0, 0, 0] = 1.0


# ------------------------------------------------------------------------------------------------
# Environments


def test_vector_env_next_state_frequencies_match_transitions():
    mdp = example_mdp("average")
    num_envs, steps = 2000, 60
    env = FiniteMDPVectorEnv(mdp, num_envs)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(1)
    counts = np.zeros((6, 3, 6))
    for _ in range(steps):
        actions = rng.integers(3, size=num_envs)
        next_obs, rewards, terminated, truncated, _ = env.step(actions)
        np.testing.assert_array_equal(rewards, mdp.rewards[obs, actions])
        assert not terminated.any() and not truncated.any()
        np.add.at(counts, (obs, actions, next_obs), 1)
        obs = next_obs
    n = counts.sum(axis=-1, keepdims=True)  # [S, A, 1] visits of each (s, a)
    assert (n > 500).all()
    p = mdp.transitions
    stderr = np.sqrt(p * (1 - p) / n)
    z = np.abs(counts / n - p) / np.maximum(stderr, 1e-12)
    assert z.max() < 5, z.max()
    assert (counts[p == 0] == 0).all()  # impossible transitions never happen


def test_vector_env_initial_frequencies_and_spaces():
    mdp = example_mdp("discounted")
    env = FiniteMDPVectorEnv(mdp, 20000)
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.int64 and obs.shape == (20000,) and info == {}
    freq = np.bincount(obs, minlength=6) / obs.size
    stderr = np.sqrt(mdp.initial * (1 - mdp.initial) / obs.size)
    assert (np.abs(freq - mdp.initial) <= 5 * stderr + 1e-12).all()
    assert env.single_observation_space.n == 6 and env.single_action_space.n == 3
    assert env.observation_space.shape == (20000,) and env.action_space.shape == (20000,)
    assert env.observation_space.contains(obs)
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP


def _rollout(env, seed, steps, policy_seed=0):
    rng = np.random.default_rng(policy_seed)
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for _ in range(steps):
        out = env.step(rng.integers(env.single_action_space.n, size=env.num_envs))
        trace.extend(out[:4])
    return trace


@pytest.mark.parametrize("mode", list(AutoresetMode))
def test_vector_env_is_reproducible(mode):
    mdp = example_mdp("episodic")
    first = _rollout(FiniteMDPVectorEnv(mdp, 8, autoreset_mode=mode, max_episode_steps=6), 11, 30)
    second = _rollout(FiniteMDPVectorEnv(mdp, 8, autoreset_mode=mode, max_episode_steps=6), 11, 30)
    other = _rollout(FiniteMDPVectorEnv(mdp, 8, autoreset_mode=mode, max_episode_steps=6), 12, 30)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_next_step_autoreset():
    mdp = example_mdp("episodic")
    env = FiniteMDPVectorEnv(mdp, 64, max_episode_steps=5)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    ended_before = np.zeros(64, dtype=bool)
    seen_terminated = seen_truncated = False
    for _ in range(40):
        actions = rng.integers(3, size=64)
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        assert info == {}
        # reset step: reward 0, flags False, a fresh start state
        assert (rewards[ended_before] == 0).all()
        assert not terminated[ended_before].any() and not truncated[ended_before].any()
        assert (mdp.initial[next_obs[ended_before]] > 0).all()
        go = ~ended_before
        np.testing.assert_array_equal(rewards[go], mdp.rewards[obs[go], actions[go]])
        np.testing.assert_array_equal(terminated[go], mdp.terminal_mask[next_obs[go]])
        seen_terminated |= terminated.any()
        seen_truncated |= (truncated & ~terminated).any()
        ended_before = terminated | truncated
        obs = next_obs
    assert seen_terminated and seen_truncated


def test_same_step_autoreset():
    mdp = example_mdp("episodic")
    env = FiniteMDPVectorEnv(mdp, 64, autoreset_mode=AutoresetMode.SAME_STEP, max_episode_steps=5)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    steps_in_episode = np.zeros(64, dtype=int)
    seen_done = False
    for _ in range(40):
        actions = rng.integers(3, size=64)
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        steps_in_episode += 1
        done = terminated | truncated
        np.testing.assert_array_equal(info["_final_obs"], done)
        np.testing.assert_array_equal(info["_final_info"], done)
        np.testing.assert_array_equal(rewards, mdp.rewards[obs, actions])  # every step is a real transition
        np.testing.assert_array_equal(terminated, mdp.terminal_mask[info["final_obs"]])
        np.testing.assert_array_equal(truncated, steps_in_episode >= 5)
        np.testing.assert_array_equal(next_obs[~done], info["final_obs"][~done])
        assert (mdp.initial[next_obs[done]] > 0).all()  # reset within the step
        assert not mdp.terminal_mask[next_obs].any()
        seen_done |= done.any()
        steps_in_episode[done] = 0
        obs = next_obs
    assert seen_done


def test_disabled_autoreset_and_reset_mask():
    mdp = example_mdp("episodic")
    env = FiniteMDPVectorEnv(mdp, 32, autoreset_mode=AutoresetMode.DISABLED)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(60):
        was_terminal = mdp.terminal_mask[obs]
        next_obs, rewards, terminated, truncated, _ = env.step(rng.integers(3, size=32))
        # a terminated copy stays in its absorbing terminal state, reward 0, terminated stays True
        np.testing.assert_array_equal(next_obs[was_terminal], obs[was_terminal])
        assert (rewards[was_terminal] == 0).all() and terminated[was_terminal].all()
        np.testing.assert_array_equal(terminated, mdp.terminal_mask[next_obs])
        assert not truncated.any()
        obs = next_obs
    assert terminated.all()  # every episode has ended by now (mean length ≈ 5.6)
    mask = np.zeros(32, dtype=bool)
    mask[:10] = True
    reset_obs, _ = env.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(reset_obs[~mask], obs[~mask])
    assert (mdp.initial[reset_obs[mask]] > 0).all()
    next_obs, rewards, terminated, _, _ = env.step(np.zeros(32, dtype=np.int64))
    assert (rewards[~mask] == 0).all() and terminated[~mask].all()
    np.testing.assert_array_equal(rewards[mask], mdp.rewards[reset_obs[mask], 0])
    with pytest.raises(InputError, match="reset_mask"):
        env.reset(options={"reset_mask": np.ones(5, dtype=bool)})


def test_disabled_truncation_freezes_copy():
    mdp = example_mdp("average")
    env = FiniteMDPVectorEnv(mdp, 4, autoreset_mode="Disabled", max_episode_steps=3)
    env.reset(seed=0)
    for t in range(1, 6):
        obs, rewards, terminated, truncated, _ = env.step(np.ones(4, dtype=np.int64))
        assert truncated.all() == (t >= 3) and not terminated.any()
        if t == 3:
            frozen = obs
        if t > 3:
            np.testing.assert_array_equal(obs, frozen)
            assert (rewards == 0).all()


def test_vector_env_rejects_bad_actions():
    env = FiniteMDPVectorEnv(example_mdp("average"), 3)
    env.reset(seed=0)
    with pytest.raises(InputError, match=r"actions must have shape \(3,\)"):
        env.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(InputError, match="action 3 is out of range"):
        env.step(np.array([0, 3, 1]))
    with pytest.raises(InputError, match="integers"):
        env.step(np.zeros(3))
    with pytest.raises(InputError, match="autoreset_mode"):
        FiniteMDPVectorEnv(example_mdp("average"), 3, autoreset_mode="sometimes")


def test_single_env():
    mdp = example_mdp("episodic")
    env = FiniteMDPEnv(mdp, max_episode_steps=50)
    assert env.observation_space.n == 6 and env.action_space.n == 3
    rng = np.random.default_rng(0)
    lengths = []
    for episode in range(300):
        s, info = env.reset(seed=episode)
        assert info == {} and mdp.initial[s] > 0
        for t in range(1, 100):
            a = int(rng.integers(3))
            s_next, reward, terminated, truncated, info = env.step(a)
            assert reward == mdp.rewards[s, a] and mdp.transitions[s, a, s_next] > 0 and info == {}
            assert terminated == mdp.terminal_mask[s_next] and truncated == (t >= 50)
            s = s_next
            if terminated or truncated:
                break
        lengths.append(t)
    # Mean episode length under the uniform policy: Σ d (γ = 1), within a few standard errors.
    expected = exact_solution(mdp, np.zeros((6, 3)), "episodic").d.sum()
    assert abs(np.mean(lengths) - expected) < 4 * np.std(lengths) / np.sqrt(len(lengths))
    # same seed → same episode
    first = env.reset(seed=5)[0], [env.step(1)[:2] for _ in range(3)]
    second = env.reset(seed=5)[0], [env.step(1)[:2] for _ in range(3)]
    assert first == second
    with pytest.raises(InputError, match="out of range"):
        env.step(3)


def test_sampling_a_row_by_binary_search_counts_the_entries_below_u():
    from policygrad.tabular.env import _cumulative_rows, _sample_rows

    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 4, 7, 8, 33):
        weights = rng.random((5, 3, size)) * (rng.random((5, 3, size)) < 0.5)  # zeros repeat a value
        weights[..., 0] += 1e-3
        table = _cumulative_rows(weights)  # [5, 3, S]
        s, a = rng.integers(5, size=1000), rng.integers(3, size=1000)
        u = np.concatenate([rng.random(997), [0.0, 1.0 - 1e-16], table[0, 0, :1]])  # and a value on a row
        naive = np.minimum((table[s, a] <= u[:, None]).sum(axis=1), size - 1)  # count the entries
        np.testing.assert_array_equal(_sample_rows(table, u, rows=(s, a)), naive)
        np.testing.assert_array_equal(_sample_rows(table[s, a], u), naive)
