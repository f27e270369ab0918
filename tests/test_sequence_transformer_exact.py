"""The group estimators on the small transformer, checked by enumeration: every completion of a
small space is scored through the transformer's own ``token_log_probs``, J_β and ∇J_β are exact
(float64, autograd over the transformer's parameters), and each estimator's exact expectation over
groups of G completions (policygrad.sequence.exact's closed forms) is compared with it."""

from __future__ import annotations

import pytest
import torch

from policygrad.sequence.estimators import k1_reward, sequence_surrogate
from policygrad.sequence.exact import SequenceSpec, build_space, group_weights
from policygrad.sequence.transformer import TransformerPolicy

V, L, EOS, G, BETA = 4, 3, 1, 4, 0.1  # tokens 0..3 (0 pads prompts only), completions of ≤ 3 tokens
PROMPTS = torch.tensor([[2, 3], [3, 2]])


def _space() -> tuple[torch.Tensor, torch.Tensor]:
    """Every completion (tokens [N, L], lengths [N]) of the space: the tabular enumeration."""
    empty = [dict() for _ in PROMPTS]
    spec = SequenceSpec(V, L, EOS, len(PROMPTS), G, BETA, empty, empty, empty)
    space = build_space(spec)
    return space.tokens, space.lengths


def _policies() -> tuple[TransformerPolicy, TransformerPolicy]:
    policy = TransformerPolicy(V, d_model=16, n_layers=1, n_heads=2, max_context=8, seed=1).double()
    reference = TransformerPolicy(V, d_model=16, n_layers=1, n_heads=2, max_context=8, seed=2).double()
    with torch.no_grad():  # logits far enough from uniform for the estimators to differ
        for p in policy.parameters():
            p.mul_(20.0 if p.dim() > 1 else 1.0)
    return policy, reference


def _log_probs(policy: TransformerPolicy, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[P, N, L] log π_t of every completion of every prompt, through the transformer."""
    p, n = len(PROMPTS), tokens.shape[0]
    prompts = PROMPTS.repeat_interleave(n, 0)
    lp = policy.token_log_probs(prompts, torch.full((p * n,), PROMPTS.shape[1]), tokens.repeat(p, 1), lengths.repeat(p))
    return lp.view(p, n, -1)


def _rewards(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[P, N] a reward per prompt: the number of 2s (prompt 0) or of 3s (prompt 1), minus 0.1 per token."""
    counts = torch.stack([(tokens == 2).sum(1), (tokens == 3).sum(1)]).double()
    return counts - 0.1 * lengths.double()


def _exact_gradient(policy, reference, tokens, lengths) -> torch.Tensor:
    params = [p for p in policy.parameters()]
    lp = _log_probs(policy, tokens, lengths)
    with torch.no_grad():
        ref = _log_probs(reference, tokens, lengths)
    log_seq = lp.sum(-1)
    j = (torch.exp(log_seq) * (_rewards(tokens, lengths) - BETA * (log_seq - ref.sum(-1)))).sum(-1).mean()
    return torch.cat([g.flatten() for g in torch.autograd.grad(j, params)])


def _expected(policy, reference, tokens, lengths, advantage: str, aggregation: str) -> torch.Tensor:
    """E over groups of G of the estimator's direction (KL in the reward), mean over prompts."""
    params = [p for p in policy.parameters()]
    lp = _log_probs(policy, tokens, lengths)
    with torch.no_grad():
        ref = _log_probs(reference, tokens, lengths)
    mask = torch.arange(L)[None, :] < lengths[:, None]
    log_seq = lp.sum(-1)
    surrogate = lp.new_zeros(())
    for p in range(len(PROMPTS)):
        r = k1_reward(_rewards(tokens, lengths)[p], lp[p], ref[p], mask, BETA)
        psi, _ = group_weights(advantage, aggregation, r, lengths, torch.exp(log_seq[p]).detach(), G)
        surrogate = surrogate + (torch.exp(log_seq[p]) * psi).sum()
    grads = torch.autograd.grad(surrogate / len(PROMPTS), params)
    return torch.cat([g.flatten() for g in grads])


def test_the_space_is_every_completion() -> None:
    tokens, lengths = _space()
    # 1 (eos first) + 3 (one other token, then eos) + 9·... : Σ_{k<L} 3^k ends with eos, 3^L run to L.
    assert tokens.shape[0] == 1 + 3 + 9 + 27
    policy, _ = _policies()
    with torch.no_grad():
        total = torch.exp(_log_probs(policy, tokens, lengths).sum(-1)).sum(-1)
    torch.testing.assert_close(total, torch.ones(len(PROMPTS), dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("advantage", ["reinforce", "rloo"])
def test_unbiased_estimators_follow_the_exact_gradient_of_the_transformer(advantage: str) -> None:
    tokens, lengths = _space()
    policy, reference = _policies()
    exact = _exact_gradient(policy, reference, tokens, lengths)
    expected = _expected(policy, reference, tokens, lengths, advantage, "sum")
    assert exact.norm() > 1e-3
    assert float((expected - exact).norm() / exact.norm()) <= 1e-9


def test_dr_grpo_is_scaled_by_g_minus_one_over_g_and_sequence_mean_differs() -> None:
    tokens, lengths = _space()
    policy, reference = _policies()
    exact = _exact_gradient(policy, reference, tokens, lengths)
    dr = _expected(policy, reference, tokens, lengths, "dr_grpo", "sum")
    assert float((dr - (G - 1) / G * exact).norm() / exact.norm()) <= 1e-9
    per_sequence = _expected(policy, reference, tokens, lengths, "rloo", "sequence_mean")
    cosine = float(per_sequence @ exact / (per_sequence.norm() * exact.norm()))
    assert cosine < 0.999  # 1/|y| averaging follows another objective on variable lengths


@pytest.mark.slow
def test_sampled_groups_through_sequence_surrogate_agree_with_the_exact_expectation() -> None:
    # Groups sampled by the transformer's own sampler; each group's direction is the gradient of
    # the library's sequence_surrogate; their mean over 1,500 groups per prompt is within a few
    # standard errors of the exact expectation (RLOO, KL in the reward).
    tokens, lengths = _space()
    policy, reference = _policies()
    expected = _expected(policy, reference, tokens, lengths, "rloo", "sum")
    params = [p for p in policy.parameters()]
    generator = torch.Generator().manual_seed(0)
    groups, directions = 1500, []
    for start in range(0, groups, 500):
        n = min(500, groups - start)
        prompts = PROMPTS.repeat_interleave(G, 0).repeat(n, 1)  # n rounds of (prompt 0 group, prompt 1 group)
        plens = torch.full((prompts.shape[0],), PROMPTS.shape[1])
        batch = policy.sample(prompts, plens, max_new_tokens=L, eos=EOS, generator=generator)
        counts = torch.stack([(batch.tokens == 2).sum(1), (batch.tokens == 3).sum(1)], 1).double()
        which = (prompts[:, 0] == 3).long()
        rewards = counts[torch.arange(len(which)), which] - 0.1 * batch.lengths.double()
        with torch.no_grad():
            ref = reference.token_log_probs(prompts, plens, batch.tokens, batch.lengths)
        for k in range(n):  # one direction per round: both prompts' groups, mean over prompts
            rows = slice(k * 2 * G, (k + 1) * 2 * G)
            lp = policy.token_log_probs(prompts[rows], plens[rows], batch.tokens[rows], batch.lengths[rows])
            loss = sequence_surrogate(lp, lp.detach(), ref[rows], batch.mask[rows], rewards[rows], group_size=G,
                                      advantage="rloo", kl="k1_reward", aggregation="sum", beta=BETA)
            grads = torch.autograd.grad(loss, params)
            directions.append(-torch.cat([g.flatten() for g in grads]))
    d = torch.stack(directions)
    mean, stderr = d.mean(0), d.std(0) / groups**0.5
    moved = stderr > 1e-12
    z = ((mean - expected)[moved] / stderr[moved]).abs()
    assert float(z.max()) < 5.0
    assert float(mean @ expected / (mean.norm() * expected.norm())) > 0.95
