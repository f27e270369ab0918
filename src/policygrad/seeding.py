"""Seeds derived from a run's seed, and the seeds environment copies are reset with.

A run seeds every generator from its seed and derives the others from it and a few integers
(:func:`derive_seed`): the reset at the step a run resumes from, each evaluation. Derived seeds lie
below 2³⁰, so that N environment copies reset with ``seed + i`` stay below 2³¹, the range that
every simulator accepts (ale-py's vector environment reads 32-bit signed ints).
"""

from __future__ import annotations

import numpy as np

__all__ = ["DERIVED_SEED_LIMIT", "ENV_SEED_LIMIT", "derive_seed", "env_seed"]

ENV_SEED_LIMIT = 2**31
"""Environment copies are reset with seeds below this: the largest range every simulator takes
(ale-py's vector environment reads its seeds as 32-bit signed ints and rejects 2³¹ and more)."""

DERIVED_SEED_LIMIT = 2**30
"""Derived seeds lie in ``[0, 2³⁰)``, so that copy i's ``seed + i`` stays below
:data:`ENV_SEED_LIMIT` for up to 2³⁰ copies."""


def derive_seed(seed: int, *keys: int) -> int:
    """A seed in ``[0, 2³⁰)`` determined by ``seed`` and ``keys`` (e.g. the step a run resumes from).

    The top 30 bits of the first 32-bit word of NumPy's ``SeedSequence`` of ``(seed, keys)``: fixed
    by its arguments alone, and valid as an environment seed for any number of copies below 2³⁰
    (see :func:`env_seed`).
    """
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, *keys]).generate_state(1)
    return int(state[0]) >> 2


def env_seed(seed: int, num_envs: int) -> int:
    """The seed that ``num_envs`` environment copies are reset with when ``seed`` is asked for
    (copy i gets the result + i): ``seed`` itself when all of ``seed .. seed + num_envs − 1`` lie
    in ``[0, 2³¹)``, else ``derive_seed(seed, num_envs)``. Every seed a run derives (those of its
    resets and evaluations) is below 2³⁰ and passes through unchanged; a large or negative seed
    given by hand is mapped into range, deterministically."""
    if 0 <= seed and seed + num_envs <= ENV_SEED_LIMIT:
        return seed
    return derive_seed(seed, num_envs)
