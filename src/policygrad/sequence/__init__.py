"""Policy gradients on token sequences (the RLHF / verifiable-reward setting): autoregressive
policies, the group estimators (REINFORCE, RLOO, GRPO, Dr. GRPO, ReMax, REINFORCE++, PPO with a
value head) and their KL handling, exact enumeration of small sequence spaces, and built-in tasks.

Nothing heavy is imported here: the Hugging Face adapter imports ``transformers`` when used.

Modules: ``base`` (the protocol and batch layout), ``estimators`` (pure advantages, KL terms,
aggregation and :func:`sequence_surrogate`), ``tabular`` (a policy with a logits row per prefix),
``exact`` (enumeration: J_β, ∇J_β and every estimator's expectation; ``verify --sequence``),
``transformer`` (a small causal transformer with a KV cache), ``hf`` (a Hugging Face causal LM),
``decoding`` (what both share: sampling and chunked log-probabilities), ``tasks`` (the built-in
verifiable-reward tasks ``seq:count``, ``seq:sort``, ``seq:reverse``, ``seq:add``).
"""

from policygrad.sequence.base import Completions, SequencePolicy, completion_mask
from policygrad.sequence.estimators import sequence_surrogate
from policygrad.sequence.hf import HFPolicy
from policygrad.sequence.tabular import TabularSequencePolicy
from policygrad.sequence.tasks import TASKS, Task, make_task
from policygrad.sequence.transformer import TransformerPolicy

__all__ = ["Completions", "SequencePolicy", "completion_mask", "sequence_surrogate", "TabularSequencePolicy",
           "TransformerPolicy", "HFPolicy", "TASKS", "Task", "make_task"]
