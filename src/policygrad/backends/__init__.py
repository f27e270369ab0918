"""Backends: where an actor-critic's networks run (see :mod:`policygrad.backends.base`).

``backend`` is a config field: ``torch``, ``numpy`` or ``auto``. :func:`resolve_backend` decides
once, when the run is built; the choice and the reason are written to ``config.json`` and the log.
``auto`` never fails: it takes ``numpy`` where that backend can serve the run (a small tanh/ReLU MLP
actor-critic with a categorical, Gaussian or gSDE head, on the CPU, trained by PPO, A2C,
REINFORCE or IMPALA), and ``torch`` otherwise.
"""

from __future__ import annotations

from typing import Any

from policygrad.backends.base import Backend, PerSample, Term
from policygrad.backends.numpy import NumpyBackend, unsupported_reason
from policygrad.backends.torch import TorchBackend
from policygrad.errors import InputError, shown

__all__ = ["Backend", "PerSample", "Term", "TorchBackend", "NumpyBackend", "BACKENDS", "resolve_backend", "make_backend"]

BACKENDS = ("auto", "torch", "numpy")
"""The values of the ``backend`` config field."""


def resolve_backend(requested: str, policy: Any, numpy_refusal: str | None = None) -> tuple[str, str]:
    """``(name, reason)``: the backend that serves ``policy``.

    Args:
        requested: "auto", "torch" or "numpy".
        policy: the actor-critic to train.
        numpy_refusal: why the algorithm itself cannot use the NumPy backend (e.g. NPG's
            second derivatives), or None.

    Raises:
        InputError: ``numpy`` requested where it cannot serve (the message names the reason), or
            an unknown name.
    """
    if requested not in BACKENDS:
        raise InputError(f"unknown backend {shown(requested)}; valid: {', '.join(BACKENDS)}")
    why_not = numpy_refusal or unsupported_reason(policy)
    if requested == "torch":
        return "torch", "requested"
    if requested == "numpy":
        if why_not is not None:
            raise InputError(f"backend=numpy cannot serve this run: {why_not}; use backend=torch or auto")
        return "numpy", "requested"
    if why_not is None:
        return "numpy", "auto: a small MLP actor-critic on the CPU, where the NumPy backend is fastest"
    return "torch", f"auto: the NumPy backend cannot serve {why_not}"


def make_backend(name: str, policy: Any, *, optimizer: str | None = None, learning_rate: float = 3e-4,
                 optim_eps: float = 1e-5, max_grad_norm: float | None = None, reason: str = "") -> Backend:
    """The backend ``name`` ("torch" or "numpy") around ``policy``; ``optimizer`` None: for acting only."""
    cls = {"torch": TorchBackend, "numpy": NumpyBackend}.get(name)
    if cls is None:
        raise InputError(f"unknown backend {shown(name)}; valid: torch, numpy")
    return cls(policy, optimizer, learning_rate, optim_eps, max_grad_norm, reason)
