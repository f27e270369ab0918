"""Image, Dict/Tuple observations and MultiBinary actions: the Bernoulli distribution, the
encoders, image detection, every algorithm on each space, checkpoints, predict, export, and
learning on the small tasks of :mod:`policygrad.space_tasks`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import policygrad as pg
import policygrad.tasks  # noqa: F401  (registers the policygrad/ ids)
from policygrad.cli import main
from policygrad.distributions import Bernoulli
from policygrad.errors import InputError
from policygrad.policies import (
    CompositeObservation,
    NatureCNN,
    ObservationTrunk,
    is_image_space,
    make_actor_critic,
    make_encoder,
)
from policygrad.policies.actor_critic import image_layouts
from policygrad.rollout import RolloutCollector, make_policy
from policygrad.space_tasks import CELLS, BitMatch, DictLine, PixelLine

QUICK = ["--quiet", "--set", "tensorboard=false"]
SMALL = {"num_envs": 2, "num_steps": 128}
ALGOS = ["PPO", "A2C", "REINFORCE", "NPG", "TRPO"]


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Models that learn without a run_dir write runs/ under the working directory."""
    monkeypatch.chdir(tmp_path)


def _line_states(env: PixelLine | DictLine) -> tuple[list, np.ndarray]:
    """Every (agent, target) state's observation, and the action that moves towards the target."""
    observations, towards = [], []
    for agent in range(CELLS):
        for target in range(CELLS):
            if agent != target:
                env.agent, env.target = agent, target
                observations.append(env.observe())
                towards.append(1 if target > agent else 0)
    return observations, np.array(towards)


# --- Bernoulli ---------------------------------------------------------------------------------


def test_bernoulli_matches_torch_reference() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 3, dtype=torch.float64)
    actions = torch.randint(0, 2, (5, 3))
    ours, ref = Bernoulli(logits), torch.distributions.Bernoulli(logits=logits)
    torch.testing.assert_close(ours.log_prob(actions), ref.log_prob(actions.double()).sum(-1))
    torch.testing.assert_close(ours.entropy(), ref.entropy().sum(-1))
    other = torch.randn(5, 3, dtype=torch.float64)
    kl_ref = torch.distributions.kl_divergence(ref, torch.distributions.Bernoulli(logits=other)).sum(-1)
    torch.testing.assert_close(ours.kl(Bernoulli(other)), kl_ref)
    assert torch.all(ours.kl(ours) == 0)
    assert torch.equal(ours.mode(), (logits > 0).long())


def test_bernoulli_score_is_action_minus_sigmoid_and_matches_autograd() -> None:
    torch.manual_seed(1)
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    dist = Bernoulli(logits)
    actions = dist.sample()
    (grad,) = torch.autograd.grad(dist.log_prob(actions).sum(), logits)
    torch.testing.assert_close(grad, dist.score(actions))
    torch.testing.assert_close(dist.score(actions), actions.double() - torch.sigmoid(logits.detach()))


def test_bernoulli_samples_match_probs_and_reproduce() -> None:
    logits = torch.tensor([[-2.0, 0.0, 1.5]]).expand(20000, 3)
    dist = Bernoulli(logits)
    actions, log_prob = dist.sample_and_log_prob(torch.Generator().manual_seed(3))
    assert actions.dtype == torch.long and set(actions.unique().tolist()) <= {0, 1}
    p = torch.sigmoid(logits[0])
    stderr = (p * (1 - p) / 20000).sqrt()
    assert torch.all((actions.double().mean(0) - p).abs() < 4 * stderr)
    torch.testing.assert_close(log_prob, dist.log_prob(actions))
    again, _ = dist.sample_and_log_prob(torch.Generator().manual_seed(3))
    assert torch.equal(actions, again)


def test_bernoulli_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="floating-point"):
        Bernoulli(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(InputError, match="shape"):
        Bernoulli(torch.zeros(2, 3)).log_prob(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(InputError, match="Bernoulli"):
        Bernoulli(torch.zeros(2, 3)).kl(Bernoulli(torch.zeros(2, 4)))


# --- image detection and encoders ------------------------------------------------------------


@pytest.mark.parametrize(
    "space, mode, image",
    [
        (spaces.Box(0, 255, (84, 84, 3), np.uint8), "auto", True),
        (spaces.Box(0, 255, (4, 84, 84), np.uint8), "auto", True),
        (spaces.Box(0, 255, (84, 84, 1), np.uint8), "auto", True),
        (spaces.Box(0.0, 1.0, (84, 84, 3), np.float32), "auto", False),  # not uint8: an MLP's input
        (spaces.Box(0, 10, (84, 84, 3), np.uint8), "auto", False),  # not 0..255
        (spaces.Box(0, 255, (84, 84, 5), np.uint8), "auto", False),  # 5 channels
        (spaces.Box(0, 255, (84, 84), np.uint8), "auto", False),  # 2-D
        (spaces.Box(0.0, 1.0, (84, 84, 3), np.float32), "yes", True),
        (spaces.Box(0, 255, (84, 84, 3), np.uint8), "no", False),
    ],
)
def test_image_detection(space: spaces.Box, mode: str, image: bool) -> None:
    assert is_image_space(space, mode) is image


def test_nature_cnn_shapes() -> None:
    assert NatureCNN((4, 84, 84))(torch.zeros(2, 4, 84, 84)).shape == (2, 512)
    assert NatureCNN((1, 36, 36))(torch.zeros(3, 1, 36, 36)).shape == (3, 512)
    with pytest.raises(InputError, match="too small for the Nature CNN"):
        NatureCNN((3, 16, 16))


def test_channels_last_and_first_read_the_same_image() -> None:
    hwc = spaces.Box(0, 255, (36, 40, 3), np.uint8)
    chw = spaces.Box(0, 255, (3, 36, 40), np.uint8)
    torch.manual_seed(0)
    trunk_hwc = ObservationTrunk(36 * 40 * 3, image_layouts(hwc))
    trunk_chw = ObservationTrunk(36 * 40 * 3, image_layouts(chw))
    trunk_chw.load_state_dict(trunk_hwc.state_dict())
    image = torch.randint(0, 256, (2, 36, 40, 3), dtype=torch.uint8)
    flat_hwc = make_encoder(hwc)(image, torch.float32)
    flat_chw = make_encoder(chw)(image.permute(0, 3, 1, 2), torch.float32)
    assert torch.equal(flat_hwc, flat_chw)  # both stored H×W×C, which the trunk reads as NHWC
    torch.testing.assert_close(trunk_hwc(flat_hwc), trunk_chw(flat_chw))
    # The network is the same function as an NCHW Nature CNN on the scaled channels-first image.
    reference = trunk_chw.cnns[0](image.permute(0, 3, 1, 2).float().contiguous() / 255)
    torch.testing.assert_close(trunk_chw(flat_chw), reference)


def test_image_actor_critic_is_nature_dqn_with_shared_trunk() -> None:
    space = spaces.Box(0, 255, (84, 84, 4), np.uint8)
    ac = make_actor_critic(space, spaces.Discrete(6))
    assert ac.critic_trunk is None and [m.out_channels for m in ac.trunk.cnns[0].convs if hasattr(m, "out_channels")] \
        == [32, 64, 64]
    assert len(ac.actor.net.layers) == len(ac.critic.net.layers) == 1  # linear heads on the 512 features
    dist, value = ac(torch.randint(0, 256, (3, 84, 84, 4), dtype=torch.uint8))
    assert dist.logits.shape == (3, 6) and value.shape == (3,)
    separate = make_actor_critic(space, spaces.Discrete(6), share_encoder=False)
    assert separate.critic_trunk is not None
    shared_params = sum(p.numel() for p in ac.parameters())
    assert sum(p.numel() for p in separate.parameters()) > 1.9 * shared_params - 2 * 512 * 7


def test_dict_and_tuple_encoders_concatenate_their_parts() -> None:
    space = spaces.Dict({
        "pos": spaces.Box(-1, 1, (2, 3)),
        "cell": spaces.Discrete(4),
        "bits": spaces.MultiBinary(3),
        "nested": spaces.Tuple((spaces.MultiDiscrete([2, 3]), spaces.Discrete(2))),
    })
    encoder = make_encoder(space)
    assert isinstance(encoder, CompositeObservation) and encoder.obs_dim == 6 + 4 + 3 + 5 + 2
    obs = {"pos": np.ones((5, 2, 3), np.float32), "cell": np.full(5, 2), "bits": np.ones((5, 3), np.int8),
           "nested": (np.tile([1, 2], (5, 1)), np.zeros(5, np.int64))}
    x = encoder(obs, torch.float32)
    assert x.shape == (5, 20)
    # In the space's key order (Gymnasium sorts a dict's keys): bits, cell, nested, pos.
    assert list(space.keys()) == ["bits", "cell", "nested", "pos"]
    assert x[0].tolist() == [1] * 3 + [0, 0, 1, 0] + [0, 1, 0, 0, 1] + [1, 0] + [1] * 6


def test_dict_with_an_image_gets_a_cnn_for_the_image_only() -> None:
    space = spaces.Dict({"image": spaces.Box(0, 255, (36, 36, 1), np.uint8), "speed": spaces.Box(-1, 1, (2,))})
    ac = make_actor_critic(space, spaces.Discrete(3))
    assert ac.trunk.features_dim == 512 + 2 and len(ac.trunk.cnns) == 1
    assert len(ac.actor.net.layers) == 3  # the MLP of hidden_sizes on the concatenated features
    dist = ac.distribution({"image": np.zeros((4, 36, 36, 1), np.uint8), "speed": np.zeros((4, 2), np.float32)})
    assert dist.logits.shape == (4, 3)


def test_unsupported_nested_sub_space_is_named() -> None:
    space = spaces.Dict({"a": spaces.Tuple((spaces.Discrete(2), spaces.Text(3)))})
    with pytest.raises(InputError, match=r"unsupported sub-space at 'a\[1\]'"):
        make_encoder(space)


def test_collector_stores_raw_uint8_pixels() -> None:
    envs = gym.vector.SyncVectorEnv([PixelLine, PixelLine], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    policy, encoder = make_policy(envs.single_observation_space, envs.single_action_space)
    rollout = RolloutCollector(envs, policy, 5, encoder=encoder).collect()
    assert rollout.observations.dtype == torch.uint8 and rollout.observations.shape == (5, 2, 36 * 36)
    assert int(rollout.observations.max()) == 255
    envs.close()


# --- every algorithm on each space -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("env", ["policygrad/PixelLine-v0", "policygrad/DictLine-v0", "policygrad/BitMatch-v0"])
def test_every_algorithm_trains_on_each_space(algo: str, env: str) -> None:
    model = getattr(pg, algo)(env, **SMALL)
    model.learn(256)
    assert model.num_timesteps >= 256
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())


@pytest.mark.slow
def test_tuple_observations_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", "--env", "Blackjack-v1", "--steps", "256", "--out", str(out), *QUICK,
                 "--set", "num_envs=2", "--set", "num_steps=128"]) == 0
    assert main(["eval", str(out), "--episodes", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 3


# --- checkpoints, resume, predict, export ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("env", ["policygrad/PixelLine-v0", "policygrad/DictLine-v0", "policygrad/BitMatch-v0"])
def test_checkpoint_round_trip_resume_and_predict(env: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", "--env", env, "--steps", "256", "--out", str(out), *QUICK,
                 "--set", "num_envs=2", "--set", "num_steps=128"]) == 0
    single = gym.make(env)
    batch = [single.reset(seed=i)[0] for i in range(4)]
    model = pg.load(out)
    one, _ = model.predict(batch[0])
    if isinstance(batch[0], dict):
        stacked = {key: np.stack([b[key] for b in batch]) for key in batch[0]}
    else:
        stacked = np.stack(batch)
    many, _ = model.predict(stacked)
    assert np.array_equal(many[0], one) and len(many) == 4
    expected = single.action_space.sample()
    assert np.asarray(one).dtype == np.asarray(expected).dtype or isinstance(single.action_space, spaces.Discrete)
    assert main(["eval", str(out), "--episodes", "2", "--deterministic"]) == 0
    assert main(["train", "--resume", str(out), "--steps", "512", "--quiet"]) == 0
    again, _ = pg.load(out).predict(stacked)
    assert again.shape == many.shape
    capsys.readouterr()


def test_predict_checks_dict_observations() -> None:
    model = pg.PPO(DictLine(), **SMALL)
    actions, _ = model.predict({"agent": np.array([0, 5]), "target": np.array([[3.0], [1.0]], np.float32)})
    assert actions.shape == (2,)
    with pytest.raises(InputError, match="no key 'target'"):
        model.predict({"agent": 1})
    with pytest.raises(InputError, match="mix single observations and batches"):
        model.predict({"agent": np.array([0, 5]), "target": np.array([3.0], np.float32)})
    with pytest.raises(InputError, match="expected a dict"):
        model.predict(np.zeros(2))


def test_multibinary_predict_returns_int8_bits() -> None:
    model = pg.PPO(BitMatch(), **SMALL)
    actions, _ = model.predict(np.array([[1, 0, 1, 1], [0, 0, 0, 1]], np.int8))
    assert actions.dtype == np.int8 and actions.shape == (2, 4) and set(np.unique(actions)) <= {0, 1}


@pytest.mark.slow
def test_export_image_policy_and_refuse_dict(tmp_path: Path) -> None:
    model = pg.PPO(PixelLine(), **SMALL)
    path = model.export(tmp_path / "pixel.pt", format="torchscript")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path))
    observations = np.stack(_line_states(PixelLine())[0])
    assert np.array_equal(loaded(torch.from_numpy(observations)).numpy(), model.predict(observations)[0])
    if all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime")):
        import onnxruntime

        onnx_path = model.export(tmp_path / "pixel.onnx")
        session = onnxruntime.InferenceSession(str(onnx_path))
        assert np.array_equal(session.run(None, {"observations": observations})[0], model.predict(observations)[0])
        bits = pg.PPO(BitMatch(), **SMALL)
        patterns = np.array([[1, 0, 1, 1], [0, 0, 0, 1]], np.int8)
        out = onnxruntime.InferenceSession(str(bits.export(tmp_path / "bits.onnx"))).run(None, {"observations": patterns})[0]
        assert out.dtype == np.int8 and np.array_equal(out, bits.predict(patterns)[0])
    with pytest.raises(InputError, match="cannot export a policy for observation space Dict"):
        pg.PPO(DictLine(), **SMALL).export(tmp_path / "dict.pt", format="torchscript")


# --- bad input -------------------------------------------------------------------------------


class TinyImage(gym.Env):
    """An image too small for the Nature CNN."""

    observation_space = spaces.Box(0, 255, (16, 16, 3), np.uint8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros((16, 16, 3), np.uint8), {}

    def step(self, action):
        return np.zeros((16, 16, 3), np.uint8), 0.0, True, False, {}


class TextInside(TinyImage):
    """A Dict observation with a part no encoder handles."""

    observation_space = spaces.Dict({"pos": spaces.Box(-1, 1, (2,)), "note": spaces.Text(5)})

    def reset(self, *, seed=None, options=None):
        gym.Env.reset(self, seed=seed)
        return {"pos": np.zeros(2, np.float32), "note": "hello"}, {}


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--env", "test_spaces:TinyImage"], "image observations of 16×16 are too small"),
        (["--env", "test_spaces:TextInside"], "unsupported sub-space at 'note'"),
        (["--env", "policygrad/PixelLine-v0", "--set", "normalize_obs=true"], "normalize_obs does not apply to image"),
        (["--env", "policygrad/PixelLine-v0", "--set", "image_obs=maybe"], "image_obs"),
    ],
)
def test_bad_spaces_exit_2_without_a_run_directory(argv: list[str], pattern: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *QUICK, *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and pattern in lines[0], lines
    assert not out.exists()


def test_image_obs_no_flattens_into_an_mlp() -> None:
    model = pg.PPO("policygrad/PixelLine-v0", image_obs="no", **SMALL)
    assert model.policy.net.trunk is None and model.policy.net.obs_dim == 36 * 36


# --- learning ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_bit_match_is_learnt() -> None:
    model = pg.PPO("policygrad/BitMatch-v0", num_envs=8, num_steps=32, learning_rate=3e-3)
    model.learn(6000)
    patterns = np.array([[(i >> k) & 1 for k in range(4)] for i in range(16)], np.int8)
    actions, _ = model.predict(patterns)
    assert np.mean(actions == patterns) >= 0.9


@pytest.mark.slow
def test_dict_line_needs_both_parts_and_is_learnt() -> None:
    model = pg.PPO("policygrad/DictLine-v0", num_envs=8, num_steps=64, learning_rate=1e-3)
    observations, towards = _line_states(DictLine())
    batch = {"agent": np.array([o["agent"] for o in observations]),
             "target": np.stack([o["target"] for o in observations])}
    for _ in range(10):
        model.learn(4096)
        if np.mean(model.predict(batch)[0] == towards) >= 0.95:
            break
    assert np.mean(model.predict(batch)[0] == towards) >= 0.95


@pytest.mark.slow
def test_pixel_line_is_learnt_by_a_cnn() -> None:
    """Random moves are right half of the time; the CNN policy must be right in 90% of the 30
    states (about 10k steps, under ten seconds on one core)."""
    model = pg.PPO("policygrad/PixelLine-v0", num_envs=8, num_steps=64, learning_rate=1e-3)
    observations, towards = _line_states(PixelLine())
    observations = np.stack(observations)
    for _ in range(12):
        model.learn(2048)
        if np.mean(model.predict(observations)[0] == towards) >= 0.9:
            break
    assert np.mean(model.predict(observations)[0] == towards) >= 0.9


class BitsNet(torch.nn.Module):
    """A user's network for BitMatch: independent Bernoullis from torch.distributions."""

    def __init__(self) -> None:
        super().__init__()
        self.pi, self.v = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)

    def distribution(self, x: torch.Tensor) -> torch.distributions.Distribution:
        return torch.distributions.Independent(torch.distributions.Bernoulli(logits=self.pi(x)), 1)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.v(x).squeeze(-1)


def test_own_network_with_bernoulli_actions() -> None:
    model = pg.PPO(BitMatch(), policy=BitsNet(), **SMALL)
    model.learn(256)
    actions, _ = model.predict(np.array([1, 0, 1, 0], np.int8))
    assert actions.dtype == np.int8 and actions.shape == (4,)


def test_predict_on_tuple_observations() -> None:
    model = pg.PPO("Blackjack-v1", **SMALL)  # Tuple(Discrete(32), Discrete(11), Discrete(2))
    action, _ = model.predict((14, 10, 0))
    actions, _ = model.predict((np.array([14, 20]), np.array([10, 3]), np.array([0, 1])))
    assert np.shape(action) == () and actions.shape == (2,) and actions[0] == action
    with pytest.raises(InputError, match="tuple of 3 parts"):
        model.predict((14, 10))


class NanInDict(DictLine):
    """DictLine whose target turns NaN after the first step."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        obs["target"][:] = np.nan
        return obs, reward, terminated, truncated, info


def test_non_finite_part_of_a_dict_observation_is_named() -> None:
    from policygrad.errors import TrainingError

    model = pg.PPO(NanInDict(), **SMALL)
    with pytest.raises(TrainingError, match="non-finite observation part 'target' at step"):
        model.learn(256)


@pytest.mark.slow
def test_separate_encoders_train_and_reload(tmp_path: Path) -> None:
    model = pg.A2C("policygrad/PixelLine-v0", share_encoder=False, **SMALL)
    model.learn(256, run_dir=tmp_path / "run")
    net = model.policy.net
    assert net.critic_trunk is not None
    loaded = pg.load(tmp_path / "run").policy.net
    torch.testing.assert_close(loaded.critic_trunk.state_dict(), net.critic_trunk.state_dict())
    assert not torch.equal(net.trunk.cnns[0].linear.weight, net.critic_trunk.cnns[0].linear.weight)
