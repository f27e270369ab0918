"""The backend boundary: what an update asks of the networks it trains.

An algorithm's update is written once, against this interface. For a minibatch the backend gives
the per-sample quantities every loss of the library is built from,

    log π(a_b | s_b),  H(π(·|s_b)),  V(s_b)        (:meth:`Backend.evaluate`, each ``[B]``),

and takes one step from a loss built on them (:meth:`Backend.step`): a list of :class:`Term`, each
a function of :mod:`policygrad.losses` with its arguments, the first of which is one of those
per-sample quantities. The step is backward through the networks, clipping of the global gradient
norm, and one optimiser step. A backend also acts in rollouts (:meth:`Backend.act`) with the same
network forward that training uses.

Two backends: ``torch`` (autograd and ``torch.optim``; any network, any device) and ``numpy`` (the
chain rule written out for small MLP actor-critics on the CPU, where per-operation overhead, not
arithmetic, is the cost). Both optimisers keep ``torch.optim``'s state format, so a checkpoint
written by one loads into the other.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["Backend", "PerSample", "Term"]


@dataclass(frozen=True)
class PerSample:
    """The per-sample quantities of a minibatch, each ``[B]`` (differentiable on the torch backend).

    Attributes:
        log_prob: log π(a_b | s_b) of the minibatch's actions.
        entropy: H(π(·|s_b)).
        value: V(s_b).
    """

    log_prob: Tensor
    entropy: Tensor
    value: Tensor


@dataclass(frozen=True)
class Term:
    """One term ``coef · loss(*args)`` of a loss to minimise.

    Attributes:
        loss: a function of :mod:`policygrad.losses` (one with a derivative in
            ``policygrad.losses.DERIVATIVES`` on the NumPy backend).
        args: its positional arguments; the first is a field of the :class:`PerSample` that the
            backend's last :meth:`Backend.evaluate` returned, the others are data (tensors, floats).
        coef: the term's weight in the sum.
    """

    loss: Callable[..., Tensor]
    args: tuple[Any, ...]
    coef: float = 1.0


class Backend(abc.ABC):
    """Where an actor-critic's networks run: acting, per-sample evaluation, and the gradient step.

    Attributes:
        name: "torch" or "numpy".
        reason: why this backend was chosen (reported in the log and ``config.json``).
        optimizer: the optimiser (``param_groups[0]["lr"]`` is the learning rate;
            ``state_dict`` / ``load_state_dict`` in ``torch.optim``'s format). None on a backend
            built for acting only.
    """

    name: ClassVar[str]

    def __init__(self, policy: torch.nn.Module, reason: str = "") -> None:
        self.policy = policy
        self.reason = reason
        self.optimizer: Any = None

    @abc.abstractmethod
    def act(self, obs: np.ndarray, action_mask: np.ndarray | None = None, deterministic: bool = False,
            generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(actions, log π(a|s) [N], V(s) [N])`` for encoded observations ``obs [N, obs_dim]``.

        Actions are int64 ``[N]`` (categorical), ``[N, K]`` (multi-discrete) or float ``[N, D]``
        (Gaussian, unclipped); the draws come from torch's ``generator`` (None: the global one).
        """

    def prepare(self) -> None:
        """Bring acting up to date with the parameters (the collector calls it before a rollout)."""

    @abc.abstractmethod
    def value(self, obs: np.ndarray) -> np.ndarray:
        """``[N]`` V(s) for encoded observations ``obs [N, obs_dim]``."""

    @abc.abstractmethod
    def evaluate(self, observations: Tensor, actions: Tensor, action_masks: Tensor | None = None) -> PerSample:
        """log π(a|s), H and V for a minibatch of encoded ``observations [B, obs_dim]``."""

    @abc.abstractmethod
    def step(self, terms: Sequence[Term], guard: Callable[[Any], None] | None = None) -> tuple[list[Any], Any]:
        """Minimise Σ coef · loss(*args) by one clipped optimiser step.

        Args:
            terms: the loss, on the quantities of the last :meth:`evaluate`.
            guard: called with the total loss before any parameter changes (e.g. to raise on a
                non-finite loss); None: no check (and no host synchronisation on a GPU).

        Returns:
            ``(values, grad_norm)``: each term's ``loss(*args)`` (without its coef) and the global
            gradient norm before clipping, as floats (NumPy) or 0-dim tensors (torch).
        """

    def set_learning_rate(self, lr: float) -> None:
        """The step size of the next steps."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
