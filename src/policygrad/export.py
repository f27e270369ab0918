"""Exporting a trained policy's deterministic actor, with its preprocessing, as one graph.

:class:`DeterministicActor` is a frozen copy of the policy module
(:class:`policygrad.policies.Policy`, ``model.policy``) on the CPU: the whole path from a raw
observation to the action that ``Model.predict(obs, deterministic=True)`` returns.

==============================  ==========================================================
step                            what it computes
==============================  ==========================================================
encoding                        Box: flatten ``[n, *shape] -> [n, obs_dim]``; Discrete: one-hot;
                                an image: scaled by 1/255 and convolved in the network
observation normaliser          clip((s − μ) / sqrt(σ² + ε), −c, c), μ and σ² frozen as they stand
network                         the trained actor
deterministic action            the mode: argmax (Categorical, MultiCategorical), μ (Gaussian, gSDE)
action bounds                   Box actions clipped to the action space's bounds
==============================  ==========================================================

:func:`export_actor` writes it as ONNX or TorchScript (``policygrad export``, ``Model.export``):

* ONNX goes through ``torch.onnx.export(..., dynamo=True)``, the exporter built on
  ``torch.export`` that is PyTorch's default since 2.9 (it needs ``onnx`` and ``onnxscript``). The
  older TorchScript-based exporter (``dynamo=False``) still exists in PyTorch 2.13 but warns that
  it is deprecated and will be removed. The graph is checked with ``onnx.checker`` before it is
  written; the exporter's optimiser leaves out what the actions do not depend on (the critic).
* TorchScript goes through ``torch.jit.trace`` (the module has no control flow that depends on
  the observations, so one trace is the whole program). TorchScript is deprecated: in PyTorch
  2.13 ``torch.jit.trace``, ``torch.jit.save`` and ``torch.jit.load`` each warn with a
  ``DeprecationWarning``. The file is written all the same and loads with ``torch.jit.load``; the
  warnings of this export are silenced, those of loading are the reader's. The file holds the
  whole module's weights, the critic's included.

Input: raw observations ``[n, *obs_shape]`` (n dynamic) in the observation space's dtype
(int64 for Discrete). Output: actions ``[n]`` int64 (Discrete), ``[n, K]`` int64
(MultiDiscrete), ``[n, K]`` int8 (MultiBinary) or ``[n, D]`` float32 (Box, clipped), as
:meth:`policygrad.Model.predict` returns them. Dict and Tuple observations are not exported (the
graph has one input). The graph checks no values: a Discrete observation out of range encodes as all zeros (ONNX)
or fails (TorchScript).

The file is written atomically (:func:`policygrad.checkpoint.write_atomically`): a reader sees
the old file or the new one, never a part of either.
"""

from __future__ import annotations

import copy
import importlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from policygrad.errors import InputError, shown

__all__ = ["EXTRA", "FORMATS", "DeterministicActor", "check_format", "describe", "export_actor", "export_bytes"]

FORMATS = ("onnx", "torchscript")
"""The formats :func:`export_actor` writes."""

EXTRA = "pip install 'policygrad[export]'"
"""What installs the ONNX exporter's dependencies."""

ONNX_INPUT, ONNX_OUTPUT = "observations", "actions"
"""The names of the ONNX graph's input and output."""


class DeterministicActor(nn.Module):
    """Raw observations ``[n, *obs_shape]`` -> the deterministic actions ``[n, ...]``: a frozen
    copy of ``policy``'s forward.

    The copy lives on the CPU in evaluation mode, without gradients, and its normaliser
    statistics are those of the moment it was made (the policy's own buffers follow training).

    Args:
        policy: the policy module (``model.policy``, :class:`policygrad.policies.Policy`).
        observation_space: the environment's single observation space (Box, Discrete,
            MultiBinary or MultiDiscrete).

    Raises:
        InputError: another observation space (Dict, Tuple: the graph has one input).
    """

    def __init__(self, policy: nn.Module, observation_space: spaces.Space) -> None:
        super().__init__()
        if isinstance(observation_space, spaces.Discrete):
            self.obs_shape: tuple[int, ...] = ()
            self.obs_dtype = torch.int64
            self.obs_example = int(observation_space.start)
        elif isinstance(observation_space, (spaces.Box, spaces.MultiBinary, spaces.MultiDiscrete)):
            self.obs_shape = tuple(int(n) for n in observation_space.shape)
            self.obs_dtype = torch.from_numpy(np.zeros(0, observation_space.dtype)).dtype
            self.obs_example = 0
        else:
            raise InputError(f"cannot export a policy for observation space {observation_space!r}: "
                             "the exported graph reads one array (Box, Discrete, MultiBinary, MultiDiscrete)")
        self.policy = copy.deepcopy(policy).cpu().eval()
        self.policy.requires_grad_(False)
        self.binary_actions = isinstance(getattr(policy, "action_space", None), spaces.MultiBinary)

    @classmethod
    def from_model(cls, model: Any) -> DeterministicActor:
        """The deterministic actor of a :class:`policygrad.Model` as it stands."""
        return cls(model.policy, model.observation_space)

    def forward(self, observations: Tensor) -> Tensor:
        """``[n, *obs_shape]`` raw observations -> ``[n]``, ``[n, K]`` (int64) or ``[n, D]`` (float32) actions."""
        actions = self.policy(observations)
        return actions.to(torch.int8) if self.binary_actions else actions

    def example_input(self, n: int = 2) -> Tensor:
        """``[n, *obs_shape]`` valid observations (zeros, or a Discrete space's first)."""
        return torch.full((n, *self.obs_shape), self.obs_example, dtype=self.obs_dtype)


def describe(observation_space: spaces.Space, action_space: spaces.Space) -> str:
    """``"observations [n, 4] float32 -> actions [n] int64"``: what the exported graph of a policy
    for these spaces reads and writes."""

    def batch(space: spaces.Space, dtype: Any) -> str:
        return f"[{', '.join(['n', *map(str, space.shape or ())])}] {np.dtype(dtype).name}"

    obs_dtype = np.int64 if isinstance(observation_space, spaces.Discrete) else observation_space.dtype
    action_dtype = (np.float32 if isinstance(action_space, spaces.Box)
                    else np.int8 if isinstance(action_space, spaces.MultiBinary) else np.int64)
    return f"{ONNX_INPUT} {batch(observation_space, obs_dtype)} -> {ONNX_OUTPUT} {batch(action_space, action_dtype)}"


def check_format(format: str) -> None:
    """InputError for an unknown format, or for "onnx" without the exporter's packages (naming
    the extra to install)."""
    if format not in FORMATS:
        raise InputError(f"unknown export format {shown(format)}; valid: {', '.join(FORMATS)}")
    if format == "onnx":
        for package in ("onnx", "onnxscript"):
            try:
                importlib.import_module(package)
            except ImportError:
                raise InputError(f"exporting to ONNX needs the package {package!r}: {EXTRA}") from None


def export_bytes(actor: DeterministicActor, format: str = "onnx") -> bytes:
    """The serialised ``actor`` in ``format`` ("onnx" or "torchscript").

    Raises:
        InputError: see :func:`check_format`; a policy the exporter cannot trace (a network of
            your own with control flow that depends on the observations, say), with the
            exporter's first line.
    """
    check_format(format)
    # Tracing runs the forward on stand-in tensors; a copy keeps ``actor`` usable afterwards (the
    # ONNX exporter leaves stand-ins in the parameter dicts that an MLP's layer_params holds).
    actor = copy.deepcopy(actor)
    with torch.no_grad():
        # One eager call first: constants the forward builds and caches (MultiCategorical's
        # padding index) then exist as real tensors before any tracing.
        actor(actor.example_input())
    # torch.distributions checks its arguments' values (a user's network may return one), which
    # a traced graph cannot do; the values are the network's own.
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        return _onnx_bytes(actor) if format == "onnx" else _torchscript_bytes(actor)
    except InputError:
        raise
    except Exception as err:
        text = str(err).strip().splitlines()
        detail = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
        raise InputError(f"cannot export this policy as {format}: {detail}") from err
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)


def export_actor(actor: DeterministicActor, path: str | os.PathLike, format: str = "onnx", *,
                 overwrite: bool = False) -> Path:
    """Write ``actor`` to ``path`` in ``format``, atomically; returns the path.

    Raises:
        InputError: an unknown format, missing packages (naming the extra), ``path`` an existing
            file without ``overwrite`` or a directory, a missing parent directory, or a write
            that failed (``path`` is then as it was).
    """
    from policygrad.checkpoint import write_atomically

    path = Path(path)
    check_format(format)
    if path.is_dir():
        raise InputError(f"{path} is a directory; export writes a file")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; pass --force (overwrite=True) to replace it")
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: directory {path.parent} does not exist")
    data = export_bytes(actor, format)
    try:
        write_atomically(path, data)
    except OSError as err:
        raise InputError(f"cannot write {path}: {err}") from None
    return path


def _onnx_bytes(actor: DeterministicActor) -> bytes:
    import onnx

    # The exporter logs a warning per torchvision operator it skips; none of them is used here.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                actor, (actor.example_input(),), dynamo=True, input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
            )
    finally:
        quiet.setLevel(level)
    model = program.model_proto
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _torchscript_bytes(actor: DeterministicActor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # TorchScript's own deprecation (see the module docstring), and the tracer's notes that
        # the shape checks on the feature dimension hold for this trace only (they are static).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(actor, (actor.example_input(),), check_trace=False)
        torch.jit.save(traced, buffer)
    return buffer.getvalue()
