"""Policy-gradient algorithms: each a choice of Ψ and of surrogate loss on a shared update.

==========  =====================================  ==========================================
algorithm   Ψ_t                                    surrogate / step
==========  =====================================  ==========================================
reinforce   R(τ) or G_t, minus V(s_t) optionally   score_function_loss, one step
a2c         GAE(γ, λ)                              score_function_loss + value + entropy, one step
ppo         GAE(γ, λ), standardised per minibatch  clipped_surrogate (or ratio + β·KL), epochs
npg         GAE(γ, λ)                              natural gradient, step size from max_kl
trpo        GAE(γ, λ)                              natural gradient + KL-constrained line search
impala      V-trace advantage (current π and V)    score_function_loss + value + entropy, one step
==========  =====================================  ==========================================

With ``criterion = "average"`` (not REINFORCE or IMPALA), GAE(γ, λ) becomes the differential GAE of
:mod:`policygrad.algorithms.average`: r_t − ρ̂ with no discount, for continuing tasks.

Use::

    config = make_config("ppo", {"num_envs": 8, "learning_rate": 1e-3})
    algo = make_algorithm("ppo", policy, config, total_updates)
    metrics = algo.update(rollout)
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from policygrad.algorithms.a2c import A2C, A2CConfig
from policygrad.algorithms.base import METRIC_KEYS, Algorithm, Batch
from policygrad.algorithms.config import BaseConfig, config_from_dict, field_docs
from policygrad.algorithms.impala import IMPALA, IMPALAConfig
from policygrad.algorithms.ppo import PPO, PPOConfig
from policygrad.algorithms.presets import PRESETS, get_preset
from policygrad.algorithms.reinforce import Reinforce, ReinforceConfig
from policygrad.algorithms.trpo import NPG, TRPO, NPGConfig, TRPOConfig
from policygrad.errors import InputError, shown

__all__ = [
    "ALGORITHMS",
    "METRIC_KEYS",
    "PRESETS",
    "Algorithm",
    "Batch",
    "BaseConfig",
    "CONFIGS",
    "make_config",
    "make_algorithm",
    "algorithm_class",
    "get_preset",
    "field_docs",
    "A2C",
    "A2CConfig",
    "IMPALA",
    "IMPALAConfig",
    "NPG",
    "NPGConfig",
    "PPO",
    "PPOConfig",
    "Reinforce",
    "ReinforceConfig",
    "TRPO",
    "TRPOConfig",
]

ALGORITHMS = ("reinforce", "a2c", "ppo", "npg", "trpo", "impala")

CONFIGS: dict[str, type[BaseConfig]] = {
    "reinforce": ReinforceConfig,
    "a2c": A2CConfig,
    "ppo": PPOConfig,
    "npg": NPGConfig,
    "trpo": TRPOConfig,
    "impala": IMPALAConfig,
}

_CLASSES: dict[str, type[Algorithm]] = {
    "reinforce": Reinforce,
    "a2c": A2C,
    "ppo": PPO,
    "npg": NPG,
    "trpo": TRPO,
    "impala": IMPALA,
}


def _check_algo(algo: str) -> str:
    if algo not in ALGORITHMS:
        raise InputError(f"unknown algorithm {shown(algo)}; valid: {', '.join(ALGORITHMS)}")
    return algo


def make_config(algo: str, overrides: Mapping[str, Any] | None = None) -> BaseConfig:
    """The config of ``algo`` with ``overrides`` applied (strings are parsed to the field's type).

    Raises:
        InputError: unknown algorithm, unknown key (the message lists the valid ones), a value of
            the wrong type or out of range.
    """
    return config_from_dict(CONFIGS[_check_algo(algo)], algo, overrides or {})


def algorithm_class(algo: str) -> type[Algorithm]:
    """The class of ``algo``; InputError for an unknown name."""
    return _CLASSES[_check_algo(algo)]


def make_algorithm(algo: str, policy: torch.nn.Module, config: BaseConfig, total_updates: int) -> Algorithm:
    """Build ``algo`` around ``policy``; ``total_updates`` sets the learning-rate schedule."""
    cls = _CLASSES[_check_algo(algo)]
    if type(config) is not CONFIGS[algo]:
        raise InputError(f"{algo} needs a {CONFIGS[algo].__name__}, got {type(config).__name__}")
    return cls(policy, config, total_updates)
