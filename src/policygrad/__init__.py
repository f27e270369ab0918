"""policygrad: policy-gradient reinforcement learning built on the Policy Gradient Theorem."""

from policygrad.version import __version__

__all__ = ["__version__"]
