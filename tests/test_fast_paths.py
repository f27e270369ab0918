"""The fast paths compute what the plain ones do: the actor-critic's one-node forward against
autograd through the modules, the NumPy rollout actor against the torch distributions, the kernel
optimiser and gradient clipping against torch.optim and torch.nn.utils bit for bit, the NumPy
recursion of discounted_cumsum against the torch one, and PPO's per-epoch metrics against the
minibatch-by-minibatch means."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gymnasium import spaces

from policygrad.algorithms.base import Batch, KernelOptimizer, clip_grad_norm
from policygrad.policies import (
    ActorCritic,
    FlattenObservation,
    MLPCategoricalPolicy,
    MLPGaussianPolicy,
    ValueFunction,
    make_actor_critic,
)
from policygrad.returns import discounted_cumsum

OBS = spaces.Box(-5.0, 5.0, (4,), dtype=np.float32)
ACTION_SPACES = [spaces.Discrete(3), spaces.Box(-1.0, 1.0, (2,)), spaces.MultiDiscrete([2, 3])]


def _loss(dist, values, actions, weights):  # noqa: ANN001, ANN202
    return -(dist.log_prob(actions) * weights).mean() + (values - 1.0).pow(2).mean() - 0.01 * dist.entropy().mean()


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("action_space", ACTION_SPACES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("hidden_sizes", [(64, 64), (16,), ()])
def test_one_node_forward_has_the_gradient_of_the_modules(activation, action_space, hidden_sizes) -> None:
    torch.manual_seed(0)
    ac = make_actor_critic(OBS, action_space, hidden_sizes, activation)
    obs, weights = torch.randn(37, 4), torch.randn(37)
    dist, values = ac(obs)
    actions = dist.sample()
    fast = torch.autograd.grad(_loss(dist, values, actions, weights), list(ac.parameters()))
    plain = torch.autograd.grad(
        _loss(ac.actor.distribution(obs), ac.critic(obs), actions, weights), list(ac.parameters())
    )
    for g_fast, g_plain in zip(fast, plain):
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-5, atol=1e-7)


def test_one_node_forward_shapes_unused_outputs_and_input_gradient() -> None:
    torch.manual_seed(1)
    ac = make_actor_critic(OBS, spaces.Discrete(2), (8, 8))
    obs = torch.randn(5, 3, 4)
    dist, values = ac(obs)  # [T, N, ...] batches keep their shape
    assert dist.logits.shape == (5, 3, 2) and values.shape == (5, 3)
    values.sum().backward()  # the actor's output unused: no gradient reaches it
    assert all(p.grad is None for p in ac.actor.parameters())
    assert all(p.grad is not None for p in ac.critic.parameters())
    x = torch.randn(6, 4, requires_grad=True)  # an input that needs a gradient takes the plain path
    (grad_fast,) = torch.autograd.grad(ac(x)[1].sum(), x)
    (grad_plain,) = torch.autograd.grad(ac.critic(x).sum(), x)
    torch.testing.assert_close(grad_fast, grad_plain)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("action_space", ACTION_SPACES[:2], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("num_envs", [8, 40])  # NumPy and torch matmuls
def test_rollout_actor_acts_as_the_distributions(activation, action_space, num_envs) -> None:
    torch.manual_seed(2)
    ac = make_actor_critic(OBS, action_space, (64, 64), activation)
    obs = torch.randn(num_envs, 4)
    actions, log_prob, value = ac.act(obs, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        dist = ac.actor.distribution(obs)
        expected_actions, _ = dist.sample_and_log_prob(torch.Generator().manual_seed(3))
        torch.testing.assert_close(log_prob, dist.log_prob(actions))
        torch.testing.assert_close(value, ac.critic(obs))
    if isinstance(action_space, spaces.Discrete):  # the same draws give the same actions
        assert torch.equal(actions, expected_actions)
    else:
        torch.testing.assert_close(actions, expected_actions)
    mode, _, _ = ac.act(obs, deterministic=True)
    torch.testing.assert_close(mode, dist.mode())


def test_rollout_actor_with_networks_of_different_depths_and_masks() -> None:
    torch.manual_seed(4)
    for actor_sizes, critic_sizes in [((64, 64), (32,)), ((16,), (8, 8, 8)), ((), (16,)), ((16,), ())]:
        for actor in (MLPCategoricalPolicy(4, 3, actor_sizes), MLPGaussianPolicy(4, 2, actor_sizes)):
            ac = ActorCritic(FlattenObservation((4,)), actor, ValueFunction(4, critic_sizes))
            obs = torch.randn(8, 4)
            actions, log_prob, value = ac.act(obs)
            with torch.no_grad():
                torch.testing.assert_close(log_prob, ac.actor.distribution(obs).log_prob(actions))
                torch.testing.assert_close(value, ac.critic(obs))
    ac = make_actor_critic(OBS, spaces.Discrete(3))
    mask = torch.tensor([[True, False, True]] * 50 + [[False, True, False]] * 50)
    actions, log_prob, _ = ac.act(torch.randn(100, 4), action_mask=mask)
    assert mask[torch.arange(100), actions].all()
    assert (log_prob[50:] == 0).all()  # the only allowed action has probability 1


def test_rollout_actor_follows_the_weights() -> None:
    torch.manual_seed(5)
    ac = make_actor_critic(OBS, spaces.Discrete(2))
    obs = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    actor = ac.rollout_actor()
    with torch.no_grad():
        for p in ac.parameters():
            p.add_(0.1)
    assert ac.rollout_actor() is actor  # the same object, brought up to date
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(actor.value(obs)), ac.critic(torch.from_numpy(obs)))
    ac.load_state_dict({k: v + 1.0 for k, v in ac.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(ac.rollout_actor().value(obs)), ac.critic(torch.from_numpy(obs)))


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_kernel_optimizer_steps_and_state_dict_are_torch_optims(kind: str) -> None:
    torch.manual_seed(6)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    twin = copy.deepcopy(net)
    ours = KernelOptimizer(list(net.parameters()), kind, 1e-2, 1e-5)
    reference = (
        torch.optim.Adam(twin.parameters(), lr=1e-2, eps=1e-5, fused=True)
        if kind == "adam"
        else torch.optim.RMSprop(twin.parameters(), lr=1e-2, alpha=0.99, eps=1e-5, foreach=True)
    )
    for step in range(12):
        x = torch.randn(32, 4)
        for model, optimizer in ((net, ours), (twin, reference)):
            optimizer.zero_grad(set_to_none=True)
            model(x).pow(2).mean().backward()
        norm = clip_grad_norm([p.grad for p in net.parameters()], 0.5)
        assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5, foreach=True))
        for optimizer in (ours, reference):
            optimizer.param_groups[0]["lr"] = 1e-2 * (1 - step / 12)
            optimizer.step()
        if step == 5:  # each loads the other's state dict
            mine, theirs = ours.state_dict(), reference.state_dict()
            assert repr(mine) == repr(theirs)
            ours.load_state_dict(copy.deepcopy(theirs))
            reference.load_state_dict(copy.deepcopy(mine))
    for p, q in zip(net.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError):
        KernelOptimizer(list(net.parameters())[:2], kind, 1e-2, 1e-5).load_state_dict(ours.state_dict())


@pytest.mark.parametrize("num_steps", [1, 5, 128])
def test_discounted_cumsum_numpy_and_torch_recursions_agree(num_steps: int) -> None:
    torch.manual_seed(7)
    x, factors = torch.randn(num_steps, 8), torch.rand(num_steps, 8)
    with_graph = discounted_cumsum(x.clone().requires_grad_(), factors)  # the torch loop
    assert torch.equal(discounted_cumsum(x, factors), with_graph.detach())  # the NumPy loop


def test_batch_slices_of_a_shuffle_are_the_shuffled_minibatches() -> None:
    torch.manual_seed(8)
    batch = Batch(torch.randn(10, 4), torch.randint(0, 2, (10,)), None, *torch.randn(4, 10))
    perm = torch.randperm(10)
    for a, b in zip(batch.index(perm).slice(4, 8).__dict__.values(), batch.index(perm[4:8]).__dict__.values()):
        assert (a is None and b is None) or torch.equal(a, b)


def test_ppo_epoch_means_are_means_over_minibatches() -> None:
    from policygrad.algorithms import make_algorithm, make_config
    from policygrad.losses import approx_kl, clip_fraction

    torch.manual_seed(9)
    ac = make_actor_critic(OBS, spaces.Discrete(2))
    config = make_config("ppo", {"num_envs": 2, "num_steps": 5, "minibatch_size": 4})
    algo = make_algorithm("ppo", ac, config, 1)
    shuffled = Batch(torch.randn(10, 4), torch.randint(0, 2, (10,)), None, *torch.randn(4, 10))
    log_probs = [torch.randn(4), torch.randn(4), torch.randn(2)]  # a short last minibatch
    entropies = [torch.rand(4), torch.rand(4), torch.rand(2)]
    losses = list(torch.randn(9))
    means = algo._epoch_means(shuffled, 4, losses, log_probs, entropies)
    old = shuffled.old_log_probs.split([4, 4, 2])
    expected = [
        torch.stack(losses[0::3]).mean(),
        torch.stack(losses[1::3]).mean(),
        torch.stack([h.mean() for h in entropies]).mean(),
        torch.stack([approx_kl(lp, o) for lp, o in zip(log_probs, old)]).mean(),
        torch.stack([clip_fraction(lp, o, config.clip_eps) for lp, o in zip(log_probs, old)]).mean(),
        torch.stack(losses[2::3]).mean(),
    ]
    torch.testing.assert_close(means, torch.stack(expected))


def test_event_file_crc_is_tensorboards() -> None:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    from policygrad.logging import masked_crc32c

    rng = np.random.default_rng(10)
    for n in [0, 1, 4, 8, 16, 17, 100, 333, 1500]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == reference(data)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_steps", [1, 5, 128])
def test_gae_numpy_and_torch_paths_agree_bit_for_bit(dtype, num_steps: int) -> None:
    from policygrad.returns import gae

    g = torch.Generator().manual_seed(num_steps)
    rewards, values, next_values = (torch.randn(num_steps, 6, generator=g, dtype=dtype) for _ in range(3))
    terminated = torch.rand(num_steps, 6, generator=g) < 0.1
    truncated = torch.rand(num_steps, 6, generator=g) < 0.1
    next_values[terminated] = float("nan")  # ignored at terminations, on both paths
    fast = gae(rewards, values, next_values, terminated, truncated, 0.99, 0.95)
    plain = gae(rewards, values.requires_grad_(True), next_values, terminated, truncated, 0.99, 0.95)  # autograd path
    assert torch.equal(fast, plain.detach())
