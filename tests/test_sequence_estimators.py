"""Sequence estimators: hand-derived values, identities, and exact expectations on enumerated spaces."""

import math

import pytest
import torch

from policygrad.errors import InputError
from policygrad.losses import clipped_surrogate
from policygrad.sequence.base import SequencePolicy
from policygrad.sequence.estimators import (
    aggregate,
    clipped_token_surrogate,
    dr_grpo,
    group_advantages,
    grpo,
    k1,
    k1_reward,
    k2,
    k3,
    k3_ratio,
    reinforce,
    reinforce_pp,
    remax,
    rloo,
    sequence_surrogate,
    token_gae,
)
from policygrad.sequence.exact import (
    EstimatorSpec,
    build_space,
    exact_objective,
    expected_direction,
    group_weights,
    group_weights_enumerated,
    parse_spec,
)
from policygrad.sequence.tabular import TabularSequencePolicy

D = torch.float64


# ---------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------


def test_group_advantages_hand_values():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=D)
    assert torch.equal(reinforce(r), r)
    # RLOO: 1 − (0 + 0 + 1)/3 = 2/3;  0 − (1 + 0 + 1)/3 = −2/3
    assert torch.allclose(rloo(r), torch.tensor([2, -2, -2, 2], dtype=D) / 3)
    # group mean 0.5
    assert torch.allclose(dr_grpo(r), torch.tensor([0.5, -0.5, -0.5, 0.5], dtype=D))
    # sample std: sqrt(4 · 0.25 / 3) = sqrt(1/3)
    assert torch.allclose(grpo(r), torch.tensor([0.5, -0.5, -0.5, 0.5], dtype=D) / (math.sqrt(1 / 3) + 1e-4))
    assert torch.allclose(remax(r, 0.25), r - 0.25)
    two = torch.tensor([[1.0, 3.0], [0.0, 0.0]], dtype=D)
    assert torch.allclose(remax(two, torch.tensor([1.0, -1.0], dtype=D)), torch.tensor([[0, 2], [1, 1]], dtype=D))
    # batch mean 1, batch sample std sqrt((0 + 4 + 1 + 1)/3) = sqrt(2)
    assert torch.allclose(reinforce_pp(two), (two - 1) / (math.sqrt(2) + 1e-4))


def test_group_advantages_work_per_group_and_identities():
    r = torch.randn(5, 4, dtype=D, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(dr_grpo(r), 3 / 4 * rloo(r))  # (G − 1)/G
    for name in ("reinforce", "rloo", "dr_grpo", "grpo"):
        batched = group_advantages(r, name)
        rows = torch.stack([group_advantages(row, name) for row in r])
        assert torch.allclose(batched, rows), name
    with pytest.raises(InputError, match="at least 2"):
        rloo(torch.ones(1, dtype=D))
    with pytest.raises(InputError, match="advantage must be one of"):
        group_advantages(r, "ppo")
    with pytest.raises(InputError, match="remax needs baseline"):
        group_advantages(r, "remax")


# ---------------------------------------------------------------------------------------------
# KL terms, aggregation, surrogates
# ---------------------------------------------------------------------------------------------


def test_kl_terms_hand_values_and_gradients():
    logp = torch.tensor([[math.log(0.5)]], dtype=D, requires_grad=True)
    ref = torch.tensor([[math.log(0.25)]], dtype=D)
    ln2 = math.log(2)
    assert k1(logp, ref).item() == pytest.approx(ln2)
    assert k2(logp, ref).item() == pytest.approx(0.5 * ln2**2)
    k3_value = 0.5 - 1 + ln2  # e^{−ln 2} − 1 + ln 2
    assert k3(logp, ref).item() == pytest.approx(k3_value)
    assert k3_ratio(logp, ref).item() == pytest.approx(k3_value)
    # d k3 / d log π = 1 − e^{−k1} = 0.5; the ratio adds k3 · d log π / d log π = k3
    (g3,) = torch.autograd.grad(k3(logp, ref).sum(), logp)
    (g3r,) = torch.autograd.grad(k3_ratio(logp, ref).sum(), logp)
    (g2,) = torch.autograd.grad(k2(logp, ref).sum(), logp)
    assert g3.item() == pytest.approx(0.5)
    assert g3r.item() == pytest.approx(0.5 + k3_value)
    assert g2.item() == pytest.approx(ln2)  # k1


def test_k1_reward_and_aggregation_hand_values():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    terms = torch.tensor([[1.0, 2.0, 100.0], [4.0, 100.0, 100.0]], dtype=D)
    # one group of G = 2: sums 3 and 4, lengths 2 and 1
    assert aggregate(terms, mask, 2, "sum").item() == pytest.approx((3 + 4) / 2)
    assert aggregate(terms, mask, 2, "sequence_mean").item() == pytest.approx((3 / 2 + 4 / 1) / 2)
    assert aggregate(terms, mask, 2, "token_mean").item() == pytest.approx((3 + 4) / 3)
    assert torch.allclose(aggregate(terms, mask, 1, "sum"), torch.tensor([3.0, 4.0], dtype=D))
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.1], [0.25, 0.9, 0.9]], dtype=D))
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.9], [0.5, 0.1, 0.1]], dtype=D))
    # R' = R − β Σ_t k1: row 0 k1 = ln 2 + 0, row 1 k1 = −ln 2
    out = k1_reward(torch.tensor([1.0, 0.0], dtype=D), logp, ref, mask, 0.5)
    assert torch.allclose(out, torch.tensor([1 - 0.5 * math.log(2), 0.5 * math.log(2)], dtype=D))
    with pytest.raises(InputError, match="aggregation must be one of"):
        aggregate(terms, mask, 2, "median")
    with pytest.raises(InputError, match="do not split into groups"):
        aggregate(terms, mask, 3, "sum")


def test_clipped_token_surrogate_matches_losses_clipped_surrogate():
    gen = torch.Generator().manual_seed(1)
    logp = torch.randn(6, 5, dtype=D, generator=gen) * 0.3
    old = logp + torch.randn(6, 5, dtype=D, generator=gen) * 0.3
    adv = torch.randn(6, dtype=D, generator=gen)
    terms = clipped_token_surrogate(logp, old, adv, 0.2)
    expected = clipped_surrogate(logp, old, adv[:, None].expand(6, 5), 0.2)
    assert torch.allclose(-terms.mean(), expected)


def test_token_gae_hand_values():
    # one completion of 3 tokens (padding after), R = 1, V = [0.5, 0.25, 0.1], β k1 = 0.1 · [1, 2, 3]
    values = torch.tensor([[0.5, 0.25, 0.1, 9.0]], dtype=D)
    mask = torch.tensor([[True, True, True, False]])
    logp = torch.tensor([[1.0, 2.0, 3.0, 0.0]], dtype=D)
    ref = torch.zeros(1, 4, dtype=D)
    adv, ret = token_gae(torch.tensor([1.0], dtype=D), values, mask, log_probs=logp, ref_log_probs=ref, beta=0.1)
    # γ = λ = 1: A_t = R − β Σ_{t' ≥ t} k1_t' − V_t
    assert torch.allclose(adv, torch.tensor([[1 - 0.6 - 0.5, 1 - 0.5 - 0.25, 1 - 0.3 - 0.1, 0]], dtype=D))
    assert torch.allclose(ret, torch.tensor([[1 - 0.6, 1 - 0.5, 1 - 0.3, 0]], dtype=D))
    # λ = 0: the TD error r_t + V_{t+1} − V_t, no bootstrap after the last token
    adv0, _ = token_gae(torch.tensor([1.0], dtype=D), values, mask, gae_lambda=0.0)
    assert torch.allclose(adv0, torch.tensor([[0.25 - 0.5, 0.1 - 0.25, 1 - 0.1, 0]], dtype=D))


def test_sequence_surrogate_gradient_on_policy_hand_values():
    # G = 2, one group; per-token gradient of the loss w.r.t. log π_it is −ν_i A_i (+ β ν_i ∂kl/∂log π)
    mask = torch.tensor([[True, True], [True, False]])
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.25, 1.0]], dtype=D)).requires_grad_()
    ref = torch.log(torch.tensor([[0.25, 0.5], [0.5, 1.0]], dtype=D))
    rewards = torch.tensor([1.0, 0.0], dtype=D)
    loss = sequence_surrogate(logp, logp.detach(), ref, mask, rewards, group_size=2, advantage="rloo", kl="none",
                              aggregation="sum", beta=0.0)
    (g,) = torch.autograd.grad(loss, logp)
    # A = [1, −1], ν = 1/2
    assert torch.allclose(g, torch.tensor([[-0.5, -0.5], [0.5, 0.0]], dtype=D))
    loss = sequence_surrogate(logp, logp.detach(), ref, mask, rewards, group_size=2, advantage="reinforce",
                              kl="k2_loss", aggregation="token_mean", beta=0.5)
    (g,) = torch.autograd.grad(loss, logp)
    k1_ = (logp - ref).detach()
    expected = (-rewards[:, None] + 0.5 * k1_) / 3 * mask
    assert torch.allclose(g, expected)
    # k1 in the reward: R' = R − β Σ k1 = [1 − 0.5 ln 2, −0.5 ln(1/2)]
    loss = sequence_surrogate(logp, logp.detach(), ref, mask, rewards, group_size=2, advantage="reinforce",
                              kl="k1_reward", aggregation="sum", beta=0.5)
    (g,) = torch.autograd.grad(loss, logp)
    r_prime = torch.tensor([1 - 0.5 * math.log(2), 0.5 * math.log(2)], dtype=D)
    assert torch.allclose(g, -r_prime[:, None] / 2 * mask)


def test_clipped_sequence_surrogate_on_policy_has_the_plain_gradient():
    gen = torch.Generator().manual_seed(2)
    logp = (torch.rand(6, 4, dtype=D, generator=gen).log()).requires_grad_()
    ref = torch.rand(6, 4, dtype=D, generator=gen).log()
    mask = torch.arange(4)[None, :] < torch.tensor([4, 2, 1, 3, 4, 2])[:, None]
    rewards = torch.randn(6, dtype=D, generator=gen)
    kwargs = dict(group_size=3, advantage="grpo", kl="k3_ratio_loss", aggregation="token_mean", beta=0.1)
    (plain,) = torch.autograd.grad(sequence_surrogate(logp, logp.detach(), ref, mask, rewards, **kwargs), logp)
    (clipped,) = torch.autograd.grad(sequence_surrogate(logp, logp.detach(), ref, mask, rewards, clip_eps=0.2,
                                                        **kwargs), logp)
    assert torch.allclose(plain, clipped)
    # off-policy, a token whose ratio moved past 1 + ε with A > 0 gives no gradient
    old = logp.detach() - 0.5
    loss = sequence_surrogate(logp, old, ref, mask, rewards, clip_eps=0.2, group_size=3, advantage="reinforce",
                              kl="none", aggregation="sum", beta=0.0)
    (g,) = torch.autograd.grad(loss, logp)
    assert torch.all(g[(rewards > 0)[:, None].expand(6, 4)] == 0)


# ---------------------------------------------------------------------------------------------
# The tabular policy
# ---------------------------------------------------------------------------------------------


def test_tabular_policy_prefixes_sampling_and_log_probs():
    pol = TabularSequencePolicy(3, 3, 2, 2)
    assert isinstance(pol, SequencePolicy)
    assert pol.num_prefixes == 1 + 2 + 4  # no eos in a prefix
    pol.set_logits([{(): [0.0, 1.0, 2.0], (1,): [3.0, 0.0, 0.0]}, {}])
    prompts = torch.tensor([[0], [1]])
    toks = torch.tensor([[1, 0, 0], [2, 0, 0]])
    lengths = torch.tensor([3, 1])
    logp = pol.token_log_probs(prompts, torch.ones(2, dtype=torch.long), toks, lengths)
    root = torch.log_softmax(torch.tensor([0.0, 1.0, 2.0], dtype=D), 0)
    after1 = torch.log_softmax(torch.tensor([3.0, 0.0, 0.0], dtype=D), 0)
    assert torch.allclose(logp[0], torch.stack([root[1], after1[0], torch.tensor(math.log(1 / 3), dtype=D)]))
    assert torch.allclose(logp[1], torch.tensor([math.log(1 / 3), 0, 0], dtype=D))
    # sampled frequencies of the first token follow the softmax (fixed seed, 3 standard errors)
    n = 20000
    c = pol.sample(torch.zeros(n, 1, dtype=torch.long), torch.ones(n, dtype=torch.long), max_new_tokens=3, eos=2,
                   generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(c.tokens[:, 0], minlength=3).to(D) / n
    p = root.exp()
    assert torch.all((freq - p).abs() < 3 * torch.sqrt(p * (1 - p) / n))
    assert torch.all((c.tokens[:, 0] == 2) == (c.lengths == 1))  # eos ends the completion
    assert torch.allclose(c.log_probs, pol.token_log_probs(c.prompts, c.prompt_lengths, c.tokens, c.lengths))
    greedy = pol.sample(prompts, torch.ones(2, dtype=torch.long), max_new_tokens=3, eos=2, greedy=True)
    assert greedy.tokens[0, 0] == 2 and greedy.lengths[0] == 1
    assert greedy.tokens[1].tolist() == [0, 0, 0]  # all logits 0: ties go to the lowest id
    # the gradient reads back per (prompt, prefix)
    logp[0, 0].backward()
    grads = pol.table_dicts()
    assert torch.allclose(torch.tensor(grads[0][()], dtype=D), torch.nn.functional.one_hot(torch.tensor(1), 3)
                          - root.exp())
    assert grads[1][()] == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------------
# Exact expectations
# ---------------------------------------------------------------------------------------------


def _space(vocab, length, eos, prompts, group, beta, seed, levels=3):
    """A random spec: Gaussian logits at every prefix, rewards in {0, .., levels − 1}."""
    gen = torch.Generator().manual_seed(seed)
    pol = TabularSequencePolicy(vocab, length, eos, prompts)
    key = lambda h: " ".join(map(str, h))  # noqa: E731
    table = lambda: [{key(h): torch.randn(vocab, generator=gen).tolist() for h in pol.prefixes}  # noqa: E731
                     for _ in range(prompts)]
    obj = {"vocab_size": vocab, "max_length": length, "eos": eos, "prompts": prompts, "group_size": group,
           "beta": beta, "logits": table(), "reference_logits": table(), "rewards": [{} for _ in range(prompts)],
           "estimators": [{"name": "x", "advantage": "reinforce"}]}
    space = build_space(parse_spec(obj))
    space.rewards = torch.randint(0, levels, space.rewards.shape, generator=gen).to(D)
    return space


def _g(space, advantage, kl="none", aggregation="sum"):
    return expected_direction(space, EstimatorSpec("x", advantage, kl, aggregation))


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("eos", [None, 2])
def test_unbiased_estimators_equal_the_exact_gradient(eos):
    space = _space(3, 3, eos, 2, 4, 0.3, seed=5)
    grad = exact_objective(space).gradient
    for advantage in ("reinforce", "rloo", "remax"):
        assert _rel(_g(space, advantage, "k1_reward"), grad) < 1e-9, advantage
    assert _rel(_g(space, "dr_grpo", "k1_reward"), 3 / 4 * grad) < 1e-9  # (G − 1)/G
    space.spec.beta = 0.0
    grad0 = exact_objective(space).gradient
    for advantage in ("reinforce", "rloo", "remax"):
        assert _rel(_g(space, advantage, "none"), grad0) < 1e-9, advantage


def _prefix_visits(space):
    """d(p, h): probability that a completion of prompt p passes prefix h (float64, no gradient)."""
    pol = space.policy
    with torch.no_grad():
        lp = space.log_probs(pol)
    probs = lp.sum(-1).exp()  # [P, N]
    rows = pol.prefix_rows(space.tokens, space.lengths)  # [N, L]
    d = torch.zeros(space.spec.prompts, pol.num_prefixes, dtype=D)
    for t in range(rows.shape[1]):
        on = space.mask[:, t]
        for p in range(space.spec.prompts):
            d[p].index_add_(0, rows[on, t], probs[p, on])
    return d


def _per_prefix_kl_gradient(space, forward):
    """∇ mean_p Σ_h d(p, h) KL at h, d held fixed: forward KL(π_ref ‖ π) or reverse KL(π ‖ π_ref)."""
    pol = space.policy
    d = _prefix_visits(space)
    logp = torch.log_softmax(pol.logits, -1)
    ref = torch.log_softmax(space.reference.logits.detach(), -1)
    kl = (ref.exp() * (ref - logp)).sum(-1) if forward else (logp.exp() * (logp - ref)).sum(-1)
    (g,) = torch.autograd.grad((d * kl).sum() / space.spec.prompts, pol.logits)
    return g


@pytest.mark.parametrize("eos", [None, 2])
def test_kl_loss_terms_follow_their_documented_objectives(eos):
    space = _space(3, 3, eos, 2, 4, 0.5, seed=7)
    beta = space.spec.beta
    base = _g(space, "reinforce", "none")
    kl_part = {kl: (_g(space, "reinforce", kl) - base) / -beta for kl in ("k1_loss", "k2_loss", "k3_loss",
                                                                          "k3_ratio_loss")}
    assert float(kl_part["k1_loss"].abs().max()) < 1e-12  # E[Σ_t ∇k1_t] = E[∇log π(y)] = 0
    forward = _per_prefix_kl_gradient(space, forward=True)
    reverse = _per_prefix_kl_gradient(space, forward=False)
    assert _rel(kl_part["k3_loss"], forward) < 1e-9
    assert _rel(kl_part["k2_loss"], reverse) < 1e-9
    assert _rel(kl_part["k3_ratio_loss"], reverse) < 1e-9
    # ∇KL(π ‖ π_ref) = per-prefix reverse KL + E[Σ_t ∇log π_t Σ_{t'>t} k1_t']
    pol = space.policy
    lp = space.log_probs(pol)
    with torch.no_grad():
        ref = space.log_probs(space.reference)
    seq = lp.sum(-1)
    (grad_kl,) = torch.autograd.grad((seq.exp() * (seq - ref.sum(-1))).sum() / space.spec.prompts, pol.logits,
                                     retain_graph=True)
    k1_ = (lp - ref).detach()
    later = k1_.flip(-1).cumsum(-1).flip(-1) - k1_  # Σ_{t'>t} k1_t'
    weights = seq.exp().detach()[..., None]
    (missing,) = torch.autograd.grad((weights * lp * later).sum() / space.spec.prompts, pol.logits)
    assert _rel(reverse + missing, grad_kl) < 1e-9


def test_sequence_mean_follows_reward_over_length():
    space = _space(3, 4, 2, 2, 3, 0.0, seed=11)
    pol = space.policy
    lp = space.log_probs(pol)
    probs = lp.sum(-1).exp()
    mean_r = (probs.detach() * space.rewards).sum(-1, keepdim=True)
    target = (probs * (space.rewards - mean_r) / space.lengths.to(D)).sum() / space.spec.prompts
    (g,) = torch.autograd.grad(target, pol.logits)  # ∇E[(R − b)/|y|], b = E[R] held fixed
    assert _rel(_g(space, "rloo", "none", "sequence_mean"), g) < 1e-9


def test_token_mean_without_eos_is_sum_over_length():
    space = _space(2, 3, None, 1, 4, 0.2, seed=3)
    for advantage, kl in (("rloo", "k1_reward"), ("grpo", "k3_loss"), ("reinforce", "k2_loss")):
        assert _rel(_g(space, advantage, kl, "token_mean"), _g(space, advantage, kl) / 3) < 1e-9


@pytest.mark.parametrize("aggregation", ["sum", "sequence_mean", "token_mean"])
def test_closed_forms_match_enumerating_the_group(aggregation):
    space = _space(3, 3, 2, 1, 3, 0.0, seed=13)
    with torch.no_grad():
        probs = space.log_probs(space.policy).sum(-1).exp()[0]
    for advantage in ("reinforce", "rloo", "dr_grpo", "remax"):
        closed = group_weights(advantage, aggregation, space.rewards[0], space.lengths, probs, 3, 0.5)
        enumerated = group_weights_enumerated(advantage, aggregation, space.rewards[0], space.lengths, probs, 3, 0.5)
        for a, b in zip(closed, enumerated):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), advantage


def test_grpo_binary_rewards_groups_of_two_scale():
    # G = 2, binary R: a group with R = (1, 0) has GRPO A = ±0.5/(std + ε), std = √½, and RLOO
    # A = ±1; equal rewards give 0 in both. So GRPO's expectation is 0.5/(√½ + 1e-4) times ∇J.
    space = _space(2, 2, None, 2, 2, 0.0, seed=17, levels=2)
    grad = exact_objective(space).gradient
    g = _g(space, "grpo")
    assert _rel(g, 0.5 / (math.sqrt(0.5) + 1e-4) * grad) < 1e-9


def test_grpo_with_continuous_rewards_is_not_enumerable():
    space = _space(4, 4, None, 1, 8, 0.3, seed=19)
    assert _g(space, "grpo", "k1_reward") is None
    assert _g(space, "grpo", "none") is not None  # three reward levels


def test_tabular_policy_rejects_bad_input():
    with pytest.raises(InputError, match="eos must be a token id"):
        TabularSequencePolicy(3, 2, 5, 1)
    pol = TabularSequencePolicy(3, 2, 2, 1)
    with pytest.raises(InputError, match="cannot occur"):
        pol.prefix_row((2,))
    with pytest.raises(InputError, match="built for eos"):
        pol.sample(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.long), max_new_tokens=2, eos=None)
