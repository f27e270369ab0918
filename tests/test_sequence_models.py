"""The network sequence policies (the built-in transformer and the Hugging Face adapter) against the
identities every SequencePolicy must keep: sampling's log-probabilities are token_log_probs of the
same tokens; decoding through the key/value cache equals recomputing the whole sequence; chunked
equals unchunked; left padding changes nothing; a seeded generator repeats its draws."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from policygrad.errors import InputError
from policygrad.sequence import SequencePolicy
from policygrad.sequence.transformer import TransformerPolicy

V = 32
EOS = 1
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_transformers = pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")


def _transformer(chunk_size: int | None = 16, value_head: bool = False) -> TransformerPolicy:
    return TransformerPolicy(V, d_model=32, n_layers=2, n_heads=4, max_context=32, seed=3, chunk_size=chunk_size,
                             value_head=value_head)


def _hf(chunk_size: int | None = 16, value_head: bool = False):
    from policygrad.sequence.hf import HFPolicy

    torch.manual_seed(3)
    return HFPolicy.from_config(
        {"model_type": "gpt2", "vocab_size": V, "n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 32,
         "bos_token_id": EOS, "eos_token_id": EOS},
        chunk_size=chunk_size, value_head=value_head,
    )


MODELS = [
    pytest.param(_transformer, id="transformer"),
    pytest.param(_hf, id="hf-gpt2", marks=needs_transformers),
]


def _prompts() -> tuple[torch.Tensor, torch.Tensor]:
    # left-padded with 0: rows of 3, 5, 1 and 4 real tokens
    prompts = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7], [0, 0, 0, 0, 9], [0, 8, 2, 2, 3]])
    return prompts, torch.tensor([3, 5, 1, 4])


def _bias_towards_eos(policy) -> None:
    """Make the end token likely enough that completions of different lengths occur."""
    head = policy.logits
    policy.logits = lambda hidden: head(hidden) + torch.nn.functional.one_hot(torch.tensor(EOS), V) * 2.5


@pytest.mark.parametrize("make", MODELS)
def test_is_a_sequence_policy(make) -> None:
    assert isinstance(make(), SequencePolicy)


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_log_probs_are_token_log_probs(make, temperature: float) -> None:
    policy = make()
    _bias_towards_eos(policy)
    prompts, prompt_lengths = _prompts()
    prompts, prompt_lengths = prompts.repeat(4, 1), prompt_lengths.repeat(4)
    c = policy.sample(prompts, prompt_lengths, max_new_tokens=10, eos=EOS, temperature=temperature,
                      generator=torch.Generator().manual_seed(0))
    assert len(set(c.lengths.tolist())) > 2  # rows of several lengths
    assert c.tokens.shape[1] == int(c.lengths.max())
    mask = c.mask
    assert (c.tokens[~mask] == policy.pad_id).all() and (c.log_probs[~mask] == 0).all()
    ended = c.tokens.gather(1, (c.lengths - 1)[:, None]).squeeze(1) == EOS
    assert (ended | (c.lengths == 10)).all()
    assert ((c.tokens == EOS) & mask).sum(1).le(1).all()  # the first eos ends the completion
    log_probs = policy.token_log_probs(c.prompts, c.prompt_lengths, c.tokens, c.lengths, temperature=temperature)
    torch.testing.assert_close(log_probs, c.log_probs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", MODELS)
def test_cached_decoding_equals_full_recomputation(make) -> None:
    # Greedy decoding without a cache: at every step score every candidate token by a full pass.
    policy = make()
    prompts, prompt_lengths = _prompts()
    c = policy.sample(prompts, prompt_lengths, max_new_tokens=6, eos=None, greedy=True)
    batch = prompts.shape[0]
    tokens = torch.zeros(batch, 0, dtype=torch.long)
    for t in range(6):
        candidates = torch.cat([tokens.repeat_interleave(V, 0), torch.arange(V).repeat(batch)[:, None]], dim=1)
        with torch.no_grad():
            scores = policy.token_log_probs(prompts.repeat_interleave(V, 0), prompt_lengths.repeat_interleave(V),
                                            candidates, torch.full((batch * V,), t + 1))
        log_p = scores[:, t].view(batch, V)  # [B, V]: log π(v | x, y_<t), recomputed from scratch
        torch.testing.assert_close(log_p.logsumexp(1), torch.zeros(batch), atol=1e-5, rtol=0)
        best = log_p.argmax(1)
        torch.testing.assert_close(log_p.gather(1, best[:, None]).squeeze(1), c.log_probs[:, t], atol=1e-5, rtol=0)
        tokens = torch.cat([tokens, best[:, None]], dim=1)
    assert torch.equal(tokens, c.tokens)


@pytest.mark.parametrize("make", MODELS)
def test_chunked_equals_unchunked(make) -> None:
    prompts, prompt_lengths = _prompts()
    whole, chunked = make(chunk_size=None), make(chunk_size=1)
    chunked.load_state_dict(whole.state_dict())
    c = whole.sample(prompts, prompt_lengths, max_new_tokens=7, eos=EOS, generator=torch.Generator().manual_seed(1))
    results = []
    for policy in (whole, chunked):
        policy.zero_grad()
        log_probs, entropy = policy.token_log_probs(c.prompts, c.prompt_lengths, c.tokens, c.lengths,
                                                    with_entropy=True)
        (log_probs.sum() + 0.3 * entropy.sum()).backward()
        grads = [p.grad.clone() for p in policy.parameters()]
        results.append((log_probs.detach(), entropy.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=0)
    assert (results[0][1][c.mask] > 0).all() and (results[0][1][~c.mask] == 0).all()
    for a, b in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("make", MODELS)
def test_left_padding_does_not_change_a_prompt(make) -> None:
    policy = make()
    prompt = torch.tensor([[4, 9, 2]])
    padded = torch.tensor([[0, 0, 0, 0, 4, 9, 2], [0, 0, 0, 0, 0, 0, 7]])
    alone = policy.sample(prompt, torch.tensor([3]), max_new_tokens=5, eos=None, greedy=True)
    together = policy.sample(padded, torch.tensor([3, 1]), max_new_tokens=5, eos=None, greedy=True)
    assert torch.equal(alone.tokens[0], together.tokens[0])
    torch.testing.assert_close(alone.log_probs[0], together.log_probs[0], atol=1e-5, rtol=0)
    tokens, lengths = together.tokens[:1], torch.tensor([5])
    with torch.no_grad():
        a = policy.token_log_probs(prompt, torch.tensor([3]), tokens, lengths, with_entropy=True)
        b = policy.token_log_probs(padded[:1], torch.tensor([3]), tokens, lengths, with_entropy=True)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", MODELS)
def test_greedy_is_deterministic_and_a_seed_repeats_its_samples(make) -> None:
    policy = make()
    prompts, prompt_lengths = _prompts()
    first = policy.sample(prompts, prompt_lengths, max_new_tokens=6, eos=EOS, greedy=True)
    second = policy.sample(prompts, prompt_lengths, max_new_tokens=6, eos=EOS, greedy=True,
                           generator=torch.Generator().manual_seed(5))
    assert torch.equal(first.tokens, second.tokens) and torch.equal(first.log_probs, second.log_probs)

    def drawn(seed: int):
        return policy.sample(prompts.repeat(4, 1), prompt_lengths.repeat(4), max_new_tokens=6, eos=EOS,
                             generator=torch.Generator().manual_seed(seed))

    a, b, other = drawn(7), drawn(7), drawn(8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.lengths, b.lengths)
    assert torch.equal(a.log_probs, b.log_probs)
    assert not torch.equal(a.tokens[:, :3], other.tokens[:, :3])


@pytest.mark.parametrize("make", MODELS)
def test_too_long_a_prompt_is_one_line_of_input_error(make) -> None:
    policy = make()  # max_context 32
    prompts = torch.full((1, 40), 5)
    with pytest.raises(InputError) as err:
        policy.sample(prompts, torch.tensor([40]), max_new_tokens=4, eos=EOS)
    assert "max_context" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="do not fit"):
        policy.sample(prompts[:, :30], torch.tensor([30]), max_new_tokens=4, eos=EOS)
    with pytest.raises(InputError) as err:
        policy.token_log_probs(prompts, torch.tensor([40]), torch.full((1, 2), 5), torch.tensor([2]))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("make", MODELS)
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p, pl, t, l: (p.float(), pl, t, l), "long tensor"),
        (lambda p, pl, t, l: (p, pl[:2], t, l), "prompt_lengths"),
        (lambda p, pl, t, l: (p, pl * 0, t, l), "at least one"),
        (lambda p, pl, t, l: (p, pl, t + V, l), r"\[0, 32\)"),
        (lambda p, pl, t, l: (p, pl, t, l + 9), "lengths must lie"),
    ],
)
def test_bad_batches_are_input_errors(make, change, message: str) -> None:
    policy = make()
    prompts, prompt_lengths = _prompts()
    tokens, lengths = torch.full((4, 3), 5), torch.tensor([3, 1, 2, 3])
    with pytest.raises(InputError, match=message):
        policy.token_log_probs(*change(prompts, prompt_lengths, tokens, lengths))


def test_bad_sampling_settings_are_input_errors() -> None:
    policy = _transformer()
    prompts, prompt_lengths = _prompts()
    for kwargs, message in [({"temperature": 0.0}, "temperature"), ({"eos": V}, "eos"),
                            ({"max_new_tokens": 0}, "max_new_tokens")]:
        settings = {"max_new_tokens": 3, "eos": EOS, **kwargs}
        with pytest.raises(InputError, match=message):
            policy.sample(prompts, prompt_lengths, **settings)
    with pytest.raises(InputError, match="multiple of n_heads"):
        TransformerPolicy(V, d_model=30, n_heads=4)


@pytest.mark.parametrize("make", MODELS)
def test_the_value_head_reads_the_state_before_each_token(make) -> None:
    policy = make(value_head=True)
    prompts, prompt_lengths = _prompts()
    tokens, lengths = torch.randint(2, V, (4, 5), generator=torch.Generator().manual_seed(0)), torch.tensor([5, 1, 3, 2])
    values = policy.values(prompts, prompt_lengths, tokens, lengths)
    assert values.shape == (4, 5) and (values[~torch.arange(5).lt(lengths[:, None])] == 0).all()
    # V(x, y_<t) does not depend on y_t and later tokens
    changed = tokens.clone()
    changed[:, 2:] = 3
    again = policy.values(prompts, prompt_lengths, changed, lengths)
    torch.testing.assert_close(values[:, :3], again[:, :3])
    # left padding changes nothing: row 0 (3 prompt tokens) alone, without its two pad columns
    alone = policy.values(prompts[:1, 2:], prompt_lengths[:1], tokens[:1], lengths[:1])
    torch.testing.assert_close(alone, values[:1])
    values.sum().backward()
    assert policy.value_head.weight.grad is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for name, p in policy.named_parameters()
               if "value_head" not in name)  # the shared trunk learns from the critic too
    with pytest.raises(InputError, match="value head"):
        make().values(prompts, prompt_lengths, tokens, lengths)


def test_untied_head_has_its_own_weights() -> None:
    tied, untied = TransformerPolicy(V, d_model=32), TransformerPolicy(V, d_model=32, tie_embeddings=False)
    assert tied.head.weight is tied.token_embedding.weight
    assert untied.head.weight is not untied.token_embedding.weight
    assert sum(p.numel() for p in untied.parameters()) == sum(p.numel() for p in tied.parameters()) + V * 32


def test_initialisation_is_seeded() -> None:
    a, b, c = TransformerPolicy(V, d_model=32, seed=1), TransformerPolicy(V, d_model=32, seed=1), TransformerPolicy(V, d_model=32, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.token_embedding.weight, c.token_embedding.weight)


@needs_transformers
def test_hf_round_trip_through_a_directory(tmp_path) -> None:
    from policygrad.sequence.hf import HFPolicy

    policy = _hf()
    policy.model.save_pretrained(tmp_path / "model")
    loaded = HFPolicy.from_pretrained(tmp_path / "model")
    prompts, prompt_lengths = _prompts()
    a = policy.sample(prompts, prompt_lengths, max_new_tokens=4, eos=None, greedy=True)
    b = loaded.sample(prompts, prompt_lengths, max_new_tokens=4, eos=None, greedy=True)
    assert torch.equal(a.tokens, b.tokens)


@needs_transformers
def test_hf_training_mode_keeps_dropout_off() -> None:
    # GPT-2's dropout (0.1 by default) must not act in the training pass: the log-probabilities that
    # training differentiates are those of sampling (the ratio to the sampling policy is 1 on-policy)
    policy = _hf()
    prompts, prompt_lengths = _prompts()
    batch = policy.sample(prompts, prompt_lengths, max_new_tokens=4, eos=None, generator=torch.Generator().manual_seed(0))
    policy.train()
    assert policy.training and not any(m.training for m in policy.model.modules())
    log_probs = policy.token_log_probs(prompts, prompt_lengths, batch.tokens, batch.lengths)
    assert torch.allclose(log_probs, batch.log_probs, atol=1e-5)
    policy.eval()
    assert not policy.training


@needs_transformers
def test_hf_directory_that_does_not_load_is_one_line_of_input_error(tmp_path) -> None:
    from policygrad.sequence.hf import HFPolicy

    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_layer": "two\\nlines"')
    for path in (tmp_path, tmp_path / "missing"):
        with pytest.raises(InputError) as err:
            HFPolicy.from_pretrained(path)
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="model_type"):
        HFPolicy.from_config({"vocab_size": V})


@needs_transformers
def test_the_fused_gelu_is_gpt2s_gelu_to_float_rounding() -> None:
    # gelu_new and gelu_fast are the tanh approximation of GELU written out in element-wise steps;
    # TanhGELU is the same formula in one kernel. Compared in float64 against the formula itself,
    # and in float32 against the modules it replaces.
    import math

    from transformers.activations import FastGELUActivation, NewGELUActivation

    from policygrad.sequence.hf import TanhGELU

    x64 = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    formula = 0.5 * x64 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))
    assert torch.allclose(TanhGELU()(x64), formula, rtol=0, atol=1e-14)
    x = x64.float()
    for slow in (NewGELUActivation(), FastGELUActivation()):
        assert (TanhGELU()(x) - slow(x)).abs().max() <= 2.5e-7  # 2.38e-7 = 2^-22 measured


@needs_transformers
def test_hf_fuses_gpt2s_gelu_in_place_and_scores_the_same() -> None:
    from transformers.activations import NewGELUActivation

    from policygrad.sequence.hf import HFPolicy, TanhGELU

    fused = _hf()
    torch.manual_seed(3)
    plain = HFPolicy(type(fused.model)(fused.model.config), fuse_gelu=False)
    plain.model.load_state_dict(fused.model.state_dict())
    assert fused.fused_gelu == 2 and plain.fused_gelu == 0  # one MLP activation per layer
    assert all(isinstance(block.mlp.act, TanhGELU) for block in fused.model.transformer.h)
    assert all(isinstance(block.mlp.act, NewGELUActivation) for block in plain.model.transformer.h)
    assert fused.model.config.activation_function == "gelu_new"  # what save_pretrained writes is unchanged
    prompts, prompt_lengths = _prompts()
    batch = fused.sample(prompts, prompt_lengths, max_new_tokens=6, eos=None, generator=torch.Generator().manual_seed(1))
    a = fused.token_log_probs(prompts, prompt_lengths, batch.tokens, batch.lengths)
    b = plain.token_log_probs(prompts, prompt_lengths, batch.tokens, batch.lengths)
    assert torch.allclose(a, b, rtol=0, atol=1e-5)
    a.sum().backward()
    b.sum().backward()
    for p, q in zip(fused.model.parameters(), plain.model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", MODELS)
def test_scores_and_values_are_one_pass_of_token_log_probs_and_values(make) -> None:
    # PPO's training pass: the token scores and the values from one trunk pass equal the two
    # separate calls, values and gradients alike.
    policy = make(chunk_size=2, value_head=True)
    _bias_towards_eos(policy)
    prompts, prompt_lengths = _prompts()
    batch = policy.sample(prompts, prompt_lengths, max_new_tokens=6, eos=EOS, generator=torch.Generator().manual_seed(2))
    assert int(batch.lengths.min()) < int(batch.lengths.max())  # ragged completions
    weights = torch.randn(3, *batch.tokens.shape, generator=torch.Generator().manual_seed(3))

    def grads(loss):
        policy.zero_grad()
        loss.backward()
        return [None if p.grad is None else p.grad.clone() for p in policy.parameters()]

    log_prob, entropy, values = policy.scores_and_values(prompts, prompt_lengths, batch.tokens, batch.lengths,
                                                         temperature=0.8)
    joint = grads((weights[0] * log_prob + weights[1] * entropy + weights[2] * values).sum())
    log_prob2, entropy2 = policy.token_log_probs(prompts, prompt_lengths, batch.tokens, batch.lengths,
                                                 temperature=0.8, with_entropy=True)
    values2 = policy.values(prompts, prompt_lengths, batch.tokens, batch.lengths)
    separate = grads((weights[0] * log_prob2 + weights[1] * entropy2 + weights[2] * values2).sum())
    assert torch.equal(log_prob, log_prob2) and torch.equal(entropy, entropy2) and torch.equal(values, values2)
    for a, b in zip(joint, separate):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="no value head"):
        make().scores_and_values(prompts, prompt_lengths, batch.tokens, batch.lengths)
