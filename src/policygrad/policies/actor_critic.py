"""The actor-critic built for Gymnasium spaces: an observation encoding, an MLP policy and a value function."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from policygrad.distributions import Categorical, DiagGaussian, MultiCategorical
from policygrad.errors import InputError
from policygrad.policies.encoders import Encoder, FlattenObservation, OneHotObservation
from policygrad.policies.heads import (
    MLPCategoricalPolicy,
    MLPGaussianPolicy,
    MLPGSDEPolicy,
    MLPMultiCategoricalPolicy,
    ValueFunction,
)

__all__ = ["ActorCritic", "make_actor_critic", "make_encoder", "Distribution"]

Distribution = Categorical | DiagGaussian | MultiCategorical


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
        return self.encoder(obs, self.critic.net.layer_params[0]["weight"].dtype)

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


def make_encoder(observation_space: Any) -> Encoder:
    """The encoding of an observation space: Box -> flattened floats, Discrete -> one-hot.

    Raises:
        InputError: another space (named in the message).
    """
    from gymnasium import spaces

    if isinstance(observation_space, spaces.Box):
        return FlattenObservation(observation_space.shape)
    if isinstance(observation_space, spaces.Discrete):
        return OneHotObservation(int(observation_space.n), int(observation_space.start))
    raise InputError(f"unsupported observation space {observation_space!r}: policygrad supports Box and Discrete")


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

    encoder = make_encoder(observation_space)
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
