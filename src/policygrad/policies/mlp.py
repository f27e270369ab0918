"""The multi-layer perceptron every network of the library is built from, its activations, the
orthogonal initialisation's gains, and the shape checks the policies share."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policygrad.errors import InputError, shown

__all__ = ["ACTIVATIONS", "MLP", "HIDDEN_GAIN", "POLICY_GAIN", "VALUE_GAIN", "activation_function",
           "check_last_dim", "check_positive", "check_integer"]

#: Hidden-layer activations by name.
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "elu": F.elu,
    "gelu": F.gelu,
}

# In-place twins, applied to the fresh output of a linear layer (whose backward does not need it).
_INPLACE_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh_,
    "relu": torch.relu_,
    "elu": lambda x: F.elu(x, inplace=True),
    "gelu": F.gelu,
}

HIDDEN_GAIN = math.sqrt(2.0)
POLICY_GAIN = 0.01
VALUE_GAIN = 1.0


def activation_function(name: str) -> Callable[[Tensor], Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise InputError(f"unknown activation {shown(name)}: choose one of {', '.join(ACTIVATIONS)}") from None


def check_last_dim(name: str, x: Tensor, size: int) -> None:
    if x.dim() == 0 or x.shape[-1] != size:
        raise InputError(f"{name} has shape {tuple(x.shape)}, expected [..., {size}]")


def check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if int(value) < 1:
            raise InputError(f"{name} must be a positive integer, got {value}")


def check_integer(name: str, x: Tensor) -> Tensor:
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise InputError(f"{name} must be an integer tensor, got dtype {x.dtype}")
    return x.long()


# --------------------------------------------------------------------------------------------
# Multi-layer perceptron


class MLP(nn.Module):
    """y = W_L σ(... σ(W_1 x + b_1) ...) + b_L, orthogonally initialised.

    Hidden weights get gain √2, the output layer ``output_gain``, all biases 0 (the initialisation
    of the PPO implementation studies, Engstrom et al. 2020; Andrychowicz et al. 2021).

    Args:
        in_dim: input size.
        hidden_sizes: widths of the hidden layers (empty: a linear map).
        out_dim: output size.
        activation: one of ``ACTIVATIONS``.
        output_gain: gain of the output layer's orthogonal initialisation.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_sizes: Sequence[int],
        out_dim: int,
        activation: str = "tanh",
        output_gain: float = 1.0,
    ) -> None:
        super().__init__()
        hidden_sizes = tuple(int(h) for h in hidden_sizes)
        check_positive(in_dim=in_dim, out_dim=out_dim)
        if any(h < 1 for h in hidden_sizes):
            raise InputError(f"hidden_sizes must be positive integers, got {hidden_sizes}")
        activation_function(activation)  # validates the name
        self.activation = activation
        self._act = _INPLACE_ACTIVATIONS[activation]
        sizes = (int(in_dim), *hidden_sizes, int(out_dim))
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        for i, layer in enumerate(self.layers):
            nn.init.orthogonal_(layer.weight, gain=output_gain if i == len(self.layers) - 1 else HIDDEN_GAIN)
            nn.init.zeros_(layer.bias)
        # Parameter dicts read directly on the hot path: ``layer.weight`` goes through
        # ``nn.Module.__getattr__`` (about 10× slower), and the dicts are what ``load_state_dict``,
        # ``.to`` and ``torch.func.functional_call`` update.
        self.layer_params = tuple(layer._parameters for layer in self.layers)
        """Each layer's parameters in order, ``{"weight": W [out, in], "bias": b [out]}``."""

    def forward(self, x: Tensor) -> Tensor:
        """``[..., in_dim] -> [..., out_dim]``."""
        return self.features_and_output(x)[1]

    def features_and_output(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``([..., h_last] the last hidden layer's activations (x itself without hidden layers),
        [..., out_dim] the output)``."""
        *hidden, last = self.layer_params
        act = self._act
        for p in hidden:
            x = act(F.linear(x, p["weight"], p["bias"]))
        return x, F.linear(x, last["weight"], last["bias"])
