"""``policygrad verify --sequence``: exact expectations against ∇J_β, sampled directions through the
library's loss against those expectations, the JSON output, and bad input."""

import json
import re
from pathlib import Path

import pytest

from policygrad.cli import main
from policygrad.sequence.exact import MAX_COMPLETIONS, parse_spec
from policygrad.verify import verify_sequence

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "policygrad" / "sequence" / "examples" / "tabular.json"

ALL = [(a, k, g) for a in ("reinforce", "rloo", "dr_grpo", "grpo", "remax")
       for k in ("none", "k1_reward", "k1_loss", "k2_loss", "k3_loss", "k3_ratio_loss")
       for g in ("sum", "sequence_mean", "token_mean")]


def _spec(estimators, *, eos=2, beta=0.2, group=3):
    """V = 3, L = 3, two prompts; a few hand-picked logits, rewards in {0, 0.5, 1}."""
    return {
        "vocab_size": 3, "max_length": 3, "eos": eos, "prompts": 2, "group_size": group, "beta": beta,
        "logits": [{"": [0.5, -0.3, 0.2], "0": [1.0, 0.0, -1.0], "1 1": [0.0, 0.7, 0.1]}, {"": [-0.4, 0.6, 0.0]}],
        "reference_logits": [{"": [0.0, 0.0, 0.4]}, {"1": [0.3, -0.2, 0.5], "0 0": [0.2, 0.0, 0.0]}],
        "rewards": [{"0 1 0": 1.0, "2": 0.5, "1 2": 1.0, "0 0 1": 0.5},
                    {"1 0 1": 1.0, "0 2": 0.5, "1 1 1": 0.5, "2": 1.0}],
        "estimators": [{"name": f"{a}/{k}/{g}", "advantage": a, "kl": k, "aggregation": g} for a, k, g in estimators],
    }


def test_every_estimator_sampled_agrees_with_its_exact_expectation():
    # 90 estimators on one draw of 20,000 completions; each max|z| is over ~70 parameters
    report = verify_sequence(parse_spec(_spec(ALL)), samples=20000, seed=3)
    unbiased = {name for name, r in report.estimators.items() if r.unbiased}
    assert unbiased == {f"{a}/k1_reward/sum" for a in ("reinforce", "rloo", "remax")}
    for name, r in report.estimators.items():
        assert r.exact, name  # three reward levels: GRPO is enumerable too
        assert r.sampled_max_abs_z < 4, f"{name}: max|z| {r.sampled_max_abs_z:.2f}"
        if r.unbiased:
            assert r.relative_error < 1e-9 and r.scale == pytest.approx(1.0, abs=1e-9), name
    assert report.estimators["dr_grpo/k1_reward/sum"].scale == pytest.approx(2 / 3, abs=1e-9)  # (G − 1)/G


def test_unbiased_with_beta_zero_and_kl_none():
    report = verify_sequence(parse_spec(_spec([("rloo", "none", "sum"), ("grpo", "none", "sum")], beta=0.0)),
                             samples=3000, seed=0)
    assert report.estimators["rloo/none/sum"].unbiased
    assert report.estimators["rloo/none/sum"].relative_error < 1e-9
    assert not report.estimators["grpo/none/sum"].unbiased


@pytest.mark.slow
def test_builtin_example_agrees_with_20000_samples():
    report = verify_sequence(parse_spec(json.loads(EXAMPLE.read_text())), samples=20000, seed=0)
    for name, r in report.estimators.items():
        if r.exact:
            assert r.sampled_max_abs_z < 4, f"{name}: {r.sampled_max_abs_z:.2f}"
        if r.unbiased:
            assert r.relative_error < 1e-9, name
    assert not report.estimators["grpo/k1_reward/sum"].exact  # R' takes ~1000 values: not enumerable


def test_json_output(tmp_path, capsys):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_spec([("rloo", "k1_reward", "sum"), ("grpo", "k3_ratio_loss", "token_mean")])))
    assert main(["verify", "--sequence", str(path), "--samples", "600", "--seed", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert set(out) == {"objective", "exact_gradient_norm", "estimators"}
    assert set(out["estimators"]) == {"rloo/k1_reward/sum", "grpo/k3_ratio_loss/token_mean"}
    for r in out["estimators"].values():
        assert set(r) == {"exact", "cosine", "relative_error", "scale", "unbiased", "sampled"}
        assert set(r["sampled"]) == {"samples", "max_abs_z", "cosine"}
        assert r["sampled"]["samples"] == 600
    assert out["estimators"]["rloo/k1_reward/sum"]["relative_error"] < 1e-9


def test_table_output(tmp_path, capsys):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_spec([("reinforce", "k1_reward", "sum")])))
    assert main(["verify", "--sequence", str(path), "--samples", "60"]) == 0
    out = capsys.readouterr().out
    assert "reinforce/k1_reward/sum" in out and "J_beta" in out


def _bad(spec, **change):
    obj = _spec([("rloo", "k1_reward", "sum")])
    obj.update(change)
    return obj


BAD = [
    (_bad(None, vocab_size=0), "'vocab_size' must be an integer >= 1"),
    (_bad(None, prompts=3), "'logits' must be a list of 3 objects"),
    (_bad(None, eos=3), "'eos' must be null or a token id in \\[0, 3\\)"),
    (_bad(None, logits=[{"": [0.0, 1.0]}, {}]), "must be a list of vocab_size=3 numbers"),
    (_bad(None, logits=[{"0 5": [0.0, 1.0, 2.0]}, {}]), "names token 5 outside the vocabulary"),
    (_bad(None, logits=[{"0 2": [0.0, 1.0, 2.0]}, {}]), "cannot occur"),
    (_bad(None, logits=[{"0  1": [0.0, 1.0, 2.0]}, {}]), "not token ids separated by single spaces"),
    (_bad(None, rewards=[{"0 1 7": 1.0}, {}]), "names token 7 outside the vocabulary"),
    (_bad(None, rewards=[{"0 1": 1.0}, {}]), "is not a completion"),
    (_bad(None, rewards=[{"2 1": 1.0}, {}]), "is not a completion"),
    (_bad(None, beta=-1), "'beta' must be >= 0"),
    (_bad(None, estimators=[{"name": "a", "advantage": "ppo"}]), "unknown advantage 'ppo'"),
    (_bad(None, estimators=[{"name": "a", "advantage": "rloo", "kl": "k4_loss"}]), "unknown kl 'k4_loss'"),
    (_bad(None, estimators=[{"name": "a", "advantage": "rloo", "aggregation": "max"}]), "unknown aggregation"),
    (_bad(None, estimators=[{"name": "a", "advantage": "rloo", "clip": 0.2}]), "unknown option 'clip'"),
    (_bad(None, estimators=[{"name": "a", "advantage": "rloo"}] * 2), "appears twice"),
    (_bad(None, group_size=1), "rloo needs group_size >= 2"),
    (_bad(None, vocab_size=8, max_length=7, eos=None,
          logits=[{}, {}], reference_logits=[{}, {}], rewards=[{}, {}]),
     "2,097,152 completions per prompt x 2 prompts = 4,194,304, too many to enumerate"),
    (json.dumps(_bad(None, beta=0.5)).replace("0.5", "NaN"), "'beta' must be finite, got nan"),
    (_bad(None, beta=float("inf")), "'beta' must be finite"),
    (_bad(None, rewards=[{"2": float("nan")}, {}]), "must be finite"),
    ("{not json", "not valid JSON"),
    ([1, 2], "must be a JSON object"),
]


@pytest.mark.parametrize("obj, match", BAD)
def test_bad_spec_exits_2_with_one_line(tmp_path, capsys, obj, match):
    path = tmp_path / "spec.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    code = main(["verify", "--sequence", str(path), "--samples", "100"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("policygrad: error:"), err
    assert re.search(match, err), err


def test_bad_files_and_arguments(tmp_path, capsys):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(65 * 2**20)  # sparse: nothing is written
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_spec([("rloo", "k1_reward", "sum")])))
    cases = [
        (["--sequence", str(tmp_path / "missing.json")], "not found"),
        (["--sequence", str(big)], "too large \\(65 MiB; at most 64 MiB"),
        (["--sequence", str(good), "--samples", "5"], "fewer than 2 rounds"),
        (["--sequence", str(good), "--samples", "0"], "--samples must be an integer"),
        (["--sequence", str(good), "--seed", "-1"], "--seed must be an integer"),
        (["--sequence", str(good), "--setting", "episodic"], "drop --mdp and --setting"),
    ]
    for args, match in cases:
        code = main(["verify", *args])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and re.search(match, err), (args, err)
    assert MAX_COMPLETIONS == 2_000_000


def test_more_bad_specs(tmp_path, capsys):
    cases = [
        (_bad(None, max_length=65, vocab_size=1, eos=None, logits=[{}, {}], reference_logits=[{}, {}],
              rewards=[{}, {}]), "'max_length' must be an integer in \\[1, 64\\]"),
        (_bad(None, logits=[{"01": [0.0, 1.0, 2.0]}, {}]), "not token ids separated by single spaces"),
        (_bad(None, estimators=[{"name": "a", "advantage": "reinforce_pp"}]), "unknown advantage 'reinforce_pp'"),
        (_bad(None, surprise=1), "unknown key 'surprise'"),
    ]
    for obj, match in cases:
        path = tmp_path / "spec.json"
        path.write_text(json.dumps(obj))
        code = main(["verify", "--sequence", str(path), "--samples", "100"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(match, err), err


def test_zero_gradient_gives_null_not_nan(tmp_path, capsys):
    obj = _spec([("rloo", "none", "sum")], beta=0.0)
    obj["rewards"] = [{}, {}]  # R = 0 everywhere, β = 0: ∇J_β = 0, cosine undefined
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(obj))
    assert main(["verify", "--sequence", str(path), "--samples", "600", "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert out["exact_gradient_norm"] == 0.0
    assert out["estimators"]["rloo/none/sum"]["cosine"] is None
