"""Small NumPy reductions for the hot paths (no torch, no state).

NumPy's ndarray methods wrap their ufunc reductions in a Python layer that costs several times the
arithmetic on the small arrays of a rollout step or a minibatch; these call the ufuncs directly.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["mean", "all_finite"]


def mean(x: np.ndarray) -> np.floating:
    """``x.mean()`` of a 1-D array, bit for bit (the same pairwise sum, then one division in x's
    dtype), without the Python layer of ``ndarray.mean`` (about 5 µs against 1 µs)."""
    return np.add.reduce(x) / x.size


def all_finite(a: np.ndarray) -> bool:
    """``np.isfinite(a).all()``, tested first on one float64 sum: a finite sum means finite
    elements (float32 data cannot overflow it), and only a sum that is not finite needs the
    elementwise test."""
    return math.isfinite(np.add.reduce(a, axis=None, dtype=np.float64)) or bool(np.isfinite(a).all())
