"""Policies and value functions: linear and tabular policies with analytic score functions, MLP
policies, and the actor-critic built for Gymnasium spaces.

The score function is s(θ; s, a) = ∇θ log πθ(a | s), the quantity the Policy Gradient Theorem
weighs by Ψ. The linear and tabular policies return it in closed form (no autograd), which the tests
compare with autograd and which exact-gradient checks can use directly.

Shapes: ``[...]`` is any batch shape (``[B]``, ``[T, N]``); A actions, d features, S states,
``obs_dim`` the flattened observation size, D the action dimension.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policygrad.distributions import Categorical, DiagGaussian, MultiCategorical, gsde_log_std
from policygrad.errors import InputError

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "LinearSoftmaxPolicy",
    "LinearGaussianPolicy",
    "TabularSoftmaxPolicy",
    "MLPCategoricalPolicy",
    "MLPGaussianPolicy",
    "MLPGSDEPolicy",
    "MLPMultiCategoricalPolicy",
    "ValueFunction",
    "FlattenObservation",
    "OneHotObservation",
    "ActorCritic",
    "make_actor_critic",
]

Distribution = Categorical | DiagGaussian | MultiCategorical

#: Hidden-layer activations by name.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "elu": F.elu,
    "gelu": F.gelu,
}

# In-place twins, applied to the fresh output of a linear layer (whose backward does not need it).
_INPLACE_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh_,
    "relu": torch.relu_,
    "elu": lambda x: F.elu(x, inplace=True),
    "gelu": F.gelu,
}

_LOG_2PI = math.log(2.0 * math.pi)
_HIDDEN_GAIN = math.sqrt(2.0)
_POLICY_GAIN = 0.01
_VALUE_GAIN = 1.0


def _activation(name: str) -> Callable[[Tensor], Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise InputError(f"unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}") from None


def _check_last_dim(name: str, x: Tensor, size: int) -> None:
    if x.dim() == 0 or x.shape[-1] != size:
        raise InputError(f"{name} has shape {tuple(x.shape)}, expected [..., {size}]")


def _check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if int(value) < 1:
            raise InputError(f"{name} must be a positive integer, got {value}")


def _check_integer(name: str, x: Tensor) -> Tensor:
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise InputError(f"{name} must be an integer tensor, got dtype {x.dtype}")
    return x.long()


# --------------------------------------------------------------------------------------------
# Multi-layer perceptron
# --------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """y = W_L σ(... σ(W_1 x + b_1) ...) + b_L, orthogonally initialised.

    Hidden weights get gain √2, the output layer ``output_gain``, all biases 0 (the initialisation
    of the PPO implementation studies, Engstrom et al. 2020; Andrychowicz et al. 2021).

    Args:
        in_dim: input size.
        hidden_sizes: widths of the hidden layers (empty: a linear map).
        out_dim: output size.
        activation: one of ``ACTIVATIONS``.
        output_gain: gain of the output layer's orthogonal initialisation.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_sizes: Sequence[int],
        out_dim: int,
        activation: str = "tanh",
        output_gain: float = 1.0,
    ) -> None:
        super().__init__()
        hidden_sizes = tuple(int(h) for h in hidden_sizes)
        _check_positive(in_dim=in_dim, out_dim=out_dim)
        if any(h < 1 for h in hidden_sizes):
            raise InputError(f"hidden_sizes must be positive integers, got {hidden_sizes}")
        _activation(activation)  # validates the name
        self.activation = activation
        self._act = _INPLACE_ACTIVATIONS[activation]
        sizes = (int(in_dim), *hidden_sizes, int(out_dim))
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        for i, layer in enumerate(self.layers):
            nn.init.orthogonal_(layer.weight, gain=output_gain if i == len(self.layers) - 1 else _HIDDEN_GAIN)
            nn.init.zeros_(layer.bias)
        # Parameter dicts read directly on the hot path: ``layer.weight`` goes through
        # ``nn.Module.__getattr__`` (about 10× slower), and the dicts are what ``load_state_dict``,
        # ``.to`` and ``torch.func.functional_call`` update.
        self._param_dicts = tuple(layer._parameters for layer in self.layers)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., in_dim] -> [..., out_dim]``."""
        return self.features_and_output(x)[1]

    def features_and_output(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``([..., h_last] the last hidden layer's activations (x itself without hidden layers),
        [..., out_dim] the output)``."""
        *hidden, last = self._param_dicts
        act = self._act
        for p in hidden:
            x = act(F.linear(x, p["weight"], p["bias"]))
        return x, F.linear(x, last["weight"], last["bias"])


# --------------------------------------------------------------------------------------------
# Linear and tabular policies with analytic scores
# --------------------------------------------------------------------------------------------


class LinearSoftmaxPolicy(nn.Module):
    """Linear softmax (Boltzmann) policy over action features: π(a|s) ∝ exp(θ·φ(s, a)).

    Score (Sutton & Barto 2018, eq. 13.9): ∇θ log π(a|s) = φ(s, a) − Σ_b π(b|s) φ(s, b).

    Args:
        num_features: d, the feature size.
        dtype: dtype of θ (None: torch's default); float64 for exact-gradient checks.

    Parameters:
        theta: ``[d]``, initialised to zeros (the uniform policy).
    """

    def __init__(self, num_features: int, *, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        _check_positive(num_features=num_features)
        self.num_features = int(num_features)
        self.theta = nn.Parameter(torch.zeros(self.num_features, dtype=dtype))

    def _check_phi(self, phi: Tensor) -> None:
        if phi.dim() < 2 or phi.shape[-1] != self.num_features:
            raise InputError(f"phi has shape {tuple(phi.shape)}, expected [..., A, {self.num_features}]")

    def logits(self, phi: Tensor) -> Tensor:
        """``phi [..., A, d] -> [..., A]``: θ·φ(s, a)."""
        self._check_phi(phi)
        return phi @ self.theta

    def distribution(self, phi: Tensor, action_mask: Tensor | None = None) -> Categorical:
        """π(·|s) from features ``phi [..., A, d]`` (optional bool ``action_mask [..., A]``)."""
        return Categorical(self.logits(phi), action_mask)

    def log_prob(self, phi: Tensor, actions: Tensor, action_mask: Tensor | None = None) -> Tensor:
        """``[...]`` log π(a|s) for ``phi [..., A, d]`` and integer ``actions [...]``; differentiable in θ."""
        return self.distribution(phi, action_mask).log_prob(actions)

    def score(self, phi: Tensor, actions: Tensor, action_mask: Tensor | None = None) -> Tensor:
        """Analytic ∇θ log π(a|s) = φ(s, a) − Σ_b π(b|s) φ(s, b).

        Args:
            phi: ``[..., A, d]`` features φ(s, ·).
            actions: ``[...]`` integer actions.
            action_mask: optional ``[..., A]`` bool, True where allowed.

        Returns:
            ``[..., d]`` scores, computed without autograd (no graph attached).
        """
        self._check_phi(phi)
        phi = phi.detach()
        probs = Categorical(phi @ self.theta.detach(), action_mask).probs  # [..., A]
        actions = _check_integer("actions", actions)
        if actions.shape != phi.shape[:-2]:
            raise InputError(f"actions have shape {tuple(actions.shape)}, expected {tuple(phi.shape[:-2])}")
        index = actions[..., None, None].expand(*actions.shape, 1, self.num_features)
        phi_a = phi.gather(-2, index).squeeze(-2)  # [..., d]
        expected_phi = (probs.unsqueeze(-2) @ phi).squeeze(-2)  # [..., d]
        return phi_a - expected_phi


class LinearGaussianPolicy(nn.Module):
    """Linear Gaussian policy: a ~ N(W s + b, diag σ²) with a state-independent log σ.

    Scores, with μ = W s + b:
        ∇_W log π = ((a − μ)/σ²) sᵀ,   ∇_b log π = (a − μ)/σ²,   ∇_{log σ} log π = (a − μ)²/σ² − 1.

    Args:
        obs_dim: size of s.
        act_dim: D, size of a.
        log_std_init: initial log σ.
        dtype: parameter dtype (None: torch's default).

    Parameters:
        weight: ``[D, obs_dim]`` W (zeros); bias: ``[D]`` b (zeros); log_std: ``[D]``.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, *, log_std_init: float = 0.0, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        _check_positive(obs_dim=obs_dim, act_dim=act_dim)
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.weight = nn.Parameter(torch.zeros(self.act_dim, self.obs_dim, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(self.act_dim, dtype=dtype))
        self.log_std = nn.Parameter(torch.full((self.act_dim,), float(log_std_init), dtype=dtype))

    def mean(self, obs: Tensor) -> Tensor:
        """``obs [..., obs_dim] -> [..., D]``: μ = W s + b."""
        _check_last_dim("obs", obs, self.obs_dim)
        return F.linear(obs, self.weight, self.bias)

    def distribution(self, obs: Tensor) -> DiagGaussian:
        """N(W s + b, diag σ²) for ``obs [..., obs_dim]``."""
        return DiagGaussian(self.mean(obs), self.log_std)

    def log_prob(self, obs: Tensor, actions: Tensor) -> Tensor:
        """``[...]`` log π(a|s) for ``obs [..., obs_dim]``, ``actions [..., D]``; differentiable."""
        return self.distribution(obs).log_prob(actions)

    def score(self, obs: Tensor, actions: Tensor) -> dict[str, Tensor]:
        """Analytic ∇ log π(a|s) for each parameter.

        Args:
            obs: ``[..., obs_dim]`` states s.
            actions: ``[..., D]`` actions a.

        Returns:
            ``{"weight": [..., D, obs_dim], "bias": [..., D], "log_std": [..., D]}``, keyed as
            ``named_parameters()``; computed without autograd.
        """
        _check_last_dim("obs", obs, self.obs_dim)
        if actions.shape != (*obs.shape[:-1], self.act_dim):
            raise InputError(
                f"actions have shape {tuple(actions.shape)}, expected {(*obs.shape[:-1], self.act_dim)}"
            )
        obs, actions = obs.detach(), actions.detach()
        log_std = self.log_std.detach()
        diff = actions - F.linear(obs, self.weight.detach(), self.bias.detach())  # a − μ, [..., D]
        inv_var = torch.exp(-2.0 * log_std)  # 1/σ², [D]
        grad_mean = diff * inv_var  # (a − μ)/σ²
        return {
            "weight": grad_mean.unsqueeze(-1) * obs.unsqueeze(-2),
            "bias": grad_mean,
            "log_std": diff * grad_mean - 1.0,
        }


class TabularSoftmaxPolicy(nn.Module):
    """Tabular softmax policy: π(a|s) = exp θ[s, a] / Σ_b exp θ[s, b].

    Score: ∇_θ log π(a|s) = onehot(s) ⊗ (onehot(a) − π(·|s)), an ``[S, A]`` matrix per sample.

    Args:
        num_states: S.
        num_actions: A.
        logits: optional ``[S, A]`` initial θ (copied); zeros (the uniform policy) when None.
        dtype: parameter dtype when ``logits`` is None (None: torch's default).

    Parameters:
        theta: ``[S, A]`` the logits θ.
    """

    def __init__(
        self,
        num_states: int,
        num_actions: int,
        logits: Tensor | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_positive(num_states=num_states, num_actions=num_actions)
        self.num_states, self.num_actions = int(num_states), int(num_actions)
        if logits is None:
            theta = torch.zeros(self.num_states, self.num_actions, dtype=dtype)
        else:
            if logits.shape != (self.num_states, self.num_actions):
                raise InputError(
                    f"logits have shape {tuple(logits.shape)}, expected ({self.num_states}, {self.num_actions})"
                )
            if not logits.is_floating_point():
                raise InputError(f"logits must be floating point, got dtype {logits.dtype}")
            theta = logits.detach().clone()
        self.theta = nn.Parameter(theta)

    def probs(self) -> Tensor:
        """``[S, A]`` the whole table π(a|s); differentiable in θ."""
        return torch.softmax(self.theta, dim=-1)

    def _check_states(self, states: Tensor) -> Tensor:
        states = _check_integer("states", states)
        if states.numel() and (int(states.min()) < 0 or int(states.max()) >= self.num_states):
            raise InputError(f"states must lie in [0, {self.num_states}), got values outside it")
        return states

    def distribution(self, states: Tensor, action_mask: Tensor | None = None) -> Categorical:
        """π(·|s) for integer ``states [...]`` (optional bool ``action_mask [..., A]``)."""
        return Categorical(self.theta[self._check_states(states)], action_mask)

    def log_prob(self, states: Tensor, actions: Tensor) -> Tensor:
        """``[...]`` log π(a|s) for integer ``states [...]`` and ``actions [...]``; differentiable."""
        return self.distribution(states).log_prob(actions)

    def score(self, states: Tensor, actions: Tensor) -> Tensor:
        """Analytic ∇_θ log π(a|s) = onehot(s) ⊗ (onehot(a) − π(·|s)).

        Args:
            states: ``[...]`` integer states.
            actions: ``[...]`` integer actions.

        Returns:
            ``[..., S, A]`` scores, computed without autograd.
        """
        states = self._check_states(states)
        actions = _check_integer("actions", actions)
        if actions.shape != states.shape:
            raise InputError(f"actions have shape {tuple(actions.shape)}, expected {tuple(states.shape)}")
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= self.num_actions):
            raise InputError(f"actions must lie in [0, {self.num_actions}), got values outside it")
        theta = self.theta.detach()
        probs = torch.softmax(theta[states], dim=-1)  # [..., A]
        action_part = F.one_hot(actions, self.num_actions).to(theta.dtype) - probs  # [..., A]
        state_part = F.one_hot(states, self.num_states).to(theta.dtype)  # [..., S]
        return state_part.unsqueeze(-1) * action_part.unsqueeze(-2)


# --------------------------------------------------------------------------------------------
# MLP policies and value function
# --------------------------------------------------------------------------------------------


class MLPCategoricalPolicy(nn.Module):
    """π(·|s) = Categorical(MLP(s)) over ``num_actions`` actions (output layer gain 0.01).

    Args:
        obs_dim: size of s.
        num_actions: A.
        hidden_sizes: hidden widths.
        activation: one of ``ACTIVATIONS``.
    """

    def __init__(
        self, obs_dim: int, num_actions: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh"
    ) -> None:
        super().__init__()
        self.obs_dim, self.num_actions = int(obs_dim), int(num_actions)
        self.net = MLP(obs_dim, hidden_sizes, num_actions, activation, output_gain=_POLICY_GAIN)

    def distribution(self, obs: Tensor, action_mask: Tensor | None = None) -> Categorical:
        """π(·|s) for ``obs [..., obs_dim]`` (optional bool ``action_mask [..., A]``)."""
        _check_last_dim("obs", obs, self.obs_dim)
        return self.head(self.net.forward(obs), action_mask)

    def head(self, logits: Tensor, action_mask: Tensor | None = None) -> Categorical:
        """π(·|s) from the network's output ``logits [..., A]``."""
        return Categorical(logits, action_mask)


class MLPMultiCategoricalPolicy(nn.Module):
    """π(a|s) = Π_k Categorical_k(a_k | s) with logits MLP(s) of size Σ n_k (output gain 0.01).

    Args:
        obs_dim: size of s.
        nvec: the numbers of choices n_1, ..., n_K.
        hidden_sizes: hidden widths.
        activation: one of ``ACTIVATIONS``.
    """

    def __init__(
        self, obs_dim: int, nvec: Sequence[int], hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh"
    ) -> None:
        super().__init__()
        self.nvec = tuple(int(n) for n in nvec)
        if not self.nvec or min(self.nvec) < 1:
            raise InputError(f"nvec must be a non-empty sequence of positive integers, got {self.nvec}")
        self.obs_dim = int(obs_dim)
        self.net = MLP(obs_dim, hidden_sizes, sum(self.nvec), activation, output_gain=_POLICY_GAIN)

    def distribution(self, obs: Tensor, action_mask: Tensor | None = None) -> MultiCategorical:
        """π(·|s) for ``obs [..., obs_dim]`` (optional bool ``action_mask [..., Σ n_k]``)."""
        _check_last_dim("obs", obs, self.obs_dim)
        return self.head(self.net.forward(obs), action_mask)

    def head(self, logits: Tensor, action_mask: Tensor | None = None) -> MultiCategorical:
        """π(·|s) from the network's output ``logits [..., Σ n_k]``."""
        return MultiCategorical(logits, self.nvec, action_mask)


class MLPGaussianPolicy(nn.Module):
    """π(·|s) = N(MLP(s), diag σ²) with a state-independent log σ (output gain 0.01).

    Args:
        obs_dim: size of s.
        act_dim: D.
        hidden_sizes: hidden widths.
        activation: one of ``ACTIVATIONS``.
        log_std_init: initial log σ.

    Parameters:
        log_std: ``[D]``.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.net = MLP(obs_dim, hidden_sizes, act_dim, activation, output_gain=_POLICY_GAIN)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), float(log_std_init)))

    def distribution(self, obs: Tensor, action_mask: Tensor | None = None) -> DiagGaussian:
        """N(μ(s), diag σ²) for ``obs [..., obs_dim]``; ``action_mask`` must be None."""
        if action_mask is not None:
            raise InputError("an action mask applies to discrete actions only, not to a Gaussian policy")
        _check_last_dim("obs", obs, self.obs_dim)
        return self.head(self.net.forward(obs))

    def head(self, mean: Tensor, action_mask: Tensor | None = None) -> DiagGaussian:
        """N(μ(s), diag σ²) from the network's output ``mean [..., D]``; ``action_mask`` must be None."""
        if action_mask is not None:
            raise InputError("an action mask applies to discrete actions only, not to a Gaussian policy")
        return DiagGaussian(mean, self._parameters["log_std"])


class MLPGSDEPolicy(nn.Module):
    """π(·|s) = N(μ(s), diag σ(s)²) with generalised state-dependent exploration (gSDE).

    σ_d(s)² = Σ_j φ_j(s)² exp(2 L_jd) + 1e-6, with φ(s) the last hidden layer of the actor's MLP
    and L the ``[H, D]`` parameter ``log_std``. In a rollout the noise of environment i is
    φ(s)ᵀ M_i with M_i ~ N(0, exp(L)²) elementwise, a matrix kept for several steps
    (:meth:`reset_noise`), so that exploration varies smoothly with the state instead of jumping at
    every step. φ(s)ᵀ M is distributed as N(0, σ(s)² − 1e-6), and each action's log-probability is
    that of N(μ(s), σ(s)²): the same score-function estimator as for a plain Gaussian, with a
    state-dependent σ. The features enter σ and the noise as constants (no gradient flows through
    them into the MLP); L is learnt through σ. Reference: Raffin, Kober & Stulp (2022), "Smooth
    Exploration for Robotic Reinforcement Learning"; Stable-Baselines3's gSDE with its defaults
    (full_std, no expln, learn_features off).

    Args:
        obs_dim: size of s.
        act_dim: D.
        hidden_sizes: hidden widths (at least one layer: its last one is φ).
        activation: one of ``ACTIVATIONS``.
        log_std_init: initial value of every entry of L.

    Parameters:
        log_std: ``[H, D]`` L, H = ``hidden_sizes[-1]``.

    Attributes:
        exploration: ``[N, H, D]`` the current noise matrices (None before the first draw).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
    ) -> None:
        super().__init__()
        if not tuple(hidden_sizes):
            raise InputError("gSDE needs at least one hidden layer: its last one gives the exploration features")
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.net = MLP(obs_dim, hidden_sizes, act_dim, activation, output_gain=_POLICY_GAIN)
        self.latent_dim = int(tuple(hidden_sizes)[-1])
        self.log_std = nn.Parameter(torch.full((self.latent_dim, self.act_dim), float(log_std_init)))
        self.exploration: Tensor | None = None

    def distribution(self, obs: Tensor, action_mask: Tensor | None = None) -> DiagGaussian:
        """N(μ(s), diag σ(s)²) for ``obs [..., obs_dim]``; ``action_mask`` must be None."""
        return self.head(*self._features_and_mean(obs, action_mask))

    def act(self, obs: Tensor, deterministic: bool = False, generator: torch.Generator | None = None,
            action_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(actions [N, D], log π(a|s) [N])`` for ``obs [N, obs_dim]``: μ(s), or μ(s) + φ(s_i)ᵀM_i."""
        features, mean = self._features_and_mean(obs, action_mask)
        actions = mean if deterministic else mean + self.noise(features, generator)
        return actions, self.head(features, mean).log_prob(actions)

    def _features_and_mean(self, obs: Tensor, action_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        if action_mask is not None:
            raise InputError("an action mask applies to discrete actions only, not to a Gaussian policy")
        _check_last_dim("obs", obs, self.obs_dim)
        return self.net.features_and_output(obs)

    def head(self, features: Tensor, mean: Tensor) -> DiagGaussian:
        """N(μ, diag σ²) from the last hidden layer ``features [..., H]`` and ``mean [..., D]``:
        log σ(s) = ½ log(φ(s)² exp(2L) + 1e-6), with φ held constant."""
        return DiagGaussian(mean, gsde_log_std(features, self._parameters["log_std"]))

    def reset_noise(self, num_envs: int, generator: torch.Generator | None = None) -> None:
        """Draw new noise matrices M_i ~ N(0, exp(L)²), one ``[H, D]`` per environment."""
        std = self._parameters["log_std"].detach().exp()
        draws = torch.randn((num_envs, *std.shape), generator=generator, dtype=std.dtype, device=std.device)
        self.exploration = draws.mul_(std)

    def noise(self, features: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``[N, D]`` φ(s_i)ᵀ M_i for ``features [N, H]`` (new matrices if N changed)."""
        n = features.shape[0]
        if self.exploration is None or self.exploration.shape[0] != n:
            self.reset_noise(n, generator)
        return torch.bmm(features.detach().unsqueeze(1), self.exploration).squeeze(1)


class ValueFunction(nn.Module):
    """V(s) = MLP(s), a scalar per state (output layer gain 1.0).

    Args:
        obs_dim: size of s.
        hidden_sizes: hidden widths.
        activation: one of ``ACTIVATIONS``.
    """

    def __init__(self, obs_dim: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh") -> None:
        super().__init__()
        self.obs_dim = int(obs_dim)
        self.net = MLP(obs_dim, hidden_sizes, 1, activation, output_gain=_VALUE_GAIN)

    def forward(self, obs: Tensor) -> Tensor:
        """``obs [..., obs_dim] -> [...]`` values V(s)."""
        _check_last_dim("obs", obs, self.obs_dim)
        return self.net.forward(obs).squeeze(-1)


# --------------------------------------------------------------------------------------------
# Observation encodings and the actor-critic
# --------------------------------------------------------------------------------------------


class FlattenObservation:
    """Box observations ``[..., *shape]`` -> ``[..., prod(shape)]`` in the policy's float dtype.

    Args:
        shape: the observation shape of the Box space.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.obs_dim = int(np.prod(self.shape, dtype=np.int64))
        if self.obs_dim < 1:
            raise InputError(f"observation shape {self.shape} has no elements")

    def __call__(self, obs: Tensor, dtype: torch.dtype) -> Tensor:
        n = len(self.shape)
        if obs.dim() < n or obs.shape[obs.dim() - n :] != self.shape:
            expected = ", ".join(map(str, self.shape))
            raise InputError(f"observations have shape {tuple(obs.shape)}, expected [..., {expected}]")
        if n != 1:
            obs = obs.reshape(*obs.shape[: obs.dim() - n], self.obs_dim)
        return obs.to(dtype)


class OneHotObservation:
    """Discrete observations ``[...]`` in [start, start + n) -> one-hot ``[..., n]`` floats.

    Args:
        n: the number of observations.
        start: the smallest observation.
    """

    def __init__(self, n: int, start: int = 0) -> None:
        _check_positive(n=n)
        self.n, self.start = int(n), int(start)
        self.obs_dim = self.n

    def __call__(self, obs: Tensor, dtype: torch.dtype) -> Tensor:
        if obs.is_floating_point():
            rounded = obs.round()
            if not bool((rounded == obs).all()):
                raise InputError("discrete observations must be whole numbers")
            obs = rounded
        index = obs.long() - self.start if self.start else obs.long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.n):
            raise InputError(f"discrete observations must lie in [{self.start}, {self.start + self.n})")
        return F.one_hot(index, self.n).to(dtype)


Encoder = FlattenObservation | OneHotObservation
_ACTION_KINDS = {
    MLPCategoricalPolicy: "discrete",
    MLPGaussianPolicy: "continuous",
    MLPGSDEPolicy: "continuous",
    MLPMultiCategoricalPolicy: "multidiscrete",
}


class ActorCritic(nn.Module):
    """A policy π(a|s) and a value function V(s) as separate MLPs on one observation encoding.

    Usually built by :func:`make_actor_critic` from Gymnasium spaces.

    Args:
        encoder: turns raw observations into ``[..., obs_dim]`` floats.
        actor: an :class:`MLPCategoricalPolicy`, :class:`MLPGaussianPolicy` or
            :class:`MLPMultiCategoricalPolicy`.
        critic: a :class:`ValueFunction`.

    Attributes:
        obs_dim: size of the encoded observation.
        action_kind: "discrete", "continuous" or "multidiscrete".
    """

    def __init__(self, encoder: Encoder, actor: nn.Module, critic: ValueFunction) -> None:
        super().__init__()
        if type(actor) not in _ACTION_KINDS:
            raise InputError(f"actor must be one of {', '.join(c.__name__ for c in _ACTION_KINDS)}")
        if not actor.obs_dim == critic.obs_dim == encoder.obs_dim:
            raise InputError(
                f"actor, critic and encoder disagree on obs_dim: {actor.obs_dim}, {critic.obs_dim}, {encoder.obs_dim}"
            )
        self.encoder = encoder
        self.actor = actor
        self.critic = critic
        self.obs_dim: int = encoder.obs_dim
        self.action_kind: str = _ACTION_KINDS[type(actor)]
        self.sde: bool = isinstance(actor, MLPGSDEPolicy)
        """Whether the actor explores with gSDE (:class:`MLPGSDEPolicy`; its noise is ``actor.reset_noise``'s)."""

    def preprocess(self, obs: Tensor | np.ndarray) -> Tensor:
        """Raw observations (tensor or array) ``[..., *obs_shape]`` or ``[...]`` -> ``[..., obs_dim]``
        in the parameters' dtype (float32 by default)."""
        if not isinstance(obs, Tensor):
            obs = torch.as_tensor(obs)
        return self.encoder(obs, self.critic.net._param_dicts[0]["weight"].dtype)

    def distribution(self, obs: Tensor | np.ndarray, action_mask: Tensor | None = None) -> Distribution:
        """π(·|s) for raw observations; ``action_mask`` (bool, True = allowed) for discrete actions."""
        return self.actor.distribution(self.preprocess(obs), action_mask)

    def value(self, obs: Tensor | np.ndarray) -> Tensor:
        """``[...]`` V(s) for raw observations."""
        return self.critic.forward(self.preprocess(obs))

    def forward(self, obs: Tensor | np.ndarray, action_mask: Tensor | None = None) -> tuple[Distribution, Tensor]:
        """``(π(·|s), V(s) [...])``, encoding the observations once (differentiable, twice if need be)."""
        x = self.preprocess(obs)
        return self.actor.distribution(x, action_mask), self.critic.forward(x)

    def act(
        self,
        obs: Tensor | np.ndarray,
        action_mask: Tensor | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Choose actions for a rollout, without building a graph.

        Args:
            obs: raw observations ``[N, *obs_shape]`` (``[N]`` for Discrete), tensor or array.
            action_mask: optional bool mask (discrete kinds), True where allowed.
            deterministic: take the mode instead of sampling.
            generator: random-number generator for sampling (None: torch's global one).

        Returns:
            ``(actions, log_prob [N], value [N])``; actions are long ``[N]`` (discrete), long
            ``[N, K]`` (multidiscrete) or float ``[N, D]`` (continuous, unclipped), and log_prob is
            log π of those actions. No tensor requires grad.
        """
        with torch.no_grad():
            x = self.preprocess(obs)
            if self.sde:
                actions, log_prob = self.actor.act(x, deterministic, generator, action_mask)
                return actions, log_prob, self.critic.forward(x)
            dist = self.actor.distribution(x, action_mask)
            if deterministic:
                actions = dist.mode()
                log_prob = dist.log_prob(actions)
            else:
                actions, log_prob = dist.sample_and_log_prob(generator)
            return actions, log_prob, self.critic.forward(x)


def make_actor_critic(
    observation_space: Any,
    action_space: Any,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    log_std_init: float = 0.0,
    use_sde: bool = False,
) -> ActorCritic:
    """Build an :class:`ActorCritic` for Gymnasium spaces.

    Observation Box -> flattened floats; Discrete -> one-hot. Action Discrete -> categorical
    (maskable), 1-D Box -> diagonal Gaussian with state-independent log σ (bounds are not applied:
    clipping is the environment wrapper's job), 1-D MultiDiscrete -> independent categoricals.

    Args:
        observation_space: a ``gymnasium.spaces.Box`` or ``Discrete``.
        action_space: a ``gymnasium.spaces.Discrete``, ``Box`` or ``MultiDiscrete``.
        hidden_sizes: hidden widths of both MLPs.
        activation: one of ``ACTIVATIONS``.
        log_std_init: initial log σ for Box actions.
        use_sde: explore Box actions with gSDE (:class:`MLPGSDEPolicy`) instead of independent
            Gaussian noise.

    Raises:
        InputError: an unsupported space (named in the message) or activation.
    """
    from gymnasium import spaces

    if isinstance(observation_space, spaces.Box):
        encoder: Encoder = FlattenObservation(observation_space.shape)
    elif isinstance(observation_space, spaces.Discrete):
        encoder = OneHotObservation(int(observation_space.n), int(observation_space.start))
    else:
        raise InputError(
            f"unsupported observation space {observation_space!r}: policygrad supports Box and Discrete"
        )
    obs_dim = encoder.obs_dim

    if use_sde and not isinstance(action_space, spaces.Box):
        raise InputError(f"use_sde applies to Box (continuous) actions, not to {action_space!r}")
    if isinstance(action_space, spaces.Discrete):
        if int(action_space.start) != 0:
            raise InputError(f"unsupported action space {action_space!r}: Discrete actions must start at 0")
        actor: nn.Module = MLPCategoricalPolicy(obs_dim, int(action_space.n), hidden_sizes, activation)
    elif isinstance(action_space, spaces.Box):
        if len(action_space.shape) != 1:
            raise InputError(f"unsupported action space {action_space!r}: Box actions must be 1-D")
        gaussian = MLPGSDEPolicy if use_sde else MLPGaussianPolicy
        actor = gaussian(obs_dim, action_space.shape[0], hidden_sizes, activation, log_std_init)
    elif isinstance(action_space, spaces.MultiDiscrete):
        if action_space.nvec.ndim != 1:
            raise InputError(f"unsupported action space {action_space!r}: MultiDiscrete actions must be 1-D")
        if np.any(action_space.start != 0):
            raise InputError(f"unsupported action space {action_space!r}: MultiDiscrete actions must start at 0")
        actor = MLPMultiCategoricalPolicy(obs_dim, action_space.nvec.tolist(), hidden_sizes, activation)
    else:
        raise InputError(
            f"unsupported action space {action_space!r}: policygrad supports Discrete, Box and MultiDiscrete"
        )
    return ActorCritic(encoder, actor, ValueFunction(obs_dim, hidden_sizes, activation))
