"""The two backends compute one update: the NumPy backend's per-sample log π, H, V, its gradients
and its acting against the torch distributions and autograd; the loss derivatives beside each loss
against autograd of that loss (ties and clip edges included); the NumPy optimiser against
torch.optim (steps and state dicts, both ways); whole PPO / A2C / REINFORCE / IMPALA updates on either
backend from the same state and seed; and the backend's resolution."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from policygrad.algorithms import make_algorithm, make_config
from policygrad.algorithms.base import standardize
from policygrad.backends import NumpyBackend, Term, TorchBackend, resolve_backend
from policygrad.errors import InputError
from policygrad.losses import (
    DERIVATIVES,
    clipped_surrogate,
    entropy_bonus,
    importance_surrogate,
    kl_penalty,
    score_function_loss,
    value_loss,
)
from policygrad.policies import make_actor_critic
from policygrad.returns import discounted_cumsum, gae, td_errors
from policygrad.types import Batch, Rollout

OBS_DIM = 5
OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
SPACES = {
    "discrete": gym.spaces.Discrete(4),
    "continuous": gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
    "gsde": gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
}


def _policy(kind: str, activation: str = "tanh", hidden_sizes=(8, 7), dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    policy = make_actor_critic(OBS_SPACE, SPACES[kind], hidden_sizes=hidden_sizes, activation=activation,
                               use_sde=kind == "gsde", log_std_init=-0.5 if kind == "gsde" else 0.0)
    if kind == "continuous":
        with torch.no_grad():
            policy.actor.log_std.copy_(torch.tensor([-0.3, 0.1, 0.4]))
    return policy.to(dtype)


# --- per-sample quantities and gradients ----------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("kind,masked", [("discrete", False), ("discrete", True), ("continuous", False), ("gsde", False)])
def test_numpy_evaluate_and_gradients_are_autograds(kind, activation, masked):
    policy = _policy(kind, activation, dtype=torch.float64)
    twin = _policy(kind, activation, dtype=torch.float64)
    numpy_backend = NumpyBackend(policy, "adam", learning_rate=0.0, max_grad_norm=None)
    torch_backend = TorchBackend(twin, "adam", learning_rate=0.0, max_grad_norm=None)
    g = torch.Generator().manual_seed(1)
    n = 33
    x = torch.randn(n, OBS_DIM, generator=g, dtype=torch.float64)
    mask = None
    if masked:
        mask = torch.rand(n, 4, generator=g) < 0.6
        mask[torch.arange(n), torch.randint(0, 4, (n,), generator=g)] = True
    with torch.no_grad():
        actions = policy.distribution(x, mask).sample(g)
    # Every term of a loss: ∂L/∂ log π, ∂L/∂H and ∂L/∂V all reach the parameters.
    weights, returns = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    results = []
    for backend in (numpy_backend, torch_backend):
        out = backend.evaluate(x, actions, mask)
        terms = [Term(score_function_loss, (out.log_prob, weights)), Term(value_loss, (out.value, returns), 0.7),
                 Term(entropy_bonus, (out.entropy, 0.3))]
        values, norm = backend.step(terms)
        grads = {name: p.grad.clone() for name, p in backend.policy.named_parameters()}
        results.append((out, [float(v) for v in values], float(norm), grads))
    (out_np, values_np, norm_np, grads_np), (out_t, values_t, norm_t, grads_t) = results
    for field in ("log_prob", "entropy", "value"):
        np.testing.assert_allclose(getattr(out_np, field).numpy(), getattr(out_t, field).detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(values_np, values_t, rtol=1e-10, atol=1e-12)
    assert norm_np == pytest.approx(norm_t, rel=1e-10)
    assert grads_np.keys() == grads_t.keys()
    for name, want in grads_t.items():
        np.testing.assert_allclose(grads_np[name].numpy(), want.numpy(), rtol=0, atol=1e-10, err_msg=name)


def test_terms_left_out_have_no_gradient():
    policy = _policy("continuous", dtype=torch.float64)
    backend = NumpyBackend(policy, "adam", learning_rate=0.0)
    x = torch.randn(6, OBS_DIM, dtype=torch.float64)
    actions = torch.randn(6, 3, dtype=torch.float64)
    psi = torch.randn(6, dtype=torch.float64)
    log_prob = policy.actor.distribution(x).log_prob(actions)
    expected = torch.autograd.grad(score_function_loss(log_prob, psi), backend.params, allow_unused=True)
    out = backend.evaluate(x, actions)
    backend.step([Term(score_function_loss, (out.log_prob, psi))])
    for p, want in zip(backend.params, expected):
        want = torch.zeros_like(p) if want is None else want
        np.testing.assert_allclose(p.grad.numpy(), want.numpy(), rtol=0, atol=1e-10)


def test_a_term_must_start_with_an_output_of_evaluate():
    backend = NumpyBackend(_policy("discrete"), "adam")
    out = backend.evaluate(torch.randn(4, OBS_DIM), torch.zeros(4, dtype=torch.long))
    with pytest.raises(InputError, match="per-sample output"):
        backend.step([Term(score_function_loss, (out.log_prob.clone(), torch.ones(4)))])


@pytest.mark.parametrize("kind", ["discrete", "continuous", "gsde"])
@pytest.mark.parametrize("num_envs", [1, 8, 40])
def test_numpy_acting_is_the_torch_policys(kind, num_envs):
    policy = _policy(kind)
    backend = NumpyBackend(policy)
    obs = torch.randn(num_envs, OBS_DIM)
    if kind == "gsde":
        policy.actor.reset_noise(num_envs, torch.Generator().manual_seed(9))
    actions, log_prob, value = backend.act(obs.numpy(), generator=torch.Generator().manual_seed(3))
    expected_actions, expected_log_prob, expected_value = policy.act(obs, generator=torch.Generator().manual_seed(3))
    if kind == "discrete":  # the same draws give the same actions
        assert np.array_equal(actions, expected_actions.numpy())
    else:
        np.testing.assert_allclose(actions, expected_actions.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_prob, expected_log_prob.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value, expected_value.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backend.value(obs.numpy()), value, rtol=0, atol=0)
    mode, _, _ = backend.act(obs.numpy(), deterministic=True)
    expected_mode, _, _ = policy.act(obs, deterministic=True)
    np.testing.assert_allclose(mode, expected_mode.numpy(), rtol=1e-5, atol=1e-6)


def test_numpy_acting_with_masks():
    backend = NumpyBackend(_policy("discrete"))
    mask = np.array([[True, False, True, False]] * 50 + [[False, True, False, False]] * 50)
    actions, log_prob, _ = backend.act(np.random.default_rng(0).standard_normal((100, OBS_DIM)).astype(np.float32), mask)
    assert mask[np.arange(100), actions].all()
    assert (log_prob[50:] == 0).all()  # the only allowed action has probability 1
    with pytest.raises(InputError, match="no action"):
        backend.act(np.zeros((2, OBS_DIM), np.float32), np.zeros((2, 4), dtype=bool))


def test_the_numpy_backend_follows_the_weights_and_refuses_replaced_ones():
    policy = _policy("discrete")
    backend = NumpyBackend(policy)
    obs = np.random.default_rng(0).standard_normal((8, OBS_DIM)).astype(np.float32)
    policy.load_state_dict({k: v + 1.0 for k, v in policy.state_dict().items()})
    with torch.no_grad():
        np.testing.assert_allclose(backend.value(obs), policy.critic(torch.from_numpy(obs)).numpy(), rtol=1e-5, atol=1e-5)
    backend.check_current()
    policy.double()  # new tensors: the backend no longer views them
    from policygrad.errors import TrainingError

    with pytest.raises(TrainingError, match="replaced"):
        backend.check_current()


# --- the loss derivatives against autograd ------------------------------------------------------


def _autograd(fn, x: torch.Tensor) -> tuple[float, np.ndarray]:
    x = x.clone().requires_grad_(True)
    loss = fn(x)
    (grad,) = torch.autograd.grad(loss, x)
    return float(loss.detach()), grad.numpy()


def _check(loss_fn, x: torch.Tensor, *rest) -> None:
    want_loss, want_grad = _autograd(lambda v: loss_fn(v, *rest), x)
    args = [r.numpy() if isinstance(r, torch.Tensor) else r for r in rest]
    got_loss, got_grad = DERIVATIVES[loss_fn](x.numpy(), *args)
    assert got_loss == pytest.approx(want_loss, abs=1e-12)
    np.testing.assert_allclose(got_grad, want_grad, rtol=0, atol=1e-12)


def test_clipped_surrogate_derivative_is_autograds_including_ties_and_the_clip_edges():
    old = torch.zeros(8, dtype=torch.float64)
    # ρ = 1 (a tie inside the clip), at both edges, outside on both sides, for A of either sign
    ratio = torch.tensor([1.0, 1.2, 0.8, 1.5, 0.5, 1.5, 0.5, 1.1], dtype=torch.float64)
    advantages = torch.tensor([0.7, 1.3, -0.4, 2.0, 2.0, -1.0, -1.0, 0.0], dtype=torch.float64)
    _check(clipped_surrogate, ratio.log(), old, advantages, 0.2)


def test_importance_kl_score_and_entropy_derivatives_are_autograds():
    g = torch.Generator().manual_seed(0)
    log_prob, old, advantages = (torch.randn(9, generator=g, dtype=torch.float64) * 0.3 for _ in range(3))
    _check(importance_surrogate, log_prob, old, advantages)
    _check(kl_penalty, log_prob, old, 0.7)
    _check(score_function_loss, log_prob, advantages)
    _check(entropy_bonus, torch.rand(9, generator=g, dtype=torch.float64), 0.05)


@pytest.mark.parametrize("clip", [None, 0.3])
def test_value_loss_derivative_is_autograds(clip):
    values = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5, 0.25], dtype=torch.float64)
    returns = torch.tensor([0.5, 0.0, 2.5, 1.0, 0.5, -3.0], dtype=torch.float64)
    old = torch.tensor([0.1, 0.5, 2.0, -0.9, 0.5, 0.25], dtype=torch.float64)
    _check(value_loss, values, returns, old, clip)


def test_every_loss_an_update_uses_has_a_derivative():
    assert set(DERIVATIVES) == {score_function_loss, importance_surrogate, clipped_surrogate, kl_penalty,
                                entropy_bonus, value_loss}


# --- whole updates on either backend ------------------------------------------------------------------


def _rollout(policy, kind: str, num_steps: int = 16, num_envs: int = 4, seed: int = 0) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    dtype = next(policy.parameters()).dtype
    obs = torch.randn(num_steps, num_envs, OBS_DIM, generator=g, dtype=dtype)
    with torch.no_grad():
        dist, values = policy(obs.reshape(-1, OBS_DIM))
        actions = dist.sample(g)
        log_probs = dist.log_prob(actions).reshape(num_steps, num_envs)
    actions = actions.reshape(num_steps, num_envs, *actions.shape[1:])
    values = values.reshape(num_steps, num_envs)
    rewards = torch.randn(num_steps, num_envs, generator=g, dtype=dtype)
    u = torch.rand(num_steps, num_envs, generator=g)
    terminated, truncated = u < 0.08, (u >= 0.08) & (u < 0.12)
    next_values = torch.cat([values[1:], torch.zeros(1, num_envs, dtype=dtype)])
    return Rollout(
        observations=obs, actions=actions, log_probs=log_probs, rewards=rewards, terminated=terminated,
        truncated=truncated, values=values, next_values=next_values,
        episode_step=torch.zeros(num_steps, num_envs, dtype=torch.long), action_masks=None, valid=None,
    )


CASES = [
    ("ppo", "discrete", {}),
    ("ppo", "continuous", {}),
    ("ppo", "gsde", {}),
    ("ppo", "discrete", {"clip_vloss": True, "ent_coef": 0.01, "max_grad_norm": 0.05, "minibatch_size": 24}),
    ("ppo", "continuous", {"kl_penalty": True, "normalize_advantages": False, "ent_coef": 0.02}),
    ("a2c", "discrete", {"ent_coef": 0.01}),
    ("a2c", "continuous", {"normalize_advantages": True, "optimizer": "adam"}),
    ("reinforce", "discrete", {"use_baseline": False}),
    ("reinforce", "continuous", {}),
    ("impala", "discrete", {"ent_coef": 0.01}),
    ("impala", "gsde", {"rho_bar": 0.9, "c_bar": 0.5, "trace_lambda": 0.9, "optimizer": "adam"}),
]


@pytest.mark.parametrize("algo,kind,overrides", CASES)
def test_updates_are_the_same_on_both_backends(algo, kind, overrides):
    small = {"num_envs": 4, "num_steps": 16, "hidden_sizes": (8, 7)}
    if algo == "ppo":
        small.update(minibatch_size=16, num_epochs=3)
    results = []
    for backend in ("numpy", "torch"):
        policy = _policy(kind, hidden_sizes=(8, 7), dtype=torch.float64)
        algorithm = make_algorithm(algo, policy, make_config(algo, {**small, **overrides, "backend": backend}), 10)
        assert algorithm.backend.name == backend
        torch.manual_seed(3)
        metrics = [algorithm.update(_rollout(policy, kind, seed=s)) for s in range(3)]
        results.append((metrics, [p.detach().clone() for p in policy.parameters()]))
    (numpy_metrics, numpy_params), (torch_metrics, torch_params) = results
    for got, want in zip(numpy_params, torch_params):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    for got, want in zip(numpy_metrics, torch_metrics):
        assert got.keys() == want.keys()
        for key in want:
            if np.isnan(want[key]):
                assert np.isnan(got[key]), key
            else:
                assert got[key] == pytest.approx(want[key], rel=1e-7, abs=1e-9), key


@pytest.mark.parametrize("algo,optimizer", [("a2c", "rmsprop"), ("a2c", "adam"), ("ppo", "adam")])
def test_optimiser_states_are_torch_optims_and_load_across_backends(algo, optimizer):
    # Both backends' optimisers write torch.optim's state dict; a state saved by one, loaded into
    # the other in the middle of a run (a resume), carries on exactly as the first would.
    small = {"num_envs": 4, "num_steps": 16, "hidden_sizes": (8, 7), "optimizer": optimizer}
    if algo == "ppo":
        small.update(minibatch_size=16, num_epochs=2)

    def snapshot(state_dict):
        return {"state": {k: {n: v.clone() for n, v in st.items()} for k, st in state_dict["state"].items()},
                "param_groups": state_dict["param_groups"]}

    runs = {}
    for first, second in (("numpy", "torch"), ("torch", "numpy"), ("numpy", "numpy")):
        policy = _policy("discrete", dtype=torch.float64)
        algorithm = make_algorithm(algo, policy, make_config(algo, {**small, "backend": first}), 10)
        torch.manual_seed(5)
        for s in range(2):
            algorithm.update(_rollout(policy, "discrete", seed=s))
        saved = snapshot(algorithm.optimizer.state_dict())
        params = {k: v.clone() for k, v in policy.state_dict().items()}
        resumed_policy = _policy("discrete", dtype=torch.float64, seed=1)
        resumed_policy.load_state_dict(params)
        resumed = make_algorithm(algo, resumed_policy, make_config(algo, {**small, "backend": second}), 10)
        resumed.optimizer.load_state_dict(snapshot(saved))
        resumed.updates = 2
        torch.manual_seed(7)
        resumed.update(_rollout(resumed_policy, "discrete", seed=7))
        runs[(first, second)] = (saved, [p.detach().clone() for p in resumed_policy.parameters()])
    reference_state, reference_params = runs[("torch", "numpy")]
    assert len(reference_state["state"]) == len(reference_params)  # a state entry for every parameter
    for key, (state, params) in runs.items():
        assert state["state"].keys() == reference_state["state"].keys()
        for index, entry in reference_state["state"].items():
            assert state["state"][index].keys() == entry.keys()
            for name, value in entry.items():
                torch.testing.assert_close(state["state"][index][name], value, rtol=1e-9, atol=1e-12)
        for got, want in zip(params, reference_params):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


# --- resolution -----------------------------------------------------------------------------------------


def test_auto_takes_numpy_where_it_can_and_torch_otherwise_with_a_reason():
    assert resolve_backend("auto", _policy("discrete"))[0] == "numpy"
    assert resolve_backend("auto", _policy("gsde"))[0] == "numpy"
    for policy, words in (
        (make_actor_critic(OBS_SPACE, gym.spaces.MultiDiscrete([2, 3])), "MLPMultiCategoricalPolicy"),
        (make_actor_critic(OBS_SPACE, SPACES["discrete"], activation="elu"), "elu"),
        (_policy("discrete").to(torch.float16), "float16"),
    ):
        name, reason = resolve_backend("auto", policy)
        assert name == "torch" and words in reason
        with pytest.raises(InputError, match=f"backend=numpy cannot serve this run: .*{words}"):
            resolve_backend("numpy", policy)
    name, reason = resolve_backend("auto", _policy("discrete"), "second derivatives")
    assert name == "torch" and "second derivatives" in reason
    assert resolve_backend("torch", _policy("discrete")) == ("torch", "requested")


@pytest.mark.parametrize("algo", ["npg", "trpo"])
def test_trust_region_methods_refuse_the_numpy_backend(algo):
    config = make_config(algo, {"num_envs": 2, "num_steps": 8, "minibatch_size": 16, "backend": "numpy"})
    with pytest.raises(InputError, match="backend=numpy cannot serve this run: npg and trpo, .*Fisher"):
        make_algorithm(algo, _policy("discrete"), config, 1)
    assert make_algorithm(algo, _policy("discrete"), make_config(algo, {"num_envs": 2, "num_steps": 8, "minibatch_size": 16}), 1).backend.name == "torch"


# --- pieces of the update ----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_steps", [1, 5, 128])
def test_discounted_cumsum_with_and_without_a_graph_agree(num_steps: int) -> None:
    torch.manual_seed(7)
    x, factors = torch.randn(num_steps, 8), torch.rand(num_steps, 8)
    with_graph = discounted_cumsum(x.clone().requires_grad_(), factors)  # on torch tensors
    assert torch.equal(discounted_cumsum(x, factors), with_graph.detach())  # on NumPy views


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gae_and_td_errors_on_numpy_views_are_the_torch_expressions(dtype) -> None:
    # With a graph the pure functions run on torch tensors; without, on NumPy views of them: one
    # expression, two array libraries, the same numbers (NaN bootstraps at terminations ignored).
    g = torch.Generator().manual_seed(11)
    rewards, values, next_values = (torch.randn(64, 8, generator=g, dtype=dtype) for _ in range(3))
    u = torch.rand(64, 8, generator=g)
    terminated, truncated = u < 0.1, (u > 0.1) & (u < 0.15)
    next_values[terminated] = float("nan")
    plain = gae(rewards, values, next_values, terminated, truncated, 0.97, 0.9)
    graph = gae(rewards, values.clone().requires_grad_(), next_values, terminated, truncated, 0.97, 0.9)
    assert plain.dtype == dtype and torch.isfinite(plain).all()
    torch.testing.assert_close(plain, graph.detach(), rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-6)
    deltas = td_errors(rewards, values, next_values, terminated, 0.97)
    torch.testing.assert_close(deltas, td_errors(rewards, values.clone().requires_grad_(), next_values, terminated,
                                                 0.97).detach())


def test_batch_slices_of_a_shuffle_are_the_shuffled_minibatches() -> None:
    torch.manual_seed(8)
    batch = Batch(torch.randn(10, 4), torch.randint(0, 2, (10,)), None, *torch.randn(4, 10))
    perm = torch.randperm(10)
    for a, b in zip(batch.index(perm).slice(4, 8).__dict__.values(), batch.index(perm[4:8]).__dict__.values()):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_ppo_metrics_of_one_minibatch_step_are_those_before_the_step(backend) -> None:
    # One epoch of one minibatch: the ratio is 1 when it is evaluated (nothing has moved yet), so
    # the KL estimate and the clip fraction are exactly 0 and the entropy is π_old's.
    policy = _policy("discrete")
    config = make_config("ppo", {"num_envs": 4, "num_steps": 16, "minibatch_size": 64, "num_epochs": 1,
                                 "hidden_sizes": (8, 7), "backend": backend})
    algorithm = make_algorithm("ppo", policy, config, 1)
    rollout = _rollout(policy, "discrete")
    with torch.no_grad():
        entropy = policy.distribution(rollout.observations.reshape(-1, OBS_DIM)).entropy().mean()
    metrics = algorithm.update(rollout)
    # (the rollout's log π_old came from the torch modules: equal up to float rounding)
    assert metrics["approx_kl"] == pytest.approx(0.0, abs=1e-9) and metrics["clip_fraction"] == 0.0
    assert metrics["epochs"] == 1
    assert metrics["entropy"] == pytest.approx(float(entropy), rel=1e-6)
    assert metrics["policy_loss"] == pytest.approx(0.0, abs=1e-6)  # −mean Â of standardised Â


def test_standardize_single_sample_is_only_centred():
    assert standardize(torch.tensor([3.0])).item() == 0.0


@pytest.mark.parametrize("kind", ["discrete", "continuous", "gsde"])
def test_acting_follows_optimiser_steps_and_prepare_follows_any_change(kind):
    policy = _policy(kind)
    backend = NumpyBackend(policy, "adam", learning_rate=0.1)
    obs = np.random.default_rng(1).standard_normal((6, OBS_DIM)).astype(np.float32)

    def check():
        with torch.no_grad():
            np.testing.assert_allclose(backend.act(obs, deterministic=True)[2], policy.critic(torch.from_numpy(obs)).numpy(),
                                       rtol=1e-5, atol=1e-5)
            mode = backend.act(obs, deterministic=True)[0]
            expected = policy.act(torch.from_numpy(obs), deterministic=True)[0].numpy()
            np.testing.assert_allclose(mode, expected, rtol=1e-5, atol=1e-5)

    check()
    x = torch.from_numpy(obs)
    actions = torch.from_numpy(backend.act(obs)[0])
    out = backend.evaluate(x, actions)
    backend.step([Term(score_function_loss, (out.log_prob, torch.ones(6))), Term(value_loss, (out.value, torch.ones(6)))])
    check()  # after an optimiser step
    policy.load_state_dict({k: v * 0.5 for k, v in policy.state_dict().items()})
    backend.prepare()
    check()  # after a change from outside, once prepared
