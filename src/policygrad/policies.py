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
import weakref
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from policygrad.distributions import Categorical, DiagGaussian, MultiCategorical, masked_fill_value
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
    "RolloutActor",
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


_SDE_EPS = 1e-6
"""Added to σ(s)² under gSDE, so that σ stays positive where the features vanish."""


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
        variance = features.detach().square() @ torch.exp(2.0 * self._parameters["log_std"])  # [..., D]
        return DiagGaussian(mean, 0.5 * torch.log(variance + _SDE_EPS))

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
# The actor-critic's two MLPs without per-operation autograd
# --------------------------------------------------------------------------------------------
#
# The networks are small (a few 64-wide layers), so a training step and an action cost mostly
# per-operation overhead, not arithmetic: an autograd node per operation, a dispatcher call per
# tensor operation, and this CPU build's tanh kernel, which is scalar (about 7x slower than
# NumPy's on a [256, 64] batch). Two paths compute the same function with fewer operations:
#
# * ``_TwoMLPs``: the actor's and the critic's MLPs as one autograd node whose backward is the
#   MLP's chain rule written out (∂/∂W = gᵀ h, ∂/∂b = Σ g, ∂/∂h = g W, tanh' = 1 − tanh²), used
#   by :meth:`ActorCritic.forward`. The losses stay ordinary autograd on the networks' outputs.
# * :class:`RolloutActor`: a NumPy copy of the weights that acts on NumPy observations, used by
#   the rollout collector and evaluation (the actor's and critic's first layers as one matmul).
#
# Both give the values of the plain modules up to float rounding; tests compare them with
# autograd and with :meth:`ActorCritic.distribution` / :meth:`ActorCritic.value`.

_FAST_ACTIVATIONS = ("tanh", "relu")


def _activate_(h: Tensor, activation: str) -> None:
    """The hidden activation, in place, on a fresh tensor that no graph records."""
    if activation == "tanh" and h.device.type == "cpu":
        a = h.numpy()
        np.tanh(a, out=a)
    else:
        _INPLACE_ACTIVATIONS[activation](h)


_TANH_BACKWARD = torch.ops.aten.tanh_backward.default  # grad · (1 − h²)
_THRESHOLD_BACKWARD = torch.ops.aten.threshold_backward.default  # grad · [h > 0]


def _activation_backward(grad: Tensor, h: Tensor, activation: str) -> Tensor:
    """∂L/∂z from ∂L/∂h for h = σ(z), written with h: tanh' = 1 − h², relu' = [h > 0]."""
    if activation == "tanh":
        return _TANH_BACKWARD(grad, h)
    return _THRESHOLD_BACKWARD(grad, h, 0)


def _mlp_forward(x: Tensor, params: Sequence[Tensor], activation: str) -> tuple[Tensor, list[Tensor]]:
    """``x [B, in]`` through the layers ``(W_1, b_1, ..., W_L, b_L)``; returns the output and the
    hidden activations h_1..h_{L−1} that the backward pass needs."""
    hidden = []
    h = x
    for i in range(0, len(params) - 2, 2):
        h = F.linear(h, params[i], params[i + 1])
        _activate_(h, activation)
        hidden.append(h)
    return F.linear(h, params[-2], params[-1]), hidden


def _mlp_backward(
    grad: Tensor, x: Tensor, params: Sequence[Tensor], hidden: list[Tensor], activation: str, input_grad: bool
) -> tuple[list[Tensor], Tensor | None]:
    """The chain rule of :func:`_mlp_forward`: ``grad [B, out]`` = ∂L/∂output -> (∂L/∂params, ∂L/∂x)."""
    grads: list[Tensor] = [None] * len(params)  # type: ignore[list-item]
    for layer in range(len(params) // 2 - 1, -1, -1):
        h_in = hidden[layer - 1] if layer > 0 else x
        grads[2 * layer] = grad.t().mm(h_in)  # [out, in]
        grads[2 * layer + 1] = grad.sum(0)
        if layer > 0:
            grad = _activation_backward(grad.mm(params[2 * layer]), h_in, activation)
        elif input_grad:
            return grads, grad.mm(params[0])
    return grads, None


class _TwoMLPs(torch.autograd.Function):
    """``(actor_net(x), critic_net(x))`` as one autograd node (see the section comment).

    Inputs: ``x [..., in]``, the activation's name, the number of actor parameters, then the actor's
    and the critic's ``(W_1, b_1, ..., W_L, b_L)``. Outputs: ``[..., actor_out]`` and ``[...]``.
    Differentiable once (not twice: the trust-region methods use the plain modules).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, activation: str, num_actor: int, *params: Tensor) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        batch_shape = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        actor_out, actor_hidden = _mlp_forward(flat, params[:num_actor], activation)
        value, critic_hidden = _mlp_forward(flat, params[num_actor:], activation)
        ctx.save_for_backward(flat, *params)
        ctx.hidden = (actor_hidden, critic_hidden)
        ctx.activation, ctx.num_actor, ctx.x_shape = activation, num_actor, x.shape
        return actor_out.view(*batch_shape, actor_out.shape[-1]), value.view(batch_shape)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_actor: Tensor | None, grad_value: Tensor | None) -> tuple[Tensor | None, ...]:
        flat, *params = ctx.saved_tensors
        num_actor = ctx.num_actor
        input_grad = ctx.needs_input_grad[0]
        grads: list[Tensor | None] = [None] * len(params)
        grad_x = None
        for grad, span, hidden in (
            (grad_actor, slice(0, num_actor), ctx.hidden[0]),
            (grad_value, slice(num_actor, len(params)), ctx.hidden[1]),
        ):
            if grad is None:
                continue
            layer_params = params[span]
            grad = grad.reshape(-1, layer_params[-1].shape[0])
            grads[span], gx = _mlp_backward(grad, flat, layer_params, hidden, ctx.activation, input_grad)
            if gx is not None:
                grad_x = gx if grad_x is None else grad_x + gx
        ctx.hidden = None
        return (None if grad_x is None else grad_x.view(ctx.x_shape), None, None, *grads)


_NUMPY_MATMUL_ROWS = 16
"""Batches up to this size multiply in NumPy (≈1.5 µs for [8, 64] x [64, 64]); larger ones in torch,
whose BLAS is faster there."""


def _affine(x: np.ndarray, weight_t: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``x [B, in] @ weight_t [in, out] + bias [out]`` as a new array."""
    if x.shape[0] <= _NUMPY_MATMUL_ROWS:
        y = x @ weight_t
        y += bias
        return y
    return torch.addmm(torch.from_numpy(bias), torch.from_numpy(x), torch.from_numpy(weight_t)).numpy()


_TINY = np.finfo(np.float32).tiny

def _layer_views(net: MLP) -> list[tuple[np.ndarray, np.ndarray]]:
    """The layers of ``net`` as ``(Wᵀ [in, out], b [out])`` NumPy views of the parameters' memory."""
    return [(p["weight"].detach().numpy().T, p["bias"].detach().numpy()) for p in net._param_dicts]


_ROLLOUT_ACTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Each ActorCritic's RolloutActor, kept between rollouts (its buffers are reused)."""


class RolloutActor:
    """The acting side of an :class:`ActorCritic` in NumPy, for rollouts and evaluation.

    It acts with a copy of the weights that :meth:`ActorCritic.rollout_actor` brings up to date
    (it returns the same object each time): take it again after the weights change. Observations are encoded ``[N, obs_dim]`` floats
    (what the policy sees); the random draws come from torch's generator exactly as
    :meth:`ActorCritic.act` takes them, so a seed gives the same actions on either path (up to
    float rounding in a tie).

    Args:
        policy: an ActorCritic on the CPU with a categorical or Gaussian actor and an activation
            in ``("tanh", "relu")``.
    """

    def __init__(self, policy: ActorCritic) -> None:
        self.kind = policy.action_kind
        self.activation = policy.actor.net.activation
        self.sources = [p[k] for net in (policy.actor.net, policy.critic.net) for p in net._param_dicts for k in ("weight", "bias")]
        """The parameter tensors copied (what :meth:`ActorCritic.rollout_actor` checks)."""
        actor, critic = _layer_views(policy.actor.net), _layer_views(policy.critic.net)
        # Both networks as one: the first layers side by side (both read the observation), the
        # later ones block-diagonal, so the last layer gives [actor output | value]. The zero
        # blocks add exact zeros; a network that is shallower than the other passes its output
        # on through identity blocks.
        depth = max(len(actor), len(critic))
        self._layers: list[tuple[np.ndarray, np.ndarray]] = []  # (Wᵀ [in, out], b [out])
        self._copies: list[tuple[np.ndarray, np.ndarray]] = []  # (part of a layer, parameter view)
        self._hidden_masks: list[np.ndarray | None] = []  # columns that the activation applies to
        a_in = c_in = None
        dtype = actor[0][0].dtype
        for i in range(depth):
            a_layer, c_layer = (actor[i] if i < len(actor) else None), (critic[i] if i < len(critic) else None)
            a_out = a_layer[0].shape[1] if a_layer else a_in
            c_out = c_layer[0].shape[1] if c_layer else c_in
            rows = a_layer[0].shape[0] if i == 0 else a_in + c_in
            weight = np.zeros((a_out + c_out, rows), dtype=dtype)  # [out, in]: copies stay contiguous
            bias = np.zeros(a_out + c_out, dtype=dtype)
            a_rows = slice(0, rows) if i == 0 else slice(0, a_in)
            c_rows = slice(0, rows) if i == 0 else slice(a_in, a_in + c_in)
            for layer, out_cols, in_rows, size in ((a_layer, slice(0, a_out), a_rows, a_out), (c_layer, slice(a_out, a_out + c_out), c_rows, c_out)):
                if layer is None:
                    weight[out_cols, in_rows] = np.eye(size, dtype=dtype)
                else:
                    self._copies += [(weight[out_cols, in_rows], layer[0].T), (bias[out_cols], layer[1])]
            self._layers.append((weight.T, bias))
            hidden = np.zeros(a_out + c_out, dtype=bool)
            hidden[:a_out] = i < len(actor) - 1
            hidden[a_out:] = i < len(critic) - 1
            self._hidden_masks.append(None if hidden.all() else hidden if hidden.any() else False)
            a_in, c_in = a_out, c_out
        self._split = a_in
        self.sde = policy.sde
        self._sde_layer = -1  # the fused layer whose output holds φ (none without gSDE)
        if self.sde:  # φ: the first columns of the actor's last hidden layer (both nets equally deep)
            self._sde_actor = policy.actor
            self._sde_layer, self._sde_width = len(actor) - 2, actor[-1][0].shape[0]
        if self.kind == "continuous":
            log_std = policy.actor._parameters["log_std"]
            self.sources.append(log_std)
            self._log_std = log_std.detach().numpy()
        else:
            self.num_actions = policy.actor.num_actions
            self._fill = masked_fill_value(policy.actor.net._param_dicts[-1]["weight"].dtype)
            self._race: tuple[Tensor, np.ndarray, np.ndarray] | None = None  # draws' buffer (tensor, view), row indices
        self._pointers = [p.data_ptr() for p in self.sources]
        self.refresh()

    def matches(self, sources: list[Tensor]) -> bool:
        """Whether ``sources`` are the parameters this actor copies from, in the same memory."""
        return len(sources) == len(self.sources) and all(
            p is q and p.data_ptr() == ptr for p, q, ptr in zip(sources, self.sources, self._pointers)
        )

    def refresh(self) -> None:
        """Copy the current weights."""
        for destination, source in self._copies:
            np.copyto(destination, source)

    def _outputs(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``obs [N, obs_dim]`` -> (actor output ``[N, A or D]``, values ``[N]``); under gSDE the
        actor's last hidden layer is kept in ``self._features``."""
        h = obs
        for i, ((weight_t, bias), hidden) in enumerate(zip(self._layers, self._hidden_masks)):
            h = _affine(h, weight_t, bias)
            if hidden is None:  # every column is a hidden unit
                self._activate(h)
            elif hidden is not False:
                h[:, hidden] = self._activate(h[:, hidden])
            if i == self._sde_layer:
                self._features = h[:, : self._sde_width]
        return h[:, : self._split], h[:, self._split]

    def _activate(self, h: np.ndarray) -> np.ndarray:
        if self.activation == "tanh":
            return np.tanh(h, out=h)
        return np.maximum(h, 0, out=h)

    def value(self, obs: np.ndarray) -> np.ndarray:
        """``[N]`` V(s) for encoded observations ``obs [N, obs_dim]``."""
        return self._outputs(obs)[1]

    def _act_sde(self, mean: np.ndarray, value: np.ndarray, deterministic: bool,
                 generator: torch.Generator | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """gSDE (:class:`MLPGSDEPolicy`): a = μ + φᵀM_i with the actor's noise matrices, and
        log N(a; μ, σ(s)²) with σ(s)² = φ² exp(2L) + 1e-6."""
        features = self._features  # [N, H]
        log_std = np.log(np.square(features) @ np.exp(2.0 * self._log_std) + mean.dtype.type(_SDE_EPS))
        log_std *= 0.5  # [N, D]
        log_prob = np.add.reduce(log_std, axis=-1)
        log_prob += 0.5 * _LOG_2PI * mean.shape[1]
        log_prob *= -1  # −Σ log σ − (D/2) log 2π
        if deterministic:
            return mean, log_prob, value
        module = self._sde_actor
        if module.exploration is None or module.exploration.shape[0] != len(features):
            module.reset_noise(len(features), generator)
        noise = np.matmul(features[:, None, :], module.exploration.numpy())[:, 0, :]  # [N, D]
        z = noise * np.exp(-log_std)  # (a − μ)/σ
        log_prob -= 0.5 * np.add.reduce(np.square(z), axis=-1)
        return mean + noise, log_prob, value

    def act(
        self,
        obs: np.ndarray,
        action_mask: np.ndarray | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Actions, log π(a|s) and V(s) for encoded observations ``obs [N, obs_dim]``.

        Args:
            obs: ``[N, obs_dim]`` floats.
            action_mask: optional ``[N, A]`` bool (categorical actor only), True where allowed.
            deterministic: take the mode instead of sampling.
            generator: torch generator of the draws (None: torch's global one).

        Returns:
            ``(actions, log_prob [N], value [N])``: int64 ``[N]`` or float ``[N, D]`` actions
            (Gaussian actions unclipped), as :meth:`ActorCritic.act`.
        """
        out, value = self._outputs(obs)
        n = out.shape[0]
        if self.sde:
            if action_mask is not None:
                raise InputError("an action mask applies to discrete actions only, not to a Gaussian policy")
            return self._act_sde(out, value, deterministic, generator)
        if self.kind == "continuous":
            if action_mask is not None:
                raise InputError("an action mask applies to discrete actions only, not to a Gaussian policy")
            # log N(a; μ, σ²) = −½ Σ ε² − Σ log σ − (D/2) log 2π with ε = (a − μ)/σ
            constant = float(np.add.reduce(self._log_std)) + 0.5 * _LOG_2PI * out.shape[1]
            if deterministic:
                return out, np.full(n, -constant, dtype=out.dtype), value
            eps = torch.randn(out.shape, generator=generator).numpy()
            actions = out + np.exp(self._log_std) * eps
            log_prob = np.add.reduce(np.square(eps), axis=-1)
            log_prob *= -0.5
            log_prob -= constant
            return actions, log_prob.astype(out.dtype, copy=False), value
        if action_mask is not None:
            if action_mask.shape != out.shape or action_mask.dtype != np.bool_:
                raise InputError(f"action mask must be bool of shape {out.shape}, got {action_mask.dtype} {action_mask.shape}")
            if not action_mask.all(-1).all():
                if not action_mask.any(-1).all():
                    raise InputError("action mask allows no action in some row; every row needs at least one True")
                out = np.where(action_mask, out, out.dtype.type(self._fill))
        # log π(a) = z_a − log Σ_b exp z_b, with z = logits − max logits (ufunc reductions: the
        # ndarray methods add a Python layer that costs more than these small reductions)
        z = out - np.maximum.reduce(out, axis=-1, keepdims=True)
        p = np.exp(z)  # π up to the factor Σ_b exp z_b
        if deterministic:
            actions = z.argmax(-1)
        else:  # the exponential race of distributions.Categorical.sample: argmax π(a) / E_a
            race = self._race
            if race is None or race[1].shape != z.shape:
                buffer = torch.empty(z.shape)
                race = self._race = (buffer, buffer.numpy(), np.arange(z.shape[0]))
            race[0].exponential_(generator=generator)
            draws = race[1]
            np.maximum(draws, _TINY, out=draws)
            np.divide(p, draws, out=draws)
            actions = draws.argmax(-1)
        rows = race[2] if not deterministic else np.arange(n)
        log_prob = z[rows, actions]
        log_prob -= np.log(np.add.reduce(p, axis=-1))
        return actions, log_prob, value


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
        activation = actor.net.activation
        # The one-node forward (and the NumPy rollout actor) need a shared, simple activation.
        self._fast_activation = activation if activation == critic.net.activation and activation in _FAST_ACTIVATIONS else None
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
        """``(π(·|s), V(s) [...])``, encoding the observations once; differentiable once.

        Both networks run as one autograd node (``_TwoMLPs``) when their activation allows it;
        :meth:`distribution` and :meth:`value` always use the plain modules (twice differentiable,
        as the trust-region methods need).
        """
        x = self.preprocess(obs)
        if self._fast_activation is None or x.requires_grad or self.sde:  # (gSDE needs the actor's features)
            return self.actor.distribution(x, action_mask), self.critic.forward(x)
        _check_last_dim("obs", x, self.obs_dim)
        params = [p[k] for net in (self.actor.net, self.critic.net) for p in net._param_dicts for k in ("weight", "bias")]
        num_actor = 2 * len(self.actor.net._param_dicts)
        actor_out, value = _TwoMLPs.apply(x, self._fast_activation, num_actor, *params)
        return self.actor.head(actor_out, action_mask), value

    def rollout_actor(self) -> RolloutActor | None:
        """The :class:`RolloutActor` with a fresh copy of the current weights, or None where this
        policy has none (multi-discrete actions, another activation, parameters off the CPU)."""
        if self._fast_activation is None or self.action_kind == "multidiscrete":
            return None
        if self.sde and len(self.actor.net._param_dicts) != len(self.critic.net._param_dicts):
            return None  # (the fused layers hold the actor's features only for equally deep nets)
        sources = [p[k] for net in (self.actor.net, self.critic.net) for p in net._param_dicts for k in ("weight", "bias")]
        if self.action_kind == "continuous":
            sources.append(self.actor._parameters["log_std"])
        if sources[0].device.type != "cpu":
            return None
        actor = _ROLLOUT_ACTORS.get(self)
        if actor is not None and actor.matches(sources):
            actor.refresh()
        else:
            actor = _ROLLOUT_ACTORS[self] = RolloutActor(self)
        return actor

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
            actor = self.rollout_actor() if x.dim() == 2 else None
            if actor is not None:
                _check_last_dim("obs", x, self.obs_dim)
                if action_mask is not None and not isinstance(action_mask, Tensor):
                    raise InputError(f"action_mask must be a bool tensor, got {type(action_mask).__name__}")
                actions, log_prob, value = actor.act(
                    x.detach().numpy(), None if action_mask is None else action_mask.numpy(), deterministic, generator
                )
                return torch.from_numpy(actions), torch.from_numpy(log_prob), torch.from_numpy(value)
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
