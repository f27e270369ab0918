"""What every autoregressive network policy shares: the checks of a batch at the boundary, the
layout of a prompt and its completion as one sequence, the sampling loop over a key/value cache,
and the log-probabilities of given tokens computed in chunks of rows.

The models (:mod:`policygrad.sequence.transformer`, :mod:`policygrad.sequence.hf`) supply two
things: a *trunk* ``(ids, real, positions) -> hidden`` and a *head* ``hidden -> logits``; this
module does the rest once, so that sampling and scoring are one implementation for both.

Symbols and shapes:

| symbol | shape | meaning |
|---|---|---|
| B | int | rows of the batch |
| P | int | width of the left-padded prompts |
| L | int | width of the right-padded completions |
| V | int | vocabulary size |
| D | int | width of the trunk's hidden states |
| ``real`` | ``[B, S]`` bool | True on real tokens, False on padding |
| ``positions`` | ``[B, S]`` long | position of each token in its own sequence: cumsum(real) − 1 |

Position ids count real tokens only, so that a prompt's left padding changes neither its positions
nor, through the attention mask, what its tokens attend to: a left-padded prompt has the
distribution of the same prompt unpadded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from policygrad.errors import InputError, shown
from policygrad.sequence.base import Completions, completion_mask

__all__ = [
    "Joined",
    "check_prompts",
    "check_completions",
    "check_sampling",
    "joined",
    "positions_of",
    "decode",
    "token_scores",
    "policy_token_scores",
    "policy_values",
    "policy_scores_and_values",
    "completion_states",
]


def at_least_float32(logits: Tensor) -> Tensor:
    """Logits in float32, or in their own dtype if wider: a half-precision model's softmax is taken
    in float32, a float64 one's (the exact checks) stays in float64."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def check_prompts(prompts: Tensor, prompt_lengths: Tensor, vocab_size: int, max_context: int | None) -> None:
    """InputError (one line) unless ``prompts [B, P]`` long holds ids in [0, V) and ``prompt_lengths [B]``
    lies in [1, P] and within ``max_context``."""
    if not isinstance(prompts, Tensor) or prompts.dim() != 2 or prompts.dtype != torch.long:
        raise InputError(f"prompts must be a [B, P] long tensor, got {_describe(prompts)}")
    if not isinstance(prompt_lengths, Tensor) or prompt_lengths.shape != (prompts.shape[0],):
        raise InputError(
            f"prompt_lengths must be a [B] tensor with B = {prompts.shape[0]}, got {_describe(prompt_lengths)}"
        )
    if prompts.shape[0] == 0:
        raise InputError("the batch of prompts is empty")
    if prompts.numel() and (int(prompts.min()) < 0 or int(prompts.max()) >= vocab_size):
        raise InputError(f"prompt token ids must lie in [0, {vocab_size}), got ids in "
                         f"[{int(prompts.min())}, {int(prompts.max())}]")
    if int(prompt_lengths.min()) < 1 or int(prompt_lengths.max()) > prompts.shape[1]:
        raise InputError(f"prompt_lengths must lie in [1, P = {prompts.shape[1]}] (a prompt has at least one "
                         f"token), got values in [{int(prompt_lengths.min())}, {int(prompt_lengths.max())}]")
    if max_context is not None and int(prompt_lengths.max()) > max_context:
        raise InputError(f"a prompt of {int(prompt_lengths.max())} tokens is longer than the model's "
                         f"max_context of {max_context} tokens")


def check_completions(tokens: Tensor, lengths: Tensor, prompt_lengths: Tensor, vocab_size: int,
                      max_context: int | None) -> None:
    """InputError (one line) unless ``tokens [B, L]`` long holds ids in [0, V), ``lengths [B]`` lies in
    [1, L], and every prompt with its completion fits in ``max_context``."""
    batch = prompt_lengths.shape[0]
    if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long or tokens.shape[0] != batch:
        raise InputError(f"tokens must be a [B, L] long tensor with B = {batch}, got {_describe(tokens)}")
    if not isinstance(lengths, Tensor) or lengths.shape != (batch,):
        raise InputError(f"lengths must be a [B] tensor with B = {batch}, got {_describe(lengths)}")
    if tokens.shape[1] == 0 or int(lengths.min()) < 1 or int(lengths.max()) > tokens.shape[1]:
        raise InputError(f"lengths must lie in [1, L = {tokens.shape[1]}], got values in "
                         f"[{int(lengths.min()) if batch else 0}, {int(lengths.max()) if batch else 0}]")
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size:
        raise InputError(f"token ids must lie in [0, {vocab_size}), got ids in [{int(tokens.min())}, {int(tokens.max())}]")
    if max_context is not None:
        total = int((prompt_lengths + lengths).max())
        if total > max_context:
            raise InputError(f"a prompt with its completion holds {total} tokens, more than the model's "
                             f"max_context of {max_context}")


def check_sampling(prompt_lengths: Tensor, max_new_tokens: int, eos: int | None, temperature: float,
                   vocab_size: int, max_context: int | None) -> None:
    """InputError (one line) for sampling settings out of range."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive integer, got {shown(max_new_tokens)}")
    if eos is not None and (isinstance(eos, bool) or not isinstance(eos, int) or not 0 <= eos < vocab_size):
        raise InputError(f"eos must be None or a token id in [0, {vocab_size}), got {shown(eos)}")
    if not isinstance(temperature, (int, float)) or not 0 < float(temperature) < float("inf"):
        raise InputError(f"temperature must be a positive finite number, got {shown(temperature)}")
    if max_context is not None and int(prompt_lengths.max()) + max_new_tokens > max_context:
        raise InputError(f"a prompt of {int(prompt_lengths.max())} tokens and {max_new_tokens} new tokens do not fit "
                         f"in the model's max_context of {max_context} tokens")


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"a {list(x.shape)} {str(x.dtype).removeprefix('torch.')} tensor"
    return f"a {type(x).__name__}"


def positions_of(real: Tensor) -> Tensor:
    """``[B, S]`` long: the position of each token among its row's real tokens, cumsum(real) − 1
    (0 on the left padding, which attends to nothing real and is never read)."""
    return (real.long().cumsum(1) - 1).clamp(min=0)


@dataclass
class Joined:
    """A prompt and its completion as one sequence ``[B, P + L]`` (prompt left-padded, completion
    right-padded), what a model reads when it scores the completion."""

    ids: Tensor
    """``[B, P + L]`` long."""
    real: Tensor
    """``[B, P + L]`` bool: the prompt's real tokens and the completion's tokens."""
    positions: Tensor
    """``[B, P + L]`` long: :func:`positions_of` ``real``."""
    prompt_width: int
    """P: the hidden state at column ``P − 1 + t`` predicts completion token t."""


def joined(prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor) -> Joined:
    """The prompt and completion of each row side by side (see :class:`Joined`)."""
    width = prompts.shape[1]
    prompt_real = torch.arange(width, device=prompts.device)[None, :] >= (width - prompt_lengths)[:, None]
    real = torch.cat([prompt_real, completion_mask(lengths, tokens.shape[1])], dim=1)
    return Joined(torch.cat([prompts, tokens], dim=1), real, positions_of(real), width)


Trunk = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(ids [c, S], real [c, S], positions [c, S]) -> hidden [c, S, D]``: a model without its output head."""
Head = Callable[[Tensor], Tensor]
"""``hidden [..., D] -> logits [..., V]``."""


def _scores(hidden: Tensor, targets: Tensor, head: Head, temperature: float, with_entropy: bool) -> tuple[Tensor, Tensor]:
    """log π(targets) ``[c, L]`` and the entropy ``[c, L]`` (zeros without ``with_entropy``) from
    ``hidden [c, L, D]``: the only place the ``[c, L, V]`` logits exist."""
    log_p = F.log_softmax(at_least_float32(head(hidden)) / temperature, dim=-1)  # [c, L, V]
    chosen = log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [c, L]
    if with_entropy:
        entropy = -(log_p.exp() * log_p).sum(-1)
    else:
        entropy = torch.zeros_like(chosen)
    return chosen, entropy


def token_scores(trunk: Trunk, head: Head, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor,
                 lengths: Tensor, *, temperature: float, with_entropy: bool,
                 chunk_size: int | None) -> Tensor | tuple[Tensor, Tensor]:
    """``[B, L]`` log π(y_t | x, y_<t) (0 beyond ``lengths``), and with ``with_entropy`` the ``[B, L]``
    entropy H(π(· | x, y_<t)): one teacher-forced pass of the trunk over the whole batch, then the
    head on ``chunk_size`` rows at a time.

    Only the head's output is chunked. The trunk's ``[B, S, D]`` states are what autograd keeps for
    the backward pass in any case (chunking the trunk would hold the same activations and pay its
    per-call cost once per chunk), while the ``[B, L, V]`` logits are V / D times larger. Under
    autograd the head of each chunk runs inside :func:`torch.utils.checkpoint.checkpoint`: its
    ``[c, L, V]`` logits are freed after the forward pass and recomputed, one chunk at a time, in the
    backward pass, so that the ``[B, L, V]`` logits are never all held, neither forward nor backward.

    Returns:
        Differentiable log-probabilities (and entropies) whose gradient is Σ ∇ log π(y_t | x, y_<t)
        weighted by the upstream gradient.
    """
    hidden = completion_states(trunk, prompts, prompt_lengths, tokens, lengths)
    return _head_scores(hidden, head, tokens, lengths, temperature=temperature, with_entropy=with_entropy,
                        chunk_size=chunk_size)


def completion_states(trunk: Trunk, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
    """``[B, L, D]`` the trunk's state before each completion token: one teacher-forced pass over
    prompt and completion (the last completion token predicts nothing, so the trunk reads P + L − 1
    columns). What the head scores and the value head reads."""
    seq = joined(prompts, prompt_lengths, tokens, lengths)
    hidden = trunk(seq.ids[:, :-1], seq.real[:, :-1], seq.positions[:, :-1])
    return hidden[:, seq.prompt_width - 1:]


def _head_scores(hidden: Tensor, head: Head, tokens: Tensor, lengths: Tensor, *, temperature: float,
                 with_entropy: bool, chunk_size: int | None) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`token_scores` from the trunk's states ``hidden [B, L, D]``: the head on ``chunk_size``
    rows at a time (checkpointed under autograd)."""
    batch, width = tokens.shape
    mask = completion_mask(lengths, width)
    step = batch if chunk_size is None else chunk_size
    log_probs, entropies = [], []
    for start in range(0, batch, step):
        rows = slice(start, start + step)
        if torch.is_grad_enabled() and hidden.requires_grad:
            chosen, entropy = checkpoint(_scores, hidden[rows], tokens[rows], head, temperature, with_entropy,
                                         use_reentrant=False)
        else:
            chosen, entropy = _scores(hidden[rows], tokens[rows], head, temperature, with_entropy)
        log_probs.append(chosen)
        entropies.append(entropy)
    log_prob = torch.cat(log_probs).masked_fill(~mask, 0.0)
    if not with_entropy:
        return log_prob
    return log_prob, torch.cat(entropies).masked_fill(~mask, 0.0)


def policy_token_scores(policy: Any, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor,
                        temperature: float, with_entropy: bool) -> Tensor | tuple[Tensor, Tensor]:
    """``token_log_probs`` of a model with ``hidden``, ``logits``, ``vocab_size``, ``max_context``
    and ``chunk_size`` (the transformer and the Hugging Face adapter): the inputs checked, then
    :func:`token_scores`."""
    _check_scoring(policy, prompts, prompt_lengths, tokens, lengths, temperature)
    return token_scores(policy.hidden, policy.logits, prompts, prompt_lengths, tokens, lengths,
                        temperature=float(temperature), with_entropy=with_entropy, chunk_size=policy.chunk_size)


def policy_values(policy: Any, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
    """``[B, L]`` V(x, y_<t) of a model with ``hidden`` and a ``value_head`` (the transformer and the
    Hugging Face adapter): the value head on the trunk's state before each completion token (the
    state whose action is y_t, aligned with :func:`token_scores`), 0 beyond ``lengths``;
    differentiable through the head and the shared trunk."""
    _check_value_head(policy)
    _check_scoring(policy, prompts, prompt_lengths, tokens, lengths)
    return _values(policy, completion_states(policy.hidden, prompts, prompt_lengths, tokens, lengths), lengths)


def policy_scores_and_values(policy: Any, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor,
                             temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(log π, entropy, V)``, each ``[B, L]`` and 0 beyond ``lengths``: :func:`policy_token_scores`
    (with entropies) and :func:`policy_values` from one pass of the shared trunk instead of two
    (PPO's training pass); the same numbers, differentiable through both heads and the trunk."""
    _check_value_head(policy)
    _check_scoring(policy, prompts, prompt_lengths, tokens, lengths, temperature)
    hidden = completion_states(policy.hidden, prompts, prompt_lengths, tokens, lengths)
    log_prob, entropy = _head_scores(hidden, policy.logits, tokens, lengths, temperature=float(temperature),
                                     with_entropy=True, chunk_size=policy.chunk_size)
    return log_prob, entropy, _values(policy, hidden, lengths)


def _check_scoring(policy: Any, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor,
                   temperature: float | None = None) -> None:
    """The checks of a batch a network policy scores: prompts, completions, and the temperature
    (None: not used)."""
    check_prompts(prompts, prompt_lengths, policy.vocab_size, policy.max_context)
    check_completions(tokens, lengths, prompt_lengths, policy.vocab_size, policy.max_context)
    if temperature is not None:
        check_sampling(prompt_lengths, 1, None, temperature, policy.vocab_size, None)


def _check_value_head(policy: Any) -> None:
    if policy.value_head is None:
        raise InputError(f"this {type(policy).__name__} has no value head: build it with value_head=True")


def _values(policy: Any, hidden: Tensor, lengths: Tensor) -> Tensor:
    """``[B, L]`` the value head on the states before each completion token, 0 beyond ``lengths``."""
    values = policy.value_head(hidden).squeeze(-1)  # [B, L]
    return values.masked_fill(~completion_mask(lengths, hidden.shape[1]), 0.0)


def decode(first_logits: Tensor, step: Callable[[Tensor, int], Tensor], prompts: Tensor, prompt_lengths: Tensor, *,
           max_new_tokens: int, eos: int | None, temperature: float, greedy: bool,
           generator: torch.Generator | None, pad_id: int) -> Completions:
    """The sampling loop: one new token per row per step, from the model's incremental logits.

    Args:
        first_logits: ``[B, V]`` the logits after each prompt (what the prefill computed).
        step: ``(tokens [B], t) -> logits [B, V]``: feed token t of every row (a finished row's
            token is ``pad_id``; its logits are ignored) and return the logits of token t + 1.
        prompts, prompt_lengths: carried into the :class:`Completions`.
        temperature: the draw is from softmax(logits / temperature); ``log_probs`` are of that
            distribution.
        greedy: the most likely token (ties: the lowest id, ``torch.argmax``'s first maximum).
        generator: the source of every random draw (``torch.multinomial``); None: torch's global one.

    Returns:
        The completions, right-padded with ``pad_id``, each ending at its first ``eos`` (included).
    """
    batch = first_logits.shape[0]
    device = first_logits.device
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    lengths = torch.full((batch,), max_new_tokens, dtype=torch.long, device=device)
    tokens, log_probs = [], []
    logits = first_logits
    for t in range(max_new_tokens):
        log_p = F.log_softmax(at_least_float32(logits) / temperature, dim=-1)  # [B, V]
        if greedy:
            token = logits.argmax(dim=-1)
        else:
            token = torch.multinomial(log_p.exp(), 1, generator=generator).squeeze(1)
        chosen = log_p.gather(1, token[:, None]).squeeze(1)
        token = token.masked_fill(finished, pad_id)
        tokens.append(token)
        log_probs.append(chosen.masked_fill(finished, 0.0))
        if eos is not None:
            ends = ~finished & (token == eos)
            lengths = torch.where(ends, t + 1, lengths)
            finished = finished | ends
            if bool(finished.all()):
                break
        if t + 1 < max_new_tokens:
            logits = step(token, t)
    return Completions(
        prompts=prompts,
        prompt_lengths=prompt_lengths,
        tokens=torch.stack(tokens, dim=1),
        lengths=lengths,
        log_probs=torch.stack(log_probs, dim=1),
    )
