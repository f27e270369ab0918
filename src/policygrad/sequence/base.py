"""What every autoregressive (sequence) policy provides, and the batch of completions it samples.

A completion ``y = (y_1, ..., y_T)`` to a prompt ``x`` is a trajectory whose actions are tokens:
π(y | x) = Π_t π(y_t | x, y_<t). It ends at the first end-of-sequence token (included in it) or
after ``max_new_tokens`` tokens. Batches are padded tensors:

* prompts ``[B, P]`` long, **left**-padded with ``pad_id``; ``prompt_lengths [B]`` the real lengths
  (the last ``prompt_lengths[b]`` entries of row b are the prompt);
* completions ``[B, L]`` long, **right**-padded with ``pad_id``; ``lengths [B]`` (1 ≤ lengths ≤ L);
  ``mask [B, L]`` True on the completion's tokens.

A policy implements :class:`SequencePolicy`: :meth:`~SequencePolicy.sample` and
:meth:`~SequencePolicy.token_log_probs`. What training and ``verify --sequence`` differentiate is
``token_log_probs`` of the sampled tokens, so the same code serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["Completions", "SequencePolicy", "completion_mask"]


@dataclass
class Completions:
    """Sampled completions of a batch of prompts (see the module docstring for the layout)."""

    prompts: Tensor
    """``[B, P]`` long, left-padded."""
    prompt_lengths: Tensor
    """``[B]`` long."""
    tokens: Tensor
    """``[B, L]`` long, right-padded; L = the longest completion of the batch."""
    lengths: Tensor
    """``[B]`` long: tokens in each completion (its end-of-sequence token included)."""
    log_probs: Tensor
    """``[B, L]`` float: log π(y_t | x, y_<t) of each sampled token under the sampling distribution
    (temperature applied), 0 beyond ``lengths``; no gradient."""

    @property
    def mask(self) -> Tensor:
        """``[B, L]`` bool: True on the completion's tokens."""
        return completion_mask(self.lengths, self.tokens.shape[1])


def completion_mask(lengths: Tensor, max_length: int) -> Tensor:
    """``[B, max_length]`` bool, True where ``t < lengths[b]``."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


@runtime_checkable
class SequencePolicy(Protocol):
    """An autoregressive policy over a vocabulary of ``vocab_size`` tokens."""

    vocab_size: int

    def sample(
        self,
        prompts: Tensor,
        prompt_lengths: Tensor,
        *,
        max_new_tokens: int,
        eos: int | None,
        temperature: float = 1.0,
        greedy: bool = False,
        generator: torch.Generator | None = None,
    ) -> Completions:
        """Sample one completion per prompt row (no gradient). ``greedy``: the most likely token at
        every step (ties: the lowest id). With ``eos`` None every completion has ``max_new_tokens``
        tokens."""
        ...

    def token_log_probs(
        self,
        prompts: Tensor,
        prompt_lengths: Tensor,
        tokens: Tensor,
        lengths: Tensor,
        *,
        temperature: float = 1.0,
        with_entropy: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``[B, L]`` log π(y_t | x, y_<t) of the given completions (differentiable; 0 beyond
        ``lengths``); with ``with_entropy`` also ``[B, L]`` the entropy of π(· | x, y_<t). Computed
        in chunks, so that the ``[B, L, V]`` logits are never all held at once."""
        ...
