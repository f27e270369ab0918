"""Exporting the deterministic actor (``policygrad export``, ``Model.export``): the exported graph,
run by onnxruntime or ``torch.jit.load``, gives the actions ``Model.predict(obs, deterministic=True)``
gives, preprocessing included; bad input is one line and exit code 2, and never a partial file."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

import policygrad as pg
from policygrad.cli import main
from policygrad.export import DeterministicActor, export_bytes

SMALL = {"num_envs": 4, "num_steps": 64, "minibatch_size": 128, "num_epochs": 2, "tensorboard": False}


class MultiChoice(gym.Env):
    """Box observations [3], MultiDiscrete([3, 2, 4]) actions (of unequal sizes: the padded layout)."""

    observation_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = spaces.MultiDiscrete([3, 2, 4])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return self.observation_space.sample(), float(action[0] == 1), False, self.t >= 16, {}


# (environment, keywords): a Discrete action, a clipped Box action behind a normaliser, the same
# with gSDE's actor, one-hot Discrete observations behind a normaliser, and a MultiDiscrete action.
CASES = {
    "cartpole": ("CartPole-v1", {}),
    "pendulum": ("Pendulum-v1", {"normalize_obs": True}),
    "gsde": ("Pendulum-v1", {"use_sde": True}),
    "frozenlake": ("FrozenLake-v1", {"normalize_obs": True}),
    "multidiscrete": (f"{__name__}:MultiChoice", {}),
}


def _observations(model: pg.Model, n: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n, *obs_shape]``: half drawn from the observation space, half visited by the model
    acting (sampling) in 16 copies of its environment."""
    space = model.observation_space
    space.seed(seed)
    drawn = [space.sample() for _ in range(n // 2)]
    if ":" in model.env:
        envs = gym.vector.SyncVectorEnv([MultiChoice] * 16)
    else:
        envs = gym.make_vec(model.env, 16, vectorization_mode="sync")
    visited = []
    obs, _ = envs.reset(seed=seed)
    while len(visited) < n - len(drawn):
        visited.extend(obs)
        obs, *_ = envs.step(model.predict(obs, deterministic=False)[0])
    envs.close()
    dtype = space.dtype if isinstance(space, spaces.Box) else np.int64
    return np.stack(drawn + visited[: n - len(drawn)]).astype(dtype)


def _untrained(case: str) -> pg.Model:
    """A model of ``case`` that has not trained, made to exercise every step of the graph: its
    normaliser (if any) holds statistics far from (0, 1), and Pendulum's actor has output weights
    large enough that a good part of its actions lie outside the bounds [-2, 2] and are clipped."""
    env, keywords = CASES[case]
    model = pg.PPO(env, seed=0, **SMALL, **keywords)
    session = model._ensure_session()
    if session.obs_normalizer is not None:
        rng = np.random.default_rng(1)
        dim = session.obs_normalizer.rms.shape[0]
        session.obs_normalizer.rms.update(rng.normal(rng.uniform(-2, 2, dim), rng.uniform(0.1, 3, dim), (500, dim)))
    if case in ("pendulum", "gsde"):
        with torch.no_grad():
            last = model.policy.net.actor.net.layers[-1].weight
            last.copy_(torch.randn(last.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
    return model


def _run(path: Path, format: str, obs: np.ndarray) -> np.ndarray:
    """The exported file's actions for ``obs``, as a reader would compute them."""
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (actions,) = session.run(None, {"observations": obs})
        return actions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load's own
        module = torch.jit.load(str(path))
    return module(torch.from_numpy(obs)).numpy()


def _assert_same_actions(exported: np.ndarray, predicted: np.ndarray, space: spaces.Space) -> None:
    assert exported.shape == predicted.shape
    if isinstance(space, spaces.Box):
        assert exported.dtype == np.float32
        np.testing.assert_allclose(exported, predicted, rtol=1e-5, atol=1e-5)
    else:
        assert exported.dtype == np.int64
        np.testing.assert_array_equal(exported, predicted)


def _check_export(model: pg.Model, path: Path, format: str, seed: int = 0) -> None:
    obs = _observations(model, seed=seed)
    predicted, _ = model.predict(obs, deterministic=True)
    assert model.export(path, format) == path and path.stat().st_size > 0
    _assert_same_actions(_run(path, format, obs), predicted, model.action_space)
    _assert_same_actions(_run(path, format, obs[:1]), predicted[:1], model.action_space)  # any batch size


# --- the graph is predict ------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_the_torchscript_actor_is_predict(case: str, tmp_path: Path) -> None:
    _check_export(_untrained(case), tmp_path / "actor.pt", "torchscript")


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_the_onnx_actor_is_predict(case: str, tmp_path: Path) -> None:
    _check_export(_untrained(case), tmp_path / "actor.onnx", "onnx")


def test_the_test_models_exercise_clipping_and_normalisation() -> None:
    model = _untrained("pendulum")
    obs = _observations(model)
    actions, _ = model.predict(obs)
    assert 0.2 < np.mean(np.abs(actions) == 2.0) < 0.8  # many clipped, many not
    mean = model._session.obs_normalizer.rms.mean
    assert np.all(np.abs(mean) > 0.05)  # far from the identity


@pytest.mark.slow
@pytest.mark.parametrize("case", ["cartpole", "pendulum", "frozenlake"])
def test_a_trained_run_exports_from_the_command_line(case: str, tmp_path: Path, capsys) -> None:
    env, keywords = CASES[case]
    run_dir = tmp_path / "run"
    pg.PPO(env, seed=0, **SMALL, **keywords).learn(2048, run_dir=run_dir, progress_bar=False)
    model = pg.load(run_dir)
    if model._session.obs_normalizer is not None:
        assert model._session.obs_normalizer.rms.count > 2000  # statistics of the observations seen
    obs = _observations(model, seed=1)
    predicted, _ = model.predict(obs, deterministic=True)
    capsys.readouterr()
    for format, name in (("onnx", "actor.onnx"), ("torchscript", "actor.pt")):
        # a path inside the run directory names the run, as pg.load reads it
        assert main(["export", str(run_dir / "checkpoints" / "last"), "--format", format,
                     "--out", str(tmp_path / name)]) == 0
        assert capsys.readouterr().out.startswith(f"{tmp_path / name}: {format}, observations [n")
        _assert_same_actions(_run(tmp_path / name, format, obs), predicted, model.action_space)


class OwnNetwork(nn.Module):
    """A network of one's own (the ModuleActorCritic protocol), with torch.distributions'
    Categorical, which checks its arguments unless told not to."""

    def __init__(self) -> None:
        super().__init__()
        self.pi = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
        self.v = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))

    def distribution(self, x: torch.Tensor) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.pi(x))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.v(x).squeeze(-1)


@pytest.mark.parametrize("format", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_a_network_of_ones_own_exports(format: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = pg.PPO("CartPole-v1", policy=OwnNetwork(), normalize_obs=True, **SMALL)
    _check_export(model, tmp_path / "actor", format)


def test_the_module_and_the_model_are_unchanged_by_an_export(tmp_path: Path) -> None:
    model = _untrained("multidiscrete")
    obs = _observations(model, 64)
    before, _ = model.predict(obs)
    actor = DeterministicActor.from_model(model)
    export_bytes(actor, "torchscript")
    with torch.no_grad():
        np.testing.assert_array_equal(actor(torch.from_numpy(obs)).numpy(), before)
    np.testing.assert_array_equal(model.predict(obs)[0], before)


@pytest.mark.slow
def test_the_module_is_unchanged_by_an_onnx_export() -> None:
    # torch's ONNX exporter traces with stand-in tensors that it leaves in the parameter dicts an
    # MLP holds on to; the export works on a copy.
    model = _untrained("cartpole")
    obs = _observations(model, 64)
    actor = DeterministicActor.from_model(model)
    export_bytes(actor, "onnx")
    with torch.no_grad():
        np.testing.assert_array_equal(actor(torch.from_numpy(obs)).numpy(), model.predict(obs)[0])


@pytest.mark.slow
def test_the_onnx_graph_has_named_typed_inputs_with_a_dynamic_batch(tmp_path: Path) -> None:
    import onnx

    model = _untrained("frozenlake")
    graph = onnx.load(str(model.export(tmp_path / "a.onnx"))).graph
    (inp,), (out,) = graph.input, graph.output
    assert (inp.name, out.name) == ("observations", "actions")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch"]
    assert out.type.tensor_type.elem_type == onnx.TensorProto.INT64


# --- refusals ------------------------------------------------------------------------------------


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], pattern: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("policygrad: error: "), err
    assert pattern in err, err
    return err


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory (config.json and a checkpoint) of an untrained CartPole policy."""
    return pg.PPO("CartPole-v1", seed=0, **SMALL).save(tmp_path_factory.mktemp("saved") / "run")


def test_an_existing_file_is_replaced_only_with_force(saved_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "actor.pt"
    out.write_bytes(b"keep me")
    _fails(capsys, ["export", str(saved_run), "--format", "torchscript", "--out", str(out)], "already exists")
    assert out.read_bytes() == b"keep me"
    assert main(["export", str(saved_run), "--format", "torchscript", "--out", str(out), "--force"]) == 0
    assert out.read_bytes() != b"keep me" and len(_run(out, "torchscript", np.zeros((2, 4), np.float32))) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["actor.pt"]  # no temporary file left


def test_what_is_not_a_run_or_not_a_place_for_a_file_is_refused(saved_run: Path, tmp_path: Path, capsys) -> None:
    pt = ["--format", "torchscript"]
    _fails(capsys, ["export", str(tmp_path / "missing"), *pt, "--out", str(tmp_path / "a.pt")], "does not exist")
    _fails(capsys, ["export", str(tmp_path), *pt, "--out", str(tmp_path / "a.pt")], "not a policygrad run directory")
    _fails(capsys, ["export", str(saved_run), *pt, "--out", str(tmp_path)], "is a directory")
    _fails(capsys, ["export", str(saved_run), *pt, "--out", str(tmp_path / "no" / "a.pt")], "does not exist")
    with pytest.raises(SystemExit) as exit:
        main(["export", str(saved_run), "--format", "tflite", "--out", str(tmp_path / "a")])
    assert exit.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    with pytest.raises(pg.InputError, match="unknown export format 'tflite'; valid: onnx, torchscript"):
        pg.load(saved_run).export(tmp_path / "a", "tflite")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("package", ["onnx", "onnxscript"])
def test_a_missing_onnx_exporter_names_the_extra(package: str, saved_run: Path, tmp_path: Path, capsys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError
    err = _fails(capsys, ["export", str(saved_run), "--out", str(tmp_path / "a.onnx")], "pip install 'policygrad[export]'")
    assert repr(package) in err
    with pytest.raises(pg.InputError, match=r"policygrad\[export\]"):
        pg.PPO("CartPole-v1").export(tmp_path / "a.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_is_one_line_and_leaves_no_file(saved_run: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import policygrad.export

    def fail(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("the exporter failed\nand said more")

    out = tmp_path / "a.pt"
    monkeypatch.setattr(policygrad.export, "_torchscript_bytes", fail)
    argv = ["export", str(saved_run), "--format", "torchscript", "--out", str(out)]
    _fails(capsys, argv, "cannot export this policy as torchscript: RuntimeError: the exporter failed")
    out.write_bytes(b"old")
    _fails(capsys, [*argv, "--force"], "the exporter failed")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"] and out.read_bytes() == b"old"
