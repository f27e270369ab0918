"""policygrad: policy-gradient reinforcement learning built on the Policy Gradient Theorem."""

__version__ = "0.1.0"
