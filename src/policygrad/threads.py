"""How many CPU threads a policygrad process computes with.

The networks are small and the environments want cores of their own, so a run computes on one
thread by default: torch's intra-op pool (``torch.set_num_threads``), and NumPy's BLAS library and
any OpenMP runtime, limited at run time through ``threadpoolctl`` (environment variables such as
``OMP_NUM_THREADS`` are read only when a library loads, too late once NumPy is imported). A pool
of two threads on a machine whose cores are busy spends its time waiting for the core it does not
get; a second process on the machine can slow such a run several times over.

:func:`limit_threads` is applied when a training or evaluation session is built, and first thing
in every worker process policygrad starts (:class:`ThreadLimited` wraps the environment factories
of an async vector environment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from policygrad.errors import InputError, shown

__all__ = ["limit_threads", "ThreadLimited"]


def limit_threads(torch_threads: int, blas_threads: int) -> None:
    """Limit this process's compute threads.

    The BLAS libraries loaded (NumPy's OpenBLAS, an MKL) and the OpenMP runtimes get
    ``blas_threads``; then torch's intra-op pool gets ``torch_threads`` (on builds where torch
    runs on OpenMP, its runtime keeps that number). NumPy and torch are imported first, so that
    their libraries are loaded when the limits are set. The limits last for the process.

    Args:
        torch_threads: threads of torch's intra-op parallelism, ≥ 1.
        blas_threads: threads of each BLAS library and OpenMP runtime, ≥ 1.

    Raises:
        InputError: a count that is not a positive int.
    """
    for name, value in (("torch_threads", torch_threads), ("blas_threads", blas_threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive int, got {shown(value)}")
    import numpy  # noqa: F401  (loads the BLAS library that the limit is to reach)
    import threadpoolctl
    import torch

    threadpoolctl.threadpool_limits(limits=blas_threads, user_api="blas")
    threadpoolctl.threadpool_limits(limits=blas_threads, user_api="openmp")
    torch.set_num_threads(torch_threads)


@dataclass(frozen=True)
class ThreadLimited:
    """An environment factory that limits the threads of the process it runs in first.

    Picklable whenever ``factory`` is, so it can be sent to a worker process (Gymnasium's
    ``AsyncVectorEnv`` calls it there).
    """

    factory: Callable[[], Any]
    """Builds the environment (called with no arguments)."""
    torch_threads: int = 1
    """As for :func:`limit_threads`."""
    blas_threads: int = 1
    """As for :func:`limit_threads`."""

    def __call__(self) -> Any:
        limit_threads(self.torch_threads, self.blas_threads)
        return self.factory()
