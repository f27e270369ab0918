"""The Python API with objects: environments given as objects or factories, environment keyword
arguments, a user's own actor-critic network, and the policy as one module."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
import numpy as np
import pytest
import torch
from torch import nn

import policygrad as pg
from policygrad.cli import main
from policygrad.envs import describe_env
from policygrad.policies import ModuleActorCritic, Policy

SMALL = {"num_envs": 2, "num_steps": 64, "minibatch_size": 64, "num_epochs": 1, "tensorboard": False}


def make_cartpole() -> gym.Env:
    """An importable factory: recorded as ``"test_api_objects:make_cartpole"``."""
    return gym.make("CartPole-v1")


class SharedTrunk(nn.Module):
    """An actor-critic with one SiLU trunk under both heads (the protocol of ModuleActorCritic)."""

    def __init__(self, obs_dim: int, num_actions: int, width: int = 64) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.logits = nn.Linear(width, num_actions)
        self.v = nn.Linear(width, 1)
        for layer in (*self.trunk[::2], self.logits, self.v):
            nn.init.orthogonal_(layer.weight, 2**0.5)
            nn.init.zeros_(layer.bias)
        nn.init.orthogonal_(self.logits.weight, 0.01)
        nn.init.orthogonal_(self.v.weight, 1.0)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> tuple[torch.distributions.Categorical, torch.Tensor]:
        self.calls += 1
        h = self.trunk(x)
        return torch.distributions.Categorical(logits=self.logits(h)), self.v(h).squeeze(-1)

    def distribution(self, x: torch.Tensor) -> torch.distributions.Categorical:
        return self(x)[0]

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)[1]


class GaussianNet(nn.Module):
    """Separate heads, a torch Normal: no forward, so distribution and value are called apart."""

    def __init__(self, obs_dim: int, action_dim: int) -> None:
        super().__init__()
        self.mu = nn.Linear(obs_dim, action_dim)
        self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.v = nn.Linear(obs_dim, 1)

    def distribution(self, x: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.mu(x), self.log_std.exp())

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.v(x).squeeze(-1)


# --- environments -------------------------------------------------------------------------------


def test_what_a_run_records_of_each_kind_of_environment() -> None:
    made = describe_env(gym.make("FrozenLake-v1", is_slippery=False))
    assert (made.name, made.kwargs, made.source) == ("FrozenLake-v1", {"map_name": "4x4", "is_slippery": False}, "FrozenLake-v1")
    factory = describe_env(make_cartpole)
    assert factory.name == f"{__name__}:make_cartpole" and factory.recreatable and factory.source is make_cartpole
    by_hand = CartPoleEnv()
    obj = describe_env(by_hand)
    assert obj.name == "<CartPoleEnv object>" and not obj.recreatable and obj.source is by_hand
    wrapped = describe_env(gym.wrappers.TimeAwareObservation(gym.make("CartPole-v1")))
    assert not wrapped.recreatable  # the id alone would lose the wrapper
    local = describe_env(lambda: gym.make("CartPole-v1"))
    assert local.name.startswith("<") and not local.recreatable
    assert describe_env("CartPole-v1", {"render_mode": None}).kwargs == {"render_mode": None}
    with pytest.raises(pg.InputError, match="env_kwargs must be JSON values"):
        describe_env("CartPole-v1", {"f": object()})
    with pytest.raises(pg.InputError, match="env_kwargs apply to an id, a class or a factory"):
        describe_env(by_hand, {"x": 1})


@pytest.mark.slow
def test_an_env_made_by_gymnasium_is_recorded_by_id_and_the_cli_reads_the_run(tmp_path: Path, capsys) -> None:
    model = pg.PPO(gym.make("FrozenLake-v1", is_slippery=False), seed=0, **SMALL)
    assert model.spec.env == "FrozenLake-v1" and model.spec.env_kwargs == {"map_name": "4x4", "is_slippery": False}
    model.learn(256, run_dir=tmp_path / "run", progress_bar=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["env"] == "FrozenLake-v1" and config["env_kwargs"]["is_slippery"] is False
    assert main(["eval", str(tmp_path / "run"), "--episodes", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2


@pytest.mark.slow
def test_an_env_object_trains_on_copies_and_its_run_is_reopened_from_python(tmp_path: Path, capsys) -> None:
    env = CartPoleEnv()  # no spec: copied for each environment
    model = pg.PPO(env, seed=0, **SMALL).learn(256, run_dir=tmp_path / "run", progress_bar=False)
    assert env.state is None  # the object itself was never reset nor stepped
    assert json.loads((tmp_path / "run" / "config.json").read_text())["env"] == "<CartPoleEnv object>"
    obs = np.zeros((3, 4), dtype=np.float32)
    expected, _ = model.predict(obs)
    # The command line cannot re-create it: one line, exit 2, nothing executed.
    assert main(["eval", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "policygrad.load(run_dir, env=...)" in err
    with pytest.raises(pg.InputError, match="was an object given in Python"):
        pg.load(tmp_path / "run")
    loaded = pg.load(tmp_path / "run", env=CartPoleEnv())
    np.testing.assert_array_equal(loaded.predict(obs)[0], expected)
    loaded.learn(128, progress_bar=False)
    assert loaded.num_timesteps == 384


@pytest.mark.slow
def test_an_importable_factory_is_recorded_as_module_attr(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import test_api_objects as this  # the module as importable by name, as a user's would be

    model = pg.A2C(this.make_cartpole, seed=0, tensorboard=False, num_envs=2).learn(64, run_dir=tmp_path / "run",
                                                                                    progress_bar=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["env"] == "test_api_objects:make_cartpole"
    # A run directory is data: what it names is imported only when the user names it too.
    with pytest.raises(pg.InputError, match="would import module 'test_api_objects', named by the run directory"):
        pg.load(tmp_path / "run")
    assert pg.load(tmp_path / "run", trust_run_code=True).num_timesteps == model.num_timesteps
    assert pg.load(tmp_path / "run", env="test_api_objects:make_cartpole").num_timesteps == model.num_timesteps


def test_env_kwargs_reach_the_environment_from_every_entry() -> None:
    model = pg.PPO("FrozenLake-v1", env_kwargs={"is_slippery": False}, **SMALL)
    assert model.spec.env_kwargs == {"is_slippery": False}
    assert model._ensure_session().eval_envs.envs[0].spec.kwargs["is_slippery"] is False
    with pytest.raises(pg.InputError, match="unexpected keyword argument 'slippery'"):
        pg.PPO("FrozenLake-v1", env_kwargs={"slippery": False})._ensure_session()


def test_env_kwargs_on_the_command_line(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.toml"
    config.write_text('env = "FrozenLake-v1"\nlearning_rate = 1e-3\n[env_kwargs]\nmap_name = "8x8"\n')
    for argv, expected in (
        (["--env", "FrozenLake-v1", "--env-kwargs", '{"is_slippery": false}'], {"is_slippery": False}),
        (["--env", "FrozenLake-v1", "--set", "env.is_slippery=false"], {"is_slippery": False}),
        (["--config", str(config), "--set", "env.is_slippery=true"], {"map_name": "8x8", "is_slippery": True}),
    ):
        assert main(["train", *argv, "--print-config"]) == 0
        assert json.loads(capsys.readouterr().out)["env_kwargs"] == expected
    for argv, message in (
        (["--env-kwargs", "{bad"], "--env-kwargs is not valid JSON"),
        (["--env-kwargs", "[1]"], "--env-kwargs must be a JSON object"),
        (["--set", "env.=1"], "env. needs a keyword name"),
    ):
        assert main(["train", *argv, "--print-config"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("policygrad: error: ") and message in err and err.count("\n") == 1
    out = tmp_path / "bad"
    assert main(["train", "--env", "FrozenLake-v1", "--env-kwargs", '{"slippery": 1}', "--out", str(out)]) == 2
    assert "unexpected keyword argument 'slippery'" in capsys.readouterr().err and not out.exists()


# --- a user's network -----------------------------------------------------------------------------


def test_a_custom_network_is_checked_against_the_spaces_when_the_model_is_made() -> None:
    class NoValue(nn.Module):
        def distribution(self, x):  # noqa: ANN001, ANN202
            return torch.distributions.Categorical(logits=x[:, :2])

    with pytest.raises(pg.InputError, match="has no value method"):
        pg.PPO("CartPole-v1", policy=NoValue())
    with pytest.raises(pg.InputError, match="policy must be a torch.nn.Module"):
        pg.PPO("CartPole-v1", policy=object())
    with pytest.raises(pg.InputError, match="its distribution has 3 actions, the action space 2"):
        pg.PPO("CartPole-v1", policy=SharedTrunk(4, 3))
    with pytest.raises(pg.InputError, match="failed on inputs of shape \\[2, 4\\]"):
        pg.PPO("CartPole-v1", policy=SharedTrunk(5, 2))
    with pytest.raises(pg.InputError, match="distribution is Gaussian, the action space needs discrete"):
        pg.PPO("CartPole-v1", policy=GaussianNet(4, 2))
    with pytest.raises(pg.InputError, match="actions of shape \\(2,\\), the action space"):
        pg.PPO("Pendulum-v1", policy=GaussianNet(3, 2))
    with pytest.raises(pg.InputError, match="backend=numpy cannot serve"):
        pg.PPO("CartPole-v1", policy=SharedTrunk(4, 2), backend="numpy")


def test_the_adapter_gives_the_same_log_probabilities_as_the_users_distribution() -> None:
    torch.manual_seed(0)
    net = SharedTrunk(4, 2)
    adapter = ModuleActorCritic(net, 4, gym.spaces.Discrete(2))
    x = torch.randn(7, 4)
    actions = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    dist, value = adapter(x)
    own, own_value = net(x)
    torch.testing.assert_close(dist.log_prob(actions), own.log_prob(actions))
    torch.testing.assert_close(dist.entropy(), own.entropy())
    torch.testing.assert_close(value, own_value)
    mask = torch.tensor([[True, False]] * 7)
    assert torch.all(adapter.distribution(x, mask).mode() == 0)
    gauss = GaussianNet(3, 1)
    g = ModuleActorCritic(gauss, 3, gym.spaces.Box(-2, 2, (1,)))
    a = torch.randn(5, 1)
    x = torch.randn(5, 3)
    torch.testing.assert_close(g.distribution(x).log_prob(a), gauss.distribution(x).log_prob(a).sum(-1))


@pytest.mark.slow
def test_a_custom_network_saves_loads_and_needs_itself_to_load(tmp_path: Path, capsys) -> None:
    net = GaussianNet(3, 1)
    model = pg.PPO("Pendulum-v1", policy=net, seed=0, normalize_obs=True, **SMALL)
    model.learn(256, run_dir=tmp_path / "run", progress_bar=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["policy"] == f"{__name__}:GaussianNet" and config["backend"]["name"] == "torch"
    obs = np.random.default_rng(0).uniform(-1, 1, (9, 3)).astype(np.float32)
    expected, _ = model.predict(obs)
    np.testing.assert_allclose(model.policy(obs).numpy(), expected, rtol=1e-6, atol=1e-6)
    assert main(["eval", str(tmp_path / "run")]) == 2
    assert "policygrad.load(run_dir, policy=...)" in capsys.readouterr().err
    loaded = pg.load(tmp_path / "run", policy=GaussianNet(3, 1))
    np.testing.assert_array_equal(loaded.predict(obs)[0], expected)
    with pytest.raises(pg.InputError, match="has no distribution and no value method"):
        pg.load(tmp_path / "run", policy=nn.Sequential())
    other = GaussianNet(3, 1)
    other.extra = nn.Linear(1, 1)
    with pytest.raises(pg.InputError, match="checkpoint does not fit the model: missing 2 entries"):
        pg.load(tmp_path / "run", policy=other)


@pytest.mark.slow
def test_a_shared_trunk_silu_network_solves_cartpole(tmp_path: Path) -> None:
    net = SharedTrunk(4, 2)
    model = pg.PPO("CartPole-v1", policy=net, seed=0, target_return=475.0, tensorboard=False)
    model.learn(150_000, run_dir=tmp_path / "run", progress_bar=False)
    assert net.calls > 0 and model._session.algorithm.backend.name == "torch"
    from policygrad.training import evaluate_session

    returns = evaluate_session(model._session, 20, seed=12345)
    assert np.mean(returns) >= 475.0, returns


# --- the policy module ----------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["CartPole-v1", "FrozenLake-v1", "Pendulum-v1"])
def test_the_policy_module_acts_as_predict_on_raw_observations(env_id: str) -> None:
    model = pg.PPO(env_id, seed=0, normalize_obs=True, **SMALL)
    session = model._ensure_session()
    space = session.eval_envs.single_observation_space
    space.seed(0)
    # statistics that matter, updated in place while the module exists
    policy = model.policy
    if session.obs_normalizer is not None:
        session.obs_normalizer.rms.update(np.stack([session.encoder(torch.as_tensor(space.sample()), torch.float32).numpy()
                                                     for _ in range(50)]) * 3.0 + 1.0)
    obs = np.stack([space.sample() for _ in range(200)])
    actions, _ = model.predict(obs)
    module_actions = policy(obs).numpy()
    if env_id == "Pendulum-v1":
        np.testing.assert_allclose(module_actions, actions, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(module_actions, actions)
    assert model.policy is policy and isinstance(policy, Policy)
    with pytest.raises(pg.InputError, match="expected numbers for"):
        model.predict(np.array(["a"] * obs.shape[-1] if obs.ndim > 1 else "a"))
