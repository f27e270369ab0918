"""Linear and tabular policies with analytic score functions.

The score function is s(θ; s, a) = ∇θ log πθ(a | s), the quantity the Policy Gradient Theorem
weighs by Ψ. These policies return it in closed form (no autograd), which the tests compare with
autograd and which exact-gradient checks can use directly.

Shapes: ``[...]`` is any batch shape; A actions, d features, S states, D the action dimension.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policygrad.distributions import Categorical, DiagGaussian
from policygrad.errors import InputError
from policygrad.policies.mlp import check_integer, check_last_dim, check_positive

__all__ = ["LinearSoftmaxPolicy", "LinearGaussianPolicy", "TabularSoftmaxPolicy"]


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
        check_positive(num_features=num_features)
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
        actions = check_integer("actions", actions)
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
        check_positive(obs_dim=obs_dim, act_dim=act_dim)
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.weight = nn.Parameter(torch.zeros(self.act_dim, self.obs_dim, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(self.act_dim, dtype=dtype))
        self.log_std = nn.Parameter(torch.full((self.act_dim,), float(log_std_init), dtype=dtype))

    def mean(self, obs: Tensor) -> Tensor:
        """``obs [..., obs_dim] -> [..., D]``: μ = W s + b."""
        check_last_dim("obs", obs, self.obs_dim)
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
        check_last_dim("obs", obs, self.obs_dim)
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
        check_positive(num_states=num_states, num_actions=num_actions)
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
        states = check_integer("states", states)
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
        actions = check_integer("actions", actions)
        if actions.shape != states.shape:
            raise InputError(f"actions have shape {tuple(actions.shape)}, expected {tuple(states.shape)}")
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= self.num_actions):
            raise InputError(f"actions must lie in [0, {self.num_actions}), got values outside it")
        theta = self.theta.detach()
        probs = torch.softmax(theta[states], dim=-1)  # [..., A]
        action_part = F.one_hot(actions, self.num_actions).to(theta.dtype) - probs  # [..., A]
        state_part = F.one_hot(states, self.num_states).to(theta.dtype)  # [..., S]
        return state_part.unsqueeze(-1) * action_part.unsqueeze(-2)
