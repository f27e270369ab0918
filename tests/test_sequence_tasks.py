"""The verifiable-reward tasks: tokenizers, disjoint splits, rewards and successes, user rewards, and
supervised pretraining that teaches a small transformer the count task."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from policygrad.errors import InputError, TrainingError
from policygrad.sequence.base import Completions
from policygrad.sequence.tasks import (
    EOS,
    PAD,
    TASKS,
    AddTask,
    CountTask,
    ReverseTask,
    SortTask,
    Tokenizer,
    checked_reward,
    load_reward,
    make_task,
    positional_reward,
    pretrain,
)
from policygrad.sequence.transformer import TransformerPolicy


def test_tokenizer_round_trip() -> None:
    tok = Tokenizer("ab=")
    assert tok.vocab_size == 5
    assert tok.encode("ab=a") == [2, 3, 4, 2]
    assert tok.decode([2, 3, EOS, 2]) == "ab"  # stops at the end token
    assert tok.decode(torch.tensor([PAD, PAD, 4, 2])) == "=a"  # skips padding
    with pytest.raises(InputError, match="not a symbol"):
        tok.encode("abc")


@pytest.mark.parametrize("name, prompt, answer", [
    ("count", "a×3=", "aaa"),
    ("sort", "3141=", "1134"),
    ("reverse", "3141=", "1413"),
    ("add", "17+5=", "22"),
    ("add", "99+99=", "198"),
])
def test_answers(name: str, prompt: str, answer: str) -> None:
    task = make_task(f"seq:{name}")
    assert task.answer(prompt) == answer
    assert task.reward(prompt, answer) == 1.0 and task.success(prompt, answer)
    assert len(answer) + 1 <= task.max_new_tokens


def test_partial_credit_by_hand() -> None:
    # answer "aaa": "aa" matches 2 positions of max(2, 3) = 3 -> 0.5 * 2/3; "aab" -> 0.5 * 2/3; "" -> 0
    assert positional_reward("aaa", "aa") == pytest.approx(1 / 3)
    assert positional_reward("aaa", "aab") == pytest.approx(1 / 3)
    assert positional_reward("aaa", "aaaa") == pytest.approx(0.5 * 3 / 4)
    assert positional_reward("aaa", "") == 0.0
    assert positional_reward("aaa", "aa", partial_credit=False) == 0.0
    task = CountTask(partial_credit=False)
    assert task.reward("a×3=", "aa") == 0.0 and not task.success("a×3=", "aa")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_splits_never_overlap_and_draws_are_seeded(name: str) -> None:
    task = make_task(name)
    train = task.sample_prompts(300, torch.Generator().manual_seed(0))
    heldout = task.sample_prompts(100, torch.Generator().manual_seed(0), split="heldout")
    assert not set(train) & set(heldout)
    assert all(task.split_of(p) == "train" for p in train) and all(task.split_of(p) == "heldout" for p in heldout)
    assert train == task.sample_prompts(300, torch.Generator().manual_seed(0))
    assert train != task.sample_prompts(300, torch.Generator().manual_seed(1))
    prompts, prompt_lengths = task.encode_prompts(train)
    assert prompts.shape[1] <= task.max_prompt_length and int(prompts.max()) < task.vocab_size
    answers, lengths = task.encode_answers(train)
    assert int(lengths.max()) <= task.max_new_tokens
    assert (answers.gather(1, (lengths - 1)[:, None]) == EOS).all()


def test_score_reads_left_and_right_padding() -> None:
    task = SortTask()
    texts = ["31=", "9120="]
    prompts, prompt_lengths = task.encode_prompts(texts)  # "31=" is left-padded
    tok = task.tokenizer
    tokens = torch.tensor([tok.encode("13") + [EOS, PAD], tok.encode("0129")])  # the second never ends
    c = Completions(prompts, prompt_lengths, tokens, torch.tensor([3, 4]), torch.zeros(2, 4))
    assert task.texts(c) == (texts, ["13", "0129"])
    rewards, successes = task.score(c)
    assert rewards.tolist() == [1.0, 1.0] and successes.tolist() == [True, True]
    rewards, _ = task.score(c, reward=lambda prompt, completion: float(len(completion)))
    assert rewards.tolist() == [2.0, 4.0]


def test_make_task_errors() -> None:
    assert isinstance(make_task("seq:reverse", max_digits=4), ReverseTask)
    assert make_task("add", max_digits=3).max_answer_length == 4
    with pytest.raises(InputError, match="unknown sequence task"):
        make_task("seq:nope")
    with pytest.raises(InputError, match="bad settings"):
        make_task("count", digits=3)
    with pytest.raises(InputError):
        AddTask(max_digits=0)


def test_user_reward_is_loaded_and_checked(monkeypatch) -> None:
    module = types.ModuleType("pg_user_rewards")
    module.length = lambda prompt, completion: len(completion)
    module.raises = lambda prompt, completion: 1 / 0
    module.nan = lambda prompt, completion: float("nan")
    module.text = lambda prompt, completion: "high"
    module.not_callable = 3
    monkeypatch.setitem(sys.modules, "pg_user_rewards", module)
    fn = load_reward("pg_user_rewards:length")
    assert checked_reward(fn, "a×3=", "aa") == 2.0
    for name, message in [("raises", "raised"), ("nan", "finite"), ("text", "finite")]:
        with pytest.raises(TrainingError, match=message) as err:
            checked_reward(load_reward(f"pg_user_rewards:{name}"), "a×3=", "aa\nx")
        assert "\n" not in str(err.value)
    for spec, message in [("pg_user_rewards", "module:function"), ("pg_user_rewards:not_callable", "not a function"),
                          ("pg_user_rewards:missing", "not a function"), ("pg_no_such_module_xyz:f", "cannot import")]:
        with pytest.raises(InputError, match=message) as err:
            load_reward(spec)
        assert "\n" not in str(err.value)


def test_pretraining_teaches_count() -> None:
    task = CountTask()
    policy = TransformerPolicy(task.vocab_size, d_model=64, n_layers=2, n_heads=4, max_context=16, seed=0)
    curve = pretrain(policy, task, steps=200, batch_size=32, lr=3e-3, generator=torch.Generator().manual_seed(0))
    assert len(curve) == 200 and curve[-1] < 0.05 < 1.0 < curve[0]
    texts = task.sample_prompts(100, torch.Generator().manual_seed(1))
    prompts, prompt_lengths = task.encode_prompts(texts)
    c = policy.sample(prompts, prompt_lengths, max_new_tokens=task.max_new_tokens, eos=EOS, greedy=True)
    _, successes = task.score(c)
    assert successes.float().mean() >= 0.9
