"""A trained policy as one module: raw observations in, the environment's actions out.

Training keeps three things apart for speed: the observation encoding (flatten, one-hot), the
running observation normaliser (NumPy statistics updated every step) and the actor-critic
network, which reads what the other two produce. A :class:`Policy` puts them back together, so
that a policy taken out of a run cannot be used without its preprocessing by mistake:

    actions = policy(raw_observations)              # encode, normalise, the mode, clip to the bounds
    dist = policy.distribution(raw_observations)    # π(·|s)
    values = policy.value(raw_observations)         # V(s)

Its ``state_dict`` holds the network's weights and the normaliser's statistics (μ, σ²) as
buffers. On the CPU those buffers are views of the normaliser's own arrays (which are updated in
place), so a :class:`Policy` taken during training always acts with the statistics as they stand.

The second half of this module is :class:`ModuleActorCritic`, which lets a user's own network
train: see its docstring for the protocol.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from policygrad.distributions import Bernoulli, Categorical, DiagGaussian, MultiCategorical
from policygrad.errors import InputError
from policygrad.normalize import ObservationNormalizer, normalize_observations

__all__ = ["Policy", "ModuleActorCritic"]


def _net_dtype(net: nn.Module) -> torch.dtype:
    for p in net.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


class Policy(nn.Module):
    """Encoding, observation normaliser and actor-critic network of a trained policy, as one module.

    Args:
        net: the actor-critic network, acting on encoded, normalised observations ``[B, obs_dim]``
            (a :class:`~policygrad.policies.ActorCritic` or a :class:`ModuleActorCritic`).
        encoder: raw observations ``[B, *obs_shape]`` -> ``[B, obs_dim]``.
        action_space: the environment's (single) action space; Box bounds clip the actions.
        obs_normalizer: the run's observation normaliser, or None.

    Attributes:
        net: the network (its parameters are the trained ones).
        encoder: the observation encoding.
    """

    def __init__(self, net: nn.Module, encoder: Any, action_space: Any,
                 obs_normalizer: ObservationNormalizer | None = None) -> None:
        super().__init__()
        from gymnasium import spaces

        self.net = net
        self.encoder = encoder
        self.action_space = action_space
        self.normalized = obs_normalizer is not None
        if obs_normalizer is not None:
            # Views of the normaliser's arrays (updated in place): always the current statistics.
            self.register_buffer("obs_mean", torch.from_numpy(obs_normalizer.rms.mean))
            self.register_buffer("obs_var", torch.from_numpy(obs_normalizer.rms.var))
            self.obs_clip = obs_normalizer.clip
            self.obs_epsilon = obs_normalizer.epsilon
        self.clipped = False
        if isinstance(action_space, spaces.Box):
            low, high = action_space.low.astype(np.float32), action_space.high.astype(np.float32)
            if np.isfinite(low).any() or np.isfinite(high).any():
                self.clipped = True
                self.register_buffer("action_low", torch.from_numpy(low.copy()))
                self.register_buffer("action_high", torch.from_numpy(high.copy()))

    def inputs(self, obs: Tensor | np.ndarray) -> Tensor:
        """Raw observations ``[B, *obs_shape]`` -> what the network reads: ``[B, obs_dim]``,
        encoded and normalised (the statistics are read, never updated)."""
        dtype = _net_dtype(self.net)
        if isinstance(obs, (dict, tuple)):  # Dict and Tuple observations: the encoder converts each part
            x = self.encoder(obs, torch.float32)
        else:
            if not isinstance(obs, Tensor):
                obs = torch.as_tensor(np.asarray(obs))
            # As the collector encodes (EnvStepper.encode): a flat float Box as it is, anything else
            # to float32; the normaliser computes in float64 from there.
            flat = obs.is_floating_point() and len(getattr(self.encoder, "shape", ())) == 1
            x = self.encoder(obs, obs.dtype if flat else torch.float32)
        if self.normalized:
            x = normalize_observations(x, self.obs_mean, self.obs_var, self.obs_epsilon, self.obs_clip)
        return x.to(dtype)

    def distribution(self, obs: Tensor | np.ndarray, action_mask: Tensor | None = None) -> Any:
        """π(·|s) for raw observations ``[B, *obs_shape]``."""
        return self.net.distribution(self.inputs(obs), action_mask)

    def value(self, obs: Tensor | np.ndarray) -> Tensor:
        """``[B]`` V(s) for raw observations."""
        return self.net.value(self.inputs(obs))

    def forward(self, obs: Tensor | np.ndarray, deterministic: bool = True,
                generator: torch.Generator | None = None) -> Tensor:
        """Actions for raw observations ``[B, *obs_shape]``, as the environment takes them.

        Args:
            obs: raw observations, tensor or array.
            deterministic: the distribution's mode (the default) instead of a sample.
            generator: the random-number generator of sampling.

        Returns:
            ``[B]`` long (Discrete), ``[B, K]`` long (MultiDiscrete, MultiBinary) or ``[B, D]`` float (Box,
            clipped to the bounds). No graph is built.
        """
        with torch.no_grad():
            actions, _, _ = self.net.act(self.inputs(obs), None, deterministic, generator)
            if self.clipped:
                actions = torch.clamp(actions, self.action_low.to(actions.dtype), self.action_high.to(actions.dtype))
            return actions


# --------------------------------------------------------------------------------------------
# A user's own network
# --------------------------------------------------------------------------------------------


def _as_distribution(dist: Any, action_kind: str, nvec: tuple[int, ...] | None, mask: Tensor | None) -> Any:
    """The library's distribution for what a user's ``distribution(x)`` returned."""
    from torch import distributions as td

    if isinstance(dist, td.Independent) and isinstance(dist.base_dist, td.Normal):
        dist = dist.base_dist
    if isinstance(dist, (Categorical, td.Categorical)):
        if action_kind != "discrete":
            raise InputError(f"the policy's distribution is categorical, the action space needs {action_kind} actions")
        if mask is None and isinstance(dist, Categorical):
            return dist
        return Categorical(dist.logits, mask)
    if isinstance(dist, MultiCategorical):
        if action_kind != "multidiscrete" or dist.nvec != nvec:
            raise InputError(f"the policy's MultiCategorical has nvec {dist.nvec}, the action space needs {nvec}")
        return dist if mask is None else MultiCategorical(dist.logits, dist.nvec, mask)
    if isinstance(dist, td.Independent) and isinstance(dist.base_dist, td.Bernoulli):
        dist = Bernoulli(dist.base_dist.logits)
    if isinstance(dist, Bernoulli):
        if action_kind != "multibinary" or (nvec is not None and dist.num_bits != nvec[0]):
            raise InputError(f"the policy's distribution is Bernoulli, the action space needs {action_kind} actions")
        return dist
    if isinstance(dist, td.Normal):
        dist = DiagGaussian(dist.loc, dist.scale.log())
    if isinstance(dist, DiagGaussian):
        if action_kind != "continuous":
            raise InputError(f"the policy's distribution is Gaussian, the action space needs {action_kind} actions")
        return dist
    raise InputError(
        f"the policy's distribution(x) returned a {type(dist).__name__}; expected a policygrad.distributions "
        "Categorical, DiagGaussian or MultiCategorical, or a torch.distributions Categorical, Normal or "
        "Independent(Normal)"
    )


class ModuleActorCritic(nn.Module):
    """A user's actor-critic network, trained as the built-in ones are (torch backend).

    The protocol: ``module`` is a ``torch.nn.Module`` with

    * ``distribution(x) -> π(·|s)`` for inputs ``x [B, obs_dim]`` (float32: the observations
      encoded, Box flattened and Discrete one-hot, and normalised if ``normalize_obs``), returning
      a ``torch.distributions.Categorical`` (Discrete actions), ``Normal`` or ``Independent(Normal)``
      with ``[B, D]`` parameters (Box actions), or one of :mod:`policygrad.distributions`
      (``Categorical``, ``DiagGaussian``, ``MultiCategorical``, ``Bernoulli``), or an
      ``Independent(torch.distributions.Bernoulli)`` (MultiBinary actions);
    * ``value(x) -> [B]`` V(s);
    * optionally ``forward(x) -> (distribution, value)``, both from one pass (a shared trunk).

    Actions are the distribution's samples, unclipped (Box bounds are applied on the way to the
    environment); the deterministic action is its mode. Action masks (``info["action_mask"]``)
    are applied to categorical logits here.

    Args:
        module: the user's network.
        obs_dim: the width of ``x``.
        action_space: the environment's single action space.

    Raises:
        InputError: ``module`` is not a module, lacks a method of the protocol, or returns
            something of the wrong kind or shape for a sample input (checked here, once).
    """

    sde = False

    def __init__(self, module: nn.Module, obs_dim: int, action_space: Any) -> None:
        super().__init__()
        from gymnasium import spaces

        if not isinstance(module, nn.Module):
            raise InputError(f"policy must be a torch.nn.Module, got a {type(module).__name__}")
        missing = [name for name in ("distribution", "value") if not callable(getattr(module, name, None))]
        if missing:
            raise InputError(
                f"policy {type(module).__name__} has no {' and no '.join(missing)} method; a custom policy needs "
                "distribution(x) -> π(·|s) and value(x) -> V(s) [B] (see policygrad.policies.ModuleActorCritic)"
            )
        self.module = module
        self.obs_dim = int(obs_dim)
        self.nvec: tuple[int, ...] | None = None
        if isinstance(action_space, spaces.Discrete):
            self.action_kind = "discrete"
            shape: tuple[int, ...] = ()
        elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
            self.action_kind = "continuous"
            shape = tuple(action_space.shape)
        elif isinstance(action_space, spaces.MultiBinary) and len(action_space.shape) == 1:
            self.action_kind = "multibinary"
            self.nvec = (int(action_space.shape[0]),)
            shape = self.nvec
        elif isinstance(action_space, spaces.MultiDiscrete) and action_space.nvec.ndim == 1:
            self.action_kind = "multidiscrete"
            self.nvec = tuple(int(n) for n in action_space.nvec)
            shape = (len(self.nvec),)
        else:
            raise InputError(f"unsupported action space {action_space!r}: policygrad supports Discrete, 1-D Box, "
                             "MultiDiscrete and MultiBinary")
        self._shared = type(module).forward is not nn.Module.forward
        self._check(action_space, shape)

    def _check(self, action_space: Any, shape: tuple[int, ...]) -> None:
        name = type(self.module).__name__
        first = next(iter(self.module.parameters()), None)
        x = torch.zeros(2, self.obs_dim, dtype=_net_dtype(self.module), device=None if first is None else first.device)
        try:
            with torch.no_grad():
                dist, value = self.forward(x)
                actions = dist.mode()
        except InputError as err:
            raise InputError(f"policy {name}: {err}") from None
        except Exception as err:
            text = str(err).strip().splitlines()
            raise InputError(f"policy {name} failed on inputs of shape [2, {self.obs_dim}]: "
                             f"{type(err).__name__}: {text[0] if text else ''}") from None
        if not isinstance(value, Tensor) or tuple(value.shape) != (2,):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise InputError(f"policy {name}: value(x) must return [B] = [2] for x [2, {self.obs_dim}], got {got}")
        if tuple(actions.shape) != (2, *shape):
            raise InputError(
                f"policy {name}: its distribution has actions of shape {tuple(actions.shape[1:])}, "
                f"the action space {action_space} needs {shape}"
            )
        if self.action_kind == "discrete" and actions.shape == (2,) and dist.num_actions != int(action_space.n):
            raise InputError(f"policy {name}: its distribution has {dist.num_actions} actions, the action space {action_space.n}")

    def distribution(self, x: Tensor, action_mask: Tensor | None = None) -> Any:
        """π(·|s) for inputs ``x [B, obs_dim]``, as a :mod:`policygrad.distributions` object."""
        return _as_distribution(self.module.distribution(x), self.action_kind, self.nvec, action_mask)

    def value(self, x: Tensor) -> Tensor:
        """``[B]`` V(s)."""
        return self.module.value(x)

    def forward(self, x: Tensor, action_mask: Tensor | None = None) -> tuple[Any, Tensor]:
        """``(π(·|s), V(s))``: the module's own ``forward`` where it has one (one pass of a shared
        trunk), else its ``distribution`` and ``value``."""
        if self._shared:
            out = self.module(x)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise InputError(f"forward(x) of {type(self.module).__name__} must return (distribution, value)")
            dist, value = out
            return _as_distribution(dist, self.action_kind, self.nvec, action_mask), value
        return self.distribution(x, action_mask), self.value(x)

    def act(self, x: Tensor, action_mask: Tensor | None = None, deterministic: bool = False,
            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(actions, log_prob [B], value [B])`` without a graph (as :meth:`ActorCritic.act`)."""
        with torch.no_grad():
            dist, value = self.forward(x, action_mask)
            if deterministic:
                actions = dist.mode()
                log_prob = dist.log_prob(actions)
            else:
                actions, log_prob = dist.sample_and_log_prob(generator)
            return actions, log_prob, value
