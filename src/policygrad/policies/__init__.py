"""Policies and value functions: linear and tabular policies with analytic score functions
(:mod:`~policygrad.policies.analytic`), the MLP (:mod:`~policygrad.policies.mlp`), the MLP policies
and value function (:mod:`~policygrad.policies.heads`), observation encodings
(:mod:`~policygrad.policies.encoders`), the actor-critic built for Gymnasium spaces
(:mod:`~policygrad.policies.actor_critic`), and a trained policy as one module with a user's own
network beside the built-in ones (:mod:`~policygrad.policies.policy`).
"""

from __future__ import annotations

from policygrad.policies.actor_critic import ActorCritic, Distribution, image_layouts, make_actor_critic, make_encoder
from policygrad.policies.analytic import LinearGaussianPolicy, LinearSoftmaxPolicy, TabularSoftmaxPolicy
from policygrad.policies.encoders import (
    CompositeObservation,
    Encoder,
    ChannelsFirstImage,
    FlattenObservation,
    MultiOneHotObservation,
    NatureCNN,
    ObservationTrunk,
    OneHotObservation,
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
from policygrad.policies.mlp import ACTIVATIONS, MLP
from policygrad.policies.policy import ModuleActorCritic, Policy

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
    "MLPBernoulliPolicy",
    "ValueFunction",
    "ChannelsFirstImage",
    "FlattenObservation",
    "OneHotObservation",
    "MultiOneHotObservation",
    "CompositeObservation",
    "NatureCNN",
    "ObservationTrunk",
    "is_image_space",
    "image_layouts",
    "Encoder",
    "ActorCritic",
    "Distribution",
    "make_actor_critic",
    "make_encoder",
    "Policy",
    "ModuleActorCritic",
]
