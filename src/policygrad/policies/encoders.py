"""Observation encodings: raw Gymnasium observations -> the flat floats the networks read."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from policygrad.errors import InputError
from policygrad.policies.mlp import check_positive

__all__ = ["FlattenObservation", "OneHotObservation", "Encoder"]


class FlattenObservation:
    """Box observations ``[..., *shape]`` -> ``[..., prod(shape)]`` in the policy's float dtype.

    Args:
        shape: the observation shape of the Box space.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.obs_dim = int(np.prod(self.shape, dtype=np.int64))
        if self.obs_dim < 1:
            raise InputError(f"observation shape {self.shape} has no elements")

    def __call__(self, obs: Tensor, dtype: torch.dtype) -> Tensor:
        n = len(self.shape)
        if obs.dim() < n or obs.shape[obs.dim() - n :] != self.shape:
            expected = ", ".join(map(str, self.shape))
            raise InputError(f"observations have shape {tuple(obs.shape)}, expected [..., {expected}]")
        if n != 1:
            obs = obs.reshape(*obs.shape[: obs.dim() - n], self.obs_dim)
        return obs.to(dtype)


class OneHotObservation:
    """Discrete observations ``[...]`` in [start, start + n) -> one-hot ``[..., n]`` floats.

    Args:
        n: the number of observations.
        start: the smallest observation.
    """

    def __init__(self, n: int, start: int = 0) -> None:
        check_positive(n=n)
        self.n, self.start = int(n), int(start)
        self.obs_dim = self.n

    def __call__(self, obs: Tensor, dtype: torch.dtype) -> Tensor:
        checked = not _tracing()
        if obs.is_floating_point():
            rounded = obs.round()
            if checked and not bool((rounded == obs).all()):
                raise InputError("discrete observations must be whole numbers")
            obs = rounded
        index = obs.long() - self.start if self.start else obs.long()
        if checked and index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.n):
            raise InputError(f"discrete observations must lie in [{self.start}, {self.start + self.n})")
        return F.one_hot(index, self.n).to(dtype)


def _tracing() -> bool:
    """Whether this call is being traced into a graph (``torch.jit.trace``, ``torch.export``, the
    ONNX exporter), where checks that read the values cannot run: an exported policy
    (:mod:`policygrad.export`) does not check its observations."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return torch.jit.is_tracing() or (is_compiling is not None and is_compiling())


Encoder = FlattenObservation | OneHotObservation


Encoder = FlattenObservation | OneHotObservation
