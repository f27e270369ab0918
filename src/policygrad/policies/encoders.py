"""Observation encodings: raw Gymnasium observations -> the flat vectors the networks read.

The collector stores what an encoder returns (``[N, obs_dim]`` of the encoder's ``store_dtype``):
floats for vectors and one-hot codes, the raw uint8 pixels of an image (a quarter of the memory of
float32). Images are turned into features inside the network by :class:`ObservationTrunk`, the
network's first module: it reads the stored flat vector, scales pixels by 1/255, moves the
channels first and runs a convolutional encoder (:class:`NatureCNN`) on each image.

| space | encoder | stored | in the network |
|---|---|---|---|
| Box (not an image) | :class:`FlattenObservation` | ``[prod(shape)]`` floats | as they are |
| Discrete | :class:`OneHotObservation` | ``[n]`` one-hot floats | as they are |
| MultiBinary | :class:`FlattenObservation` | ``[prod(shape)]`` 0/1 floats | as they are |
| MultiDiscrete | :class:`MultiOneHotObservation` | ``[Σ n_k]`` one-hot floats | as they are |
| Box image H×W×C (uint8) | :class:`FlattenObservation` | ``[H·W·C]`` uint8 | NatureCNN → ``[512]`` |
| Box image C×H×W (uint8) | :class:`ChannelsFirstImage` | ``[H·W·C]`` uint8 (channels last) | NatureCNN → ``[512]`` |
| Dict, Tuple | :class:`CompositeObservation` | the parts concatenated (floats) | each part as above |
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policygrad.errors import InputError
from policygrad.policies.mlp import check_positive

__all__ = [
    "FlattenObservation",
    "ChannelsFirstImage",
    "OneHotObservation",
    "MultiOneHotObservation",
    "CompositeObservation",
    "NatureCNN",
    "ObservationTrunk",
    "ImageLayout",
    "Encoder",
    "is_image_space",
    "channels_last",
    "IMAGE_OBS_MODES",
]

IMAGE_OBS_MODES = ("auto", "yes", "no")
"""Values of the ``image_obs`` setting: detect images (:func:`is_image_space`), treat every 3-D Box
as an image, or never (flatten into the MLP)."""


class FlattenObservation:
    """Box observations ``[..., *shape]`` -> ``[..., prod(shape)]`` in the policy's float dtype.

    Args:
        shape: the observation shape of the Box space.
        store_dtype: the dtype the collector stores them in (uint8 for images: the raw pixels).
    """

    def __init__(self, shape: Sequence[int], store_dtype: torch.dtype = torch.float32) -> None:
        self.store_dtype = store_dtype
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


class ChannelsFirstImage(FlattenObservation):
    """C×H×W image observations ``[..., C, H, W]`` -> ``[..., H·W·C]``: flattened with the channels
    moved last, so that the network reads them in the NHWC layout without a copy (oneDNN's
    convolutions run about 1.7× faster on it on the CPU; see :class:`ObservationTrunk`).

    Args:
        shape: the space's (C, H, W).
        store_dtype: as :class:`FlattenObservation`'s.
    """

    def __call__(self, obs: Tensor, dtype: torch.dtype) -> Tensor:
        if obs.dim() < 3 or tuple(obs.shape[-3:]) != self.shape:
            expected = ", ".join(map(str, self.shape))
            raise InputError(f"observations have shape {tuple(obs.shape)}, expected [..., {expected}]")
        return obs.movedim(-3, -1).reshape(*obs.shape[:-3], self.obs_dim).to(dtype)


class OneHotObservation:
    """Discrete observations ``[...]`` in [start, start + n) -> one-hot ``[..., n]`` floats.

    Args:
        n: the number of observations.
        start: the smallest observation.
    """

    store_dtype = torch.float32

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


class MultiOneHotObservation:
    """MultiDiscrete observations ``[..., K]`` (a_k in [0, n_k)) -> the K one-hot codes concatenated ``[..., Σ n_k]``.

    Args:
        nvec: n_1, ..., n_K.
    """

    store_dtype = torch.float32

    def __init__(self, nvec: Sequence[int]) -> None:
        self.nvec = tuple(int(n) for n in nvec)
        if not self.nvec or min(self.nvec) < 1:
            raise InputError(f"MultiDiscrete observations need positive sizes, got {self.nvec}")
        self.parts = [OneHotObservation(n) for n in self.nvec]
        self.obs_dim = sum(self.nvec)

    def __call__(self, obs: Tensor, dtype: torch.dtype) -> Tensor:
        if obs.dim() == 0 or obs.shape[-1] != len(self.nvec):
            raise InputError(f"observations have shape {tuple(obs.shape)}, expected [..., {len(self.nvec)}]")
        return torch.cat([part(obs[..., k], dtype) for k, part in enumerate(self.parts)], dim=-1)


class CompositeObservation:
    """Dict or Tuple observations -> each part encoded, flattened and concatenated in order.

    A Dict's parts are taken in the space's key order, a Tuple's by index. The parts are stored as
    float32 (an image inside a Dict keeps its 0..255 values and is scaled in the network).

    Args:
        parts: ``(key, encoder)`` per sub-space, the key a str (Dict) or an int (Tuple).
    """

    store_dtype = torch.float32

    def __init__(self, parts: Sequence[tuple[str | int, Any]]) -> None:
        self.parts = list(parts)
        self.obs_dim = sum(encoder.obs_dim for _, encoder in self.parts)

    def __call__(self, obs: Any, dtype: torch.dtype) -> Tensor:
        """``obs``: a dict (or tuple) of arrays or tensors ``[..., *part_shape]`` -> ``[..., obs_dim]``."""
        if not isinstance(obs, (dict, tuple, list)):
            kind = "dict" if isinstance(self.parts[0][0], str) else "tuple"
            raise InputError(f"observations must be a {kind} of arrays, got a {type(obs).__name__}")
        encoded = []
        for key, encoder in self.parts:
            try:
                part = obs[key]
            except (KeyError, IndexError):
                raise InputError(f"observations have no part {key!r}") from None
            if not isinstance(encoder, CompositeObservation) and not isinstance(part, Tensor):
                part = torch.as_tensor(np.asarray(part))
            encoded.append(encoder(part, dtype))
        batch = {x.shape[:-1] for x in encoded}
        if len(batch) != 1:
            raise InputError(f"the parts of the observations have different batch shapes: {sorted(map(tuple, batch))}")
        return torch.cat(encoded, dim=-1) if len(encoded) > 1 else encoded[0]


def _tracing() -> bool:
    """Whether this call is being traced into a graph (``torch.jit.trace``, ``torch.export``, the
    ONNX exporter), where checks that read the values cannot run: an exported policy
    (:mod:`policygrad.export`) does not check its observations."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return torch.jit.is_tracing() or (is_compiling is not None and is_compiling())


Encoder = FlattenObservation | OneHotObservation | MultiOneHotObservation | CompositeObservation


# --------------------------------------------------------------------------------------------
# Images


def is_image_space(space: Any, mode: str = "auto") -> bool:
    """Whether a Box observation space holds an image (as Stable-Baselines3's ``is_image_space``).

    ``mode="auto"``: a 3-D uint8 Box with bounds 0..255 whose channels (1, 3 or 4) come first or
    last. ``"yes"``: any 3-D Box with 1, 3 or 4 channels first or last. ``"no"``: never.
    """
    from gymnasium import spaces

    if mode == "no" or not isinstance(space, spaces.Box) or len(space.shape) != 3:
        return False
    if channels_last(space.shape) is None:
        return False
    if mode == "yes":
        return True
    return (
        space.dtype == np.uint8
        and bool(np.all(space.low == 0))
        and bool(np.all(space.high == 255))
    )


def channels_last(shape: Sequence[int]) -> bool | None:
    """True for H×W×C, False for C×H×W, None if neither end holds 1, 3 or 4 channels. Where both
    could, the smaller dimension is the channels (SB3's rule); a tie reads as channels last."""
    first, last = shape[0] in (1, 3, 4), shape[-1] in (1, 3, 4)
    if first and last:
        return shape[-1] <= shape[0]
    if last:
        return True
    if first:
        return False
    return None


class ImageLayout:
    """Where an image sits in the stored flat observation: always H×W×C (an H×W×C space is
    flattened as it is, a C×H×W one by :class:`ChannelsFirstImage`).

    Args:
        start: offset of its first value in the flat vector.
        hwc: the stored (H, W, C).
        scale: pixels are multiplied by this (1/255 for uint8, 1 otherwise).
    """

    def __init__(self, start: int, hwc: Sequence[int], scale: float) -> None:
        self.start, self.hwc = int(start), tuple(int(n) for n in hwc)
        self.scale = float(scale)
        self.size = int(np.prod(self.hwc))

    @classmethod
    def of_space(cls, start: int, shape: Sequence[int], scale: float) -> ImageLayout:
        """The layout of an image space of ``shape`` (H×W×C or C×H×W, :func:`channels_last`)."""
        shape = tuple(int(n) for n in shape)
        return cls(start, shape if channels_last(shape) else (*shape[1:], shape[0]), scale)

    @property
    def chw(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        h, w, c = self.hwc
        return c, h, w


class NatureCNN(nn.Module):
    """The convolutional encoder of Mnih et al. (2015), "Human-level control through deep
    reinforcement learning": 32 8×8 stride 4, 64 4×4 stride 2, 64 3×3 stride 1 (ReLU after each),
    then Linear → 512, ReLU. Orthogonal initialisation with gain √2, biases 0.

    Args:
        chw: the input's (C, H, W); H and W must be at least 36.
        features_dim: width of the output (512).

    Raises:
        InputError: an image too small for the three convolutions.
    """

    def __init__(self, chw: Sequence[int], features_dim: int = 512) -> None:
        super().__init__()
        c, h, w = (int(n) for n in chw)
        if h < 36 or w < 36:
            raise InputError(f"image observations of {h}×{w} are too small for the Nature CNN (at least 36×36)")
        self.convs = nn.Sequential(
            nn.Conv2d(c, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = int(self.convs(torch.zeros(1, c, h, w)).shape[1])
        self.linear = nn.Linear(flat, int(features_dim))
        self.features_dim = int(features_dim)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(module.weight, gain=math.sqrt(2.0))
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` floats (scaled) -> ``[B, features_dim]``."""
        return torch.relu(self.linear(self.convs(x)))


class ObservationTrunk(nn.Module):
    """The network's first module for observations with images: stored flat vector -> features.

    Each image is cut out of ``x [..., obs_dim]`` (stored H×W×C), viewed as ``[B, C, H, W]`` in the
    NHWC memory layout, scaled (1/255 for uint8 pixels) and encoded by its own :class:`NatureCNN`; the
    other parts of the vector pass through unchanged. The features are the CNN outputs and the
    other parts, concatenated in their order in ``x``.

    Args:
        obs_dim: width of the stored vector.
        images: where each image sits in it.
        features_dim: output width of each CNN.
    """

    def __init__(self, obs_dim: int, images: Sequence[ImageLayout], features_dim: int = 512) -> None:
        super().__init__()
        self.obs_dim = int(obs_dim)
        self.images = list(images)
        self.cnns = nn.ModuleList(NatureCNN(image.chw, features_dim) for image in self.images)
        pieces: list[tuple[str, int, int]] = []  # ("image", index, 0) or ("flat", start, end)
        cursor = 0
        for image in sorted(self.images, key=lambda im: im.start):
            if image.start > cursor:
                pieces.append(("flat", cursor, image.start))
            pieces.append(("image", self.images.index(image), 0))
            cursor = image.start + image.size
        if cursor < self.obs_dim:
            pieces.append(("flat", cursor, self.obs_dim))
        self.pieces = pieces
        self.features_dim = sum(features_dim if kind == "image" else b - a for kind, a, b in pieces)

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., obs_dim]`` floats -> ``[..., features_dim]``."""
        batch = x.shape[:-1]
        x = x.reshape(-1, self.obs_dim)
        out = []
        for kind, a, b in self.pieces:
            if kind == "flat":
                out.append(x[:, a:b])
                continue
            image = self.images[a]
            pixels = x[:, image.start:image.start + image.size]
            # Every image is stored H×W×C (ChannelsFirstImage moves C×H×W channels last), so this
            # view is NHWC: oneDNN's convolutions run about 1.7× faster forward and backward on it
            # on the CPU than on NCHW, with the same values (benchmarks/results/speed.md,
            # ppo_breakout). Scaling keeps the layout.
            h, w, c = image.hwc
            pixels = pixels.reshape(-1, h, w, c).permute(0, 3, 1, 2)
            out.append(self.cnns[a](pixels * image.scale if image.scale != 1.0 else pixels))
        features = torch.cat(out, dim=-1) if len(out) > 1 else out[0]
        return features.reshape(*batch, self.features_dim)
