"""The actor-critic built for Gymnasium spaces: an observation encoding, an optional trunk (the
convolutional encoder of image observations), an MLP policy and a value function."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from policygrad.distributions import Bernoulli, Categorical, DiagGaussian, MultiCategorical
from policygrad.errors import InputError
from policygrad.policies.encoders import (
    IMAGE_OBS_MODES,
    ChannelsFirstImage,
    CompositeObservation,
    Encoder,
    FlattenObservation,
    ImageLayout,
    MultiOneHotObservation,
    ObservationTrunk,
    OneHotObservation,
    channels_last,
    is_image_space,
)
from policygrad.policies.heads import (
    MLPBernoulliPolicy,
    MLPCategoricalPolicy,
    MLPGaussianPolicy,
    MLPGSDEPolicy,
    MLPMultiCategoricalPolicy,
    ValueFunction,
)

__all__ = ["ActorCritic", "make_actor_critic", "make_encoder", "image_layouts", "Distribution"]

Distribution = Categorical | DiagGaussian | MultiCategorical | Bernoulli


_ACTION_KINDS = {
    MLPCategoricalPolicy: "discrete",
    MLPGaussianPolicy: "continuous",
    MLPGSDEPolicy: "continuous",
    MLPMultiCategoricalPolicy: "multidiscrete",
    MLPBernoulliPolicy: "multibinary",
}


class ActorCritic(nn.Module):
    """A policy π(a|s) and a value function V(s) as separate MLPs on one observation encoding.

    Usually built by :func:`make_actor_critic` from Gymnasium spaces. With image observations a
    trunk (:class:`~policygrad.policies.encoders.ObservationTrunk`, the convolutional encoder)
    turns the encoded observation into features first; actor and critic share it unless a
    separate ``critic_trunk`` is given.

    Args:
        encoder: turns raw observations into ``[..., obs_dim]`` floats.
        actor: an :class:`MLPCategoricalPolicy`, :class:`MLPGaussianPolicy`,
            :class:`MLPMultiCategoricalPolicy` or :class:`MLPBernoulliPolicy`.
        critic: a :class:`ValueFunction`.
        trunk: ``[..., obs_dim] -> [..., features_dim]`` before the actor (and the critic, when
            ``critic_trunk`` is None); None: the MLPs read the encoding directly.
        critic_trunk: the critic's own trunk (not shared with the actor), or None.

    Attributes:
        obs_dim: size of the encoded observation.
        action_kind: "discrete", "continuous", "multidiscrete" or "multibinary".
    """

    def __init__(self, encoder: Encoder, actor: nn.Module, critic: ValueFunction,
                 trunk: ObservationTrunk | None = None, critic_trunk: ObservationTrunk | None = None) -> None:
        super().__init__()
        if type(actor) not in _ACTION_KINDS:
            raise InputError(f"actor must be one of {', '.join(c.__name__ for c in _ACTION_KINDS)}")
        if critic_trunk is not None and trunk is None:
            raise InputError("a critic_trunk needs an actor trunk")
        features = encoder.obs_dim if trunk is None else trunk.features_dim
        if trunk is not None and not trunk.obs_dim == encoder.obs_dim:
            raise InputError(f"trunk and encoder disagree on obs_dim: {trunk.obs_dim}, {encoder.obs_dim}")
        if not actor.obs_dim == critic.obs_dim == features:
            raise InputError(
                f"actor, critic and encoder disagree on obs_dim: {actor.obs_dim}, {critic.obs_dim}, {features}"
            )
        self.encoder = encoder
        self.actor = actor
        self.critic = critic
        self.trunk = trunk
        self.critic_trunk = critic_trunk
        self.obs_dim: int = encoder.obs_dim
        self.action_kind: str = _ACTION_KINDS[type(actor)]
        self.sde: bool = isinstance(actor, MLPGSDEPolicy)
        """Whether the actor explores with gSDE (:class:`MLPGSDEPolicy`; its noise is ``actor.reset_noise``'s)."""

    def preprocess(self, obs: Tensor | np.ndarray) -> Tensor:
        """Raw observations (tensor or array) ``[..., *obs_shape]`` or ``[...]`` -> ``[..., obs_dim]``
        in the parameters' dtype (float32 by default)."""
        if not isinstance(obs, Tensor) and not isinstance(self.encoder, CompositeObservation):
            obs = torch.as_tensor(obs)
        return self.encoder(obs, self.critic.net.layer_params[0]["weight"].dtype)

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The actor's and the critic's inputs for the encoded ``x [..., obs_dim]``."""
        trunk = self.trunk
        if trunk is None:
            return x, x
        features = trunk(x)
        return features, (features if self.critic_trunk is None else self.critic_trunk(x))

    def distribution(self, obs: Tensor | np.ndarray, action_mask: Tensor | None = None) -> Distribution:
        """π(·|s) for raw observations; ``action_mask`` (bool, True = allowed) for discrete actions."""
        x = self.preprocess(obs)
        return self.actor.distribution(x if self.trunk is None else self.trunk(x), action_mask)

    def value(self, obs: Tensor | np.ndarray) -> Tensor:
        """``[...]`` V(s) for raw observations."""
        x = self.preprocess(obs)
        if self.trunk is not None:
            x = self.trunk(x) if self.critic_trunk is None else self.critic_trunk(x)
        return self.critic.forward(x)

    def forward(self, obs: Tensor | np.ndarray, action_mask: Tensor | None = None) -> tuple[Distribution, Tensor]:
        """``(π(·|s), V(s) [...])``, encoding the observations once (differentiable, twice if need be)."""
        x_actor, x_critic = self._features(self.preprocess(obs))
        return self.actor.distribution(x_actor, action_mask), self.critic.forward(x_critic)

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
            ``[N, K]`` (multidiscrete, multibinary) or float ``[N, D]`` (continuous, unclipped), and log_prob is
            log π of those actions. No tensor requires grad.
        """
        with torch.no_grad():
            x = self.preprocess(obs)
            x_critic = x
            if self.trunk is not None:
                x, x_critic = self._features(x)
            if self.sde:
                actions, log_prob = self.actor.act(x, deterministic, generator, action_mask)
                return actions, log_prob, self.critic.forward(x_critic)
            dist = self.actor.distribution(x, action_mask)
            if deterministic:
                actions = dist.mode()
                log_prob = dist.log_prob(actions)
            else:
                actions, log_prob = dist.sample_and_log_prob(generator)
            return actions, log_prob, self.critic.forward(x_critic)


def make_encoder(observation_space: Any, image_obs: str = "auto") -> Encoder:
    """The encoding of an observation space (see the table in :mod:`policygrad.policies.encoders`).

    Box -> flattened (an image keeps its dtype: the collector stores raw uint8 pixels), Discrete ->
    one-hot, MultiBinary -> 0/1 floats, MultiDiscrete -> one-hot per entry, Dict and Tuple -> their
    parts encoded and concatenated (nested ones too).

    Args:
        observation_space: the single environment's observation space.
        image_obs: "auto" (detect images as :func:`is_image_space`), "yes" (every 3-D Box with 1,
            3 or 4 channels first or last is an image) or "no" (no image: flatten everything).

    Raises:
        InputError: an unsupported space or sub-space (named, with its path, in the message).
    """
    if image_obs not in IMAGE_OBS_MODES:
        raise InputError(f"image_obs must be one of {', '.join(IMAGE_OBS_MODES)}, got {image_obs!r}")
    return _encoder(observation_space, image_obs, None)


def _encoder(space: Any, image_obs: str, path: str | None) -> Encoder:
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        if is_image_space(space, image_obs):
            store = torch.uint8 if space.dtype == np.uint8 else torch.float32
            if channels_last(space.shape):
                return FlattenObservation(space.shape, store)
            return ChannelsFirstImage(space.shape, store)  # stored H×W×C: the NHWC layout
        return FlattenObservation(space.shape)
    if isinstance(space, spaces.Discrete):
        return OneHotObservation(int(space.n), int(space.start))
    if isinstance(space, spaces.MultiBinary):
        return FlattenObservation(tuple(np.atleast_1d(space.n)))
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1 and not np.any(space.start != 0):
        return MultiOneHotObservation(space.nvec.tolist())
    if isinstance(space, (spaces.Dict, spaces.Tuple)):
        keys = list(space.spaces.keys()) if isinstance(space, spaces.Dict) else list(range(len(space.spaces)))
        if not keys:
            raise InputError(f"observation space {space!r} has no parts")
        parts = []
        for key in keys:
            where = f"{path}.{key}" if path is not None else str(key)
            if isinstance(key, int):
                where = f"{path}[{key}]" if path is not None else f"[{key}]"
            parts.append((key, _encoder(space[key], image_obs, where)))
        return CompositeObservation(parts)
    if path is not None:
        raise InputError(f"observation space {space!r}: unsupported sub-space at {path!r} "
                         "(policygrad encodes Box, Discrete, MultiBinary, MultiDiscrete, Dict and Tuple)")
    raise InputError(f"unsupported observation space {space!r}: policygrad supports Box, Discrete, MultiBinary, "
                     "MultiDiscrete, Dict and Tuple")


def image_layouts(observation_space: Any, image_obs: str = "auto") -> list[ImageLayout]:
    """Where the images of an observation space sit in its encoding (:func:`make_encoder`)."""
    from gymnasium import spaces

    layouts: list[ImageLayout] = []

    def walk(space: Any, start: int) -> int:
        if isinstance(space, (spaces.Dict, spaces.Tuple)):
            for sub in (space.spaces.values() if isinstance(space, spaces.Dict) else space.spaces):
                start = walk(sub, start)
            return start
        if is_image_space(space, image_obs):
            scale = 1.0 / 255.0 if space.dtype == np.uint8 else 1.0
            layouts.append(ImageLayout.of_space(start, space.shape, scale))
        return start + _encoder(space, image_obs, None).obs_dim

    walk(observation_space, 0)
    return layouts


def make_actor_critic(
    observation_space: Any,
    action_space: Any,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    log_std_init: float = 0.0,
    use_sde: bool = False,
    image_obs: str = "auto",
    share_encoder: bool = True,
    ortho_init: bool = True,
) -> ActorCritic:
    """Build an :class:`ActorCritic` for Gymnasium spaces.

    Observations are encoded by :func:`make_encoder`. Observations with images get an
    :class:`ObservationTrunk` (a Nature CNN per image); a single image observation then has linear
    heads on the CNN's 512 features (the Atari networks: actor gain 0.01, critic gain 1), while a
    Dict or Tuple with images has MLPs of ``hidden_sizes`` on the concatenated features.

    Action Discrete -> categorical (maskable), 1-D Box -> diagonal Gaussian with state-independent
    log σ (bounds are not applied: clipping is the environment wrapper's job), 1-D MultiDiscrete ->
    independent categoricals, 1-D MultiBinary -> independent Bernoullis.

    Args:
        observation_space: a ``gymnasium.spaces`` Box, Discrete, MultiBinary, MultiDiscrete, Dict or Tuple.
        action_space: a ``gymnasium.spaces.Discrete``, ``Box``, ``MultiDiscrete`` or ``MultiBinary``.
        hidden_sizes: hidden widths of both MLPs.
        activation: one of ``ACTIVATIONS``.
        log_std_init: initial log σ for Box actions.
        use_sde: explore Box actions with gSDE (:class:`MLPGSDEPolicy`) instead of independent
            Gaussian noise.
        image_obs: which Box observations are images: "auto", "yes" or "no" (see :func:`make_encoder`).
        share_encoder: actor and critic share the convolutional trunk (else each has its own).
        ortho_init: orthogonal initialisation (gains √2 hidden, 0.01 actor output, 1 critic output;
            biases 0); False: PyTorch's default initialisation of every linear and convolutional
            layer (SB3's ``ortho_init=False``, which the RL Zoo's tuned MuJoCo settings use).

    Raises:
        InputError: an unsupported space (named in the message) or activation.
    """
    from gymnasium import spaces

    encoder = make_encoder(observation_space, image_obs)
    obs_dim = encoder.obs_dim
    images = image_layouts(observation_space, image_obs)
    trunk = critic_trunk = None
    if images:
        trunk = ObservationTrunk(obs_dim, images)
        critic_trunk = None if share_encoder else ObservationTrunk(obs_dim, images)
        obs_dim = trunk.features_dim
        if isinstance(observation_space, spaces.Box):
            hidden_sizes = ()

    if use_sde and not isinstance(action_space, spaces.Box):
        raise InputError(f"use_sde applies to Box (continuous) actions, not to {action_space!r}")
    if isinstance(action_space, spaces.Discrete):
        if int(action_space.start) != 0:
            raise InputError(f"unsupported action space {action_space!r}: Discrete actions must start at 0")
        actor: nn.Module = MLPCategoricalPolicy(obs_dim, int(action_space.n), hidden_sizes, activation)
    elif isinstance(action_space, spaces.Box):
        if len(action_space.shape) != 1:
            raise InputError(f"unsupported action space {action_space!r}: Box actions must be 1-D")
        if use_sde and not tuple(hidden_sizes):
            raise InputError("use_sde needs a hidden layer after the image encoder; it is not available for "
                             "image observations")
        gaussian = MLPGSDEPolicy if use_sde else MLPGaussianPolicy
        actor = gaussian(obs_dim, action_space.shape[0], hidden_sizes, activation, log_std_init)
    elif isinstance(action_space, spaces.MultiDiscrete):
        if action_space.nvec.ndim != 1:
            raise InputError(f"unsupported action space {action_space!r}: MultiDiscrete actions must be 1-D")
        if np.any(action_space.start != 0):
            raise InputError(f"unsupported action space {action_space!r}: MultiDiscrete actions must start at 0")
        actor = MLPMultiCategoricalPolicy(obs_dim, action_space.nvec.tolist(), hidden_sizes, activation)
    elif isinstance(action_space, spaces.MultiBinary):
        if len(action_space.shape) != 1:
            raise InputError(f"unsupported action space {action_space!r}: MultiBinary actions must be 1-D")
        actor = MLPBernoulliPolicy(obs_dim, int(action_space.shape[0]), hidden_sizes, activation)
    else:
        raise InputError(
            f"unsupported action space {action_space!r}: policygrad supports Discrete, Box, MultiDiscrete "
            "and MultiBinary"
        )
    policy = ActorCritic(encoder, actor, ValueFunction(obs_dim, hidden_sizes, activation), trunk, critic_trunk)
    if not ortho_init:
        for module in policy.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.reset_parameters()
    return policy
