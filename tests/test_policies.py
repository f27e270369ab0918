"""Policies: analytic score functions against autograd, E[score] = 0, MLP initialisation, and the
actor-critic built for Gymnasium spaces."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from policygrad.distributions import Categorical, DiagGaussian, MultiCategorical
from policygrad.errors import InputError
from policygrad.policies import (
    MLP,
    ActorCritic,
    LinearGaussianPolicy,
    LinearSoftmaxPolicy,
    MLPCategoricalPolicy,
    MLPGaussianPolicy,
    TabularSoftmaxPolicy,
    ValueFunction,
    make_actor_critic,
)

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _autograd_scores(log_prob_fn, params: list[torch.Tensor], batch: int) -> list[torch.Tensor]:
    """∇ log π(a_i|s_i) for each sample i by autograd: one backward pass per sample."""
    rows = [torch.autograd.grad(log_prob_fn()[i], params) for i in range(batch)]
    return [torch.stack([row[j] for row in rows]) for j in range(len(params))]


# ------------------------------------------------------------------------------------------
# Analytic score functions against autograd (float64)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
def test_linear_softmax_score_matches_autograd(masked):
    g = _gen(1)
    batch, num_actions, d = 6, 4, 5
    policy = LinearSoftmaxPolicy(d, dtype=F64)
    with torch.no_grad():
        policy.theta.copy_(torch.randn(d, generator=g, dtype=F64))
    phi = torch.randn(batch, num_actions, d, generator=g, dtype=F64)
    mask = torch.rand(batch, num_actions, generator=g) < 0.7 if masked else None
    if mask is not None:
        mask[:, 1] = True
    actions = torch.tensor([1, 0, 3, 1, 2, 1]) if not masked else torch.full((batch,), 1)
    score = policy.score(phi, actions, mask)
    (expected,) = _autograd_scores(lambda: policy.log_prob(phi, actions, mask), [policy.theta], batch)
    assert score.shape == (batch, d) and not score.requires_grad
    torch.testing.assert_close(score, expected, rtol=0, atol=1e-10)


def test_linear_softmax_expected_score_is_zero():
    g = _gen(2)
    policy = LinearSoftmaxPolicy(3, dtype=F64)
    with torch.no_grad():
        policy.theta.copy_(torch.randn(3, generator=g, dtype=F64) * 2)
    phi = torch.randn(7, 5, 3, generator=g, dtype=F64)
    probs = policy.distribution(phi).probs  # [7, 5]
    # Σ_a π(a|s) ∇ log π(a|s) = 0 for every s
    expected_score = sum(probs[:, a, None] * policy.score(phi, torch.full((7,), a)) for a in range(5))
    torch.testing.assert_close(expected_score, torch.zeros(7, 3, dtype=F64), rtol=0, atol=1e-12)


def test_linear_gaussian_score_matches_autograd():
    g = _gen(3)
    batch, obs_dim, act_dim = 5, 3, 2
    policy = LinearGaussianPolicy(obs_dim, act_dim, dtype=F64)
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.5)
    obs = torch.randn(batch, obs_dim, generator=g, dtype=F64)
    actions = torch.randn(batch, act_dim, generator=g, dtype=F64)
    score = policy.score(obs, actions)
    names, params = zip(*policy.named_parameters())
    assert set(score) == set(names)
    expected = _autograd_scores(lambda: policy.log_prob(obs, actions), list(params), batch)
    for name, param, grad in zip(names, params, expected):
        assert score[name].shape == (batch, *param.shape)
        torch.testing.assert_close(score[name], grad, rtol=0, atol=1e-10)


def test_linear_gaussian_expected_score_is_zero_by_monte_carlo():
    n = 50_000
    policy = LinearGaussianPolicy(2, 2, log_std_init=math.log(0.7), dtype=F64)
    with torch.no_grad():
        policy.weight.copy_(torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=F64))
        policy.bias.copy_(torch.tensor([0.1, -0.2], dtype=F64))
    obs = torch.tensor([0.8, -1.5], dtype=F64).expand(n, 2)
    actions = policy.distribution(obs).sample(_gen(4))
    for name, samples in policy.score(obs, actions).items():
        samples = samples.reshape(n, -1)
        z = samples.mean(0) / (samples.std(0) / math.sqrt(n))  # z-statistic of E[score] = 0
        assert (z.abs() < 4).all(), (name, z)


def test_tabular_softmax_score_matches_autograd():
    g = _gen(5)
    num_states, num_actions = 4, 3
    policy = TabularSoftmaxPolicy(num_states, num_actions, torch.randn(4, 3, generator=g, dtype=F64))
    states = torch.tensor([0, 3, 3, 1, 2, 0])
    actions = torch.tensor([2, 0, 1, 1, 0, 0])
    score = policy.score(states, actions)
    (expected,) = _autograd_scores(lambda: policy.log_prob(states, actions), [policy.theta], 6)
    assert score.shape == (6, num_states, num_actions)
    torch.testing.assert_close(score, expected, rtol=0, atol=1e-10)


def test_tabular_softmax_expected_score_is_zero_and_table():
    policy = TabularSoftmaxPolicy(3, 4, torch.randn(3, 4, generator=_gen(6), dtype=F64))
    states = torch.arange(3)
    probs = policy.probs()  # [S, A]
    torch.testing.assert_close(policy.distribution(states).probs, probs, rtol=0, atol=1e-15)
    expected_score = sum(probs[:, a, None, None] * policy.score(states, torch.full((3,), a)) for a in range(4))
    torch.testing.assert_close(expected_score, torch.zeros(3, 3, 4, dtype=F64), rtol=0, atol=1e-12)


def test_tabular_defaults_and_bad_input():
    policy = TabularSoftmaxPolicy(2, 5)
    torch.testing.assert_close(policy.probs(), torch.full((2, 5), 0.2))
    with pytest.raises(InputError, match="states"):
        policy.distribution(torch.tensor([0, 2]))
    with pytest.raises(InputError, match="integer"):
        policy.distribution(torch.tensor([0.0]))
    with pytest.raises(InputError, match="actions"):
        policy.score(torch.tensor([0, 1]), torch.tensor([0, 5]))
    with pytest.raises(InputError, match="shape"):
        TabularSoftmaxPolicy(2, 5, torch.zeros(5, 2))


def test_linear_policies_reject_bad_shapes():
    with pytest.raises(InputError, match="phi"):
        LinearSoftmaxPolicy(3).distribution(torch.zeros(2, 4, 2))
    with pytest.raises(InputError, match="actions"):
        LinearSoftmaxPolicy(3).score(torch.zeros(2, 4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="obs"):
        LinearGaussianPolicy(3, 2).distribution(torch.zeros(5, 2))
    with pytest.raises(InputError, match="actions"):
        LinearGaussianPolicy(3, 2).score(torch.zeros(5, 3), torch.zeros(5, 3))


# ------------------------------------------------------------------------------------------
# MLPs
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "gelu"])
def test_mlp_policies_shapes_and_gradients(activation):
    obs = torch.randn(7, 5)
    cat = MLPCategoricalPolicy(5, 3, (16, 8), activation)
    gauss = MLPGaussianPolicy(5, 2, (16,), activation, log_std_init=-0.5)
    value = ValueFunction(5, (16, 16), activation)
    dist_c, dist_g = cat.distribution(obs), gauss.distribution(obs)
    assert isinstance(dist_c, Categorical) and dist_c.probs.shape == (7, 3)
    assert isinstance(dist_g, DiagGaussian) and dist_g.mean.shape == (7, 2)
    torch.testing.assert_close(dist_g.std, torch.full((2,), math.exp(-0.5)))
    assert value(obs).shape == (7,)
    loss = dist_c.entropy().sum() + dist_g.log_prob(torch.zeros(7, 2)).sum() + value(obs).sum()
    loss.backward()
    for module in (cat, gauss, value):
        for name, p in module.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_mlp_orthogonal_initialisation():
    for gain in (0.01, 1.0):
        net = MLP(6, (64, 64), 3, "tanh", output_gain=gain)
        hidden, last = net.layers[1].weight, net.layers[-1].weight
        torch.testing.assert_close(hidden @ hidden.T, 2.0 * torch.eye(64), atol=1e-5, rtol=0)  # gain √2
        torch.testing.assert_close(last @ last.T, gain**2 * torch.eye(3), atol=1e-5, rtol=0)
        assert all((layer.bias == 0).all() for layer in net.layers)


def test_mlp_follows_parameter_updates():
    """The forward pass reads parameters that load_state_dict, deepcopy and functional_call change."""
    net = MLP(3, (8,), 2)
    x = torch.randn(4, 3)
    clone = copy.deepcopy(net)
    with torch.no_grad():
        for p in clone.parameters():
            p.zero_()
    assert (clone(x) == 0).all() and not (net(x) == 0).all()
    zeros = {name: torch.zeros_like(p) for name, p in net.named_parameters()}
    assert (torch.func.functional_call(net, zeros, (x,)) == 0).all()
    net.load_state_dict(clone.state_dict())
    assert (net(x) == 0).all()


def test_unknown_activation_raises():
    with pytest.raises(InputError, match="activation"):
        MLPCategoricalPolicy(3, 2, (8,), "sigmoid")
    with pytest.raises(InputError, match="activation"):
        make_actor_critic(spaces.Box(-1, 1, (3,)), spaces.Discrete(2), activation="swish")


# ------------------------------------------------------------------------------------------
# Actor-critic for Gymnasium spaces
# ------------------------------------------------------------------------------------------

CARTPOLE_OBS = spaces.Box(-np.inf, np.inf, (4,), dtype=np.float32)


def _check_act(ac: ActorCritic, obs, action_shape: tuple[int, ...], action_dtype: torch.dtype, **kwargs) -> None:
    actions, log_prob, value = ac.act(obs, **kwargs)
    n = len(obs)
    assert actions.shape == (n, *action_shape) and actions.dtype == action_dtype
    assert log_prob.shape == (n,) and value.shape == (n,)
    assert log_prob.dtype == value.dtype == torch.float32
    assert not (actions.requires_grad or log_prob.requires_grad or value.requires_grad)
    dist, value_again = ac(obs, kwargs.get("action_mask"))
    torch.testing.assert_close(dist.log_prob(actions), log_prob)
    torch.testing.assert_close(value_again, value)
    assert value_again.requires_grad


def test_actor_critic_box_obs_discrete_actions():
    ac = make_actor_critic(CARTPOLE_OBS, spaces.Discrete(2))
    assert ac.obs_dim == 4 and ac.action_kind == "discrete"
    obs = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    _check_act(ac, obs, (), torch.long)
    _check_act(ac, torch.from_numpy(obs), (), torch.long, deterministic=True)
    assert ac.preprocess(obs).dtype == torch.float32
    mask = torch.tensor([[True, False]] * 8)
    _check_act(ac, obs, (), torch.long, action_mask=mask)
    assert (ac.act(obs, action_mask=mask)[0] == 0).all()
    a1, _, _ = ac.act(obs, generator=_gen(7))
    a2, _, _ = ac.act(obs, generator=_gen(7))
    assert torch.equal(a1, a2)


def test_actor_critic_discrete_obs_is_one_hot():
    ac = make_actor_critic(spaces.Discrete(5, start=2), spaces.Discrete(3), hidden_sizes=(16,))
    assert ac.obs_dim == 5
    obs = np.array([2, 6, 4])
    torch.testing.assert_close(ac.preprocess(obs), torch.eye(5)[[0, 4, 2]])
    _check_act(ac, obs, (), torch.long)
    with pytest.raises(InputError, match="discrete observations"):
        ac.preprocess(np.array([7]))


def test_actor_critic_box_actions_and_multidimensional_obs():
    ac = make_actor_critic(spaces.Box(-1, 1, (2, 3)), spaces.Box(-2, 2, (3,)), log_std_init=-1.0)
    assert ac.obs_dim == 6 and ac.action_kind == "continuous"
    obs = torch.randn(5, 2, 3)
    assert ac.preprocess(obs).shape == (5, 6)
    _check_act(ac, obs, (3,), torch.float32)
    actions, _, _ = ac.act(obs, deterministic=True)
    torch.testing.assert_close(actions, ac.distribution(obs).mean.detach())
    torch.testing.assert_close(dict(ac.named_parameters())["actor.log_std"].detach(), torch.full((3,), -1.0))
    with pytest.raises(InputError, match="shape"):
        ac.act(torch.randn(5, 6))


def test_actor_critic_multidiscrete_actions():
    ac = make_actor_critic(CARTPOLE_OBS, spaces.MultiDiscrete([3, 2, 4]))
    assert ac.action_kind == "multidiscrete"
    obs = torch.randn(8, 4)
    _check_act(ac, obs, (3,), torch.long)
    actions, _, _ = ac.act(torch.randn(2000, 4), generator=_gen(8))
    assert (actions.max(0).values < torch.tensor([3, 2, 4])).all() and (actions >= 0).all()
    assert isinstance(ac.distribution(obs), MultiCategorical)


def test_actor_critic_initialisation_and_separate_networks():
    ac = make_actor_critic(CARTPOLE_OBS, spaces.Discrete(2), hidden_sizes=(64, 64))
    params = dict(ac.named_parameters())
    assert {name.split(".")[0] for name in params} == {"actor", "critic"}
    policy_out, value_out = ac.actor.net.layers[-1].weight, ac.critic.net.layers[-1].weight
    torch.testing.assert_close(policy_out @ policy_out.T, 1e-4 * torch.eye(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(value_out @ value_out.T, torch.eye(1), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "observation_space, action_space, match",
    [
        (spaces.Dict({"x": spaces.Text(4)}), spaces.Discrete(2), "unsupported sub-space at 'x'"),
        (spaces.Text(3), spaces.Discrete(2), "unsupported observation space Text"),
        (CARTPOLE_OBS, spaces.Tuple((spaces.Discrete(2),)), "unsupported action space Tuple"),
        (CARTPOLE_OBS, spaces.MultiBinary((2, 2)), "1-D"),
        (CARTPOLE_OBS, spaces.Discrete(3, start=1), "start at 0"),
        (CARTPOLE_OBS, spaces.Box(-1, 1, (2, 2)), "1-D"),
    ],
)
def test_unsupported_spaces_raise(observation_space, action_space, match):
    with pytest.raises(InputError, match=match):
        make_actor_critic(observation_space, action_space)


def test_gaussian_actor_rejects_action_mask():
    ac = make_actor_critic(CARTPOLE_OBS, spaces.Box(-1, 1, (2,)))
    with pytest.raises(InputError, match="mask"):
        ac.act(torch.zeros(3, 4), action_mask=torch.ones(3, 2, dtype=torch.bool))


def test_ortho_init_false_keeps_pytorchs_default_initialisation() -> None:
    from policygrad.policies import make_actor_critic

    obs, act = spaces.Box(-1, 1, (17,)), spaces.Box(-1, 1, (6,))
    torch.manual_seed(0)
    ortho = make_actor_critic(obs, act, (256, 256), "relu")
    torch.manual_seed(0)
    default = make_actor_critic(obs, act, (256, 256), "relu", ortho_init=False)
    w_ortho, w_default = ortho.actor.net.layers[1].weight, default.actor.net.layers[1].weight
    # Orthogonal with gain √2: W Wᵀ = 2 I. PyTorch's default: U(±1/√fan_in), whose rows are not
    # orthogonal and whose biases are not zero.
    eye = torch.eye(256)
    torch.testing.assert_close(w_ortho @ w_ortho.T, 2 * eye, atol=1e-4, rtol=0)
    assert (w_default @ w_default.T - (w_default @ w_default.T).diag().diag()).abs().max() > 0.05
    assert w_default.abs().max() <= 1 / 256**0.5 and default.actor.net.layers[1].bias.abs().max() > 0
    assert default.actor.net.layers[-1].weight.abs().max() > 0.01 * ortho.actor.net.layers[-1].weight.abs().max()
