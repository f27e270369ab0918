"""Verifiable-reward tasks on short character strings, and supervised pretraining on them.

Each task has a character-level tokenizer (id 0 pads, id 1 ends a completion, then one id per
symbol of the task), a seeded generator of prompts with disjoint train and held-out splits, a reward
r(prompt, completion) and a success test. Texts are strings; a completion's text is what precedes
its end token (a completion that never ends is read as it stands, and is then longer than every
answer, since each task's ``max_new_tokens`` is its longest answer plus the end token).

| task | prompt | answer |
|---|---|---|
| ``count`` | ``a×3=`` | ``aaa`` |
| ``sort`` | ``3141=`` | ``1134`` |
| ``reverse`` | ``3141=`` | ``1413`` |
| ``add`` | ``17+5=`` | ``22`` |

Reward (the same for every task): 1 for the exact answer; otherwise, with ``partial_credit``,
0.5 · (positions i where completion[i] = answer[i]) / max(|completion|, |answer|), so that a
completion earns less than half for being close and never as much as the answer; without
``partial_credit``, 0. Success: the exact answer.

Splits: a prompt belongs to the held-out split when crc32 of its text is 0 modulo
``heldout_modulus`` (5: about a fifth of the prompts), so the two splits never share a prompt,
whatever the seed. ``TASKS`` names the tasks (``seq:count`` in an environment name resolves
through :func:`make_task`); :func:`load_reward` loads a user's reward ``module:function``.
"""

from __future__ import annotations

import importlib
import math
import random
import zlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from policygrad.errors import InputError, TrainingError, describe_error, shown
from policygrad.sequence.base import Completions

__all__ = [
    "PAD",
    "EOS",
    "Tokenizer",
    "Task",
    "CountTask",
    "SortTask",
    "ReverseTask",
    "AddTask",
    "TASKS",
    "make_task",
    "load_reward",
    "checked_reward",
    "positional_reward",
    "pretrain",
]

PAD = 0
"""The padding id of every task's tokenizer."""
EOS = 1
"""The end-of-completion id of every task's tokenizer."""

Reward = Callable[[str, str], float]
"""``(prompt text, completion text) -> reward``."""


@dataclass(frozen=True)
class Tokenizer:
    """One id per character: 0 pads, 1 ends a completion, ``symbols[i]`` is id i + 2."""

    symbols: str

    @property
    def vocab_size(self) -> int:
        return 2 + len(self.symbols)

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``'s characters (no end token); InputError for a character not in ``symbols``."""
        ids = []
        for ch in text:
            i = self.symbols.find(ch)
            if i < 0:
                raise InputError(f"{shown(ch)} is not a symbol of this tokenizer ({shown(self.symbols)})")
            ids.append(i + 2)
        return ids

    def decode(self, ids: list[int] | Tensor) -> str:
        """The text of ``ids`` up to the first end token, padding skipped."""
        out = []
        for i in (ids.tolist() if isinstance(ids, Tensor) else ids):
            if i == EOS:
                break
            if i != PAD:
                out.append(self.symbols[i - 2])
        return "".join(out)


def positional_reward(answer: str, completion: str, partial_credit: bool = True) -> float:
    """1 if ``completion == answer``; else 0.5 · (matching positions) / max(lengths) with
    ``partial_credit``, 0 without (see the module docstring)."""
    if completion == answer:
        return 1.0
    if not partial_credit:
        return 0.0
    matches = sum(a == b for a, b in zip(answer, completion))
    return 0.5 * matches / max(len(answer), len(completion))


@dataclass(frozen=True)
class Task:
    """A verifiable-reward task: subclasses define ``symbols``, :meth:`problem` and :meth:`answer`.

    Attributes:
        partial_credit: reward near misses (:func:`positional_reward`).
        heldout_modulus: a prompt is held out when crc32(prompt) % heldout_modulus == 0.
    """

    partial_credit: bool = True
    heldout_modulus: int = 5

    name = ""
    symbols = ""

    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.symbols)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def max_prompt_length(self) -> int:
        raise NotImplementedError

    @property
    def max_answer_length(self) -> int:
        raise NotImplementedError

    @property
    def max_new_tokens(self) -> int:
        """The longest answer and its end token."""
        return self.max_answer_length + 1

    def problem(self, rng: random.Random) -> str:
        """One prompt text drawn from the task's distribution (before the split)."""
        raise NotImplementedError

    def answer(self, prompt: str) -> str:
        """The correct completion text of ``prompt`` (without the end token)."""
        raise NotImplementedError

    def split_of(self, prompt: str) -> str:
        """``"heldout"`` or ``"train"``: a function of the prompt's text alone."""
        return "heldout" if zlib.crc32(prompt.encode()) % self.heldout_modulus == 0 else "train"

    def sample_prompts(self, n: int, generator: torch.Generator | None = None, split: str = "train") -> list[str]:
        """``n`` prompt texts of ``split`` (``"train"`` or ``"heldout"``), drawn i.i.d. from the task's
        distribution restricted to the split; ``generator`` (torch) seeds the draw."""
        if split not in ("train", "heldout"):
            raise InputError(f"split must be 'train' or 'heldout', got {shown(split)}")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = random.Random(seed)
        prompts: list[str] = []
        attempts = 0
        while len(prompts) < n:
            prompt = self.problem(rng)
            attempts += 1
            if self.split_of(prompt) == split:
                prompts.append(prompt)
            elif attempts > 1000 + 100 * n:
                raise InputError(f"the {self.name} task has (almost) no {split} prompts")
        return prompts

    def encode_prompts(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """``[B, P]`` left-padded prompt ids and ``[B]`` their lengths."""
        ids = [self.tokenizer.encode(p) for p in prompts]
        width = max(len(i) for i in ids)
        batch = torch.full((len(ids), width), PAD, dtype=torch.long)
        for row, i in enumerate(ids):
            batch[row, width - len(i):] = torch.tensor(i)
        return batch, torch.tensor([len(i) for i in ids])

    def encode_answers(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """``[B, L]`` right-padded ids of the correct completions (end token included) and ``[B]`` lengths."""
        ids = [self.tokenizer.encode(self.answer(p)) + [EOS] for p in prompts]
        width = max(len(i) for i in ids)
        batch = torch.full((len(ids), width), PAD, dtype=torch.long)
        for row, i in enumerate(ids):
            batch[row, :len(i)] = torch.tensor(i)
        return batch, torch.tensor([len(i) for i in ids])

    def reward(self, prompt: str, completion: str) -> float:
        """r(prompt, completion): see the module docstring."""
        return positional_reward(self.answer(prompt), completion, self.partial_credit)

    def success(self, prompt: str, completion: str) -> bool:
        """The completion is the exact answer."""
        return completion == self.answer(prompt)

    def texts(self, completions: Completions) -> tuple[list[str], list[str]]:
        """The prompt and completion texts of a batch."""
        tok = self.tokenizer
        prompts = [tok.decode(row[row.shape[0] - n:]) for row, n in zip(completions.prompts, completions.prompt_lengths.tolist())]
        texts = [tok.decode(row[:n]) for row, n in zip(completions.tokens, completions.lengths.tolist())]
        return prompts, texts

    def score(self, completions: Completions, reward: Reward | None = None) -> tuple[Tensor, Tensor]:
        """``[B]`` float rewards (the task's, or ``reward``, checked by :func:`checked_reward`) and
        ``[B]`` bool successes of a batch of completions."""
        prompts, texts = self.texts(completions)
        fn = self.reward if reward is None else reward
        rewards = torch.tensor([checked_reward(fn, p, c) for p, c in zip(prompts, texts)], dtype=torch.float32)
        successes = torch.tensor([self.success(p, c) for p, c in zip(prompts, texts)])
        return rewards, successes


@dataclass(frozen=True)
class CountTask(Task):
    """``a×3=`` → ``aaa``: n copies of a letter, n in [1, max_count] (max_count ≤ 9)."""

    max_count: int = 9
    letters: str = "abcdefgh"
    name = "count"

    def __post_init__(self) -> None:
        if isinstance(self.max_count, bool) or not isinstance(self.max_count, int) or not 1 <= self.max_count <= 9:
            raise InputError(f"max_count must be an integer in [1, 9], got {shown(self.max_count)}")
        if (not isinstance(self.letters, str) or not self.letters or len(set(self.letters)) != len(self.letters)
                or set(self.letters) & set("123456789×=")):
            raise InputError(f"letters must be distinct characters other than 1-9, × and =, got {shown(self.letters)}")

    @property
    def symbols(self) -> str:  # type: ignore[override]
        return self.letters + "123456789×="

    @property
    def max_prompt_length(self) -> int:
        return 4

    @property
    def max_answer_length(self) -> int:
        return self.max_count

    def problem(self, rng: random.Random) -> str:
        return f"{rng.choice(self.letters)}×{rng.randint(1, self.max_count)}="

    def answer(self, prompt: str) -> str:
        return prompt[0] * int(prompt[2])


@dataclass(frozen=True)
class _DigitStringTask(Task):
    min_digits: int = 2
    max_digits: int = 6
    symbols = "0123456789="

    def __post_init__(self) -> None:
        if (any(isinstance(v, bool) or not isinstance(v, int) for v in (self.min_digits, self.max_digits))
                or not 1 <= self.min_digits <= self.max_digits):
            raise InputError(f"need integers 1 ≤ min_digits ≤ max_digits, got {shown(self.min_digits)} and "
                             f"{shown(self.max_digits)}")

    @property
    def max_prompt_length(self) -> int:
        return self.max_digits + 1

    @property
    def max_answer_length(self) -> int:
        return self.max_digits

    def problem(self, rng: random.Random) -> str:
        n = rng.randint(self.min_digits, self.max_digits)
        return "".join(rng.choice("0123456789") for _ in range(n)) + "="


@dataclass(frozen=True)
class SortTask(_DigitStringTask):
    """``3141=`` → ``1134``: the digits in ascending order."""

    name = "sort"

    def answer(self, prompt: str) -> str:
        return "".join(sorted(prompt[:-1]))


@dataclass(frozen=True)
class ReverseTask(_DigitStringTask):
    """``3141=`` → ``1413``: the digits in reverse order."""

    name = "reverse"

    def answer(self, prompt: str) -> str:
        return prompt[-2::-1]


@dataclass(frozen=True)
class AddTask(Task):
    """``17+5=`` → ``22``: the sum of two numbers in [0, 10**max_digits), in decimal."""

    max_digits: int = 2
    name = "add"
    symbols = "0123456789+="

    def __post_init__(self) -> None:
        if isinstance(self.max_digits, bool) or not isinstance(self.max_digits, int) or not 1 <= self.max_digits <= 9:
            raise InputError(f"max_digits must be an integer in [1, 9], got {shown(self.max_digits)}")

    @property
    def max_prompt_length(self) -> int:
        return 2 * self.max_digits + 2

    @property
    def max_answer_length(self) -> int:
        return self.max_digits + 1

    def problem(self, rng: random.Random) -> str:
        top = 10**self.max_digits - 1
        return f"{rng.randint(0, top)}+{rng.randint(0, top)}="

    def answer(self, prompt: str) -> str:
        a, b = prompt[:-1].split("+")
        return str(int(a) + int(b))


TASKS: dict[str, type[Task]] = {"count": CountTask, "sort": SortTask, "reverse": ReverseTask, "add": AddTask}
"""The built-in tasks by name; an environment ``seq:<name>`` names one."""


def make_task(name: str, **settings: object) -> Task:
    """The task ``name`` (``"count"`` or ``"seq:count"``) with ``settings`` (its dataclass fields)."""
    key = name.removeprefix("seq:") if isinstance(name, str) else name
    if key not in TASKS:
        raise InputError(f"unknown sequence task {shown(name)}: choose one of {', '.join('seq:' + k for k in TASKS)}")
    try:
        return TASKS[key](**settings)
    except TypeError as err:
        raise InputError(f"bad settings for seq:{key}: {describe_error(err, first_line=True)}") from err


def load_reward(spec: str) -> Reward:
    """The user's reward function named ``module:function`` (imported now, because the user named it).

    InputError (one line) when the name is malformed, the module does not import, or the attribute
    is missing or not callable. Call the result through :func:`checked_reward`.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise InputError(f"a reward is named module:function, got {shown(spec)}")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise InputError(f"cannot import the reward's module {shown(module_name)}: "
                         f"{describe_error(err, limit=300, first_line=True)}") from err
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise InputError(f"{shown(spec)} is not a function (module {shown(module_name)} has no callable {shown(attr)})")
    return fn


def checked_reward(fn: Reward, prompt: str, completion: str) -> float:
    """``fn(prompt, completion)`` as a float; TrainingError (one line) if it raises or returns
    something that is not a finite number."""
    try:
        value = fn(prompt, completion)
    except Exception as err:
        raise TrainingError(f"the reward function raised on prompt {shown(prompt)}, completion {shown(completion)}: "
                            f"{describe_error(err, limit=300, first_line=True)}") from err
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise TrainingError(f"the reward function returned {shown(value)} for prompt {shown(prompt)}, "
                            f"completion {shown(completion)}: a reward must be a finite number")
    return number


def pretrain(policy: torch.nn.Module, task: Task, steps: int, batch_size: int, lr: float,
             generator: torch.Generator | None = None) -> list[float]:
    """Supervised warm start: teacher-forced cross-entropy on correct completions (end token included),

        loss = −Σ_b Σ_t log π(y*_t | x_b, y*_<t) / Σ_b |y*_b|,

    minimised with Adam on train-split prompts drawn by ``generator``.

    Args:
        policy: a sequence policy that is a ``torch.nn.Module`` (its parameters are trained).
        task: where prompts and answers come from.

    Returns:
        The loss of each step (mean negative log-likelihood per token, nats).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InputError(f"steps must be a non-negative integer, got {shown(steps)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {shown(batch_size)}")
    if not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise InputError(f"lr must be a positive number, got {shown(lr)}")
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    curve = []
    for _ in range(steps):
        texts = task.sample_prompts(batch_size, generator)
        prompts, prompt_lengths = task.encode_prompts(texts)
        answers, lengths = task.encode_answers(texts)
        log_probs = policy.token_log_probs(prompts, prompt_lengths, answers, lengths)  # [B, L], 0 beyond lengths
        loss = -log_probs.sum() / lengths.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        curve.append(float(loss.detach()))
    return curve
