"""A small causal transformer policy over tokens, in plain PyTorch (GPT-2's layout, nanoGPT's size).

    h_0 = E[x] + W_pos[positions];  h_{l+1} = h_l' + MLP(LN(h_l')),  h_l' = h_l + Attn(LN(h_l));
    π(· | x, y_<t) = softmax(E · LN(h_n) / temperature)

Pre-LayerNorm blocks (Radford et al. 2019), learned positional embeddings, a GELU MLP four times
as wide as the model, and by default an output head *tied* to the token embedding (Press & Wolf
2017: one V × D matrix instead of two; ``tie_embeddings=False`` gives the head its own weights).
No dropout: the log-probabilities that training differentiates must be those of sampling.

Sampling keeps a key/value cache: the prompt is read once (the prefill), then each step feeds one
new token and attends to the cached keys and values. Prompts are left-padded: an attention mask
hides the padding and position ids count real tokens only (:mod:`policygrad.sequence.decoding`), so
padding changes nothing. :meth:`TransformerPolicy.token_log_probs` recomputes the same quantities
with one full pass per chunk of rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policygrad.errors import InputError, shown
from policygrad.sequence.base import Completions
from policygrad.sequence.decoding import (
    check_prompts,
    check_sampling,
    decode,
    policy_scores_and_values,
    policy_token_scores,
    policy_values,
    positions_of,
)

__all__ = ["TransformerPolicy"]

KVCache = list[tuple[Tensor, Tensor]]
"""One ``(keys, values)`` pair per block, each ``[B, H, S_max, D / H]``, filled left to right."""


def _attention_mask(real: Tensor, start: int, length: int) -> Tensor:
    """``[B, 1, length, S]`` bool for queries at columns ``start .. start + length − 1`` over keys
    ``0 .. S − 1``: causal, and only real keys, except that every query sees itself (a padding
    query then attends to itself alone rather than to nothing, which would give NaN)."""
    keys = torch.arange(real.shape[1], device=real.device)
    queries = torch.arange(start, start + length, device=real.device)
    causal = keys[None, :] <= queries[:, None]  # [length, S]
    itself = keys[None, :] == queries[:, None]
    return (causal[None] & (real[:, None, :] | itself[None])).unsqueeze(1)


class _Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then + MLP(LN(x))."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.ln_attn = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(4 * d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor, cache: tuple[Tensor, Tensor] | None, start: int) -> Tensor:
        batch, length, width = x.shape  # [B, T, D]
        q, k, v = self.qkv(self.ln_attn(x)).split(width, dim=-1)
        q, k, v = (z.view(batch, length, self.n_heads, width // self.n_heads).transpose(1, 2) for z in (q, k, v))
        if cache is not None:  # write this step's keys and values, attend to all so far
            keys, values = cache
            keys[:, :, start:start + length] = k
            values[:, :, start:start + length] = v
            k, v = keys[:, :, :start + length], values[:, :, :start + length]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, D / H]
        x = x + self.proj(a.transpose(1, 2).reshape(batch, length, width))
        return x + self.out(F.gelu(self.fc(self.ln_mlp(x))))


class TransformerPolicy(nn.Module):
    """A causal transformer implementing :class:`~policygrad.sequence.base.SequencePolicy`.

    Args:
        vocab_size: V, the number of token ids.
        d_model: D, the width of the hidden states.
        n_layers: the number of blocks.
        n_heads: attention heads per block (D must be a multiple).
        max_context: the most tokens (prompt and completion) a sequence may hold: the number of
            learned positions.
        pad_id: the id that pads prompts (on the left) and completions (on the right).
        tie_embeddings: the output head reuses the token embedding (True) or has its own weights.
        value_head: add a scalar head for :meth:`values` (PPO's critic on the same trunk).
        chunk_size: rows per pass of :meth:`token_log_probs` (None: the whole batch at once).
        seed: seeds the initialisation (its own generator; torch's global one is untouched).
    """

    def __init__(self, vocab_size: int, d_model: int = 128, n_layers: int = 2, n_heads: int = 4, max_context: int = 256,
                 pad_id: int = 0, *, tie_embeddings: bool = True, value_head: bool = False, chunk_size: int | None = 16,
                 seed: int = 0) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("d_model", d_model), ("n_layers", n_layers),
                            ("n_heads", n_heads), ("max_context", max_context)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {shown(value)}")
        if d_model % n_heads:
            raise InputError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        if isinstance(pad_id, bool) or not isinstance(pad_id, int) or not 0 <= pad_id < vocab_size:
            raise InputError(f"pad_id must be a token id in [0, {vocab_size}), got {shown(pad_id)}")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise InputError(f"chunk_size must be None or a positive integer, got {shown(chunk_size)}")
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_heads = n_heads
        self.max_context = max_context
        self.pad_id = pad_id
        self.chunk_size = chunk_size
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_context, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_final = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.head.weight = self.token_embedding.weight
        self.value_head = nn.Linear(d_model, 1) if value_head else None
        self._initialise(n_layers, seed)

    def _initialise(self, n_layers: int, seed: int) -> None:
        """GPT-2's scheme: N(0, 0.02) weights, zero biases, residual projections scaled by 1/√(2n)."""
        generator = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln_" in name:
                nn.init.ones_(p)
            else:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std, generator=generator)

    def hidden(self, ids: Tensor, real: Tensor, positions: Tensor, cache: KVCache | None = None,
               start: int = 0) -> Tensor:
        """The trunk: ``[B, T, D]`` final hidden states (after the last LayerNorm) of ``ids [B, T]``.

        Args:
            ids: ``[B, T]`` token ids at columns ``start .. start + T − 1``.
            real: ``[B, S]`` bool, True on the real tokens of every column so far (S ≥ start + T).
            positions: ``[B, T]`` position ids of ``ids``.
            cache: the key/value cache that columns ``0 .. start − 1`` filled, or None (then
                ``start`` is 0 and ``real`` is ``[B, T]``).
        """
        x = self.token_embedding(ids) + self.position_embedding(positions)
        mask = _attention_mask(real[:, :start + ids.shape[1]], start, ids.shape[1])
        for i, block in enumerate(self.blocks):
            x = block(x, mask, None if cache is None else cache[i], start)
        return self.ln_final(x)

    def logits(self, hidden: Tensor) -> Tensor:
        """``[..., V]`` logits from ``[..., D]`` hidden states."""
        return self.head(hidden)

    @torch.no_grad()
    def sample(self, prompts: Tensor, prompt_lengths: Tensor, *, max_new_tokens: int, eos: int | None,
               temperature: float = 1.0, greedy: bool = False, generator: torch.Generator | None = None) -> Completions:
        """Sample one completion per prompt (see :class:`~policygrad.sequence.base.SequencePolicy`),
        reading the prompt once and then one token per step through a key/value cache."""
        check_prompts(prompts, prompt_lengths, self.vocab_size, self.max_context)
        check_sampling(prompt_lengths, max_new_tokens, eos, temperature, self.vocab_size, self.max_context)
        batch, width = prompts.shape
        head_dim = self.d_model // self.n_heads
        dtype = self.token_embedding.weight.dtype
        cache = [
            (prompts.new_zeros((batch, self.n_heads, width + max_new_tokens, head_dim), dtype=dtype),
             prompts.new_zeros((batch, self.n_heads, width + max_new_tokens, head_dim), dtype=dtype))
            for _ in self.blocks
        ]
        real = torch.cat([
            torch.arange(width, device=prompts.device)[None, :] >= (width - prompt_lengths)[:, None],
            torch.ones(batch, max_new_tokens, dtype=torch.bool, device=prompts.device),
        ], dim=1)
        hidden = self.hidden(prompts, real, positions_of(real[:, :width]), cache, 0)
        first = self.logits(hidden[:, -1])  # left padding: the last column is each prompt's last token

        def step(token: Tensor, t: int) -> Tensor:
            position = (prompt_lengths + t)[:, None]  # token t sits right after the prompt's last one
            return self.logits(self.hidden(token[:, None], real, position, cache, width + t)[:, -1])

        return decode(first, step, prompts, prompt_lengths, max_new_tokens=max_new_tokens, eos=eos,
                      temperature=float(temperature), greedy=greedy, generator=generator, pad_id=self.pad_id)

    def token_log_probs(self, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor, *,
                        temperature: float = 1.0, with_entropy: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``[B, L]`` log π(y_t | x, y_<t) of the given completions, 0 beyond ``lengths``
        (differentiable), and with ``with_entropy`` the ``[B, L]`` entropies; ``chunk_size`` rows
        at a time (:func:`policygrad.sequence.decoding.token_scores`)."""
        return policy_token_scores(self, prompts, prompt_lengths, tokens, lengths, temperature, with_entropy)

    def values(self, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        """``[B, L]`` V(x, y_<t): the value head on the state before each completion token (the
        state whose action is y_t, aligned with :meth:`token_log_probs`), 0 beyond ``lengths``
        (:func:`policygrad.sequence.decoding.policy_values`).

        Returns:
            Differentiable values (gradient: ∇ of the value head and the shared trunk).
        """
        return policy_values(self, prompts, prompt_lengths, tokens, lengths)

    def scores_and_values(self, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor, *,
                          temperature: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        """``(log π, entropy, V)``, each ``[B, L]``: :meth:`token_log_probs` with entropies and
        :meth:`values` from one pass of the shared trunk
        (:func:`policygrad.sequence.decoding.policy_scores_and_values`)."""
        return policy_scores_and_values(self, prompts, prompt_lengths, tokens, lengths, temperature)
