"""Private stand-ins for the parts of ``policygrad.sequence`` that other branches provide
(``estimators``, ``transformer``, ``tasks``), so that the training integration can be tested
before they land. :func:`install` registers one only where the real module does not import.

The names here are those ``policygrad.sequence_training`` uses:

* ``estimators.sequence_surrogate(log_probs, old_log_probs, ref_log_probs, mask, rewards, *,
  group_size, advantage, kl, aggregation, beta, clip_eps=None, baseline=None)``;
* ``transformer.TransformerPolicy(vocab_size, d_model, n_layers, n_heads, max_context, pad_id, *,
  value_head=False, seed=0)`` with ``sample``, ``token_log_probs`` (the SequencePolicy protocol),
  ``values(prompts, prompt_lengths, tokens, lengths)`` and ``max_context``;
* ``tasks.make_task("count")`` (a task: ``vocab_size``, ``max_prompt_length``, ``max_new_tokens``,
  ``sample_prompts(n, generator, split)``, ``encode_prompts(texts)``, ``encode_answers(texts)``,
  ``score(completions, reward) -> (rewards, successes)``, raising TrainingError for a reward that
  raises or is not finite), ``tasks.pretrain(policy, task, steps, batch_size, lr, generator)``,
  ``tasks.load_reward("module:function")`` (InputError if it does not load); ids 0 pad, 1 eos.
"""

from __future__ import annotations

import importlib
import math
import sys
import types

import torch
from torch import Tensor, nn

from policygrad.errors import InputError, TrainingError
from policygrad.sequence.base import Completions, completion_mask

# --------------------------------------------------------------------------------------------
# estimators
# --------------------------------------------------------------------------------------------


def _group_advantages(rewards: Tensor, group_size: int, advantage: str, baseline: Tensor | None) -> Tensor:
    r = rewards.view(-1, group_size)
    if advantage == "reinforce":
        a = r
    elif advantage == "rloo":
        a = r - (r.sum(1, keepdim=True) - r) / max(group_size - 1, 1)
    elif advantage == "grpo":
        a = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True, unbiased=False) + 1e-4)
    elif advantage == "dr_grpo":
        a = r - r.mean(1, keepdim=True)
    elif advantage == "remax":
        assert baseline is not None
        a = r - torch.as_tensor(baseline, dtype=r.dtype).reshape(-1, 1)
    elif advantage == "reinforce_pp":
        a = r - r.mean(1, keepdim=True)
        a = (a - a.mean()) / (a.std(unbiased=False) + 1e-4)
    else:
        raise ValueError(advantage)
    return a.reshape(-1)


def sequence_surrogate(log_probs, old_log_probs, ref_log_probs, mask, rewards, *, group_size, advantage, kl,
                       aggregation, beta, clip_eps=None, baseline=None):
    maskf = mask.float()
    rewards = rewards.float()
    if kl == "k1_reward" and beta:
        rewards = rewards - beta * ((old_log_probs - ref_log_probs) * maskf).sum(1)
    adv = _group_advantages(rewards, group_size, advantage, baseline)[:, None]
    ratio = torch.exp(log_probs - old_log_probs)
    per_token = -ratio * adv
    if clip_eps is not None:
        per_token = torch.maximum(per_token, -ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    if kl != "k1_reward" and beta:
        d = ref_log_probs - log_probs
        per_token = per_token + beta * (torch.exp(d) - d - 1)
    per_token = per_token * maskf
    if aggregation == "token_mean":
        return per_token.sum() / maskf.sum()
    if aggregation == "sequence_mean":
        return (per_token.sum(1) / maskf.sum(1)).mean()
    return per_token.sum() / per_token.shape[0]


def aggregate(terms, mask, group_size, aggregation):
    m = mask.to(terms.dtype)
    t = (terms * m).view(-1, group_size, terms.shape[1])
    m = m.view(-1, group_size, terms.shape[1])
    if aggregation == "token_mean":
        return t.sum((1, 2)) / m.sum((1, 2))
    if aggregation == "sequence_mean":
        return (t.sum(2) / m.sum(2)).mean(1)
    return t.sum((1, 2)) / group_size


def clipped_token_surrogate(log_probs, old_log_probs, advantages, clip_eps):
    a = advantages.detach()
    if a.dim() == 1:
        a = a[:, None]
    ratio = torch.exp(log_probs - old_log_probs.detach())
    return torch.minimum(ratio * a, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * a)


def token_gae(rewards, values, mask, *, gamma=1.0, gae_lambda=1.0, log_probs=None, ref_log_probs=None, beta=0.0):
    m = mask.to(values.dtype)
    B, L = values.shape
    lengths = mask.sum(-1)
    r = torch.zeros_like(values)
    r[torch.arange(B), lengths - 1] = rewards.detach().to(values.dtype)
    if log_probs is not None and ref_log_probs is not None and beta:
        r = r - beta * (log_probs.detach() - ref_log_probs.detach()) * m
    v = values.detach() * m
    adv = torch.zeros_like(v)
    running = torch.zeros(B)
    for t in reversed(range(L)):
        next_v = v[:, t + 1] if t + 1 < L else torch.zeros(B)
        delta = r[:, t] + gamma * next_v - v[:, t]
        running = (delta + gamma * gae_lambda * running) * m[:, t]
        adv[:, t] = running
    return adv * m, (adv + v) * m


# --------------------------------------------------------------------------------------------
# transformer
# --------------------------------------------------------------------------------------------


class TransformerPolicy(nn.Module):
    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                 max_context: int = 64, pad_id: int = 0, *, value_head: bool = False, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.vocab_size, self.max_context, self.pad_id, self.n_heads = vocab_size, max_context, pad_id, n_heads
        max_len = max_context
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.body = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.value = nn.Linear(d_model, 1) if value_head else None

    def _hidden(self, seq: Tensor, real: Tensor) -> Tensor:
        positions = (real.long().cumsum(1) - 1).clamp(min=0)
        T = seq.shape[1]
        eye = torch.eye(T, dtype=torch.bool)
        allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None] & (real[:, None, :] | eye[None])
        mask = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
        mask = mask.repeat_interleave(self.n_heads, 0)
        x = self.embed(seq) + self.pos(positions)
        return self.norm(self.body(x, mask=mask))

    def _joined(self, prompts, prompt_lengths, tokens, lengths):
        P = prompts.shape[1]
        real_p = torch.arange(P)[None, :] >= (P - prompt_lengths)[:, None]
        real_c = completion_mask(lengths, tokens.shape[1])
        return torch.cat([prompts, tokens], 1), torch.cat([real_p, real_c], 1)

    def token_log_probs(self, prompts, prompt_lengths, tokens, lengths, *, temperature=1.0, with_entropy=False):
        P = prompts.shape[1]
        seq, real = self._joined(prompts, prompt_lengths, tokens, lengths)
        h = self._hidden(seq, real)[:, P - 1:-1]
        logp = torch.log_softmax(self.head(h) / temperature, -1)
        mask = completion_mask(lengths, tokens.shape[1])
        lp = logp.gather(-1, tokens[..., None]).squeeze(-1) * mask
        if with_entropy:
            ent = -(logp.exp() * logp).sum(-1) * mask
            return lp, ent
        return lp

    def values(self, prompts, prompt_lengths, tokens, lengths):
        P = prompts.shape[1]
        seq, real = self._joined(prompts, prompt_lengths, tokens, lengths)
        h = self._hidden(seq, real)[:, P - 1:-1]
        return self.value(h).squeeze(-1) * completion_mask(lengths, tokens.shape[1])

    @torch.no_grad()
    def sample(self, prompts, prompt_lengths, *, max_new_tokens, eos, temperature=1.0, greedy=False, generator=None):
        B, P = prompts.shape
        real = torch.arange(P)[None, :] >= (P - prompt_lengths)[:, None]
        seq, out, lps = prompts, [], []
        done = torch.zeros(B, dtype=torch.bool)
        lengths = torch.zeros(B, dtype=torch.long)
        for _ in range(max_new_tokens):
            logits = self.head(self._hidden(seq, real)[:, -1]) / temperature
            logp = torch.log_softmax(logits, -1)
            if greedy:
                tok = logp.argmax(-1)
            else:
                tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
            tok = torch.where(done, torch.full_like(tok, self.pad_id), tok)
            lps.append(torch.where(done, torch.zeros(B), logp.gather(-1, tok[:, None]).squeeze(-1)))
            out.append(tok)
            lengths += (~done).long()
            if eos is not None:
                done = done | (tok == eos)
            seq = torch.cat([seq, tok[:, None]], 1)
            real = torch.cat([real, torch.ones(B, 1, dtype=torch.bool)], 1)
            if bool(done.all()):
                break
        L = int(lengths.max())
        return Completions(prompts, prompt_lengths, torch.stack(out, 1)[:, :L], lengths, torch.stack(lps, 1)[:, :L])


# --------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------

PAD, EOS = 0, 1


class CountTask:
    """``a×3=`` -> ``aaa`` (text in, text out; one id per character after pad and eos)."""

    name = "count"
    symbols = "abcd×=123456"
    max_count = 6
    vocab_size = 2 + len(symbols)
    max_prompt_length = 4
    max_new_tokens = max_count + 1

    def encode(self, text: str) -> list[int]:
        return [self.symbols.index(ch) + 2 for ch in text]

    def decode(self, ids) -> str:
        out = []
        for i in ids.tolist():
            if i == EOS:
                break
            if i != PAD:
                out.append(self.symbols[i - 2])
        return "".join(out)

    def answer(self, prompt: str) -> str:
        return prompt[0] * int(prompt[2])

    def sample_prompts(self, n, generator=None, split="train"):
        out = []
        while len(out) < n:
            letter = int(torch.randint(0, 4, (1,), generator=generator))
            count = int(torch.randint(1, self.max_count + 1, (1,), generator=generator))
            prompt = f"{'abcd'[letter]}×{count}="
            if (split == "heldout") == (letter == 3 and count == 6):  # one held-out prompt
                out.append(prompt)
            elif split == "heldout":
                out.append(f"d×{count}=")
        return out

    def encode_prompts(self, prompts):
        ids = [self.encode(p) for p in prompts]
        width = max(len(i) for i in ids)
        batch = torch.full((len(ids), width), PAD, dtype=torch.long)
        for row, i in enumerate(ids):
            batch[row, width - len(i):] = torch.tensor(i)
        return batch, torch.tensor([len(i) for i in ids])

    def encode_answers(self, prompts):
        ids = [self.encode(self.answer(p)) + [EOS] for p in prompts]
        width = max(len(i) for i in ids)
        batch = torch.full((len(ids), width), PAD, dtype=torch.long)
        for row, i in enumerate(ids):
            batch[row, :len(i)] = torch.tensor(i)
        return batch, torch.tensor([len(i) for i in ids])

    def reward(self, prompt: str, completion: str) -> float:
        answer = self.answer(prompt)
        if completion == answer:
            return 1.0
        same = sum(a == b for a, b in zip(answer, completion))
        return 0.5 * same / max(len(answer), len(completion), 1)

    def success(self, prompt: str, completion: str) -> bool:
        return completion == self.answer(prompt)

    def score(self, completions, reward=None):
        prompts = [self.decode(row[row.shape[0] - n:]) for row, n in
                   zip(completions.prompts, completions.prompt_lengths.tolist())]
        texts = [self.decode(row[:n]) for row, n in zip(completions.tokens, completions.lengths.tolist())]
        fn = self.reward if reward is None else reward
        values = []
        for p, c in zip(prompts, texts):
            try:
                value = float(fn(p, c))
            except Exception as err:
                raise TrainingError(f"the reward function raised on prompt {p!r}: {type(err).__name__}: {err}") from err
            if not math.isfinite(value):
                raise TrainingError(f"the reward function returned {value} for prompt {p!r}: a reward must be a "
                                    "finite number")
            values.append(value)
        return torch.tensor(values), torch.tensor([self.success(p, c) for p, c in zip(prompts, texts)])


TASKS = {"count": CountTask}


def make_task(name):
    key = name.removeprefix("seq:")
    if key not in TASKS:
        raise InputError(f"unknown sequence task {name!r}: choose one of {', '.join('seq:' + k for k in TASKS)}")
    return TASKS[key]()


def pretrain(policy, task, steps, batch_size, lr, generator=None):
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        texts = task.sample_prompts(batch_size, generator)
        prompts, plens = task.encode_prompts(texts)
        tokens, lengths = task.encode_answers(texts)
        loss = -policy.token_log_probs(prompts, plens, tokens, lengths).sum() / lengths.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def load_reward(spec):
    module, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except Exception as err:
        raise InputError(f"cannot import the reward's module {module!r}: {type(err).__name__}") from None
    return fn


# --------------------------------------------------------------------------------------------


def install() -> list[str]:
    """Register each stand-in whose real module does not import; the names registered."""
    import policygrad.sequence as package

    here = sys.modules[__name__]
    installed = []
    parts = {
        "estimators": ["sequence_surrogate", "aggregate", "clipped_token_surrogate", "token_gae"],
        "transformer": ["TransformerPolicy"],
        "tasks": ["TASKS", "make_task", "pretrain", "load_reward", "PAD", "EOS"],
    }
    for part, names in parts.items():
        full = f"policygrad.sequence.{part}"
        try:
            importlib.import_module(full)
            continue
        except ImportError:
            pass
        module = types.ModuleType(full)
        for name in names:
            setattr(module, name, getattr(here, name))
        sys.modules[full] = module
        setattr(package, part, module)
        installed.append(part)
    return installed

