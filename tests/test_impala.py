"""IMPALA: on-policy it is A2C with λ = 1 (one update, both backends, both auto-reset conventions, a
real collector's rollouts); off-policy its Ψ and targets are returns.vtrace of the current policy's
log-ratio to the stored behaviour log-probabilities; its config's checks; a run from the command
line with checkpoints, eval and resume; the Python API."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import policygrad as pg
from policygrad.algorithms import ALGORITHMS, CONFIGS, make_algorithm, make_config
from policygrad.algorithms.base import Algorithm
from policygrad.algorithms.impala import next_state_values
from policygrad.cli import main
from policygrad.envs import make_vec_env
from policygrad.errors import InputError
from policygrad.policies import make_actor_critic
from policygrad.returns import vtrace
from policygrad.rollout import RolloutCollector, make_policy
from policygrad.types import Rollout

OBS_DIM = 3
SPACES = {
    "discrete": gym.spaces.Discrete(3),
    "continuous": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
}
T, N = 9, 3
# (t, env) of each episode end: terminations and truncations, back to back, and on the last row.
TERMINATED = [(2, 0), (8, 1), (5, 2)]
TRUNCATED = [(6, 0), (1, 1), (4, 1), (6, 2), (8, 2)]


def _policy(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    return make_actor_critic(obs_space, SPACES[kind], hidden_sizes=(8, 8)).to(torch.float64)


@torch.no_grad()
def _rollout(policy: torch.nn.Module, mode: str, seed: int = 0) -> Rollout:
    """An on-policy rollout of ``policy`` on random states with the episode ends above, written as the
    collector writes it under same-step (``valid`` None; a truncation bootstraps from V of a final
    observation that is not in the rollout) or next-step auto-reset (a dummy row, ``valid = False``,
    after each end before the last row; its observation is the final one)."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, N, OBS_DIM, generator=g, dtype=torch.float64)
    dist, values = policy(obs.reshape(-1, OBS_DIM))
    actions = dist.sample(g)
    log_probs = dist.log_prob(actions).reshape(T, N)
    actions = actions.reshape(T, N, *actions.shape[1:])
    values = values.reshape(T, N)
    rewards = torch.randn(T, N, generator=g, dtype=torch.float64)
    terminated = torch.zeros(T, N, dtype=torch.bool)
    truncated = torch.zeros(T, N, dtype=torch.bool)
    for t, i in TERMINATED:
        terminated[t, i] = True
    for t, i in TRUNCATED:
        truncated[t, i] = True
    final_values = policy.value(torch.randn(T, N, OBS_DIM, generator=g, dtype=torch.float64))  # V(s_{t+1}) off-rollout
    next_values = torch.cat([values[1:], final_values[-1:]])  # V(s_T) at the end: a state not in the rollout
    valid = None
    if mode == "same_step":
        next_values = torch.where(truncated, final_values, next_values)
    else:
        valid = torch.ones(T, N, dtype=torch.bool)
        valid[1:] = ~(terminated | truncated)[:-1]
        terminated, truncated = terminated & valid, truncated & valid
        rewards = torch.where(valid, rewards, 0.0)
    next_values = torch.where(terminated, 0.0, next_values)
    return Rollout(observations=obs, actions=actions, log_probs=log_probs, rewards=rewards, terminated=terminated,
                   truncated=truncated, values=values, next_values=next_values,
                   episode_step=torch.zeros(T, N, dtype=torch.long), action_masks=None, valid=valid)


def _pair(kind: str, backend: str, **overrides) -> tuple[Algorithm, Algorithm]:
    """IMPALA (ρ̄ = c̄ = λ = 1) and A2C (λ = 1) with the same weights, optimiser and coefficients."""
    shared = {"num_envs": N, "num_steps": T, "hidden_sizes": (8, 8), "backend": backend, "optimizer": "rmsprop",
              "learning_rate": 3e-3, "ent_coef": 0.01, "vf_coef": 0.4, "max_grad_norm": 0.5, "gamma": 0.9,
              **overrides}
    policy = _policy(kind)
    impala = make_algorithm("impala", policy, make_config("impala", {**shared, "rho_bar": 1.0, "c_bar": 1.0,
                                                                     "trace_lambda": 1.0}), 10)
    a2c_policy = _policy(kind)
    a2c = make_algorithm("a2c", a2c_policy, make_config("a2c", {**shared, "gae_lambda": 1.0}), 10)
    for a, b in zip(policy.parameters(), a2c_policy.parameters()):
        assert torch.equal(a, b)
    return impala, a2c


# --- on-policy: IMPALA with ρ̄ = c̄ = λ = 1 is A2C with λ = 1 -----------------------------------


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
@pytest.mark.parametrize("kind", list(SPACES))
@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("normalize_advantages", [False, True])
def test_on_policy_update_is_a2c_with_lambda_one(backend, kind, mode, normalize_advantages):
    impala, a2c = _pair(kind, backend, normalize_advantages=normalize_advantages)
    assert impala.backend.name == a2c.backend.name == backend
    rollout = _rollout(impala.policy, mode)
    with torch.no_grad():
        psi, targets = impala.weigh(rollout)
        psi_a2c, targets_a2c = a2c.weigh(rollout)
    valid = torch.ones(T, N, dtype=torch.bool) if rollout.valid is None else rollout.valid
    torch.testing.assert_close(psi[valid], psi_a2c[valid], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(targets[valid], targets_a2c[valid], rtol=1e-12, atol=1e-12)

    metrics, metrics_a2c = impala.update(rollout), a2c.update(rollout)
    for a, b in zip(impala.policy.parameters(), a2c.policy.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert not torch.equal(next(impala.policy.parameters()), next(_policy(kind).parameters()))  # it stepped
    for key in ("policy_loss", "value_loss", "entropy", "grad_norm", "explained_variance"):
        assert metrics[key] == pytest.approx(metrics_a2c[key], rel=1e-10, abs=1e-12), key
    assert metrics["approx_kl"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["rho_mean"] == pytest.approx(1.0, abs=1e-6)  # float32 metrics


@pytest.mark.parametrize("vectorization", ["vector", "sync"])  # next-step and same-step auto-reset
def test_on_policy_weights_of_a_collected_rollout_are_a2cs(vectorization):
    envs = make_vec_env("CartPole-v1", 4, 0, time_limit=16, vectorization=vectorization)
    torch.manual_seed(0)
    policy, encoder = make_policy(envs.single_observation_space, envs.single_action_space, hidden_sizes=(16,))
    a2c_policy = copy.deepcopy(policy)
    config = {"num_envs": 4, "num_steps": 48, "hidden_sizes": (16,), "backend": "numpy"}
    impala = make_algorithm("impala", policy, make_config("impala", config), 10)
    a2c = make_algorithm("a2c", a2c_policy, make_config("a2c", {**config, "gae_lambda": 1.0}), 10)
    collector = RolloutCollector(envs, policy, 48, encoder=encoder, actor=impala.backend)
    collector.reset(seed=1)
    rollout = collector.collect()
    assert rollout.truncated.any() and rollout.terminated.any()
    assert (rollout.valid is None) == (vectorization == "sync")
    valid = torch.ones(48, 4, dtype=torch.bool) if rollout.valid is None else rollout.valid
    with torch.no_grad():
        psi, targets = impala.weigh(rollout)
        psi_a2c, targets_a2c = a2c.weigh(rollout)
    # The collector's values come from the acting network (one matrix product per step); the update's
    # from the whole batch at once: the same numbers up to float32 rounding.
    torch.testing.assert_close(psi[valid], psi_a2c[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(targets[valid], targets_a2c[valid], rtol=1e-5, atol=1e-5)
    envs.close()


def test_next_state_values_on_policy_are_the_rollouts():
    policy = _policy("discrete")
    for mode in ("same_step", "next_step"):
        rollout = _rollout(policy, mode)
        torch.testing.assert_close(next_state_values(rollout.values, rollout), rollout.next_values, rtol=0, atol=0)
    # Where the next row holds s_{t+1}, the values given are used; elsewhere rollout.next_values.
    rollout = _rollout(policy, "same_step")
    shifted = next_state_values(rollout.values + 100.0, rollout)
    expected = torch.zeros(T, N, dtype=torch.float64)
    for t in range(T):
        for i in range(N):
            if rollout.terminated[t, i]:
                continue
            if t == T - 1 or rollout.truncated[t, i]:
                expected[t, i] = rollout.next_values[t, i]
            else:
                expected[t, i] = rollout.values[t + 1, i] + 100.0
    torch.testing.assert_close(shifted, expected, rtol=0, atol=0)
    with pytest.raises(InputError, match="values has shape"):
        next_state_values(rollout.values[1:], rollout)


# --- off-policy: returns.vtrace of the current policy against the stored behaviour ------------------


def _by_hand(policy: torch.nn.Module, rollout: Rollout, config) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, targets) of returns.vtrace with log π and V from a forward of ``policy`` written
    here, not the algorithm's."""
    with torch.no_grad():
        dist, values = policy(rollout.observations.reshape(T * N, OBS_DIM))
        log_ratio = dist.log_prob(rollout.actions.reshape(T * N, *rollout.actions.shape[2:])).reshape(T, N) \
            - rollout.log_probs
        values = values.reshape(T, N)
    valid = torch.ones(T, N, dtype=torch.bool) if rollout.valid is None else rollout.valid
    next_values = rollout.next_values.clone()
    for t in range(T - 1):
        for i in range(N):
            # The next row holds s_{t+1} inside an episode, and after any end when it is a dummy row.
            if not rollout.truncated[t, i] or not valid[t + 1, i]:
                next_values[t, i] = values[t + 1, i]
    vs, advantages = vtrace(rollout.rewards, values, next_values, rollout.terminated, rollout.truncated, log_ratio,
                            config.gamma, config.trace_lambda, math.inf if config.rho_bar is None else config.rho_bar,
                            math.inf if config.c_bar is None else config.c_bar)
    return advantages, vs


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("bars", [(1.0, 1.0), (1.5, 0.7), ("inf", "inf")])
def test_off_policy_weights_are_vtrace_of_the_current_policy(backend, mode, bars):
    config = make_config("impala", {"num_envs": N, "num_steps": T, "hidden_sizes": (8, 8), "backend": backend,
                                    "rho_bar": bars[0], "c_bar": bars[1], "trace_lambda": 0.8, "gamma": 0.9,
                                    "learning_rate": 1e-2})
    impala = make_algorithm("impala", _policy("continuous"), config, 10)
    on_policy = _rollout(impala.policy, mode)
    # Stored behaviour log-probabilities that are not the current policy's.
    g = torch.Generator().manual_seed(5)
    rollout = dataclasses.replace(on_policy, log_probs=on_policy.log_probs + 0.5 * torch.randn(T, N, generator=g,
                                                                                             dtype=torch.float64))
    with torch.no_grad():
        psi, targets = impala.weigh(rollout)
        psi_on, _ = impala.weigh(on_policy)
    want_psi, want_targets = _by_hand(_copy_of(impala.policy), rollout, config)
    torch.testing.assert_close(psi, want_psi, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(targets, want_targets, rtol=1e-12, atol=1e-12)
    assert (psi - psi_on).abs().max() > 1e-3  # the stored log-probabilities matter

    # The same after the policy has moved on from the one that collected the rollout (a lagged worker's data).
    impala.update(on_policy)
    with torch.no_grad():
        psi, targets = impala.weigh(on_policy)
    want_psi, want_targets = _by_hand(_copy_of(impala.policy), on_policy, config)
    torch.testing.assert_close(psi, want_psi, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(targets, want_targets, rtol=1e-12, atol=1e-12)
    metrics = impala.update(on_policy)
    assert metrics["approx_kl"] > 1e-6 and 0.0 < metrics["rho_mean"] != 1.0


def _copy_of(policy: torch.nn.Module) -> torch.nn.Module:
    """An independent module with the same weights (the NumPy backend's parameters are views of its buffer)."""
    fresh = _policy("continuous", seed=1)
    fresh.load_state_dict({k: v.clone() for k, v in policy.state_dict().items()})
    return fresh


def test_rho_bar_truncates_the_weights_where_the_ratio_exceeds_it():
    def build(rho_bar: float) -> Algorithm:
        config = make_config("impala", {"num_envs": N, "num_steps": T, "rho_bar": rho_bar, "c_bar": 1.0})
        return make_algorithm("impala", _policy("discrete"), config, 10)

    rollout = _rollout(_policy("discrete"), "same_step")
    lagged = dataclasses.replace(rollout, log_probs=rollout.log_probs - 1.0)  # every π/μ = e ≈ 2.72
    with torch.no_grad():
        psi_wide, targets_wide = build(100.0).weigh(lagged)
        psi_narrow, targets_narrow = build(2.0).weigh(lagged)
        _, targets_on = build(2.0).weigh(rollout)
    # With every c_t = 1, v_t − V(s_t) = Σ_k γ^k ρ δ_{t+k}: ρ = min(ρ̄, e) times its on-policy value.
    values = rollout.values
    torch.testing.assert_close(targets_narrow - values, 2.0 * (targets_on - values), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(targets_wide - values, math.e * (targets_on - values), rtol=1e-12, atol=1e-12)
    assert (psi_wide - psi_narrow).abs().max() > 1e-3
    wide, narrow = build(100.0).update(lagged), build(2.0).update(lagged)
    assert wide["rho_mean"] == pytest.approx(math.e) and narrow["rho_mean"] == pytest.approx(2.0)
    assert wide["approx_kl"] == pytest.approx(math.e - 1 - 1)  # k3: (ρ − 1) − log ρ at ρ = e


# --- the config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"rho_bar": 0.0}, "rho_bar must be > 0 (inf or none: no truncation), got 0.0"),
        ({"rho_bar": -1}, "rho_bar must be > 0"),
        ({"c_bar": -0.5}, "c_bar must be >= 0 (inf or none: no truncation), got -0.5"),
        ({"c_bar": "-inf"}, "c_bar must be a finite number, got -inf"),
        ({"rho_bar": "nan"}, "rho_bar must be a finite number"),
        ({"rho_bar": "wide"}, "rho_bar must be a number or None, got 'wide'"),
        ({"trace_lambda": 1.5}, "trace_lambda must lie in [0, 1], got 1.5"),
        ({"trace_lambda": -0.1}, "trace_lambda must lie in [0, 1]"),
        ({"gae_lambda": 0.9}, "unknown impala hyperparameter 'gae_lambda'"),
        ({"criterion": "average"}, "impala supports only criterion='discounted'"),
        ({"optimizer": "sgd"}, "optimizer must be one of 'adam', 'rmsprop'"),
    ],
)
def test_config_validation_raises_one_line_input_errors(overrides, message):
    with pytest.raises(InputError) as info:
        make_config("impala", overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_config_defaults_and_no_truncation():
    config = make_config("impala", {})
    assert (config.rho_bar, config.c_bar, config.trace_lambda, config.optimizer) == (1.0, 1.0, 1.0, "rmsprop")
    for spelling in ("inf", "none", math.inf, None):
        config = make_config("impala", {"rho_bar": spelling, "c_bar": spelling})
        assert config.rho_bar is None and config.c_bar is None
        json.dumps(config.to_dict(), allow_nan=False)  # what config.json holds
    assert make_config("impala", {"c_bar": 0}).c_bar == 0.0  # one-step targets


def test_only_the_off_policy_algorithms_correct_for_the_behaviour_policy():
    from policygrad.algorithms import _CLASSES

    assert Algorithm.off_policy_correction is False
    assert {algo for algo in ALGORITHMS if _CLASSES[algo].off_policy_correction} == {"ppo", "impala"}


# --- runs from the command line and from Python ---------------------------------------------------


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_cli_run_checkpoints_eval_and_resume(tmp_path: Path, capsys, backend: str) -> None:
    run = tmp_path / "run"
    args = ["train", "--algo", "impala", "--env", "CartPole-v1", "--steps", "320", "--out", str(run), "--quiet",
            "--set", "tensorboard=false", "--set", "num_envs=4", "--set", "num_steps=16", "--set", f"backend={backend}"]
    assert main(args) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["algo"] == "impala" and config["backend"]["name"] == backend
    assert config["config"]["rho_bar"] == 1.0 and config["config"]["num_steps"] == 16
    assert (run / "checkpoints" / "last" / "meta.json").is_file()
    assert [int(r["step"]) for r in _rows(run)] == [64, 128, 192, 256, 320]
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "3", "--json", "--deterministic"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 3
    copies = [tmp_path / "x", tmp_path / "y"]
    for target in copies:
        shutil.copytree(run, target)
        assert main(["train", "--resume", str(target), "--steps", "640", "--quiet"]) == 0
    x, y = (_rows(c) for c in copies)
    assert [int(r["step"]) for r in x] == [64 * i for i in range(1, 11)]
    drop = ("wall_time", "steps_per_second")
    assert [{k: v for k, v in r.items() if k not in drop} for r in x] == \
        [{k: v for k, v in r.items() if k not in drop} for r in y]  # the resumed update is determined by the checkpoint
    assert all(math.isfinite(float(r["policy_loss"])) and math.isfinite(float(r["approx_kl"])) for r in x)


def test_cli_refuses_bad_impala_settings_in_one_line(tmp_path: Path, capsys) -> None:
    code = main(["train", "--algo", "impala", "--out", str(tmp_path / "run"), "--set", "rho_bar=0", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["policygrad: error: rho_bar must be > 0 (inf or none: no truncation), got 0.0"]
    assert not (tmp_path / "run").exists()


def test_python_api_trains_saves_and_loads(tmp_path: Path) -> None:
    assert pg.IMPALA.algo == "impala" and pg.IMPALA.config_class is CONFIGS["impala"]
    model = pg.IMPALA("CartPole-v1", seed=0, num_envs=2, num_steps=16, tensorboard=False, rho_bar=math.inf)
    assert model.config.rho_bar is None
    model.learn(96, run_dir=tmp_path / "run", progress_bar=False)
    assert model.num_timesteps == 96
    loaded = pg.load(tmp_path / "run")
    assert type(loaded) is pg.IMPALA and loaded.config == model.config
    obs = np.zeros(4, dtype=np.float32)
    assert loaded.predict(obs)[0] == model.predict(obs)[0]
