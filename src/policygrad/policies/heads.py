"""MLP policies (the actor's heads: categorical, multi-categorical, Bernoulli, Gaussian, gSDE) and the value function."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from policygrad.distributions import Bernoulli, Categorical, DiagGaussian, MultiCategorical, gsde_log_std
from policygrad.errors import InputError
from policygrad.policies.mlp import MLP, POLICY_GAIN, VALUE_GAIN, check_last_dim

__all__ = ["MLPCategoricalPolicy", "MLPMultiCategoricalPolicy", "MLPBernoulliPolicy", "MLPGaussianPolicy", "MLPGSDEPolicy", "ValueFunction"]


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
        self.net = MLP(obs_dim, hidden_sizes, num_actions, activation, output_gain=POLICY_GAIN)

    def distribution(self, obs: Tensor, action_mask: Tensor | None = None) -> Categorical:
        """π(·|s) for ``obs [..., obs_dim]`` (optional bool ``action_mask [..., A]``)."""
        check_last_dim("obs", obs, self.obs_dim)
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
        self.net = MLP(obs_dim, hidden_sizes, sum(self.nvec), activation, output_gain=POLICY_GAIN)

    def distribution(self, obs: Tensor, action_mask: Tensor | None = None) -> MultiCategorical:
        """π(·|s) for ``obs [..., obs_dim]`` (optional bool ``action_mask [..., Σ n_k]``)."""
        check_last_dim("obs", obs, self.obs_dim)
        return self.head(self.net.forward(obs), action_mask)

    def head(self, logits: Tensor, action_mask: Tensor | None = None) -> MultiCategorical:
        """π(·|s) from the network's output ``logits [..., Σ n_k]``."""
        return MultiCategorical(logits, self.nvec, action_mask)


class MLPBernoulliPolicy(nn.Module):
    """π(a|s) = Π_k Bernoulli(a_k | σ(z_k(s))) with log-odds z = MLP(s) of size K (output gain 0.01).

    Args:
        obs_dim: size of s.
        num_bits: K.
        hidden_sizes: hidden widths.
        activation: one of ``ACTIVATIONS``.
    """

    def __init__(
        self, obs_dim: int, num_bits: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh"
    ) -> None:
        super().__init__()
        if int(num_bits) < 1:
            raise InputError(f"num_bits must be positive, got {num_bits}")
        self.obs_dim, self.num_bits = int(obs_dim), int(num_bits)
        self.net = MLP(obs_dim, hidden_sizes, self.num_bits, activation, output_gain=POLICY_GAIN)

    def distribution(self, obs: Tensor, action_mask: Tensor | None = None) -> Bernoulli:
        """π(·|s) for ``obs [..., obs_dim]``; ``action_mask`` must be None."""
        check_last_dim("obs", obs, self.obs_dim)
        return self.head(self.net.forward(obs), action_mask)

    def head(self, logits: Tensor, action_mask: Tensor | None = None) -> Bernoulli:
        """π(·|s) from the network's output ``logits [..., K]``; ``action_mask`` must be None."""
        if action_mask is not None:
            raise InputError("action masks apply to Discrete and MultiDiscrete actions, not to MultiBinary ones")
        return Bernoulli(logits)


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
        self.net = MLP(obs_dim, hidden_sizes, act_dim, activation, output_gain=POLICY_GAIN)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), float(log_std_init)))

    def distribution(self, obs: Tensor, action_mask: Tensor | None = None) -> DiagGaussian:
        """N(μ(s), diag σ²) for ``obs [..., obs_dim]``; ``action_mask`` must be None."""
        if action_mask is not None:
            raise InputError("an action mask applies to discrete actions only, not to a Gaussian policy")
        check_last_dim("obs", obs, self.obs_dim)
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
        self.net = MLP(obs_dim, hidden_sizes, act_dim, activation, output_gain=POLICY_GAIN)
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
        check_last_dim("obs", obs, self.obs_dim)
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
        self.net = MLP(obs_dim, hidden_sizes, 1, activation, output_gain=VALUE_GAIN)

    def forward(self, obs: Tensor) -> Tensor:
        """``obs [..., obs_dim] -> [...]`` values V(s)."""
        check_last_dim("obs", obs, self.obs_dim)
        return self.net.forward(obs).squeeze(-1)
