"""Distributions against torch.distributions (the reference), their identities, and sampling
statistics with fixed seeds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as td

from policygrad.distributions import Bernoulli, Categorical, DiagGaussian, MultiCategorical, masked_fill_value
from policygrad.errors import InputError

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's statistic Σ (O − E)² / E over the categories with E > 0."""
    n = counts.sum()
    expected = n * probs
    keep = expected > 0
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())


# ------------------------------------------------------------------------------------------
# Categorical
# ------------------------------------------------------------------------------------------


def test_categorical_matches_torch_reference():
    g = _gen(1)
    logits = torch.randn(5, 3, 7, generator=g, dtype=F64) * 3
    other_logits = torch.randn(5, 3, 7, generator=g, dtype=F64) * 3
    actions = torch.randint(0, 7, (5, 3), generator=g)
    p, q = Categorical(logits), Categorical(other_logits)
    ref_p, ref_q = td.Categorical(logits=logits), td.Categorical(logits=other_logits)

    torch.testing.assert_close(p.probs, ref_p.probs, rtol=0, atol=1e-12)
    torch.testing.assert_close(p.logits, ref_p.logits, rtol=0, atol=1e-12)
    torch.testing.assert_close(p.log_prob(actions), ref_p.log_prob(actions), rtol=0, atol=1e-12)
    torch.testing.assert_close(p.entropy(), ref_p.entropy(), rtol=0, atol=1e-12)
    torch.testing.assert_close(p.kl(q), td.kl_divergence(ref_p, ref_q), rtol=0, atol=1e-12)
    assert p.log_prob(actions).shape == (5, 3)
    assert torch.equal(p.mode(), logits.argmax(-1))


def test_categorical_kl_nonnegative_and_zero_on_itself():
    g = _gen(2)
    p = Categorical(torch.randn(100, 5, generator=g, dtype=F64) * 2)
    q = Categorical(torch.randn(100, 5, generator=g, dtype=F64) * 2)
    assert (p.kl(q) >= 0).all()
    torch.testing.assert_close(p.kl(p), torch.zeros(100, dtype=F64), rtol=0, atol=1e-15)


def test_categorical_log_prob_gradient_is_onehot_minus_probs():
    logits = torch.randn(4, 6, dtype=F64, generator=_gen(3), requires_grad=True)
    actions = torch.tensor([0, 5, 2, 2])
    Categorical(logits).log_prob(actions).sum().backward()
    expected = torch.nn.functional.one_hot(actions, 6).to(F64) - torch.softmax(logits.detach(), -1)
    torch.testing.assert_close(logits.grad, expected, rtol=0, atol=1e-12)


def test_categorical_sample_frequencies_match_probs():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    n = 200_000
    dist = Categorical(probs.log().clamp_min(-1e30).expand(n, 5))
    samples = dist.sample(_gen(4))
    assert samples.dtype == torch.long and samples.shape == (n,)
    counts = torch.bincount(samples, minlength=5).double()
    assert counts[4] == 0  # probability-0 action never drawn
    # chi-square with 3 degrees of freedom: P(χ² > 25) ≈ 1.6e-5
    assert _chi_square(counts, probs.double()) < 25.0


def test_categorical_sample_and_log_prob_agree_and_reproduce():
    logits = torch.randn(16, 4, generator=_gen(5))
    dist = Categorical(logits)
    actions, log_prob = dist.sample_and_log_prob(_gen(6))
    torch.testing.assert_close(log_prob, dist.log_prob(actions))
    assert torch.equal(actions, dist.sample(_gen(6)))
    assert not actions.requires_grad


def test_masked_categorical_zero_probability_and_renormalised_log_prob():
    g = _gen(7)
    logits = torch.randn(6, 5, generator=g, dtype=F64)
    mask = torch.rand(6, 5, generator=g) < 0.6
    mask[:, 2] = True  # at least one allowed action per row
    dist = Categorical(logits, mask)
    assert torch.equal(dist.probs[~mask], torch.zeros(int((~mask).sum()), dtype=F64))

    # Reference: torch's categorical on the allowed actions only (−∞ logits elsewhere).
    ref = td.Categorical(logits=logits.masked_fill(~mask, -math.inf))
    torch.testing.assert_close(dist.probs, ref.probs, rtol=0, atol=1e-12)
    for a in range(5):
        rows = mask[:, a]
        actions = torch.full((6,), a)
        torch.testing.assert_close(dist.log_prob(actions)[rows], ref.log_prob(actions)[rows], rtol=0, atol=1e-12)
    torch.testing.assert_close(dist.entropy(), ref.entropy(), rtol=0, atol=1e-12)
    assert mask.gather(-1, dist.mode().unsqueeze(-1)).all()


def test_masked_categorical_is_finite_and_never_samples_masked():
    logits = torch.randn(50_000, 4, generator=_gen(8)) * 5
    mask = torch.tensor([[True, False, True, False]]).expand(50_000, 4)
    dist = Categorical(logits, mask)
    samples = dist.sample(_gen(9))
    assert mask.gather(-1, samples.unsqueeze(-1)).all()
    unmasked = Categorical(logits)
    for value in (dist.entropy(), dist.kl(dist), dist.kl(unmasked), dist.logits):
        assert torch.isfinite(value).all()
    assert (dist.kl(unmasked) >= 0).all()
    torch.testing.assert_close(dist.kl(dist), torch.zeros(50_000), rtol=0, atol=0)


def test_masked_categorical_gradient_is_finite():
    logits = torch.randn(3, 4, requires_grad=True)
    mask = torch.tensor([[True, False, True, True]] * 3)
    dist = Categorical(logits, mask)
    (dist.entropy().sum() + dist.log_prob(torch.tensor([0, 2, 3])).sum()).backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[:, 1] == 0).all()


def test_masked_fill_value_gives_exact_zero_probability():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        logits = torch.tensor([[30.0, 0.0]], dtype=dtype)
        dist = Categorical(logits, torch.tensor([[False, True]]))
        assert dist.probs[0, 0] == 0 and dist.probs[0, 1] == 1
        assert torch.isfinite(dist.logits).all()
        assert masked_fill_value(dtype) < -1e4


def test_categorical_rejects_bad_input():
    logits = torch.zeros(2, 3)
    with pytest.raises(InputError, match="no action"):
        Categorical(logits, torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(InputError, match="shape"):
        Categorical(logits, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(InputError, match="bool"):
        Categorical(logits, torch.ones(2, 3))
    with pytest.raises(InputError, match="floating"):
        Categorical(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(InputError, match="shape"):
        Categorical(logits).log_prob(torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="integer"):
        Categorical(logits).log_prob(torch.zeros(2))
    with pytest.raises(InputError):
        Categorical(logits).kl(Categorical(torch.zeros(2, 4)))


# ------------------------------------------------------------------------------------------
# DiagGaussian
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state_dependent_std", [False, True])
def test_gaussian_matches_torch_reference(state_dependent_std):
    g = _gen(10)
    mean = torch.randn(4, 3, 2, generator=g, dtype=F64)
    other_mean = torch.randn(4, 3, 2, generator=g, dtype=F64)
    std_shape = (4, 3, 2) if state_dependent_std else (2,)
    log_std = torch.randn(std_shape, generator=g, dtype=F64) * 0.5
    other_log_std = torch.randn(std_shape, generator=g, dtype=F64) * 0.5
    actions = torch.randn(4, 3, 2, generator=g, dtype=F64) * 2
    p, q = DiagGaussian(mean, log_std), DiagGaussian(other_mean, other_log_std)
    ref_p = td.Normal(mean, log_std.exp().expand_as(mean))
    ref_q = td.Normal(other_mean, other_log_std.exp().expand_as(mean))

    torch.testing.assert_close(p.log_prob(actions), ref_p.log_prob(actions).sum(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(p.entropy(), ref_p.entropy().sum(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(p.kl(q), td.kl_divergence(ref_p, ref_q).sum(-1), rtol=0, atol=1e-12)
    assert p.entropy().shape == (4, 3)
    assert torch.equal(p.mode(), mean)


def test_gaussian_kl_nonnegative_and_zero_on_itself():
    g = _gen(11)
    p = DiagGaussian(torch.randn(100, 3, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64))
    q = DiagGaussian(torch.randn(100, 3, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64))
    assert (p.kl(q) >= 0).all()
    torch.testing.assert_close(p.kl(p), torch.zeros(100, dtype=F64), rtol=0, atol=1e-15)


def test_gaussian_kl_hessian_in_log_std_is_two_per_dimension_against_a_snapshot():
    """The Fisher information of N(μ, σ²) in log σ is 2 per dimension: the Hessian of
    KL(π_old ‖ πθ) at θ_old. A π_old built under no_grad shares the log σ parameter and sees no
    change of it (Hessian 0); its snapshot does not."""
    log_std = torch.tensor([0.3, -0.5], dtype=F64, requires_grad=True)
    mean = torch.zeros(5, 2, dtype=F64)
    with torch.no_grad():
        shared = DiagGaussian(mean, log_std)
        frozen = shared.snapshot()

    def hessian(old):
        return torch.autograd.functional.hessian(lambda s: old.kl(DiagGaussian(mean, s)).mean(), log_std.detach())

    torch.testing.assert_close(hessian(frozen), 2 * torch.eye(2, dtype=F64), rtol=0, atol=1e-12)
    with torch.no_grad():
        log_std.add_(0.1)  # an in-place step, as a trust-region line search takes
    assert torch.equal(frozen.log_std, torch.tensor([0.3, -0.5], dtype=F64))
    assert shared.kl(DiagGaussian(mean, log_std.detach())).abs().max() == 0  # blind to the change
    assert not frozen.log_std.requires_grad


@pytest.mark.parametrize(
    "make",
    [
        lambda z: Categorical(z),
        lambda z: MultiCategorical(z, [2, 2]),
        lambda z: Bernoulli(z),
        lambda z: DiagGaussian(z, z[0]),  # log σ a view of the parameter, as a policy's
    ],
)
def test_snapshot_is_an_equal_distribution_cut_from_the_parameters(make):
    z = torch.randn(3, 4, generator=_gen(13), dtype=F64, requires_grad=True)
    dist = make(z)
    frozen = dist.snapshot()
    assert type(frozen) is type(dist)
    torch.testing.assert_close(frozen.kl(dist.snapshot()), torch.zeros(3, dtype=F64), rtol=0, atol=1e-12)
    with torch.no_grad():
        z.mul_(2.0)
    assert (frozen.kl(make(z.detach())) > 0).all()


def test_gaussian_sample_moments():
    n = 100_000
    mean = torch.tensor([1.0, -2.0], dtype=F64)
    log_std = torch.tensor([0.0, math.log(0.5)], dtype=F64)
    samples = DiagGaussian(mean.expand(n, 2), log_std).sample(_gen(12))
    std = log_std.exp()
    z = (samples.mean(0) - mean) / (std / math.sqrt(n))
    assert (z.abs() < 4).all(), z
    # the sample variance has standard error ≈ σ² √(2/n)
    z_var = (samples.var(0) - std**2) / (std**2 * math.sqrt(2 / n))
    assert (z_var.abs() < 4).all(), z_var


def test_gaussian_sample_is_detached_and_rsample_is_reparameterised():
    mean = torch.zeros(5, 2, requires_grad=True)
    log_std = torch.zeros(2, requires_grad=True)
    dist = DiagGaussian(mean, log_std)
    assert not dist.sample(_gen(13)).requires_grad
    x = dist.rsample(_gen(13))
    assert torch.equal(x.detach(), dist.sample(_gen(13)))
    x.sum().backward()
    torch.testing.assert_close(mean.grad, torch.ones(5, 2))


def test_gaussian_sample_and_log_prob_agree_with_and_without_graph():
    mean = torch.randn(8, 3, generator=_gen(14), dtype=F64)
    log_std = torch.tensor([0.1, -0.3, 0.5], dtype=F64)
    dist = DiagGaussian(mean, log_std)
    with torch.no_grad():
        actions, log_prob = dist.sample_and_log_prob(_gen(15))
    torch.testing.assert_close(log_prob, dist.log_prob(actions), rtol=0, atol=1e-12)

    # With a graph, the log-probability's gradient is the score at the (detached) action.
    mean_p = mean.clone().requires_grad_(True)
    dist_p = DiagGaussian(mean_p, log_std)
    actions_p, log_prob_p = dist_p.sample_and_log_prob(_gen(15))
    assert not actions_p.requires_grad
    log_prob_p.sum().backward()
    torch.testing.assert_close(mean_p.grad, (actions_p - mean) / log_std.exp() ** 2, rtol=0, atol=1e-12)


def test_gaussian_rejects_bad_shapes():
    with pytest.raises(InputError, match="log_std"):
        DiagGaussian(torch.zeros(4, 3), torch.zeros(2))
    with pytest.raises(InputError, match="shape"):
        DiagGaussian(torch.zeros(4, 3), torch.zeros(3)).log_prob(torch.zeros(4))
    with pytest.raises(InputError):
        DiagGaussian(torch.zeros(4, 3), torch.zeros(3)).kl(Categorical(torch.zeros(4, 3)))


# ------------------------------------------------------------------------------------------
# MultiCategorical
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nvec", [(3, 3, 3), (3, 5, 2), (1, 4)])
def test_multicategorical_matches_sum_of_torch_categoricals(nvec):
    g = _gen(16)
    logits = torch.randn(6, sum(nvec), generator=g, dtype=F64) * 2
    other_logits = torch.randn(6, sum(nvec), generator=g, dtype=F64) * 2
    actions = torch.stack([torch.randint(0, n, (6,), generator=g) for n in nvec], -1)
    p, q = MultiCategorical(logits, nvec), MultiCategorical(other_logits, nvec)
    refs_p = [td.Categorical(logits=x) for x in logits.split(nvec, -1)]
    refs_q = [td.Categorical(logits=x) for x in other_logits.split(nvec, -1)]

    ref_log_prob = sum(r.log_prob(actions[:, k]) for k, r in enumerate(refs_p))
    ref_entropy = sum(r.entropy() for r in refs_p)
    ref_kl = sum(td.kl_divergence(rp, rq) for rp, rq in zip(refs_p, refs_q))
    torch.testing.assert_close(p.log_prob(actions), ref_log_prob, rtol=0, atol=1e-12)
    torch.testing.assert_close(p.entropy(), ref_entropy, rtol=0, atol=1e-12)
    torch.testing.assert_close(p.kl(q), ref_kl, rtol=0, atol=1e-12)
    assert (p.kl(q) >= 0).all()
    torch.testing.assert_close(p.kl(p), torch.zeros(6, dtype=F64), rtol=0, atol=1e-15)
    assert torch.equal(p.mode(), torch.stack([r.probs.argmax(-1) for r in refs_p], -1))


def test_multicategorical_samples_in_range_with_matching_frequencies():
    nvec = (2, 4)
    n = 100_000
    logits = torch.tensor([0.0, 1.0, 0.5, -1.0, 2.0, 0.0])
    dist = MultiCategorical(logits.expand(n, 6), nvec)
    samples, log_prob = dist.sample_and_log_prob(_gen(17))
    assert samples.shape == (n, 2) and samples.dtype == torch.long and log_prob.shape == (n,)
    torch.testing.assert_close(log_prob, dist.log_prob(samples))
    for k, (chunk, size) in enumerate(zip(logits.split(nvec), nvec)):
        counts = torch.bincount(samples[:, k], minlength=size).double()
        assert counts.numel() == size  # never a padding index
        # df ≤ 3: P(χ² > 25) ≈ 1.6e-5
        assert _chi_square(counts, torch.softmax(chunk.double(), -1)) < 25.0


def test_multicategorical_mask():
    nvec = (3, 2)
    mask = torch.tensor([[True, False, True, False, True]]).expand(20_000, 5)
    dist = MultiCategorical(torch.zeros(20_000, 5), nvec, mask)
    samples = dist.sample(_gen(18))
    assert (samples[:, 0] != 1).all() and (samples[:, 1] == 1).all()
    torch.testing.assert_close(dist.entropy(), torch.full((20_000,), math.log(2.0)))
    with pytest.raises(InputError, match="no action"):
        MultiCategorical(torch.zeros(1, 5), nvec, torch.tensor([[True, True, True, False, False]]))


def test_multicategorical_rejects_bad_input():
    with pytest.raises(InputError, match="nvec"):
        MultiCategorical(torch.zeros(2, 3), [])
    with pytest.raises(InputError, match="nvec"):
        MultiCategorical(torch.zeros(2, 3), [3, 0])
    with pytest.raises(InputError, match=r"\[\.\.\., 5\]"):
        MultiCategorical(torch.zeros(2, 3), [3, 2])
    with pytest.raises(InputError, match="shape"):
        MultiCategorical(torch.zeros(2, 5), [3, 2]).log_prob(torch.zeros(2, dtype=torch.long))
