"""The average-reward criterion: differential Ψ, the running ρ̂, the centred critic, continuing
runs (time_limit = 0), reward per step in eval, and the errors of invalid combinations."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from policygrad.algorithms import get_preset, make_algorithm, make_config
from policygrad.algorithms.average import AverageReward, check_continuing, differential_targets
from policygrad.cli import main
from policygrad.envs import make_vec_env
from policygrad.errors import InputError
from policygrad.returns import differential_gae
from policygrad.rollout import RolloutCollector, make_policy
from policygrad.tabular import FiniteMDPVectorEnv, evaluate_policy, policy_table, random_mdp
from policygrad.tabular.tasks import access_control_mdp, optimal_average_reward
from policygrad.runconfig import TrainConfig, resolve_run
from policygrad.training import build_session, train

QUICK = ["--quiet", "--set", "tensorboard=false"]


def _rollout(rewards, values, next_values, terminated=None, truncated=None, valid=None) -> SimpleNamespace:
    rewards = torch.tensor(rewards, dtype=torch.float32)
    zeros = torch.zeros_like(rewards, dtype=torch.bool)
    return SimpleNamespace(
        rewards=rewards,
        values=torch.tensor(values, dtype=torch.float32),
        next_values=torch.tensor(next_values, dtype=torch.float32),
        terminated=zeros if terminated is None else torch.tensor(terminated),
        truncated=zeros if truncated is None else torch.tensor(truncated),
        valid=None if valid is None else torch.tensor(valid),
    )


# --- the pure pieces --------------------------------------------------------------------------


def test_differential_targets_by_hand() -> None:
    # T = 3, N = 1, ρ = 1, λ = 0.5, c = 0.5.
    # δ = r − ρ + v' − v:  δ0 = 2−1+0.5−1 = 0.5,  δ1 = 0−1+0−0.5 = −1.5,  δ2 = 1−1+2−0 = 2
    # A2 = 2,  A1 = −1.5 + 0.5·2 = −0.5,  A0 = 0.5 + 0.5·(−0.5) = 0.25
    # mean v = (1 + 0.5 + 0)/3 = 0.5, so R = A + v − 0.5·0.5 = [1.0, −0.25, 1.75]
    rollout = _rollout([[2.0], [0.0], [1.0]], [[1.0], [0.5], [0.0]], [[0.5], [0.0], [2.0]])
    advantages, targets = differential_targets(rollout, rho=1.0, lam=0.5, center_coef=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[0.25], [-0.5], [2.0]]))
    torch.testing.assert_close(targets, torch.tensor([[1.0], [-0.25], [1.75]]))


def test_a_constant_in_v_changes_no_advantage_and_centring_removes_it() -> None:
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(6, 3, generator=gen)
    values = torch.randn(7, 3, generator=gen)
    base = _rollout(rewards.tolist(), values[:-1].tolist(), values[1:].tolist())
    shifted = _rollout(rewards.tolist(), (values[:-1] + 5.0).tolist(), (values[1:] + 5.0).tolist())
    a0, r0 = differential_targets(base, 0.3, 0.9, 1.0)
    a1, r1 = differential_targets(shifted, 0.3, 0.9, 1.0)
    torch.testing.assert_close(a0, a1)
    torch.testing.assert_close(r0, r1)  # c = 1: the whole batch mean of v is taken out
    torch.testing.assert_close(a0, differential_gae(base.rewards, base.values, base.next_values,
                                                    base.terminated, base.truncated, 0.3, 0.9))


def test_rho_starts_at_the_first_batch_mean_and_moves_by_eta_over_valid_steps() -> None:
    state = AverageReward(rho_lr=0.25, lam=0.95, center_coef=0.0)
    assert state.rho is None
    state.update_rho(_rollout([[1.0, 3.0]], [[0.0, 0.0]], [[0.0, 0.0]]))
    assert state.rho == pytest.approx(2.0)
    # the invalid (dummy) step's reward is ignored: batch mean 6
    state.update_rho(_rollout([[6.0, 100.0]], [[0.0, 0.0]], [[0.0, 0.0]], valid=[[True, False]]))
    assert state.rho == pytest.approx(2.0 + 0.25 * (6.0 - 2.0))
    restored = AverageReward(0.25, 0.95, 0.0)
    restored.load_state(json.loads(json.dumps(state.state())))
    assert restored.rho == state.rho
    with pytest.raises(InputError, match="bad rho"):
        restored.load_state({"rho": "x"})


def test_a_termination_is_an_input_error() -> None:
    rollout = _rollout([[0.0, 0.0], [0.0, 0.0]], [[0.0] * 2] * 2, [[0.0] * 2] * 2,
                       terminated=[[False, False], [False, True]])
    with pytest.raises(InputError, match=r"criterion='average' needs a continuing task.*environment 1"):
        check_continuing(rollout)


# --- configuration ------------------------------------------------------------------------------


def test_config_fields_and_invalid_combinations() -> None:
    assert make_config("ppo").criterion == "discounted"
    assert make_config("trpo", {"criterion": "average"}).criterion == "average"
    with pytest.raises(InputError, match="criterion must be one of"):
        make_config("ppo", {"criterion": "mean"})
    with pytest.raises(InputError, match="reinforce supports only criterion='discounted'"):
        make_config("reinforce", {"criterion": "average"})
    with pytest.raises(InputError, match="normalize_reward"):
        make_config("a2c", {"criterion": "average", "normalize_reward": True})
    with pytest.raises(InputError, match="rho_lr must lie in"):
        make_config("ppo", {"criterion": "average", "rho_lr": 0.0})
    with pytest.raises(InputError, match="value_center_coef must lie in \\[0, 1\\]"):
        make_config("ppo", {"value_center_coef": -1.0})


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--algo", "reinforce", "--set", "criterion=average"], "reinforce supports only criterion='discounted'"),
        (["--set", "criterion=average", "--set", "gamma=0.9"], "gamma has no meaning under criterion='average'"),
        (["--set", "criterion=average", "--set", "normalize_reward=true"], "normalize_reward"),
        (["--set", "criterion=sometimes"], "criterion must be one of"),
        (["--set", "time_limit=-1"], "time_limit must be > 0, 0 (no limit) or None"),
        (["--set", "time_limit=0", "--set", "vectorization=vector"], "has its own time limit"),
    ],
)
def test_invalid_combinations_exit_2_with_one_line(
    argv: list[str], pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *QUICK, *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("policygrad: error: ") and pattern in lines[0], lines
    assert not out.exists()


def test_a_terminating_env_stops_the_run_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # CartPole terminates within its first rollout: detected there, before the first update.
    code = main(["train", "--env", "CartPole-v1", "--set", "criterion=average", "--steps", "4096",
                 "--out", str(tmp_path / "run"), *QUICK])
    assert code == 2  # bad input: nothing of the run exists yet
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "criterion='average' needs a continuing task" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_presets_select_the_criterion() -> None:
    assert get_preset("ppo", "policygrad/AccessControl-v0")["criterion"] == "average"
    pendulum = get_preset("ppo", "Pendulum-v1", criterion="average")
    assert pendulum["criterion"] == "average" and pendulum["time_limit"] == 0 and "gamma" not in pendulum
    assert "criterion" not in get_preset("ppo", "Pendulum-v1")
    spec = resolve_run("ppo", "Pendulum-v1", overrides={"criterion": "average"})
    assert spec.config.criterion == "average" and spec.train.time_limit == 0


# --- continuing runs ----------------------------------------------------------------------------


def test_time_limit_zero_removes_the_registered_limit() -> None:
    assert TrainConfig(time_limit=0).time_limit == 0
    envs = make_vec_env("Pendulum-v1", 2, 0, time_limit=0)  # registered with a limit of 200
    try:
        ended = 0
        for _ in range(250):
            _, _, terminated, truncated, _ = envs.step(envs.action_space.sample())
            ended += int(terminated.sum() + truncated.sum())
        assert ended == 0
    finally:
        envs.close()
    limited = make_vec_env("Pendulum-v1", 1, 0, time_limit=5)
    try:
        flags = [bool(limited.step(limited.action_space.sample())[3][0]) for _ in range(5)]
        assert flags == [False] * 4 + [True]
    finally:
        limited.close()


def test_checkpointed_rho_and_eval_reward_per_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--env", "policygrad/RecyclingRobot-v0", "--set", "criterion=average",
                 "--set", "time_limit=0", "--set", "num_envs=4", "--set", "num_steps=64",
                 "--set", "minibatch_size=64", "--set", "eval_episodes=1", "--set", "eval_max_episode_steps=100",
                 "--steps", "1024", "--out", str(run), *QUICK]) == 0
    from policygrad.checkpoint import latest_checkpoint, load_checkpoint

    _, meta = load_checkpoint(latest_checkpoint(run))
    assert isinstance(meta["algorithm"]["average"]["rho"], float)
    assert main(["eval", str(run), "--episodes", "2", "--steps", "400", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["steps"] == 400 and 0.0 < payload["reward_per_step"] <= 3.0
    assert {"mean_return", "std_return", "episodes"} <= set(payload)


# --- learning -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_critic_learns_the_differential_values_up_to_a_constant() -> None:
    # A fixed policy (the actor frozen at its initialisation) on a random continuing MDP with
    # one-hot observations: PPO under criterion="average" trains only the critic, which must
    # match the exact differential values h (d·h = 0) after removing its d-weighted mean.
    torch.manual_seed(0)
    mdp = random_mdp(5, 3, seed=3, setting="average")
    envs = FiniteMDPVectorEnv(mdp, 16)
    envs.reset(seed=0)
    policy, encoder = make_policy(envs.single_observation_space, envs.single_action_space, (32,), "tanh")
    for p in policy.actor.parameters():
        p.requires_grad_(False)
    config = make_config("ppo", {"criterion": "average", "num_envs": 16, "num_steps": 64, "minibatch_size": 256,
                                 "learning_rate": 3e-3, "anneal_lr": True, "gae_lambda": 0.9})
    algorithm = make_algorithm("ppo", policy, config, total_updates=150)
    collector = RolloutCollector(envs, policy, 64, encoder=encoder)
    collector.reset(seed=0)
    for _ in range(150):
        algorithm.update(collector.collect())
    pi, _ = policy_table(policy, encoder, mdp.num_states)
    exact = evaluate_policy(mdp, pi, "average")
    with torch.no_grad():
        v = policy.value(encoder(torch.arange(mdp.num_states), torch.float32)).double().numpy()
    d, h = exact.d, exact.V
    centred = v - d @ v
    error = np.sqrt(d @ (centred - h) ** 2)
    scale = np.sqrt(d @ h**2)
    assert error < 0.1 * scale, (centred, h)
    assert algorithm.average.rho == pytest.approx(exact.rho, abs=0.05)
    assert abs(d @ v) < 0.5 * scale  # the centring keeps the critic's level near d·h = 0


@pytest.mark.slow
def test_average_reward_ppo_learns_access_control(tmp_path: Path) -> None:
    mdp = access_control_mdp()
    optimum = optimal_average_reward(mdp)
    spec = resolve_run("ppo", "policygrad/AccessControl-v0",
                       overrides={"tensorboard": False}, flags={"total_steps": 80_000, "seed": 0})
    assert spec.config.criterion == "average"
    session = build_session(spec)
    try:
        train(session, tmp_path / "run", quiet=True)
    finally:
        session.close()
    _, greedy = policy_table(session.policy, session.encoder, mdp.num_states)
    rho = evaluate_policy(mdp, greedy, "average").rho
    assert rho >= 0.85 * optimum, (rho, optimum)
