"""The NumPy training path (policygrad.numpy_grad) against autograd.

Each gradient of :class:`NumpyActorCritic` is checked against autograd's in float64 to 1e-10, the
loss-gradient helpers against the derivatives of policygrad.losses' functions (ties included),
and whole PPO / A2C / REINFORCE updates against the autograd path from the same state and seed.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from policygrad.algorithms import make_algorithm, make_config
from policygrad.losses import approx_kl, clipped_surrogate, importance_surrogate, kl_penalty, value_loss
from policygrad.numpy_grad import (
    NumpyActorCritic,
    clipped_surrogate_grad,
    importance_kl_grad,
    standardize,
    value_loss_grad,
)
from policygrad.policies import make_actor_critic
from policygrad.rollout import Rollout

OBS_DIM = 5
SPACES = {
    "discrete": gym.spaces.Discrete(4),
    "continuous": gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
}


def _policy(kind: str, activation: str = "tanh", hidden_sizes=(8, 7), dtype=torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    policy = make_actor_critic(obs_space, SPACES[kind], hidden_sizes=hidden_sizes, activation=activation)
    if kind == "continuous":
        with torch.no_grad():
            policy.actor.log_std.copy_(torch.tensor([-0.3, 0.1, 0.4]))
    return policy.to(dtype)


def _actions(kind: str, policy, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    with torch.no_grad():
        return policy.distribution(x).sample(g)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("kind,masked", [("discrete", False), ("discrete", True), ("continuous", False)])
def test_forward_and_gradients_are_autograds(kind, activation, masked):
    policy = _policy(kind, activation, dtype=torch.float64)
    net = NumpyActorCritic.of(policy)
    assert net is not None
    g = torch.Generator().manual_seed(1)
    n = 33
    x = torch.randn(n, OBS_DIM, generator=g, dtype=torch.float64)
    mask = None
    if masked:
        mask = torch.rand(n, 4, generator=g) < 0.6
        mask[torch.arange(n), torch.randint(0, 4, (n,), generator=g)] = True
    with torch.no_grad():
        actions = policy.distribution(x, mask).sample(g)
    d_lp, d_h, d_v = (torch.randn(n, generator=g, dtype=torch.float64) for _ in range(3))
    # |∂L/∂H| < 2 (in training it is c_H / B): autograd's entropy backward multiplies it by a masked
    # action's log π (half the most negative float), which overflows to -inf from 2 on.
    d_h = d_h.clamp(-1.5, 1.5)

    dist = policy.actor.distribution(x, mask)
    log_prob, entropy, value = dist.log_prob(actions), dist.entropy(), policy.critic(x)
    loss = (d_lp * log_prob).sum() + (d_h * entropy).sum() + (d_v * value).sum()
    expected = torch.autograd.grad(loss, net.params)

    f = net.forward(x.numpy(), actions.numpy(), None if mask is None else mask.numpy())
    np.testing.assert_allclose(f.log_prob, log_prob.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(f.entropy, entropy.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(f.value, value.detach().numpy(), rtol=0, atol=1e-10)
    grads = net.backward(f, d_lp.numpy(), d_h.numpy(), d_v.numpy())
    for got, want, p in zip(grads, expected, net.params):
        assert p.grad is got
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-10)


def test_terms_left_out_have_no_gradient():
    policy = _policy("continuous", dtype=torch.float64)
    net = NumpyActorCritic.of(policy)
    x = torch.randn(6, OBS_DIM, dtype=torch.float64)
    actions = torch.randn(6, 3, dtype=torch.float64)
    d_lp = torch.randn(6, dtype=torch.float64)
    log_prob = policy.actor.distribution(x).log_prob(actions)
    expected = torch.autograd.grad((d_lp * log_prob).sum(), net.params, allow_unused=True)
    grads = net.backward(net.forward(x.numpy(), actions.numpy()), d_lp.numpy(), None, None)
    for got, want in zip(grads, expected):
        want = torch.zeros_like(got) if want is None else want
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-10)


def test_policies_without_a_numpy_path():
    obs_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    assert NumpyActorCritic.of(make_actor_critic(obs_space, gym.spaces.MultiDiscrete([2, 3]))) is None
    assert NumpyActorCritic.of(make_actor_critic(obs_space, SPACES["discrete"], activation="elu")) is None
    policy = _policy("discrete")
    assert NumpyActorCritic.of(policy) is NumpyActorCritic.of(policy)  # cached


def _grad(fn, log_prob: torch.Tensor) -> tuple[float, np.ndarray]:
    log_prob = log_prob.clone().requires_grad_(True)
    loss = fn(log_prob)
    (grad,) = torch.autograd.grad(loss, log_prob)
    return float(loss.detach()), grad.numpy()


def test_clipped_surrogate_gradient_is_torchs_including_ties_and_the_clip_edges():
    eps = 0.2
    old = torch.zeros(8, dtype=torch.float64)
    # ρ = 1 (a tie inside the clip), at both edges, outside on both sides, for A of either sign
    ratio = torch.tensor([1.0, 1.2, 0.8, 1.5, 0.5, 1.5, 0.5, 1.1], dtype=torch.float64)
    advantages = torch.tensor([0.7, 1.3, -0.4, 2.0, 2.0, -1.0, -1.0, 0.0], dtype=torch.float64)
    log_prob = ratio.log()
    loss, grad = _grad(lambda lp: clipped_surrogate(lp, old, advantages, eps), log_prob)
    got_loss, got_grad, got_ratio = clipped_surrogate_grad(log_prob.numpy(), old.numpy(), advantages.numpy(), eps)
    assert got_loss == pytest.approx(loss, abs=1e-12)
    np.testing.assert_allclose(got_grad, grad, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_ratio, ratio.numpy(), rtol=1e-12)


def test_kl_penalty_surrogate_gradient_is_torchs():
    g = torch.Generator().manual_seed(0)
    log_prob, old, advantages = (torch.randn(9, generator=g, dtype=torch.float64) * 0.3 for _ in range(3))
    beta = 0.7
    loss, grad = _grad(lambda lp: importance_surrogate(lp, old, advantages) + kl_penalty(lp, old, beta), log_prob)
    got_loss, got_grad, _ = importance_kl_grad(log_prob.numpy(), old.numpy(), advantages.numpy(), beta)
    assert got_loss == pytest.approx(loss, abs=1e-12)
    np.testing.assert_allclose(got_grad, grad, rtol=0, atol=1e-12)
    # the penalty is β times the k3 estimate that PPO logs as approx_kl (nonzero here: ρ ≠ 1)
    kl = float(approx_kl(log_prob, old))
    assert kl > 1e-3
    assert float(kl_penalty(log_prob, old, beta)) == pytest.approx(beta * kl, rel=1e-12)


@pytest.mark.parametrize("clip", [None, 0.3])
def test_value_loss_gradient_is_torchs(clip):
    values = torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5, 0.25], dtype=torch.float64)
    returns = torch.tensor([0.5, 0.0, 2.5, 1.0, 0.5, -3.0], dtype=torch.float64)
    old = torch.tensor([0.1, 0.5, 2.0, -0.9, 0.5, 0.25], dtype=torch.float64)
    v = values.clone().requires_grad_(True)
    loss = value_loss(v, returns, old, clip)
    (grad,) = torch.autograd.grad(loss, v)
    got_loss, got_grad = value_loss_grad(values.numpy(), returns.numpy(), old.numpy(), clip)
    assert got_loss == pytest.approx(float(loss.detach()), abs=1e-12)
    np.testing.assert_allclose(got_grad, grad.numpy(), rtol=0, atol=1e-12)


def test_standardize_is_the_algorithms():
    from policygrad.algorithms.base import standardize as torch_standardize

    x = torch.randn(17, dtype=torch.float64)
    np.testing.assert_allclose(standardize(x.numpy()), torch_standardize(x).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(standardize(x[:1].numpy()), torch_standardize(x[:1]).numpy())


# --- whole updates: the NumPy path against autograd ----------------------------------------------


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
    ("ppo", "discrete", {"clip_vloss": True, "ent_coef": 0.01, "max_grad_norm": 0.05, "minibatch_size": 24}),
    ("ppo", "continuous", {"kl_penalty": True, "normalize_advantages": False, "ent_coef": 0.02}),
    ("a2c", "discrete", {"ent_coef": 0.01}),
    ("a2c", "continuous", {"normalize_advantages": True, "optimizer": "adam"}),
    ("reinforce", "discrete", {"use_baseline": False}),
    ("reinforce", "continuous", {}),
]


@pytest.mark.parametrize("algo,kind,overrides", CASES)
def test_updates_match_the_autograd_path(algo, kind, overrides):
    small = {"num_envs": 4, "num_steps": 16, "hidden_sizes": (8, 7)}
    if algo == "ppo":
        small.update(minibatch_size=16, num_epochs=3)
    results = []
    for use_numpy in (True, False):
        policy = _policy(kind, hidden_sizes=(8, 7), dtype=torch.float64)
        config = make_config(algo, {**small, **overrides})
        algorithm = make_algorithm(algo, policy, config, 10)
        algorithm.use_numpy = use_numpy
        assert (algorithm.numpy_path() is not None) == use_numpy
        torch.manual_seed(3)
        metrics = [algorithm.update(_rollout(policy, kind, seed=s)) for s in range(3)]
        results.append((metrics, [p.detach().clone() for p in policy.parameters()]))
    (fast_metrics, fast_params), (plain_metrics, plain_params) = results
    for got, want in zip(fast_params, plain_params):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    for got, want in zip(fast_metrics, plain_metrics):
        assert got.keys() == want.keys()
        for key in want:
            if np.isnan(want[key]):
                assert np.isnan(got[key]), key
            else:
                # the autograd path sums PPO's epoch metrics in a float32 tensor
                assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key


def test_default_path_is_numpy_for_categorical_and_gaussian_actors_unless_turned_off():
    for kind in ("discrete", "continuous"):
        config = make_config("ppo", {"num_envs": 4, "num_steps": 16, "minibatch_size": 16, "hidden_sizes": (8, 7)})
        algorithm = make_algorithm("ppo", _policy(kind), config, 10)
        assert algorithm.numpy_path() is not None, kind
        algorithm.use_numpy = False
        assert algorithm.numpy_path() is None, kind


@pytest.mark.parametrize("algo,optimizer", [("a2c", "rmsprop"), ("a2c", "adam"), ("ppo", "adam")])
def test_the_flat_optimiser_step_keeps_torch_state_and_survives_a_state_load(algo, optimizer):
    # The NumPy path steps the optimiser on flat buffers holding its state: the state_dict it
    # leaves (moments, step counts) must be the autograd path's, and loading a state_dict in the
    # middle (a checkpoint resume) must carry on exactly as the autograd path does.
    small = {"num_envs": 4, "num_steps": 16, "hidden_sizes": (8, 7), "optimizer": optimizer}
    if algo == "ppo":
        small.update(minibatch_size=16, num_epochs=2)
    runs = []
    for use_numpy in (True, False):
        policy = _policy("discrete", dtype=torch.float64)
        algorithm = make_algorithm(algo, policy, make_config(algo, small), 10)
        algorithm.use_numpy = use_numpy
        torch.manual_seed(5)
        for s in range(2):
            algorithm.update(_rollout(policy, "discrete", seed=s))
        def snapshot(state_dict):  # load_state_dict adopts the tensors it is given, as torch.optim's
            return {"state": {k: {n: v.clone() for n, v in st.items()} for k, st in state_dict["state"].items()},
                    "param_groups": state_dict["param_groups"]}

        saved = snapshot(algorithm.optimizer.state_dict())
        params = [p.detach().clone() for p in policy.parameters()]
        algorithm.update(_rollout(policy, "discrete", seed=7))  # moves on ...
        with torch.no_grad():  # ... and is put back, as a resume does
            for p, q in zip(policy.parameters(), params):
                p.copy_(q)
        algorithm.optimizer.load_state_dict(snapshot(saved))
        algorithm.update(_rollout(policy, "discrete", seed=7))
        runs.append((saved, algorithm.optimizer.state_dict(), [p.detach().clone() for p in policy.parameters()]))
    (fast_saved, fast_state, fast_params), (plain_saved, plain_state, plain_params) = runs
    for saved_a, saved_b in ((fast_saved, plain_saved), (fast_state, plain_state)):
        assert saved_a["state"].keys() == saved_b["state"].keys()
        assert len(saved_b["state"]) == len(plain_params)  # one state per parameter, none left out
        for key in saved_b["state"]:
            assert saved_a["state"][key].keys() == saved_b["state"][key].keys() != set()
            for name, value in saved_b["state"][key].items():
                torch.testing.assert_close(saved_a["state"][key][name], value, rtol=1e-9, atol=1e-12)
    for got, want in zip(fast_params, plain_params):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mean_and_standardize_are_numpys_bit_for_bit(dtype) -> None:
    from policygrad.numpy_grad import mean, standardize

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 8, 40, 64, 129, 256, 1000, 4097):
        x = (rng.standard_normal(n) * 3 + 1).astype(dtype)
        assert mean(x) == x.mean() and mean(x > 1) == (x > 1).mean()
        expected = x - x.mean() if n < 2 else (x - x.mean()) / (x.std(ddof=1) + dtype(1e-8))
        assert np.array_equal(standardize(x), expected)
