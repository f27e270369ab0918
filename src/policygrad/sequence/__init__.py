"""Policy gradients on token sequences (the RLHF / verifiable-reward setting): autoregressive
policies, the group estimators (REINFORCE, RLOO, GRPO, Dr. GRPO, ReMax, REINFORCE++, PPO with a
value head) and their KL handling, exact enumeration of small sequence spaces, and built-in tasks.

Nothing heavy is imported here: the Hugging Face adapter imports ``transformers`` when used.

Modules: ``base`` (the protocol and batch layout), ``estimators`` (pure advantages, KL terms,
aggregation and :func:`sequence_surrogate`), ``tabular`` (a policy with a logits row per prefix),
``exact`` (enumeration: J_β, ∇J_β and every estimator's expectation; ``verify --sequence``).
"""

from policygrad.sequence.base import Completions, SequencePolicy, completion_mask
from policygrad.sequence.estimators import sequence_surrogate
from policygrad.sequence.tabular import TabularSequencePolicy

__all__ = ["Completions", "SequencePolicy", "completion_mask", "sequence_surrogate", "TabularSequencePolicy"]
