"""The torch backend: autograd through the policy's modules, ``torch.optim``, any device.

It serves every policy (custom networks, multi-discrete actions, any activation, GPUs) and every
algorithm (the trust-region methods differentiate twice through it).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from policygrad.backends.base import Backend, PerSample, Term
from policygrad.errors import InputError, shown

__all__ = ["TorchBackend", "make_torch_optimizer"]


def make_torch_optimizer(params: list[Tensor], kind: str, lr: float, eps: float) -> torch.optim.Optimizer:
    """Adam, or RMSprop with α = 0.99 as in the A2C reference implementation (Mnih et al. 2016)."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, eps=eps)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=eps)
    raise InputError(f"unknown optimizer {shown(kind)}; valid: adam, rmsprop")


class TorchBackend(Backend):
    """Autograd and ``torch.optim`` on the policy's own modules.

    Args:
        policy: the actor-critic (anything with ``act``, ``value``, ``forward`` as
            :class:`policygrad.policies.ActorCritic`).
        optimizer: "adam" or "rmsprop"; None builds a backend for acting only.
        learning_rate, optim_eps: the optimiser's step size and ε.
        max_grad_norm: clip the global gradient norm to this (None: no clipping).
        reason: why this backend was chosen.
    """

    name = "torch"

    def __init__(self, policy: torch.nn.Module, optimizer: str | None = None, learning_rate: float = 3e-4,
                 optim_eps: float = 1e-5, max_grad_norm: float | None = None, reason: str = "") -> None:
        super().__init__(policy, reason)
        self.params = [p for p in policy.parameters() if p.requires_grad]
        self.max_grad_norm = max_grad_norm
        if optimizer is not None:
            self.optimizer = make_torch_optimizer(self.params, optimizer, learning_rate, optim_eps)

    @property
    def device(self) -> torch.device:
        return self.params[0].device if self.params else torch.device("cpu")

    def act(self, obs: np.ndarray, action_mask: np.ndarray | None = None, deterministic: bool = False,
            generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        device = self.device
        x = torch.from_numpy(obs).to(device)
        mask = None if action_mask is None else torch.from_numpy(action_mask).to(device)
        actions, log_prob, value = self.policy.act(x, mask, deterministic, generator)
        return actions.cpu().numpy(), log_prob.cpu().numpy(), value.cpu().numpy()

    @torch.no_grad()
    def value(self, obs: np.ndarray) -> np.ndarray:
        return self.policy.value(torch.from_numpy(obs).to(self.device)).cpu().numpy()

    def evaluate(self, observations: Tensor, actions: Tensor, action_masks: Tensor | None = None) -> PerSample:
        dist, values = self.policy(observations, action_masks)
        return PerSample(dist.log_prob(actions), dist.entropy(), values)

    def step(self, terms: Sequence[Term], guard: Callable[[Any], None] | None = None) -> tuple[list[Any], Any]:
        values = [term.loss(*term.args) for term in terms]
        loss = values[0] * terms[0].coef if terms[0].coef != 1.0 else values[0]
        for term, value in zip(terms[1:], values[1:]):
            loss = loss + (value * term.coef if term.coef != 1.0 else value)
        if guard is not None:
            guard(loss.detach())
        return [v.detach() for v in values], self.minimize(loss)

    def minimize(self, loss: Tensor) -> Tensor:
        """One clipped optimiser step on an autograd ``loss``; returns the gradient norm (0-dim).

        No host synchronisation: callers check finiteness when they read their metrics.
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.params if p.grad is not None]
        max_norm = float("inf") if self.max_grad_norm is None else self.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True) if params else torch.zeros(())
        self.optimizer.step()
        return norm.detach()
