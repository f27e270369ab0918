"""Bad input to the command line: exit code 2, exactly one line ``policygrad: error: ...`` on stderr,
never longer than the cap whatever the input's size, no traceback, and no run directory left behind.

Nothing here trains: a run that would start stops at ``--print-config`` or at a check that comes
before any directory exists; the MDPs are small or are refused before they are read in full.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import policygrad.verify
from policygrad.cli import MAX_ERROR_CHARS, main
from policygrad.errors import InputError, check_seed, one_line, shown

PREFIX = "policygrad: error: "
HUGE_SEED = "1180591620717411303424"  # 2**70
DEEP = 100_000  # levels of nesting, far beyond Python's recursion limit


def _mdp_document(**changes: object) -> dict:
    """A valid 1-state discounted MDP with ``changes`` applied."""
    return {"transitions": [[[1.0]]], "rewards": [[0.0]], "initial": [1.0], "gamma": 0.9, **changes}


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bad input files, written once; ``{in}/NAME`` in an argv below names one of them."""
    tmp = tmp_path_factory.mktemp("inputs")
    document = json.dumps(_mdp_document())
    files = {
        "deep.toml": "learning_rate = " + "[" * DEEP + "]" * DEEP + "\n",
        "big.toml": "# " + "x" * 1_000_000 + "\n",
        "deep.json": "[" * DEEP + "]" * DEEP,
        "deep_gamma.json": document.replace("0.9", "[" * DEEP + "]" * DEEP),
        "deep_500.json": document.replace("[[[1.0]]]", "[" * 500 + "1.0" + "]" * 500),
        "huge_gamma.json": document.replace("0.9", "1" + "0" * 400),
        "huge_reward.json": document.replace("[[0.0]]", "[[1" + "0" * 400 + "]]"),
        "long_int.json": document.replace("0.9", "1" + "0" * 5000),
        "long_keys.json": json.dumps({**_mdp_document(), **{"k" * 1000 + str(i): 1 for i in range(1000)}}),
        "gamma_999.json": json.dumps(_mdp_document(gamma=0.999)),
        "gamma_9999.json": json.dumps(_mdp_document(gamma=0.9999)),
        # S = 1001 states, one action: S·A·S = 1,002,001 probabilities, refused before it is walked.
        "too_many_states.json": json.dumps(_mdp_document(transitions=[[[0] * 1001]] * 1001)),
    }
    for name, text in files.items():
        _write(tmp / name, text)
    with open(tmp / "too_big.json", "wb") as f:  # sparse: 70 MB of nothing, refused by its size
        f.truncate(70_000_000)
    run = tmp / "a_run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,episode_return_mean\n100,1.0\n200,2.0\n")
    (tmp / "a_directory").mkdir()
    return tmp


def _listing(*roots: Path) -> list[str]:
    return sorted(str(p) for root in roots for p in root.rglob("*"))


TRAIN = ["train", "--out", "{tmp}/run", "--print-config"]
TRAIN_RUNS = ["train", "--out", "{tmp}/run", "--steps", "256", "--quiet"]  # would train if it got that far

CASES = [
    # seeds: integers in [0, 2**63) everywhere
    (["train", "--seed", HUGE_SEED, "--print-config"], "seed must be an integer in [0, 2**63)"),
    ([*TRAIN, "--seed", "-1"], "seed must be an integer in [0, 2**63)"),
    ([*TRAIN, "--set", "seed=" + HUGE_SEED], "seed must be an integer in [0, 2**63)"),
    ([*TRAIN, "--set", "seed=" + "9" * 5000], "seed must be an int of at most 64 bits"),
    (["eval", "{tmp}/no_run", "--seed", HUGE_SEED], "--seed must be an integer in [0, 2**63)"),
    (["eval", "{tmp}/no_run", "--seed", "-1"], "--seed must be an integer in [0, 2**63)"),
    (["verify", "--seed", HUGE_SEED], "--seed must be an integer in [0, 2**63)"),
    (["verify", "--seed", "-1"], "--seed must be an integer in [0, 2**63)"),
    # --set values and --config files that parsers choke on
    ([*TRAIN, "--set", "learning_rate=" + "-" * 20_000], "a value of 20,000 characters exceeds the limit of 10,000"),
    ([*TRAIN, "--set", "learning_rate=" + "[" * 5000], "'learning_rate': the value cannot be parsed (nested too deeply)"),
    ([*TRAIN, "--set", "learning_rate=" + "x" * 9000], "learning_rate must be a number, got 'xxx"),
    ([*TRAIN, "--config", "{in}/deep.toml"], "nested too deeply"),
    ([*TRAIN, "--config", "{in}/big.toml"], "is larger than the limit of 1,000,000 bytes"),
    ([*TRAIN, "--env-kwargs", "[" * DEEP], "--env-kwargs cannot be read (nested too deeply)"),
    # every float finite, ranges where they make sense, sizes bounded
    ([*TRAIN, "--set", "learning_rate=inf"], "learning_rate must be a finite number, got inf"),
    ([*TRAIN, "--set", "learning_rate=1e999"], "learning_rate must be a finite number, got inf"),
    ([*TRAIN, "--set", "learning_rate=1" + "0" * 400], "learning_rate must be a finite number"),
    ([*TRAIN, "--set", "ent_coef=inf"], "ent_coef must be a finite number"),
    ([*TRAIN, "--set", "log_std_init=nan"], "log_std_init must be a finite number, got nan"),
    ([*TRAIN, "--set", "target_kl=inf"], "target_kl must be a finite number"),
    ([*TRAIN, "--algo", "trpo", "--set", "damping=-inf"], "damping must be a finite number"),
    ([*TRAIN, "--target-return", "nan"], "target_return must be a finite number"),
    ([*TRAIN, "--set", "log_std_init=3"], "log_std_init must lie in [-20, 2], got 3.0"),
    ([*TRAIN, "--set", "value_center_coef=2"], "value_center_coef must lie in [0, 1]"),
    ([*TRAIN, "--set", "num_envs=5000"], "num_envs must be at most 4,096"),
    ([*TRAIN, "--set", "num_steps=1000000"], "8,000,000 transitions per rollout exceeds the limit of 1,048,576"),
    ([*TRAIN, "--set", "hidden_sizes=[100000]"], "a layer of width 100,000 exceeds the limit of 65,536"),
    ([*TRAIN, "--set", "hidden_sizes=[8192,8192,8192]"], "134,217,728 weights between hidden layers"),
    ([*TRAIN, "--set", f"hidden_sizes={[1] * 65}"], "hidden_sizes has 65 layers; at most 64"),
    ([*TRAIN, "--set", "torch_threads=100000"], "torch_threads must be at most 1024"),
    ([*TRAIN, "--steps", "9" * 30], "total_steps must be an int of at most 64 bits"),
    # devices that hold no data, refused before the run directory exists
    ([*TRAIN_RUNS, "--device", "meta"], "device 'meta' cannot hold the run's tensors"),
    ([*TRAIN_RUNS, "--device", "d" * 5000], "unknown device 'ddd"),
    # echoed values are cut
    ([*TRAIN_RUNS, "--env", "X" * 100_000], "unknown environment 'XXX"),
    ([*TRAIN_RUNS, "--env", "no_module_" + "X" * 100_000 + ":Env"], "cannot import module 'no_module_"),
    ([*TRAIN, "--set", "K" * 100_000 + "=1"], "unknown ppo hyperparameter 'KKK"),
    ([*TRAIN, "--set", "activation=" + "a" * 9000], "unknown activation 'aaa"),
    # argparse's own errors: one line, the value cut
    (["train", "--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
    (["train", "--steps", "{50 MB of digits}"], "argument --steps: invalid int value: '999"),
    (["train", "--algo", "x" * 100_000], "argument --algo: invalid choice: 'xxx"),
    (["verify", "--episodes", "many"], "argument --episodes: invalid int value: 'many'"),
    ([], "the following arguments are required: command"),
    # MDP files
    (["verify", "--mdp", "{in}/deep.json"], "is nested too deeply to parse"),
    (["verify", "--mdp", "{in}/deep_gamma.json"], "is nested too deeply to parse"),
    (["verify", "--mdp", "{in}/deep_500.json"], "'transitions' must be a 3-D array of shape (S, A, S), got more"),
    (["verify", "--mdp", "{in}/huge_gamma.json"], "'gamma' must lie in (0, 1], got <an integer of about 401 digits>"),
    (["verify", "--mdp", "{in}/huge_reward.json"], "'rewards' has an integer too large for a float at [0, 0]"),
    (["verify", "--mdp", "{in}/long_int.json"], "cannot be read: Exceeds the limit (4300 digits)"),
    (["verify", "--mdp", "{in}/long_keys.json"], "and 995 more in MDP document"),
    (["verify", "--mdp", "{in}/too_big.json"], "has 70,000,000 bytes, above the limit of 64,000,000"),
    (["verify", "--mdp", "{in}/too_many_states.json"], "S·A·S = 1,002,001 transition probabilities, above the limit"),
    (["verify", "--mdp", "{in}/a_directory"], "MDP path is not a file"),
    # verify's sample size
    (["verify", "--episodes", "1000000000"], "before the first step; pass --episodes 1,043,478 or fewer"),
    (["verify", "--setting", "discounted", "--episodes", "100000"], "sampled entries, above verify's limit of 24,000,000"),
    (["verify", "--mdp", "{in}/gamma_999.json"], "--horizon 399 or shorter (18,412 steps is the default for γ = 0.999"),
    (["verify", "--mdp", "{in}/gamma_9999.json"], "episodes of 184,198 steps exceed verify's limit of 100,000 steps"),
    (["verify", "--mdp", "{in}/gamma_999.json", "--episodes", "4", "--horizon", "200000"], "limit of 100,000 steps"),
    # plots
    (["plot", "{in}/a_run", "--out", "{in}/a_directory"], "a_directory: Is a directory"),
    (["plot", "{in}/a_run", "--out", "{in}/a_run/metrics.csv/x.png"], "cannot write image"),
]


@pytest.mark.parametrize("argv, fragment", CASES, ids=[f"{i}-{' '.join(a)[:60]}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_is_one_short_line_and_exit_2(
    argv: list[str], fragment: str, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # a default run directory would appear here
    argv = [arg.replace("{tmp}", str(tmp_path)).replace("{in}", str(inputs)) for arg in argv]
    argv = ["9" * 50_000_000 if arg == "{50 MB of digits}" else arg for arg in argv]
    before = _listing(tmp_path, inputs)
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse
        code = exit.code
    out, err = capsys.readouterr()
    assert code == 2, err[-2000:]
    assert err.endswith("\n") and err.count("\n") == 1, err[:3000]
    assert err.startswith(PREFIX) and "Traceback" not in err
    assert len(err) <= len(PREFIX) + MAX_ERROR_CHARS + 1, len(err)
    assert fragment in err, err
    assert _listing(tmp_path, inputs) == before  # no run directory, no image, no file


def test_episodic_sampling_stops_at_the_limit_with_one_line(tmp_path, monkeypatch, capsys) -> None:
    # An episode ends w.p. 1e-4 per step: most are still running when the sample budget is spent.
    document = _mdp_document(transitions=[[[1 - 1e-4, 1e-4]], [[0.0, 1.0]]], rewards=[[1.0], [0.0]],
                             initial=[1.0, 0.0], gamma=1.0, terminal=[1])
    path = _write(tmp_path / "slow.json", json.dumps(document))
    monkeypatch.setattr(policygrad.verify, "MAX_SAMPLE_ENTRIES", 100 * (30 * 3 + 2))  # 30 steps of 100 episodes
    assert main(["verify", "--mdp", path, "--episodes", "100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(PREFIX), err
    assert "of 100 episodes are still running after 30 steps" in err and "--horizon 30 or shorter" in err
    assert main(["verify", "--mdp", path, "--episodes", "100", "--horizon", "30", "--json"]) == 0  # cut, bootstrapped
    assert json.loads(capsys.readouterr().out)["horizon"] == 30


def test_shown_cuts_any_value_to_about_100_characters() -> None:
    nested: list = []
    for _ in range(DEEP):
        nested = [nested]
    long = "x" * 50_000_000
    for value in (long, 10**5000, -(10**400), nested, {"k" * 10**6: ["v" * 10**6] * 1000}, b"b" * 10**6, [long] * 3):
        assert len(shown(value)) <= 130, shown(value)[:300]
    assert shown(long).endswith("... (50,000,000 characters)")
    assert shown(10**400) == "<an integer of about 401 digits>"
    assert shown("abc") == "'abc'" and shown(2**63) == str(2**63) and shown((64, 64)) == "(64, 64)"
    assert one_line("a\nb\r\nc") == "a b  c" and len(one_line("x" * 10**6)) == 2000


def test_check_seed_takes_exactly_0_to_2_63() -> None:
    assert check_seed(0) == 0 and check_seed(2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63, 1.0, True, "1", None):
        with pytest.raises(InputError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
            check_seed(bad)


def test_parse_value_reads_numbers_in_linear_time_and_refuses_what_is_not_one() -> None:
    from policygrad.algorithms import make_config

    config = make_config("ppo", {"learning_rate": "3e-4", "num_envs": "1_6", "seed": "7", "hidden_sizes": "32,32",
                                 "target_kl": "none", "num_steps": "2.56e2"})
    assert (config.learning_rate, config.num_envs, config.seed, config.hidden_sizes) == (3e-4, 16, 7, (32, 32))
    assert config.target_kl is None and config.num_steps == 256
    for text in ("-" * 9000 + "1", "(" * 5000, "0x10", "1+2j", "[1]"):
        with pytest.raises(InputError, match="learning_rate must be a number"):
            make_config("ppo", {"learning_rate": text})
    with pytest.raises(InputError, match="exceeds the limit of 10,000"):
        make_config("ppo", {"learning_rate": "1" * 10_001})
