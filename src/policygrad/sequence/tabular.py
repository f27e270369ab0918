"""A tabular autoregressive policy: one row of logits per (prompt, prefix).

π(y_t | x, y_<t) = softmax(θ[x, y_<t] / temperature)[y_t] for every prefix y_<t that can occur:
length below ``max_length`` and, when ``eos`` is set, without ``eos``. Prompts are ``[B, 1]``
tensors holding the prompt index. Prefixes are numbered breadth-first (the empty prefix is row 0);
:attr:`TabularSequencePolicy.children` ``[num_prefixes, V]`` gives the row of each one-token
extension (−1 where the extension is not a prefix), so sampling and scoring follow the table
without any dictionary look-up.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from policygrad.errors import InputError, shown
from policygrad.sequence.base import Completions, completion_mask

__all__ = ["TabularSequencePolicy", "count_prefixes", "MAX_TABLE_ENTRIES"]

MAX_TABLE_ENTRIES = 50_000_000
"""Most logits a table holds (prompts × prefixes × V): 400 MB in float64."""


def count_prefixes(vocab_size: int, max_length: int, eos: int | None) -> int:
    """Prefixes that can occur: Σ_{k<max_length} n^k, n = V (V − 1 when ``eos`` is set)."""
    n = vocab_size - (eos is not None)
    return sum(n**k for k in range(max_length))


class TabularSequencePolicy(nn.Module):
    """A :class:`~policygrad.sequence.base.SequencePolicy` with a free logits row per (prompt, prefix).

    Args:
        vocab_size: V ≥ 1.
        max_length: L ≥ 1, the longest completion.
        eos: end-of-sequence token id, or None (every completion has L tokens).
        num_prompts: P ≥ 1.
        dtype: of the table (float64 for exact checks).
    """

    def __init__(self, vocab_size: int, max_length: int, eos: int | None, num_prompts: int,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if vocab_size < 1 or max_length < 1 or num_prompts < 1:
            raise InputError(f"vocab_size, max_length and num_prompts must be >= 1, got {vocab_size}, "
                             f"{max_length}, {num_prompts}")
        if eos is not None and not 0 <= eos < vocab_size:
            raise InputError(f"eos must be a token id in [0, {vocab_size}), got {shown(eos)}")
        n = count_prefixes(vocab_size, max_length, eos)
        if n * vocab_size * num_prompts > MAX_TABLE_ENTRIES:
            raise InputError(f"a table of {num_prompts} prompts x {n:,} prefixes x {vocab_size} tokens is above "
                             f"the limit of {MAX_TABLE_ENTRIES:,} logits")
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.eos = eos
        self.num_prompts = num_prompts
        # Breadth-first: prefixes of length k occupy rows depth_start[k] .. depth_start[k+1] − 1.
        children = torch.full((n, vocab_size), -1, dtype=torch.long)
        prefix_tokens: list[tuple[int, ...]] = [()]
        frontier = [0]
        for _ in range(max_length - 1):
            nxt = []
            for row in frontier:
                for tok in range(vocab_size):
                    if tok == eos:
                        continue
                    children[row, tok] = len(prefix_tokens)
                    nxt.append(len(prefix_tokens))
                    prefix_tokens.append(prefix_tokens[row] + (tok,))
            frontier = nxt
        self.children = children
        self.prefixes: list[tuple[int, ...]] = prefix_tokens
        self.logits = nn.Parameter(torch.zeros(num_prompts, n, vocab_size, dtype=dtype))

    @property
    def num_prefixes(self) -> int:
        return len(self.prefixes)

    # --- the table ----------------------------------------------------------------------------

    def prefix_row(self, prefix: Sequence[int]) -> int:
        """The row of ``prefix`` (a sequence of token ids); InputError if it cannot occur."""
        row = 0
        for tok in prefix:
            if not 0 <= tok < self.vocab_size:
                raise InputError(f"token {shown(tok)} is outside the vocabulary [0, {self.vocab_size})")
            row = int(self.children[row, tok]) if row >= 0 else -1
            if row < 0:
                break
        if row < 0 or len(prefix) >= self.max_length:
            raise InputError(f"prefix {shown(list(prefix))} cannot occur (length < {self.max_length}"
                             + (f", no eos {self.eos}" if self.eos is not None else "") + ")")
        return row

    @torch.no_grad()
    def set_logits(self, tables: Sequence[dict[tuple[int, ...], Sequence[float]]]) -> None:
        """Sets the table from one ``{prefix: [V logits]}`` dict per prompt; unlisted prefixes get 0."""
        if len(tables) != self.num_prompts:
            raise InputError(f"{len(tables)} logit tables for {self.num_prompts} prompts")
        self.logits.zero_()
        for p, table in enumerate(tables):
            for prefix, row_logits in table.items():
                row = torch.as_tensor(row_logits, dtype=self.logits.dtype)
                if row.shape != (self.vocab_size,):
                    raise InputError(f"prompt {p} prefix {shown(list(prefix))}: {tuple(row.shape)} logits, "
                                     f"expected {self.vocab_size}")
                self.logits[p, self.prefix_row(prefix)] = row

    def table_dicts(self, table: Tensor | None = None) -> list[dict[tuple[int, ...], list[float]]]:
        """``table`` (default: the gradient of :attr:`logits`) as one ``{prefix: [V]}`` dict per prompt."""
        if table is None:
            table = self.logits.grad if self.logits.grad is not None else torch.zeros_like(self.logits)
        return [{prefix: table[p, row].tolist() for row, prefix in enumerate(self.prefixes)}
                for p in range(self.num_prompts)]

    # --- SequencePolicy -----------------------------------------------------------------------

    def _prompt_index(self, prompts: Tensor) -> Tensor:
        if prompts.dim() != 2 or prompts.shape[1] < 1:
            raise InputError(f"prompts must be [B, 1] prompt indices, got shape {tuple(prompts.shape)}")
        idx = prompts[:, -1].long()
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.num_prompts):
            raise InputError(f"prompt indices must lie in [0, {self.num_prompts})")
        return idx

    def _check_generation(self, max_new_tokens: int, eos: int | None) -> None:
        if eos != self.eos:
            raise InputError(f"this table was built for eos {self.eos}, not {shown(eos)}")
        if not 1 <= max_new_tokens <= self.max_length:
            raise InputError(f"max_new_tokens must lie in [1, {self.max_length}], got {shown(max_new_tokens)}")

    @torch.no_grad()
    def sample(self, prompts: Tensor, prompt_lengths: Tensor, *, max_new_tokens: int, eos: int | None,
               temperature: float = 1.0, greedy: bool = False,
               generator: torch.Generator | None = None) -> Completions:
        """One completion per prompt row (see :class:`~policygrad.sequence.base.SequencePolicy`)."""
        self._check_generation(max_new_tokens, eos)
        p = self._prompt_index(prompts)
        b = p.shape[0]
        tokens = torch.zeros(b, max_new_tokens, dtype=torch.long)
        log_probs = torch.zeros(b, max_new_tokens, dtype=self.logits.dtype)
        lengths = torch.full((b,), max_new_tokens, dtype=torch.long)
        rows = torch.zeros(b, dtype=torch.long)
        alive = torch.ones(b, dtype=torch.bool)
        for t in range(max_new_tokens):
            live = alive.nonzero().squeeze(1)
            if live.numel() == 0:
                break
            logp = torch.log_softmax(self.logits[p[live], rows[live]] / temperature, dim=-1)  # [b', V]
            if greedy:
                tok = logp.argmax(-1)  # the first maximum: the lowest id on ties
            else:
                tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
            tokens[live, t] = tok
            log_probs[live, t] = logp.gather(1, tok[:, None]).squeeze(1)
            if t + 1 < max_new_tokens:
                rows[live] = self.children[rows[live], tok]
            if eos is not None:
                ended = live[tok == eos]
                lengths[ended] = t + 1
                alive[ended] = False
        width = int(lengths.max()) if b else 0
        return Completions(prompts=prompts, prompt_lengths=prompt_lengths, tokens=tokens[:, :width],
                           lengths=lengths, log_probs=log_probs[:, :width])

    def prefix_rows(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """``[B, L]`` long: the table row of each position's prefix y_<t (0 beyond ``lengths``)."""
        b, width = tokens.shape
        if width > self.max_length:
            raise InputError(f"completions of {width} tokens; at most {self.max_length}")
        mask = completion_mask(lengths, width)
        if tokens.numel() and (tokens[mask].min() < 0 or tokens[mask].max() >= self.vocab_size):
            raise InputError(f"tokens must lie in [0, {self.vocab_size})")
        rows = torch.zeros(b, width, dtype=torch.long)
        for t in range(1, width):
            step = mask[:, t]
            nxt = self.children[rows[:, t - 1], tokens[:, t - 1].clamp(0, self.vocab_size - 1)]
            if torch.any(step & (nxt < 0)):
                raise InputError("a completion continues past its end-of-sequence token")
            rows[:, t] = torch.where(step, nxt, torch.zeros_like(nxt))
        return rows

    def token_log_probs(self, prompts: Tensor, prompt_lengths: Tensor, tokens: Tensor, lengths: Tensor, *,
                        temperature: float = 1.0, with_entropy: bool = False,
                        chunk: int = 8192) -> Tensor | tuple[Tensor, Tensor]:
        """``[B, L]`` log π(y_t | x, y_<t), differentiable w.r.t. :attr:`logits` (0 beyond
        ``lengths``); with ``with_entropy`` also the ``[B, L]`` entropies. Rows in chunks of ``chunk``."""
        p = self._prompt_index(prompts)
        rows = self.prefix_rows(tokens, lengths)
        mask = completion_mask(lengths, tokens.shape[1])
        out, ents = [], []
        for s in range(0, tokens.shape[0], chunk):
            sl = slice(s, s + chunk)
            logits = self.logits[p[sl, None], rows[sl]] / temperature  # [b, L, V]
            logp_all = torch.log_softmax(logits, dim=-1)
            lp = logp_all.gather(2, tokens[sl, :, None].clamp(0, self.vocab_size - 1)).squeeze(2)
            out.append(torch.where(mask[sl], lp, torch.zeros_like(lp)))
            if with_entropy:
                ent = -(logp_all.exp() * logp_all).sum(-1)
                ents.append(torch.where(mask[sl], ent, torch.zeros_like(ent)))
        logp = torch.cat(out) if out else torch.zeros(tokens.shape, dtype=self.logits.dtype)
        if with_entropy:
            return logp, (torch.cat(ents) if ents else torch.zeros_like(logp))
        return logp
