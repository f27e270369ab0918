"""policygrad: policy-gradient reinforcement learning built on the Policy Gradient Theorem.

    import policygrad as pg

    model = pg.PPO("CartPole-v1", seed=0).learn(100_000)
    action, _ = model.predict(obs)

The algorithms (:class:`PPO`, :class:`A2C`, :class:`REINFORCE`, :class:`NPG`, :class:`TRPO`,
:class:`IMPALA`), :func:`load`, and :class:`InputError` (every bad argument raises it, with the
one-line message the command line prints). Importing the package imports neither torch nor
gymnasium; using a model does.
"""

from policygrad.api import (
    A2C,
    GRPO,
    IMPALA,
    NPG,
    PPO,
    REINFORCE,
    RLOO,
    TRPO,
    Callback,
    DrGRPO,
    Model,
    ReinforcePP,
    ReMax,
    SequenceModel,
    load,
)
from policygrad.errors import InputError, PolicygradError, TrainingError
from policygrad.version import __version__

__all__ = ["PPO", "A2C", "REINFORCE", "NPG", "TRPO", "IMPALA", "GRPO", "RLOO", "DrGRPO", "ReMax", "ReinforcePP",
           "SequenceModel", "Model", "Callback", "load", "InputError", "TrainingError",
           "PolicygradError", "__version__"]
