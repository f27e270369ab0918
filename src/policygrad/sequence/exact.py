"""Exact enumeration of small sequence spaces: J_β, ∇J_β, and each group estimator's expectation.

A spec (the JSON of ``policygrad verify --sequence``, see docs/sequences.md) fixes a tabular
policy π (:class:`~policygrad.sequence.tabular.TabularSequencePolicy`), a reference π_ref, rewards
R(x, y), a group size G and β. Every completion y of every prompt is enumerated, so

    J_β = mean_x Σ_y π(y|x) (R(x, y) − β log(π(y|x)/π_ref(y|x)))

and its gradient (autograd, float64) are exact. So is the expectation, over groups of G i.i.d.
completions of one prompt, of every estimator's direction

    d = agg_i,t[∇log π_it · A_i] − β ∇agg_i,t[kl_it]

(:func:`policygrad.sequence.estimators.sequence_surrogate`). By symmetry of the group,

    E[d] = ∇_θ Σ_y π_θ(y) ψ(y)  −  β ∇_θ Σ_y π(y) κ(y) Σ_t kl_t(y; θ)

with ψ(y) = G·E[ν_1 A_1 | y_1 = y] and κ(y) = G·E[ν_1 | y_1 = y] held fixed (no gradient), where
ν_i is the aggregation's weight of completion i (1/G for ``sum``, 1/(G|y_i|) for
``sequence_mean``, 1/Σ_j|y_j| for ``token_mean``). ψ and κ depend on y only through (R'(y), |y|):

* REINFORCE, RLOO, Dr. GRPO, ReMax: closed forms (the others enter linearly; for ``token_mean``
  through the distribution of the sum of the others' lengths, a convolution), exact for every
  reward and KL handling;
* GRPO (and any advantage, for cross-checks): the multiset of the other G − 1 completions'
  (R', |y|) classes is enumerated with its multinomial probability, and the library's own
  advantage function scores each group; feasible while R' and |y| take few distinct values
  (at most :data:`MAX_GROUP_ROWS` groups), otherwise not exact.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from policygrad.errors import InputError, shown
from policygrad.files import read_json
from policygrad.sequence.base import completion_mask
from policygrad.sequence.estimators import (
    AGGREGATIONS,
    KL_LOSS_MODES,
    KL_MODES,
    group_advantages,
    k1_reward,
    kl_term,
)
from policygrad.sequence.tabular import TabularSequencePolicy

__all__ = [
    "MAX_COMPLETIONS",
    "MAX_GROUP_ROWS",
    "MAX_SPEC_BYTES",
    "MAX_LENGTH",
    "VERIFY_ADVANTAGES",
    "EstimatorSpec",
    "SequenceSpec",
    "ExactSpace",
    "count_completions",
    "parse_spec",
    "load_spec",
    "build_space",
    "is_unbiased",
    "group_weights",
    "group_weights_enumerated",
    "expected_direction",
]

MAX_COMPLETIONS = 2_000_000
"""Most completions enumerated, over all prompts together (prompts × completions per prompt)."""

MAX_GROUP_ROWS = 2_000_000
"""Most (own class, multiset of the others' classes) groups enumerated for one prompt."""

MAX_LENGTH = 64
"""Longest completion of a spec (an L beyond it enumerates only with V ≤ 2, e.g. V = 2 with eos)."""

MAX_SPEC_BYTES = 64 * 2**20
"""Largest spec file read (64 MiB)."""

VERIFY_ADVANTAGES = ("reinforce", "rloo", "dr_grpo", "grpo", "remax")
"""Advantages whose per-group expectation is defined (REINFORCE++'s baseline spans the batch)."""


@dataclass(frozen=True)
class EstimatorSpec:
    name: str
    advantage: str
    kl: str
    aggregation: str


@dataclass
class SequenceSpec:
    """A parsed ``verify --sequence`` spec (token tuples as keys)."""

    vocab_size: int
    max_length: int
    eos: int | None
    prompts: int
    group_size: int
    beta: float
    logits: list[dict[tuple[int, ...], list[float]]]
    reference_logits: list[dict[tuple[int, ...], list[float]]]
    rewards: list[dict[tuple[int, ...], float]]
    estimators: list[EstimatorSpec] = field(default_factory=list)


def count_completions(vocab_size: int, max_length: int, eos: int | None) -> int:
    """Completions of one prompt: V^L without eos; with eos, Σ_{k<L} (V−1)^{k−1} ending in eos at
    k, plus (V−1)^{L−1}·V of L tokens."""
    if eos is None:
        return vocab_size**max_length
    n = vocab_size - 1
    return sum(n ** (k - 1) for k in range(1, max_length)) + n ** (max_length - 1) * vocab_size


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _int(obj: dict, key: str, lo: int, hi: int | None = None) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise InputError(f"spec {key!r} must be an integer {rng}, got {shown(v)}")
    return v


def _float(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{where} must be a number, got {shown(v)}")
    try:
        f = float(v)
    except OverflowError:
        raise InputError(f"{where} is too large for a float") from None
    if not math.isfinite(f):
        raise InputError(f"{where} must be finite, got {shown(v)}")
    return f


def _tokens(text: Any, vocab_size: int, where: str) -> tuple[int, ...]:
    if not isinstance(text, str):
        raise InputError(f"{where}: keys must be strings of token ids, got {shown(text)}")
    if text == "":
        return ()
    parts = text.split(" ")
    if not all(p.isascii() and p.isdigit() and len(p) <= 12 and str(int(p)) == p for p in parts):
        raise InputError(f"{where}: {shown(text)} is not token ids separated by single spaces")
    toks = tuple(int(p) for p in parts)
    bad = [t for t in toks if t >= vocab_size]
    if bad:
        raise InputError(f"{where}: {shown(text)} names token {bad[0]} outside the vocabulary [0, {vocab_size})")
    return toks


def _per_prompt(obj: dict, key: str, prompts: int) -> list:
    v = obj.get(key)
    if not isinstance(v, list) or len(v) != prompts or not all(isinstance(d, dict) for d in v):
        got = f"a list of {len(v)}" if isinstance(v, list) else shown(v)
        raise InputError(f"spec {key!r} must be a list of {prompts} objects (one per prompt), got {got}")
    return v


def parse_spec(obj: Any) -> SequenceSpec:
    """Checks and parses a spec (the JSON value); InputError naming the first problem."""
    if not isinstance(obj, dict):
        raise InputError(f"a sequence spec must be a JSON object, got {type(obj).__name__}")
    known = {"vocab_size", "max_length", "eos", "prompts", "group_size", "beta", "logits", "reference_logits",
             "rewards", "estimators"}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise InputError(f"spec has unknown key {shown(unknown[0])} (known: {', '.join(sorted(known))})")
    vocab = _int(obj, "vocab_size", 1)
    length = _int(obj, "max_length", 1, MAX_LENGTH)
    eos = obj.get("eos")
    if eos is not None:
        if isinstance(eos, bool) or not isinstance(eos, int) or not 0 <= eos < vocab:
            raise InputError(f"spec 'eos' must be null or a token id in [0, {vocab}), got {shown(eos)}")
    prompts = _int(obj, "prompts", 1)
    group = _int(obj, "group_size", 1)
    beta = _float(obj.get("beta"), "spec 'beta'")
    if beta < 0:
        raise InputError(f"spec 'beta' must be >= 0, got {beta}")
    n = count_completions(vocab, length, eos)
    if n * prompts > MAX_COMPLETIONS:
        raise InputError(f"the space has {n:,} completions per prompt x {prompts} prompts = {n * prompts:,}, "
                         f"too many to enumerate (at most {MAX_COMPLETIONS:,})")

    def logits(key: str) -> list[dict[tuple[int, ...], list[float]]]:
        out = []
        for p, table in enumerate(_per_prompt(obj, key, prompts)):
            parsed = {}
            for text, row in table.items():
                where = f"spec {key}[{p}] prefix {shown(text)}"
                toks = _tokens(text, vocab, where)
                if len(toks) >= length or (eos is not None and eos in toks):
                    raise InputError(f"{where} cannot occur: a prefix has fewer than max_length={length} tokens"
                                     + (f" and no eos {eos}" if eos is not None else ""))
                if not isinstance(row, list) or len(row) != vocab:
                    raise InputError(f"{where} must be a list of vocab_size={vocab} numbers, got "
                                     + (f"{len(row)}" if isinstance(row, list) else shown(row)))
                parsed[toks] = [_float(x, where) for x in row]
            out.append(parsed)
        return out

    pol, ref = logits("logits"), logits("reference_logits")
    rewards = []
    for p, table in enumerate(_per_prompt(obj, "rewards", prompts)):
        parsed_r = {}
        for text, value in table.items():
            where = f"spec rewards[{p}] sequence {shown(text)}"
            toks = _tokens(text, vocab, where)
            complete = 1 <= len(toks) <= length and (
                (eos is None and len(toks) == length)
                or (eos is not None and eos not in toks[:-1] and (toks[-1] == eos or len(toks) == length)))
            if not complete:
                raise InputError(f"{where} is not a completion (" + (f"exactly {length} tokens" if eos is None else
                                 f"ending at its first eos {eos} or at {length} tokens") + ")")
            parsed_r[toks] = _float(value, where)
        rewards.append(parsed_r)

    ests = obj.get("estimators")
    if not isinstance(ests, list) or not ests:
        raise InputError(f"spec 'estimators' must be a non-empty list, got {shown(ests)}")
    parsed_e: list[EstimatorSpec] = []
    for i, e in enumerate(ests):
        if not isinstance(e, dict):
            raise InputError(f"spec estimators[{i}] must be an object, got {shown(e)}")
        extra = sorted(set(e) - {"name", "advantage", "kl", "aggregation"})
        if extra:
            raise InputError(f"spec estimators[{i}] has unknown option {shown(extra[0])}")
        name = e.get("name")
        if not isinstance(name, str) or not name or len(name) > 100:
            raise InputError(f"spec estimators[{i}] 'name' must be a non-empty string, got {shown(name)}")
        if any(x.name == name for x in parsed_e):
            raise InputError(f"spec estimators: name {shown(name)} appears twice")
        adv, kl, agg = e.get("advantage"), e.get("kl", "none"), e.get("aggregation", "sum")
        for value, allowed, what in ((adv, VERIFY_ADVANTAGES, "advantage"), (kl, KL_MODES, "kl"),
                                     (agg, AGGREGATIONS, "aggregation")):
            if value not in allowed:
                raise InputError(f"spec estimators[{i}] ({shown(name)}): unknown {what} {shown(value)} "
                                 f"(one of {', '.join(allowed)})")
        if adv in ("rloo", "grpo") and group < 2:
            raise InputError(f"spec estimators[{i}] ({shown(name)}): {adv} needs group_size >= 2, got {group}")
        parsed_e.append(EstimatorSpec(name, adv, kl, agg))
    return SequenceSpec(vocab, length, eos, prompts, group, beta, pol, ref, rewards, parsed_e)


def load_spec(path: str | os.PathLike) -> SequenceSpec:
    """Reads and parses a spec file (at most :data:`MAX_SPEC_BYTES`)."""
    try:
        obj = read_json(path, "sequence spec", MAX_SPEC_BYTES)
    except FileNotFoundError:
        raise InputError(f"sequence spec not found: {path}") from None
    except OSError as err:
        raise InputError(f"cannot read sequence spec {path}: {err}") from None
    return parse_spec(obj)


# ---------------------------------------------------------------------------------------------
# The enumerated space
# ---------------------------------------------------------------------------------------------


@dataclass
class ExactSpace:
    """Every completion of every prompt, with the policies and rewards, all float64."""

    spec: SequenceSpec
    policy: TabularSequencePolicy
    reference: TabularSequencePolicy
    tokens: Tensor  # [N, L] long, every completion (the same set for every prompt), right-padded 0
    lengths: Tensor  # [N] long
    completion_index: Tensor  # [num_prefixes, V] long: (row of y_<T, y_T) -> completion, −1 if none
    rewards: Tensor  # [P, N] float64

    @property
    def mask(self) -> Tensor:
        return completion_mask(self.lengths, self.tokens.shape[1])

    def lookup(self, rows: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        """``[B]`` completion indices of completions given by their prefix rows and tokens ``[B, L]``."""
        last = lengths - 1
        b = torch.arange(tokens.shape[0])
        return self.completion_index[rows[b, last], tokens[b, last]]

    def log_probs(self, policy: TabularSequencePolicy) -> Tensor:
        """``[P, N, L]`` log π_t of every completion under ``policy`` (differentiable)."""
        p, n = self.spec.prompts, self.tokens.shape[0]
        prompts = torch.arange(p).repeat_interleave(n)[:, None]
        lp = policy.token_log_probs(prompts, torch.ones(p * n, dtype=torch.long), self.tokens.repeat(p, 1),
                                    self.lengths.repeat(p))
        return lp.view(p, n, -1)


def build_space(spec: SequenceSpec) -> ExactSpace:
    """The policies of ``spec`` and the enumeration of its completions."""
    policy = TabularSequencePolicy(spec.vocab_size, spec.max_length, spec.eos, spec.prompts)
    reference = TabularSequencePolicy(spec.vocab_size, spec.max_length, spec.eos, spec.prompts)
    policy.set_logits(spec.logits)
    reference.set_logits(spec.reference_logits)
    v, eos = spec.vocab_size, spec.eos
    done_tokens, done_lengths = [], []
    prefixes = torch.zeros(1, 0, dtype=torch.long)
    for k in range(spec.max_length):
        m = prefixes.shape[0]
        ext = torch.cat([prefixes.repeat_interleave(v, 0), torch.arange(v).repeat(m)[:, None]], dim=1)  # [m·V, k+1]
        ends = torch.ones(ext.shape[0], dtype=torch.bool) if k + 1 == spec.max_length else (
            ext[:, -1] == eos if eos is not None else torch.zeros(ext.shape[0], dtype=torch.bool))
        done = ext[ends]
        pad = torch.zeros(done.shape[0], spec.max_length - k - 1, dtype=torch.long)
        done_tokens.append(torch.cat([done, pad], dim=1))
        done_lengths.append(torch.full((done.shape[0],), k + 1, dtype=torch.long))
        prefixes = ext[~ends]
    tokens, lengths = torch.cat(done_tokens), torch.cat(done_lengths)
    rows = policy.prefix_rows(tokens, lengths)
    index = torch.full((policy.num_prefixes, v), -1, dtype=torch.long)
    b = torch.arange(tokens.shape[0])
    index[rows[b, lengths - 1], tokens[b, lengths - 1]] = b
    rewards = torch.zeros(spec.prompts, tokens.shape[0], dtype=torch.float64)
    for p, table in enumerate(spec.rewards):
        for seq, value in table.items():
            row = policy.prefix_row(seq[:-1])
            rewards[p, index[row, seq[-1]]] = value
    return ExactSpace(spec, policy, reference, tokens, lengths, index, rewards)


# ---------------------------------------------------------------------------------------------
# Expectations
# ---------------------------------------------------------------------------------------------


def is_unbiased(advantage: str, kl: str, aggregation: str, beta: float) -> bool:
    """Whether the library calls the estimator unbiased for ∇J_β: a baseline independent of the
    completion it weighs (REINFORCE, RLOO, ReMax), ``sum`` aggregation, and the KL in the reward
    (or β = 0). Dr. GRPO's expectation is (G − 1)/G ∇J_β: a scale, but not unbiased."""
    return advantage in ("reinforce", "rloo", "remax") and aggregation == "sum" and (kl == "k1_reward" or beta == 0)


def _sum_distribution(pl: Tensor, k: int) -> Tensor:
    """Distribution of the sum of k i.i.d. lengths with probabilities ``pl`` [L + 1] (index = length)."""
    out = torch.ones(1, dtype=pl.dtype)
    for _ in range(k):
        new = torch.zeros(out.shape[0] + pl.shape[0] - 1, dtype=pl.dtype)
        for j in range(pl.shape[0]):
            if pl[j] != 0:
                new[j: j + out.shape[0]] += pl[j] * out
        out = new
    return out


def _inverse_moment(dist: Tensor, x: Tensor) -> Tensor:
    """E[1 / (x + S)] for S ~ ``dist`` (index = value), elementwise over x (x + S ≥ 1)."""
    s = torch.arange(dist.shape[0], dtype=dist.dtype)
    return (dist[None, :] / (x.to(dist.dtype)[:, None] + s[None, :])).sum(-1)


def group_weights(advantage: str, aggregation: str, rewards: Tensor, lengths: Tensor, probs: Tensor,
                  group_size: int, baseline: float | None = None) -> tuple[Tensor, Tensor]:
    """Closed-form ψ(y) = G·E[ν_1 A_1 | y_1 = y] and κ(y) = G·E[ν_1 | y_1 = y] for REINFORCE, RLOO,
    Dr. GRPO and ReMax (see the module docstring), ``[N]`` each.

    Args:
        rewards: ``[N]`` R' of every completion of one prompt (detached).
        lengths: ``[N]`` |y|.
        probs: ``[N]`` π(y) (detached), summing to 1.
        group_size: G.
        baseline: ReMax's b.
    """
    g = group_size
    r, ell, pi = rewards.detach(), lengths, probs.detach()
    if advantage == "reinforce":
        centred = r
    elif advantage == "remax":
        if baseline is None:
            raise InputError("remax needs its baseline")
        centred = r - baseline
    elif advantage in ("rloo", "dr_grpo"):
        centred = r - (pi * r).sum()
    else:
        raise InputError(f"no closed form for advantage {shown(advantage)}")
    factor = (g - 1) / g if advantage == "dr_grpo" else 1.0
    if aggregation == "sum":
        return factor * centred, torch.ones_like(r)
    if aggregation == "sequence_mean":
        return factor * centred / ell, 1.0 / ell.to(r.dtype)
    if aggregation != "token_mean":
        raise InputError(f"unknown aggregation {shown(aggregation)}")
    top = int(ell.max())
    pl = torch.zeros(top + 1, dtype=r.dtype).index_add_(0, ell, pi)  # P(|y| = ℓ)
    q1 = _inverse_moment(_sum_distribution(pl, g - 1), ell)  # E[1/(ℓ + S_{G−1})]
    kappa = g * q1
    if advantage in ("reinforce", "remax"):
        return centred * kappa, kappa
    # RLOO: G·[R' q_{G−1}(ℓ) − Σ_ℓ2 E[R' 1{|y|=ℓ2}] q_{G−2}(ℓ + ℓ2)]
    m = torch.zeros(top + 1, dtype=r.dtype).index_add_(0, ell, pi * r)
    d2 = _sum_distribution(pl, g - 2)
    cross = torch.zeros_like(r)
    for l2 in range(1, top + 1):
        if m[l2] != 0:
            cross = cross + m[l2] * _inverse_moment(d2, ell + l2)
    return factor * g * (r * q1 - cross), kappa


def _classes(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of ``keys`` [N, k] and each row's class index."""
    uniq, inverse = torch.unique(keys, dim=0, return_inverse=True)
    return uniq, inverse


def group_weights_enumerated(advantage: str, aggregation: str, rewards: Tensor, lengths: Tensor, probs: Tensor,
                             group_size: int, baseline: float | None = None) -> tuple[Tensor, Tensor] | None:
    """ψ and κ as :func:`group_weights`, for any advantage, by enumerating the multiset of the
    other G − 1 completions' (R', |y|) classes (multinomial probabilities) and scoring every group
    with :func:`~policygrad.sequence.estimators.group_advantages`. None when more than
    :data:`MAX_GROUP_ROWS` groups would be needed."""
    g = group_size
    r, pi = rewards.detach(), probs.detach()
    ell = lengths.to(r.dtype)
    uniq, inverse = _classes(torch.stack([r, ell], dim=1))
    k = uniq.shape[0]
    p_class = torch.zeros(k, dtype=r.dtype).index_add_(0, inverse, pi)
    multisets = math.comb(k + g - 2, g - 1)
    if multisets * k > MAX_GROUP_ROWS:
        return None
    if g > 1:
        combos = torch.tensor(list(itertools.combinations_with_replacement(range(k), g - 1)), dtype=torch.long)
        counts = torch.zeros(combos.shape[0], k, dtype=r.dtype)
        counts.scatter_add_(1, combos, torch.ones_like(combos, dtype=r.dtype))
        log_coef = math.lgamma(g) - torch.lgamma(counts + 1).sum(-1)
        logp = torch.where(counts > 0, counts * torch.log(p_class.clamp(min=1e-300))[None, :],
                           torch.zeros_like(counts)).sum(-1)
        weight = torch.exp(log_coef + logp) * (counts[:, p_class == 0].sum(-1) == 0)  # [M]
    else:
        combos = torch.zeros(1, 0, dtype=torch.long)
        weight = torch.ones(1, dtype=r.dtype)
    mcount = combos.shape[0]
    own = torch.arange(k).repeat_interleave(mcount)  # [k·M]
    members = torch.cat([own[:, None], combos.repeat(k, 1)], dim=1)  # [k·M, G], member 0 is y_1
    group_r, group_l = uniq[members, 0], uniq[members, 1]
    b = None if baseline is None else torch.full((members.shape[0],), float(baseline), dtype=r.dtype)
    adv = group_advantages(group_r, advantage, b)[:, 0]
    if aggregation == "sum":
        nu = torch.full_like(adv, 1.0 / g)
    elif aggregation == "sequence_mean":
        nu = 1.0 / (g * group_l[:, 0])
    elif aggregation == "token_mean":
        nu = 1.0 / group_l.sum(-1)
    else:
        raise InputError(f"unknown aggregation {shown(aggregation)}")
    w = weight.repeat(k)
    psi_class = g * (w * nu * adv).view(k, mcount).sum(-1)
    kappa_class = g * (w * nu).view(k, mcount).sum(-1)
    return psi_class[inverse], kappa_class[inverse]


@dataclass
class ExactResult:
    objective: float
    gradient: Tensor  # [P, num_prefixes, V]


def exact_objective(space: ExactSpace) -> ExactResult:
    """J_β and ∇J_β (mean over prompts)."""
    beta = space.spec.beta
    pol = space.policy
    pol.zero_grad(set_to_none=True)
    lp = space.log_probs(pol)  # [P, N, L]
    with torch.no_grad():
        ref = space.log_probs(space.reference)
    log_seq = lp.sum(-1)
    j = (torch.exp(log_seq) * (space.rewards - beta * (log_seq - ref.sum(-1)))).sum(-1).mean()
    (grad,) = torch.autograd.grad(j, pol.logits)
    return ExactResult(float(j.detach()), grad)


def baselines(space: ExactSpace, kl: str) -> Tensor:
    """ReMax's b per prompt: R' of the greedy completion (the KL in it for ``k1_reward``)."""
    p = space.spec.prompts
    prompts = torch.arange(p)[:, None]
    c = space.policy.sample(prompts, torch.ones(p, dtype=torch.long), max_new_tokens=space.spec.max_length,
                            eos=space.spec.eos, greedy=True)
    rows = space.policy.prefix_rows(c.tokens, c.lengths)
    r = space.rewards[torch.arange(p), space.lookup(rows, c.tokens, c.lengths)]
    if kl == "k1_reward":
        with torch.no_grad():
            lp = space.policy.token_log_probs(prompts, torch.ones(p, dtype=torch.long), c.tokens, c.lengths)
            ref = space.reference.token_log_probs(prompts, torch.ones(p, dtype=torch.long), c.tokens, c.lengths)
        r = k1_reward(r, lp, ref, c.mask, space.spec.beta)
    return r


def expected_direction(space: ExactSpace, est: EstimatorSpec) -> Tensor | None:
    """E over groups of G completions of the estimator's direction, mean over prompts
    (``[P, num_prefixes, V]``), or None where it is not enumerable (GRPO with too many classes)."""
    spec = space.spec
    pol = space.policy
    lp = space.log_probs(pol)  # [P, N, L]
    with torch.no_grad():
        ref = space.log_probs(space.reference)
    mask = space.mask
    log_seq = lp.sum(-1)
    probs = torch.exp(log_seq.detach())
    b = baselines(space, est.kl) if est.advantage == "remax" else None
    surrogate = lp.new_zeros(())
    for p in range(spec.prompts):
        r = space.rewards[p]
        if est.kl == "k1_reward":
            r = k1_reward(r, lp[p], ref[p], mask, spec.beta)
        base = None if b is None else float(b[p])
        if est.advantage == "grpo":
            weights = group_weights_enumerated(est.advantage, est.aggregation, r, space.lengths, probs[p],
                                               spec.group_size, base)
            if weights is None:
                return None
        else:
            weights = group_weights(est.advantage, est.aggregation, r, space.lengths, probs[p], spec.group_size, base)
        psi, kappa = weights
        surrogate = surrogate + (torch.exp(log_seq[p]) * psi).sum()
        if est.kl in KL_LOSS_MODES and spec.beta:
            c = (kl_term(lp[p], ref[p], est.kl) * mask.to(lp.dtype)).sum(-1)  # [N]
            surrogate = surrogate - spec.beta * (probs[p] * kappa * c).sum()
    (grad,) = torch.autograd.grad(surrogate / spec.prompts, pol.logits)
    return grad
