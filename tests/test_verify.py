"""Every estimator against the exact gradient of finite MDPs, in all three settings."""

import json
import subprocess
import sys

import numpy as np
import pytest

from policygrad.cli import main
from policygrad.tabular import example_mdp, random_mdp
from policygrad.verify import verify

UNBIASED_Z = 4.0  # max |z| over all S·A components; see the module docstring for the test's size

UNBIASED = {"total_return", "reward_to_go", "baseline_exact_v", "baseline_fitted_v", "gae_exact_v"}
"""The estimators verify marks unbiased, in every setting."""


def _biased(setting, gamma):
    """The estimators verify reports as biased: the unbootstrapped window (average reward), the
    missing γ^t factor (γ < 1)."""
    if setting == "average":
        return {"reward_to_go_no_bootstrap"}
    return {"reward_to_go_no_discount_factor"} if gamma < 1 else set()


def _check_unbiased(report, gamma):
    checked = {name for name, r in report.estimators.items() if r.unbiased}
    # An empty or shrunken set would make the loop below pass without checking anything.
    assert checked == UNBIASED, f"{report.setting}: unbiased estimators {sorted(checked)}"
    assert set(report.estimators) == UNBIASED | _biased(report.setting, gamma), sorted(report.estimators)
    for name in sorted(checked):
        r = report.estimators[name]
        assert r.max_abs_z < UNBIASED_Z, f"{report.setting}/{name}: max|z| = {r.max_abs_z:.2f}"
        assert r.cosine > 0.9, f"{report.setting}/{name}: cosine {r.cosine:.3f}"


SETTINGS_SLOW_DISCOUNTED = ["episodic", pytest.param("discounted", marks=pytest.mark.slow), "average"]


@pytest.mark.parametrize("setting", SETTINGS_SLOW_DISCOUNTED)
def test_builtin_examples_unbiased_estimators_agree(setting):
    mdp = example_mdp(setting)
    report = verify(mdp, setting=setting, episodes=6000, seed=1)
    _check_unbiased(report, mdp.gamma)


@pytest.mark.parametrize("setting", ["episodic", "discounted", "average"])
@pytest.mark.parametrize("mdp_seed", [3, 7])
def test_random_mdps_unbiased_estimators_agree(setting, mdp_seed):
    mdp = random_mdp(5, 3, seed=mdp_seed, setting=setting, gamma=0.8)
    theta = np.random.default_rng(mdp_seed).normal(size=(5, 3))
    report = verify(mdp, theta, setting, episodes=4000, seed=mdp_seed)
    _check_unbiased(report, mdp.gamma)


@pytest.mark.parametrize("setting", SETTINGS_SLOW_DISCOUNTED)
def test_baseline_keeps_mean_and_lowers_variance(setting):
    report = verify(example_mdp(setting), setting=setting, episodes=6000, seed=2)
    est = report.estimators
    # Same samples, same mean in expectation: both within noise of the exact gradient (above);
    # the exact-V baseline strictly lowers the total variance of reward-to-go, which in turn is
    # below the total-return estimator's.
    assert est["baseline_exact_v"].total_variance < est["reward_to_go"].total_variance
    assert est["reward_to_go"].total_variance < est["total_return"].total_variance
    assert est["baseline_fitted_v"].total_variance < est["reward_to_go"].total_variance
    diff = np.abs(est["baseline_exact_v"].mean - est["reward_to_go"].mean)
    assert (diff < 4 * np.hypot(est["baseline_exact_v"].stderr, est["reward_to_go"].stderr) + 1e-12).all()


@pytest.mark.slow
def test_discounted_common_form_shows_its_bias():
    report = verify(example_mdp("discounted"), setting="discounted", episodes=20000, seed=3)
    biased = report.estimators["reward_to_go_no_discount_factor"]
    assert not biased.unbiased
    assert biased.max_abs_z > 8
    assert biased.relative_error > 5 * report.estimators["reward_to_go"].relative_error


def test_average_unbootstrapped_window_shows_its_bias():
    report = verify(example_mdp("average"), setting="average", episodes=20000, horizon=10, seed=4)
    assert report.estimators["reward_to_go_no_bootstrap"].max_abs_z > 8


def test_json_output_shape(tmp_path, capsys):
    mdp = example_mdp("episodic")
    path = tmp_path / "mdp.json"
    path.write_text(json.dumps({
        "transitions": mdp.transitions.tolist(), "rewards": mdp.rewards.tolist(),
        "initial": mdp.initial.tolist(), "gamma": mdp.gamma, "terminal": list(mdp.terminal),
        "theta": np.full((mdp.num_states, mdp.num_actions), 0.1).tolist(),
    }))
    assert main(["verify", "--mdp", str(path), "--episodes", "500", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["setting"] == "episodic"
    assert np.asarray(out["exact_gradient"]).shape == (mdp.num_states, mdp.num_actions)
    assert set(out["estimators"]) == UNBIASED | _biased("episodic", mdp.gamma)
    for r in out["estimators"].values():
        assert set(r) >= {"mean", "stderr", "unbiased", "max_abs_z", "cosine", "relative_error", "total_variance"}
        assert np.asarray(r["mean"]).shape == (mdp.num_states, mdp.num_actions)


def _write(tmp_path, obj, name="bad.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


GOOD = {"transitions": [[[0.5, 0.5], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]], "rewards": [[1, 0], [0, 0]],
        "initial": [1.0, 0.0], "gamma": 0.9, "terminal": [1]}


@pytest.mark.parametrize("case, match", [
    ("missing", "no such file|not found|does not exist"),
    ("invalid_json", "JSON"),
    ("bad_shape", "shape"),
    ("rows", "sum"),
    ("negative", "negative"),
    ("never_leaves", "terminat|never"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case, match):
    mdp = json.loads(json.dumps(GOOD))
    if case == "missing":
        path = str(tmp_path / "nope.json")
    elif case == "invalid_json":
        path = _write(tmp_path, "{not json")
    else:
        if case == "bad_shape":
            mdp["rewards"] = [[1, 0, 0], [0, 0, 0]]
        elif case == "rows":
            mdp["transitions"][0][0] = [0.5, 0.6]
        elif case == "negative":
            mdp["transitions"][0][0] = [1.5, -0.5]
        elif case == "never_leaves":
            mdp["transitions"][0][1] = [1.0, 0.0]  # action 1 stays in state 0 forever
        path = _write(tmp_path, mdp)
    code = main(["verify", "--mdp", path, "--episodes", "50"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("policygrad: error:")
    import re
    assert re.search(match, err, re.IGNORECASE), err


def test_not_unichain_for_average(tmp_path, capsys):
    mdp = {"transitions": [[[1.0, 0.0]], [[0.0, 1.0]]], "rewards": [[1], [0]], "initial": [0.5, 0.5],
           "gamma": 1.0, "terminal": []}
    code = main(["verify", "--mdp", _write(tmp_path, mdp), "--setting", "average", "--episodes", "50"])
    err = capsys.readouterr().err
    assert code == 2 and "unichain" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_verify_without_arguments_prints_table_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "policygrad.cli", "verify", "--episodes", "400"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for setting in ("episodic", "discounted", "average"):
        assert f"setting: {setting}" in proc.stdout
    assert "total_return" in proc.stdout and "gae_exact_v" in proc.stdout
