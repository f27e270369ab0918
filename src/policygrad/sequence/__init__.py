"""Policy gradients on token sequences (the RLHF / verifiable-reward setting): autoregressive
policies, the group estimators (REINFORCE, RLOO, GRPO, Dr. GRPO, ReMax, REINFORCE++, PPO with a
value head) and their KL handling, exact enumeration of small sequence spaces, and built-in tasks.

Nothing heavy is imported here: the Hugging Face adapter imports ``transformers`` when used.
"""

from policygrad.sequence.base import Completions, SequencePolicy, completion_mask

__all__ = ["Completions", "SequencePolicy", "completion_mask"]
