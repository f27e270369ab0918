"""Off-policy estimators on data from a lagging behaviour policy, against exact expectations."""

import json
import math

import numpy as np
import pytest

from policygrad.cli import main
from policygrad.tabular import evaluate_policy, exact_solution, random_mdp, softmax_policy
from policygrad.verify_lagged import (
    lagged_example_mdp,
    lagged_logits,
    truncated_target,
    verify_lagged,
    vtrace_expected_gradient,
)

Z = 4.0  # max |z| over all S·A components of a sampled mean against its predicted expectation


def _policies(mdp, theta0, lag, lag_step=0.1):
    mu = softmax_policy(theta0)
    target = exact_solution(mdp, lagged_logits(mdp, theta0, lag, lag_step), "discounted")
    return mu, target


@pytest.mark.parametrize("rho_bar", [1.0, 2.0, math.inf])
def test_on_policy_vtrace_expectation_is_the_exact_gradient(rho_bar):
    mdp = random_mdp(5, 3, seed=1, setting="discounted", gamma=0.8)
    theta = np.random.default_rng(1).normal(size=(5, 3))
    mu, target = _policies(mdp, theta, 0)
    assert np.allclose(vtrace_expected_gradient(mdp, mu, target.pi, rho_bar), target.gradient, atol=1e-12)


def test_lagged_logits_take_exact_gradient_steps():
    mdp = random_mdp(4, 2, seed=2, setting="discounted", gamma=0.9)
    theta0 = np.zeros((4, 2))
    step1 = theta0 + 0.3 * exact_solution(mdp, theta0, "discounted").gradient
    step2 = step1 + 0.3 * exact_solution(mdp, step1, "discounted").gradient
    assert np.allclose(lagged_logits(mdp, theta0, 2, 0.3), step2)
    assert np.array_equal(lagged_logits(mdp, theta0, 0, 0.3), theta0)


@pytest.mark.parametrize("rho_bar", [0.5, 1.0, math.inf])
def test_vtrace_expectation_in_its_reduced_form(rho_bar):
    # Σ_a π_ρ̄ (Q^{π_ρ̄} − V^{π_ρ̄}) = 0 makes the baseline term vanish:
    # g_vt(s, b) = d^μ(s) min(ρ̄μ, π)(b|s) (Q^{π_ρ̄}(s, b) − V^{π_ρ̄}(s)).
    mdp = random_mdp(6, 3, seed=3, setting="discounted", gamma=0.9)
    mu, target = _policies(mdp, np.zeros((6, 3)), 4)
    pi = target.pi
    w = pi if math.isinf(rho_bar) else np.minimum(rho_bar * mu, pi)
    fixed = evaluate_policy(mdp, truncated_target(mu, pi, rho_bar), "discounted")
    d_mu = evaluate_policy(mdp, mu, "discounted").d
    reduced = d_mu[:, None] * w * (fixed.Q - fixed.V[:, None])
    assert np.allclose(vtrace_expected_gradient(mdp, mu, pi, rho_bar), reduced, atol=1e-10)
    assert not np.allclose(reduced, target.gradient, rtol=0.02)  # four steps behind: biased


@pytest.mark.parametrize("lag, rho_bar, c_bar, mdp_seed", [(4, 1.0, 1.0, 0), (1, math.inf, 0.5, 5)])
def test_sampled_estimators_match_their_predictions(lag, rho_bar, c_bar, mdp_seed):
    mdp = random_mdp(6, 3, seed=mdp_seed, setting="discounted", gamma=0.9)
    theta = np.random.default_rng(mdp_seed).normal(scale=0.5, size=(6, 3))
    report = verify_lagged(mdp, theta, lag=lag, rho_bar=rho_bar, c_bar=c_bar, episodes=4000, seed=mdp_seed)
    pd, vt = report.estimators["per_decision_is"], report.estimators["vtrace"]
    assert pd.against_predicted.max_abs_z < Z, pd.against_predicted.max_abs_z
    assert pd.predicted_relative_error == 0.0
    assert vt.against_predicted.max_abs_z < Z, vt.against_predicted.max_abs_z
    assert vt.predicted_relative_error > 0.01
    assert np.allclose(pd.predicted, report.exact_gradient)


def test_vtrace_bias_is_visible_against_the_exact_gradient():
    # The default MDP of verify --lag, 4 steps behind, ρ̄ = 1: V-trace's mean agrees with its own
    # prediction and is far from ∇J(π) (benchmarks/results/vtrace_bias.md: 33.4% predicted bias).
    report = verify_lagged(lagged_example_mdp(), lag=4, episodes=4000, seed=0)
    vt = report.estimators["vtrace"]
    assert vt.against_predicted.max_abs_z < Z
    assert vt.against_exact.max_abs_z > 10
    assert vt.predicted_relative_error == pytest.approx(0.334, abs=0.001)


def test_json_output(capsys):
    assert main(["verify", "--lag", "2", "--rho-bar", "inf", "--c-bar", "0.5", "--episodes", "300", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["setting"] == "discounted"
    assert (out["lag"], out["lag_step"], out["rho_bar"], out["c_bar"]) == (2, 0.1, "inf", 0.5)
    assert set(out["estimators"]) == {"per_decision_is", "vtrace"}
    shape = np.asarray(out["exact_gradient"]).shape
    assert shape == (6, 3)
    for r in out["estimators"].values():
        assert set(r) >= {"mean", "stderr", "unbiased", "max_abs_z", "cosine", "relative_error", "total_variance",
                          "predicted_relative_error", "predicted", "max_abs_z_exact"}
        assert np.asarray(r["mean"]).shape == shape
    assert out["estimators"]["per_decision_is"]["predicted_relative_error"] == 0.0
    assert out["estimators"]["per_decision_is"]["unbiased"] is True
    assert out["estimators"]["vtrace"]["unbiased"] is False


def test_table_output(capsys):
    assert main(["verify", "--lag", "1", "--episodes", "200"]) == 0
    out = capsys.readouterr().out
    assert "per_decision_is" in out and "vtrace" in out and "pred.err" in out


@pytest.mark.parametrize("argv, match", [
    (["--lag", "-1"], "--lag"),
    (["--lag", "2", "--lag-step", "nan"], "--lag-step"),
    (["--lag", "2", "--lag-step", "inf"], "--lag-step"),
    (["--lag", "2", "--lag-step", "0"], "--lag-step"),
    (["--lag", "2", "--lag-step", "-0.1"], "--lag-step"),
    (["--lag", "2", "--rho-bar", "0"], "--rho-bar"),
    (["--lag", "2", "--rho-bar", "-1"], "--rho-bar"),
    (["--lag", "2", "--rho-bar", "nan"], "--rho-bar"),
    (["--lag", "2", "--c-bar", "0"], "--c-bar"),
    (["--lag", "2", "--c-bar", "nan"], "--c-bar"),
    (["--lag", "2", "--setting", "episodic"], "discounted"),
    (["--lag", "2", "--setting", "average"], "discounted"),
    (["--rho-bar", "0.5"], "--lag"),
    (["--lag", "100001"], "--lag"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, match):
    code = main(["verify", *argv, "--episodes", "50"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("policygrad: error:"), err
    assert match in err, err


@pytest.mark.slow
@pytest.mark.parametrize("lag", [0, 1, 4, 16])
@pytest.mark.parametrize("rho_bar", [1.0, math.inf])
@pytest.mark.parametrize("c_bar", [0.5, 1.0])
def test_grid_sampled_estimators_match_their_predictions(lag, rho_bar, c_bar):
    report = verify_lagged(lagged_example_mdp(), lag=lag, rho_bar=rho_bar, c_bar=c_bar, episodes=8000, seed=11)
    for name, r in report.estimators.items():
        assert r.against_predicted.max_abs_z < Z, (name, r.against_predicted.max_abs_z)


def test_lag_and_sequence_are_refused_together(capsys: pytest.CaptureFixture[str]) -> None:
    from policygrad.cli import main

    assert main(["verify", "--sequence", "spec.json", "--lag", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("policygrad: error:") and "--sequence" in err[0]
