"""Checkpoints: safetensors for tensors, JSON for everything else, committed atomically.

Nothing here uses pickle, so loading a checkpoint can never execute code: tensors are parsed by
``safetensors`` and the rest by ``json``.

Layout of one checkpoint, a directory::

    <path>/
      meta.json                          the commit record (see below)
      tensors-<sha256[:16]>.safetensors  every tensor, named e.g. "policy.net.0.weight",
                                         "optim.state.0.exp_avg", "rng.torch"

``meta.json`` holds::

    {"library": "policygrad", "format_version": 1, "policygrad_version": "...",
     "tensors_file": "tensors-<sha256[:16]>.safetensors", "tensors_sha256": "<hex>",
     "tensors_bytes": <int>, "meta": {... the caller's JSON ...}}

Atomicity. A save writes the new tensors file under a fresh name (temporary name, fsync, rename),
then replaces ``meta.json`` in one ``os.replace`` (temporary name, fsync, rename, fsync of the
directory), and only then deletes the previous tensors file. ``meta.json`` always names a complete
tensors file, so at every instant ``<path>`` holds either the complete old checkpoint or the
complete new one, whatever moment a crash strikes. Leftovers of an interrupted save
(``*.tmp-<pid>`` files, tensors files that ``meta.json`` does not name) are ignored by loading and
removed by the next save to the same path. One process at a time may write a given path.

Within a run directory, checkpoints live in ``<run_dir>/checkpoints/last/`` (overwritten at each
save), optionally ``<run_dir>/checkpoints/step_<N>/`` (kept) and, in a run that evaluates during
training, ``<run_dir>/checkpoints/best/`` (the best evaluated policy so far, whose meta adds
``eval_return``); :func:`checkpoint_path` and :func:`best_checkpoint_path` name them and
:func:`latest_checkpoint` finds the one to resume from (never ``best``).

Helpers turn live state into ``(tensors, meta)`` pairs and back: :func:`module_state`,
:func:`optimizer_state` and :func:`rng_state`. Their tensors go into one dict and their JSON parts
under keys of the caller's choosing in ``meta``.

Loading a checkpoint received from someone else. A checkpoint (and the run directory around it)
may come from anyone, so loading it validates everything before using anything, and every way it
can be wrong ends in one :class:`~policygrad.errors.InputError` line, in bounded time and memory:

* Files (:mod:`policygrad.files`): ``meta.json`` and the tensors file must be regular files (a
  symlink, FIFO, device or directory in their place is refused, never opened); ``meta.json`` is
  read only up to :data:`policygrad.files.MAX_JSON_BYTES` and nested at most
  :data:`policygrad.files.MAX_JSON_DEPTH` deep, with no key twice; the tensors file's name must be
  ``tensors-<16 hex>.safetensors`` (so it lies in the directory); its size
  must be the ``tensors_bytes`` that ``meta.json`` declares, at most :data:`MAX_TENSORS_BYTES`,
  checked before it is read; then the SHA-256 is verified before ``safetensors`` parses it.
* State: :func:`load_module_state` takes only tensors of the model's names, shapes and kinds of
  dtype, and refuses non-finite parameters (naming the tensor); :func:`check_optimizer_state`
  checks an optimiser's state without the optimiser (hyperparameters in range, moments finite
  and, for squares, non-negative, step counts whole numbers >= 0) and
  :func:`load_optimizer_state` also that it fits the optimiser (groups, parameter shapes, the
  state's entries, settings that policygrad never changes such as ``amsgrad`` equal to the
  optimiser's own); :func:`check_rng_state` checks the generator states' types, shapes, dtypes
  and ranges (a NumPy or Python Mersenne Twister state that is all zeros, which would make some
  samplers loop forever, is refused too).

Saving refuses what loading would: more than :data:`MAX_TENSORS_BYTES` of tensors, and a
checkpoint directory that is a symlink (a run directory received may hold one where a later
checkpoint will go).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor

from policygrad.version import __version__
from policygrad.errors import InputError, shown
from policygrad.files import open_new, read_bytes, read_json

__all__ = [
    "FORMAT_VERSION",
    "MAX_TENSORS_BYTES",
    "FLOAT_DTYPES",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_path",
    "best_checkpoint_path",
    "latest_checkpoint",
    "is_checkpoint",
    "module_state",
    "load_module_state",
    "optimizer_state",
    "load_optimizer_state",
    "check_optimizer_state",
    "rng_state",
    "set_rng_state",
    "check_rng_state",
    "all_finite",
    "write_atomically",
]

FORMAT_VERSION = 1
"""Version of the on-disk layout; :func:`load_checkpoint` refuses any other."""

MAX_TENSORS_BYTES = 2**30
"""The largest tensors file saved or loaded (1 GiB). A CartPole checkpoint (two 64-64 MLPs, Adam's
moments, the generators) holds 129 kB; 1 GiB is some 85 million float32 parameters with Adam's
two moments, far beyond the networks policy-gradient methods train. Loading holds the file and
its tensors, about twice its size, in memory."""

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
"""The dtypes a floating-point tensor of a checkpoint may have (no complex or 8-bit floats)."""

_LIBRARY = "policygrad"
_META_FILE = "meta.json"
_TENSORS_RE = re.compile(r"tensors-[0-9a-f]{16}\.safetensors")
_TMP_MARK = ".tmp-"
_STEP_RE = re.compile(r"step_(\d+)")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], meta: dict) -> None:
    """Write a checkpoint directory at ``path`` atomically, replacing any previous one there.

    Args:
        path: the checkpoint directory; created (with its parents) if missing. An existing
            directory must be a checkpoint (or empty): another directory is never written into.
        tensors: name -> tensor, any device and dtype safetensors knows; stored as contiguous CPU
            copies, so views and tensors sharing storage are fine.
        meta: JSON-serialisable data (config, counters, normalizer statistics, the ``meta`` parts
            of :func:`optimizer_state` and :func:`rng_state`). It comes back as JSON gives it:
            tuples as lists, dict keys as strings; NaN and infinities are kept.

    Raises:
        InputError: ``path`` is a file, a symlink or a foreign directory, a tensor name or value
            is invalid, the tensors take more than :data:`MAX_TENSORS_BYTES`, or ``meta`` is not
            JSON-serialisable.
    """
    path = Path(path)
    _check_writable_target(path)
    if not isinstance(meta, dict):
        raise InputError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    blob = _serialize_tensors(tensors)
    if len(blob) > MAX_TENSORS_BYTES:
        raise InputError(
            f"cannot save checkpoint {path}: its tensors take {len(blob)} bytes, more than the "
            f"{MAX_TENSORS_BYTES} a checkpoint may hold (MAX_TENSORS_BYTES)"
        )
    digest = hashlib.sha256(blob).hexdigest()
    tensors_file = f"tensors-{digest[:16]}.safetensors"
    record = {
        "library": _LIBRARY,
        "format_version": FORMAT_VERSION,
        "policygrad_version": __version__,
        "tensors_file": tensors_file,
        "tensors_sha256": digest,
        "tensors_bytes": len(blob),
        "meta": meta,
    }
    try:
        record_text = json.dumps(record, indent=2, allow_nan=True) + "\n"
    except (TypeError, ValueError) as err:
        raise InputError(f"checkpoint meta is not JSON-serialisable: {err}") from None

    path.mkdir(parents=True, exist_ok=True)
    had_file = (path / tensors_file).exists()
    try:
        write_atomically(path / tensors_file, blob)
        write_atomically(path / _META_FILE, record_text.encode("utf-8"))  # the commit point
    except BaseException:
        if not had_file and _named_tensors_file(path) != tensors_file:
            (path / tensors_file).unlink(missing_ok=True)  # uncommitted: the old checkpoint stands
        raise
    _remove_leftovers(path, keep=tensors_file)


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """Read a checkpoint written by :func:`save_checkpoint`, verifying it completely.

    What is checked, and in which order, is in the module docstring ("Loading a checkpoint
    received from someone else"); the caller validates the meta and tensors it uses.

    Args:
        path: the checkpoint directory.

    Returns:
        ``(tensors, meta)``: CPU tensors by name, and the caller's meta as saved.

    Raises:
        InputError: the path is missing, is not a policygrad checkpoint, has an unknown format
            version, a meta.json that is not valid JSON or lacks what it must hold, a file that is
            not a regular file, a tensors file that is too large, truncated, corrupt or not
            safetensors.
    """
    path = Path(path)
    # A concurrent save may delete the tensors file named by the meta.json just read; the new
    # meta.json then names a complete one, so one retry suffices.
    for attempt in range(2):
        record = _read_record(path)
        name, size = record["tensors_file"], record["tensors_bytes"]
        try:
            blob = read_bytes(path / name, "checkpoint tensors file", MAX_TENSORS_BYTES, size=size)
        except FileNotFoundError:
            if attempt == 0:
                continue
            raise InputError(f"checkpoint {path} is incomplete: {name} is missing") from None
        break
    if hashlib.sha256(blob).hexdigest() != record["tensors_sha256"]:
        raise InputError(f"checkpoint {path} is corrupt: sha256 of {name} does not match")
    try:
        tensors = safetensors.torch.load(blob)
    except Exception as err:  # safetensors raises several types for malformed input
        raise InputError(f"checkpoint {path} is corrupt: cannot parse {name} ({err})") from None
    return tensors, record["meta"]


def checkpoint_path(run_dir: str | Path, step: int | None = None) -> Path:
    """Where a run keeps its checkpoints.

    Args:
        run_dir: the run directory.
        step: ``None`` for the rolling ``checkpoints/last``; an environment-step count for a kept
            ``checkpoints/step_<step>``.
    """
    base = Path(run_dir) / "checkpoints"
    if step is None:
        return base / "last"
    if int(step) < 0:
        raise InputError(f"checkpoint step must be >= 0, got {step}")
    return base / f"step_{int(step)}"


def best_checkpoint_path(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints/best``: the best policy a run's evaluations during training found."""
    return Path(run_dir) / "checkpoints" / "best"


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint directory (it has a ``meta.json``, of whatever kind: a
    damaged one is then reported by :func:`load_checkpoint`, not skipped; nothing is verified)."""
    return os.path.lexists(Path(path) / _META_FILE)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume ``run_dir`` from, or ``None`` if it has none.

    ``checkpoints/last`` wins when it holds a committed checkpoint (it is rewritten at every save);
    otherwise the ``checkpoints/step_<N>`` with the largest N. A directory counts when it has a
    ``meta.json`` (:func:`is_checkpoint`); leftovers of interrupted saves (``*.tmp-*``) never count. Nothing is verified
    here: :func:`load_checkpoint` does that.
    """
    base = Path(run_dir) / "checkpoints"
    if not base.is_dir():
        return None
    last = base / "last"
    if is_checkpoint(last):
        return last
    best: tuple[int, Path] | None = None
    for entry in base.iterdir():
        match = _STEP_RE.fullmatch(entry.name)
        if match and is_checkpoint(entry):
            step = int(match.group(1))
            if best is None or step > best[0]:
                best = (step, entry)
    return None if best is None else best[1]


def _check_writable_target(path: Path) -> None:
    if path.is_symlink():
        raise InputError(f"cannot write checkpoint to {path}: it is a symlink (a checkpoint is written into a directory only)")
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot write checkpoint to {path}: it exists and is not a directory")
    if path.is_dir() and not (path / _META_FILE).exists():
        foreign = [e.name for e in path.iterdir() if not _is_own_file(e.name)]
        if foreign:
            raise InputError(
                f"refusing to write checkpoint into {path}: it is a directory that is not a checkpoint "
                f"(holds {shown(foreign[0])})"
            )


def _is_own_file(name: str) -> bool:
    return name == _META_FILE or bool(_TENSORS_RE.fullmatch(name)) or _TMP_MARK in name


def _serialize_tensors(tensors: dict[str, Tensor]) -> bytes:
    if not isinstance(tensors, dict):
        raise InputError(f"checkpoint tensors must be a dict, got {type(tensors).__name__}")
    storable: dict[str, Tensor] = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"checkpoint tensor names must be non-empty strings, got {shown(name)}")
        if not isinstance(value, Tensor):
            raise InputError(f"checkpoint tensor {shown(name)} is a {type(value).__name__}, not a torch.Tensor")
        if value.layout != torch.strided:
            raise InputError(f"checkpoint tensor {shown(name)} has layout {value.layout}; only dense tensors are stored")
        # A private contiguous CPU copy: safetensors refuses views and shared storage.
        storable[name] = value.detach().to("cpu", copy=True).contiguous()
    try:
        return safetensors.torch.save(storable)
    except Exception as err:
        raise InputError(f"cannot store checkpoint tensors: {err}") from None


def _read_record(path: Path) -> dict[str, Any]:
    """Read and validate ``meta.json``; one-line InputError for every way it can be wrong."""
    if not path.exists():
        raise InputError(f"no checkpoint at {path}")
    if not path.is_dir():
        raise InputError(f"{path} is not a policygrad checkpoint (expected a directory with {_META_FILE})")
    meta_path = path / _META_FILE
    try:
        record = read_json(meta_path, "checkpoint")
    except FileNotFoundError:
        hint = "; it looks like a run directory, pass its checkpoints/last" if (path / "checkpoints").is_dir() else ""
        raise InputError(f"{path} is not a policygrad checkpoint (no {_META_FILE}){hint}") from None
    if not isinstance(record, dict) or record.get("library") != _LIBRARY:
        raise InputError(f"{path} is not a policygrad checkpoint ({_META_FILE} does not name the library)")
    version = record.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool) or not isinstance(version, int):
        raise InputError(
            f"checkpoint {path} has unknown format version {shown(version)} (this policygrad reads version {FORMAT_VERSION})"
        )
    tensors_file, digest, size = record.get("tensors_file"), record.get("tensors_sha256"), record.get("tensors_bytes")
    if (
        not isinstance(tensors_file, str)
        or not _TENSORS_RE.fullmatch(tensors_file)  # also keeps the name inside the directory
        or not isinstance(digest, str)
        or not _SHA256_RE.fullmatch(digest)
        or isinstance(size, bool)
        or not isinstance(size, int)
        or size < 0
        or not isinstance(record.get("meta"), dict)
    ):
        raise InputError(f"checkpoint {path} is corrupt: {_META_FILE} lacks a valid tensors_file/sha256/bytes/meta")
    if size > MAX_TENSORS_BYTES:
        raise InputError(
            f"checkpoint {path} declares a tensors file of {size} bytes; at most {MAX_TENSORS_BYTES} "
            "(MAX_TENSORS_BYTES) is read"
        )
    return record


def write_atomically(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that readers see the old file or the new one, never a mix.

    The bytes go to ``<target>.tmp-<pid>`` (fsync), which then replaces ``target`` in one
    ``os.replace``, made durable by an fsync of the directory. The one atomic writer of the
    library: checkpoints and a run directory's config.json both go through it. The temporary file
    is created afresh (:func:`policygrad.files.open_new`), never written through a symlink.
    """
    target = Path(target)
    tmp = target.with_name(f"{target.name}{_TMP_MARK}{os.getpid()}")
    try:
        with open(open_new(tmp), "wb") as f:  # a fresh file, even where a symlink was planted under its name
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as err:  # a full disk, an interrupt: no temporary file stays behind
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:  # say which file (fsync does not)
            raise OSError(err.errno, err.strerror, str(target)) from err
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _named_tensors_file(path: Path) -> str | None:
    """The tensors file ``path``'s meta.json names, or None (no readable meta.json)."""
    try:
        return read_json(path / _META_FILE, "checkpoint").get("tensors_file")
    except (OSError, ValueError, AttributeError):  # InputError is a ValueError
        return None


def _remove_leftovers(path: Path, keep: str) -> None:
    """Delete tensors files other than ``keep`` and temporary files of interrupted saves."""
    for entry in path.iterdir():
        name = entry.name
        if (_TENSORS_RE.fullmatch(name) and name != keep) or _TMP_MARK in name:
            try:
                entry.unlink()
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                pass


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


def module_state(module: torch.nn.Module, prefix: str) -> dict[str, Tensor]:
    """A module's ``state_dict`` (parameters and persistent buffers) under ``<prefix>.<name>``.

    The tensors are the live ones (detached), not copies; :func:`save_checkpoint` copies them.
    """
    return {_join(prefix, name): value for name, value in module.state_dict().items()}


def load_module_state(module: torch.nn.Module, tensors: dict[str, Tensor], prefix: str) -> None:
    """Load the ``<prefix>.*`` entries of ``tensors`` into ``module`` (values are cast to its dtype/device).

    Raises:
        InputError: an expected entry is missing, an entry under the prefix is unexpected, a shape
            differs or a dtype is of another kind (the checkpoint was written for another model: a
            floating-point entry must be one of :data:`FLOAT_DTYPES`, any other the model's own
            dtype), or a parameter holds NaN or infinite values (named in the message).
    """
    own = module.state_dict()
    parameters = {name for name, _ in module.named_parameters()}
    lead = f"{prefix}." if prefix else ""
    found = {name[len(lead):]: value for name, value in tensors.items() if name.startswith(lead)}
    missing = [name for name in own if name not in found]
    unexpected = [name for name in found if name not in own]
    if missing:
        raise InputError(
            f"checkpoint does not fit the model: missing {len(missing)} entries under {shown(prefix)}, "
            f"e.g. {shown(_join(prefix, missing[0]))}"
        )
    if unexpected:
        raise InputError(
            f"checkpoint does not fit the model: {len(unexpected)} unexpected entries under {shown(prefix)}, "
            f"e.g. {shown(_join(prefix, unexpected[0]))}"
        )
    for name, value in own.items():
        if not isinstance(value, Tensor):
            continue
        got = found[name]
        if not isinstance(got, Tensor):
            raise InputError(f"checkpoint entry {shown(_join(prefix, name))} is a {type(got).__name__}, not a tensor")
        if got.shape != value.shape:
            raise InputError(
                f"checkpoint does not fit the model: {shown(_join(prefix, name))} has shape "
                f"{tuple(got.shape)}, the model expects {tuple(value.shape)}"
            )
        if value.is_floating_point() and got.dtype not in FLOAT_DTYPES:
            raise InputError(
                f"checkpoint does not fit the model: {shown(_join(prefix, name))} has dtype {got.dtype}, "
                f"the model expects floating-point values ({value.dtype})"
            )
        if not value.is_floating_point() and got.dtype != value.dtype:
            raise InputError(
                f"checkpoint does not fit the model: {shown(_join(prefix, name))} has dtype {got.dtype}, "
                f"the model expects {value.dtype}"
            )
        if name in parameters and not all_finite(got):
            raise InputError(f"checkpoint tensor {shown(_join(prefix, name))} holds NaN or infinite values")
    module.load_state_dict(found, strict=True)


def all_finite(tensor: Tensor) -> bool:
    """Whether every element of ``tensor`` is finite (always, for integer and bool tensors)."""
    if not tensor.is_floating_point() and not tensor.is_complex():
        return True
    return bool(torch.isfinite(tensor).all())


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# --------------------------------------------------------------------------------------------
# Optimizers (and anything else with state_dict / load_state_dict)
# --------------------------------------------------------------------------------------------


def optimizer_state(optimizer: Any, prefix: str = "optim") -> tuple[dict[str, Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors and JSON.

    Tensors are named by their path in the state dict, e.g. ``optim.state.0.exp_avg`` and
    ``optim.state.0.step``; every other value (hyperparameters, parameter indices, ``None``)
    goes into the JSON part, with small markers that restore integer keys, tuples and the place of
    each tensor exactly. Works for any object with ``state_dict``/``load_state_dict``, e.g. an LR
    scheduler (use another prefix).

    Returns:
        ``(tensors, meta)`` for :func:`load_optimizer_state`.
    """
    tensors: dict[str, Tensor] = {}
    meta = _encode(optimizer.state_dict(), prefix, tensors)
    return tensors, meta


def load_optimizer_state(optimizer: Any, tensors: dict[str, Tensor], meta: dict, prefix: str = "optim") -> None:
    """Restore what :func:`optimizer_state` split; the next steps match the saved optimizer bit for bit.

    For an optimizer (an object with ``param_groups``: ``torch.optim``'s or
    :class:`policygrad.backends.numpy.NumpyOptimizer`), the state is first checked by
    :func:`check_optimizer_state` and then against the optimizer: the same number of groups and of
    parameters in each, no setting the optimizer lacks, the settings that are flags (``amsgrad``,
    ``maximize``, ``foreach``, ...: policygrad never changes them) equal to the optimizer's own
    (a flag missing from an older checkpoint takes the optimizer's value), every state tensor shaped
    like its parameter, and each parameter's state holding the entries this optimizer keeps (Adam:
    ``step``, ``exp_avg``, ``exp_avg_sq``; RMSprop: ``step``, ``square_avg``; more for ``amsgrad``,
    ``momentum``, ``centered``).

    Raises:
        InputError: a tensor is missing, ``meta`` is malformed or out of range, or the state does
            not fit the optimizer (different number of parameter groups or parameters, shapes,
            settings, entries).
    """
    if hasattr(optimizer, "param_groups"):
        state = check_optimizer_state(tensors, meta, prefix)
        _check_fits_optimizer(optimizer, state, prefix)
    else:  # another object with a state dict (an LR scheduler): only decoded
        state = _decode(meta, tensors, prefix, set())
        if not isinstance(state, dict):
            raise InputError(f"optimizer state under {shown(prefix)} is malformed: expected a dict")
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as err:
        raise InputError(f"optimizer state under {shown(prefix)} does not fit the optimizer: {err}") from None


# Hyperparameters of torch.optim's optimizers, by name: (lowest, highest, lowest allowed, highest
# allowed). Any other setting must be None, a bool, a string, a finite number or a list of them.
_HYPER_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "lr": (0.0, math.inf, True, False),
    "eps": (0.0, math.inf, False, False),
    "weight_decay": (0.0, math.inf, True, False),
    "alpha": (0.0, 1.0, True, False),
    "momentum": (0.0, math.inf, True, False),
    "dampening": (0.0, 1.0, True, True),
}
_SQUARES = ("exp_avg_sq", "max_exp_avg_sq", "square_avg")  # running averages of squares: >= 0 (under a sqrt)
_MAX_STEP = 2**53  # step counts are stored as float32/float64 tensors: whole numbers up to here are exact


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_hyperparameter(key: str, value: Any, where: str) -> None:
    def bad(expected: str) -> InputError:
        return InputError(f"optimizer state under {shown(where)} is malformed: {key} must be {expected}, got {shown(value)}")

    if key == "betas":
        if not (isinstance(value, (tuple, list)) and len(value) == 2
                and all(_is_number(b) and 0.0 <= b < 1.0 for b in value)):
            raise bad("two numbers in [0, 1)")
    elif key in _HYPER_RANGES:
        low, high, low_ok, high_ok = _HYPER_RANGES[key]
        if not (_is_number(value) and (value >= low if low_ok else value > low)
                and (value <= high if high_ok else value < high)):
            raise bad(f"a finite number in {'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}")
    elif not (value is None or isinstance(value, (bool, str)) or _is_number(value)
              or (isinstance(value, (list, tuple)) and all(v is None or isinstance(v, (bool, str)) or _is_number(v)
                                                         for v in value))):
        raise bad("None, a bool, a string, a finite number or a list of them")


def _check_step(value: Any, where: str) -> None:
    if isinstance(value, Tensor):
        if value.numel() != 1 or not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
            raise InputError(f"optimizer state {shown(where)} must be one number, got a {value.dtype} tensor of shape "
                             f"{tuple(value.shape)}")
        value = value.reshape(()).item()
    if not (_is_number(value) and float(value).is_integer() and 0 <= value <= _MAX_STEP):
        raise InputError(f"optimizer state {shown(where)} must be a whole number of steps >= 0, got {shown(value)}")


def check_optimizer_state(tensors: dict[str, Tensor], meta: Any, prefix: str = "optim") -> dict[str, Any]:
    """The optimizer state dict that ``meta`` (from :func:`optimizer_state`) and ``tensors``
    describe, checked without an optimizer.

    ``{"state": {i: {name: tensor}}, "param_groups": [{"params": [i, ...], setting: value}]}``
    with: parameter indices distinct whole numbers >= 0, state only for indices of a group,
    ``lr`` >= 0, ``betas`` two numbers in [0, 1), ``eps`` > 0, ``weight_decay`` and ``momentum``
    >= 0, ``alpha`` in [0, 1) and ``dampening`` in [0, 1], all finite; any other setting None, a
    bool, a string or a finite number; ``step`` one whole number in [0, 2⁵³]; every other state
    entry a floating-point tensor (:data:`FLOAT_DTYPES`) of finite values, the running averages
    of squares (``exp_avg_sq``, ``max_exp_avg_sq``, ``square_avg``) >= 0.

    Raises:
        InputError: one line naming what is wrong (and where).
    """
    if not isinstance(meta, dict):
        raise InputError(f"optimizer state under {shown(prefix)} is missing or malformed: expected an object")
    state = _decode(meta, tensors, prefix, set())
    if not isinstance(state, dict) or set(state) != {"state", "param_groups"}:
        raise InputError(f"optimizer state under {shown(prefix)} is malformed: expected exactly 'state' and 'param_groups'")
    groups, per_param = state["param_groups"], state["state"]
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise InputError(f"optimizer state under {shown(prefix)} is malformed: param_groups must be a non-empty list of objects")
    indices: list[int] = []
    for group in groups:
        params = group.get("params")
        if not isinstance(params, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                   for i in params):
            raise InputError(f"optimizer state under {shown(prefix)} is malformed: a group's params must be indices >= 0")
        indices += params
        for key, value in group.items():
            if key != "params":
                _check_hyperparameter(key, value, prefix)
    if len(set(indices)) != len(indices):
        raise InputError(f"optimizer state under {shown(prefix)} is malformed: a parameter index appears twice")
    if not isinstance(per_param, dict):
        raise InputError(f"optimizer state under {shown(prefix)} is malformed: state must be an object")
    known = set(indices)
    for index, entry in per_param.items():
        if index not in known or not isinstance(entry, dict):
            raise InputError(f"optimizer state under {shown(prefix)} is malformed: state {shown(index)} is of no parameter")
        for name, value in entry.items():
            where = f"{prefix}.state.{index}.{name}"
            if name == "step":
                _check_step(value, where)
            elif not isinstance(value, Tensor):
                raise InputError(f"optimizer state {shown(where)} must be a tensor, got {type(value).__name__}")
            elif value.dtype not in FLOAT_DTYPES:
                raise InputError(f"optimizer state {shown(where)} has dtype {value.dtype}, not floating-point")
            elif not all_finite(value):
                raise InputError(f"optimizer state {shown(where)} holds NaN or infinite values")
            elif name in _SQUARES and bool((value < 0).any()):
                raise InputError(f"optimizer state {shown(where)} holds negative values (a running average of squares)")
    return state


def _state_keys(optimizer: Any, group: dict[str, Any]) -> set[str] | None:
    """The entries the optimizer keeps for each parameter of ``group`` once it has stepped, where
    known (None: another optimizer; its entries are not checked)."""
    keys = getattr(optimizer, "state_keys", None)  # NumpyOptimizer says it itself
    if keys is not None:
        return set(keys)
    if isinstance(optimizer, torch.optim.Adam):
        return {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group.get("amsgrad") else set())
    if isinstance(optimizer, torch.optim.RMSprop):
        return ({"step", "square_avg"} | ({"momentum_buffer"} if group.get("momentum", 0) > 0 else set())
                | ({"grad_avg"} if group.get("centered") else set()))
    return None


def _check_fits_optimizer(optimizer: Any, state: dict[str, Any], prefix: str) -> None:
    """InputError unless the checked ``state`` fits ``optimizer`` (see :func:`load_optimizer_state`);
    fills in flags an older checkpoint lacks."""

    def unfit(why: str) -> InputError:
        return InputError(f"optimizer state under {shown(prefix)} does not fit the optimizer: {why}")

    groups, live_groups = state["param_groups"], optimizer.param_groups
    if len(groups) != len(live_groups):
        raise unfit(f"{len(groups)} parameter groups, the optimizer has {len(live_groups)}")
    shapes: dict[int, tuple[int, ...]] = {}
    expected: dict[int, set[str] | None] = {}
    for g, (group, live) in enumerate(zip(groups, live_groups)):
        if len(group["params"]) != len(live["params"]):
            raise unfit(f"group {g} has {len(group['params'])} parameters, the optimizer's {len(live['params'])}")
        keys = _state_keys(optimizer, group)
        for index, param in zip(group["params"], live["params"]):
            shapes[index] = tuple(param.shape)
            expected[index] = keys
        for key in group:
            if key not in live:
                raise unfit(f"setting {shown(key)} of group {g} is not one of the optimizer's")
        for key, value in live.items():
            if key in ("params", "param_names"):
                continue
            if key not in group:
                if value is None or isinstance(value, bool):  # a flag newer than the checkpoint
                    group[key] = value
                    continue
                raise unfit(f"group {g} lacks the setting {shown(key)}")
            if value is None or isinstance(value, (bool, str)):
                if type(group[key]) is not type(value) or group[key] != value:
                    raise unfit(f"group {g} has {key}={shown(group[key])}, the optimizer {shown(value)} (policygrad never "
                                "changes it)")
    for index, entry in state["state"].items():
        keys = expected[index]
        if keys is not None and set(entry) != keys:
            raise unfit(f"the state of parameter {index} holds {sorted(entry)}, the optimizer keeps {sorted(keys)}")
        for name, value in entry.items():
            if name != "step" and tuple(value.shape) != shapes[index]:
                raise unfit(f"{prefix}.state.{index}.{name} has shape {tuple(value.shape)}, its parameter "
                            f"{shapes[index]}")


# JSON markers. A plain JSON object is a dict with string keys that are not markers.
_T, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"


def _encode(value: Any, name: str, tensors: dict[str, Tensor]) -> Any:
    if isinstance(value, Tensor):
        tensors[name] = value.detach()
        return {_T: name}
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in (_T, _TUPLE, _ITEMS) for k in value):
            return {k: _encode(v, f"{name}.{k}", tensors) for k, v in value.items()}
        items = []
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise InputError(f"cannot store state key {shown(k)} of type {type(k).__name__} at {shown(name)}")
            items.append([k, _encode(v, f"{name}.{k}", tensors)])
        return {_ITEMS: items}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise InputError(f"cannot store state value of type {type(value).__name__} at {shown(name)}")


def _decode(value: Any, tensors: dict[str, Tensor], prefix: str, used: set[str]) -> Any:
    """Undo :func:`_encode`; InputError for a malformed marker, a tensor missing or used twice."""
    if isinstance(value, dict):
        marker = [m for m in (_T, _TUPLE, _ITEMS) if m in value]
        if marker and len(value) != 1:
            raise InputError(f"state under {shown(prefix)} is malformed: {marker[0]} beside other keys")
        if _T in value:
            name = value[_T]
            if not isinstance(name, str) or name not in tensors:
                raise InputError(f"checkpoint lacks tensor {shown(name)} needed by the state under {shown(prefix)}")
            if name in used:
                raise InputError(f"state under {shown(prefix)} is malformed: tensor {shown(name)} is used twice")
            used.add(name)
            return tensors[name]
        if _TUPLE in value:
            if not isinstance(value[_TUPLE], list):
                raise InputError(f"state under {shown(prefix)} is malformed: bad {_TUPLE} entry")
            return tuple(_decode(v, tensors, prefix, used) for v in value[_TUPLE])
        if _ITEMS in value:
            items = value[_ITEMS]
            if not isinstance(items, list) or not all(
                isinstance(i, list) and len(i) == 2 and isinstance(i[0], (str, int)) and not isinstance(i[0], bool)
                for i in items
            ):
                raise InputError(f"state under {shown(prefix)} is malformed: bad {_ITEMS} entry")
            if len({k for k, _ in items}) != len(items):
                raise InputError(f"state under {shown(prefix)} is malformed: a key appears twice in {_ITEMS}")
            return {k: _decode(v, tensors, prefix, used) for k, v in items}
        return {k: _decode(v, tensors, prefix, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, tensors, prefix, used) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Random number generators
# --------------------------------------------------------------------------------------------


def rng_state(prefix: str = "rng") -> tuple[dict[str, Tensor], dict]:
    """Capture the global generators of torch (CPU, and CUDA once initialised), NumPy and Python.

    Returns:
        ``(tensors, meta)``: the large state vectors as tensors (``rng.torch``, ``rng.cuda.<i>``,
        ``rng.numpy.key``, ``rng.python.state``), the small scalars as JSON.
    """
    tensors: dict[str, Tensor] = {f"{prefix}.torch": torch.get_rng_state()}
    cuda_devices = 0
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{prefix}.cuda.{i}"] = state
            cuda_devices += 1

    bit_generator, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    tensors[f"{prefix}.numpy.key"] = torch.from_numpy(np.asarray(key, dtype=np.int64))  # uint32 values

    version, internal, gauss_next = random.getstate()
    tensors[f"{prefix}.python.state"] = torch.tensor(internal, dtype=torch.int64)

    meta = {
        "cuda_devices": cuda_devices,
        "numpy": {
            "bit_generator": bit_generator,
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "gauss_next": gauss_next},
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, Tensor], meta: dict, prefix: str = "rng") -> None:
    """Restore what :func:`rng_state` captured; the next draws of all generators repeat exactly.

    CUDA states are restored when this machine has at least as many CUDA devices, and skipped
    otherwise (a run resumed on CPU has no CUDA generator to seed). Nothing is set unless every
    state passes :func:`check_rng_state`.

    Raises:
        InputError: a state tensor or field is missing or malformed.
    """
    torch_state, numpy_state, python_state, cuda_states = check_rng_state(tensors, meta, prefix)
    try:
        torch.set_rng_state(torch_state)  # first: the one torch may still refuse, before anything is set
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise InputError(f"random-generator state under {shown(prefix)} is malformed ({err})") from None
    if cuda_states and torch.cuda.is_available() and torch.cuda.device_count() >= len(cuda_states):
        torch.cuda.set_rng_state_all(cuda_states)


_MT_WORDS = 624  # words of a Mersenne Twister MT19937 state (NumPy's legacy generator, Python's random)
_MAX_CUDA_DEVICES = 1024


def check_rng_state(tensors: dict[str, Tensor], meta: Any, prefix: str = "rng") -> tuple[Tensor, tuple, tuple, list[Tensor]]:
    """The generator states :func:`rng_state` captured, checked: ``(torch, numpy, python, cuda)``
    in the forms ``torch.set_rng_state``, ``np.random.set_state`` and ``random.setstate`` take.

    torch's and each CUDA state: a 1-D uint8 tensor (torch's of this torch's size); NumPy's:
    ``MT19937``, a key of 624 values in [0, 2³²) (an int64 tensor), a position in [0, 624], a
    cached Gaussian flag 0 or 1 and a finite cached value; Python's: version 3, 624 words in
    [0, 2³²) and an index in [0, 624] (an int64 tensor of 625), a cached Gaussian None or finite.
    A Mersenne Twister state whose 19937 bits are all zero is refused: it draws zeros for ever, on
    which NumPy's legacy Gaussian sampler and Python's ``random.normalvariate`` loop for ever.

    Raises:
        InputError: one line naming what is missing or malformed.
    """

    def bad(why: str) -> InputError:
        return InputError(f"random-generator state under {shown(prefix)} is missing or malformed ({why})")

    def tensor(name: str, dtype: torch.dtype, size: int | None = None) -> Tensor:
        value = tensors.get(f"{prefix}.{name}")
        if not isinstance(value, Tensor):
            raise bad(f"no tensor {prefix}.{name}")
        if value.dtype != dtype or value.dim() != 1 or (size is not None and value.numel() != size):
            expected = f"{size} values" if size is not None else "1-D"
            raise bad(f"{prefix}.{name} is a {value.dtype} tensor of shape {tuple(value.shape)}, expected {dtype} ({expected})")
        return value

    def whole(value: Any, low: int, high: int, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad(f"{what} must be a whole number in [{low}, {high}], got {shown(value)}")
        return value

    def words(value: Tensor, what: str) -> np.ndarray:
        array = value.numpy()
        if array.size and (array.min() < 0 or array.max() >= 2**32):
            raise bad(f"{what} holds values outside [0, 2^32)")
        key = array[:_MT_WORDS]
        if not key[1:].any() and not int(key[0]) & 0x80000000:
            raise bad(f"{what} is the all-zero Mersenne Twister state, which draws only zeros")
        return array

    if not isinstance(meta, dict):
        raise bad("expected an object")
    np_meta, py_meta = meta.get("numpy"), meta.get("python")
    if not isinstance(np_meta, dict) or not isinstance(py_meta, dict):
        raise bad("no numpy or python entry")

    torch_state = tensor("torch", torch.uint8, torch.get_rng_state().numel())

    if np_meta.get("bit_generator") != "MT19937":
        raise bad(f"numpy bit_generator must be 'MT19937', got {shown(np_meta.get('bit_generator'))}")
    key = words(tensor("numpy.key", torch.int64, _MT_WORDS), f"{prefix}.numpy.key")
    cached = np_meta.get("cached_gaussian")
    if not _is_number(cached):
        raise bad(f"numpy cached_gaussian must be a finite number, got {shown(cached)}")
    numpy_state = ("MT19937", key.astype(np.uint32), whole(np_meta.get("pos"), 0, _MT_WORDS, "numpy pos"),
                   whole(np_meta.get("has_gauss"), 0, 1, "numpy has_gauss"), float(cached))

    whole(py_meta.get("version"), 3, 3, "python version")
    internal = words(tensor("python.state", torch.int64, _MT_WORDS + 1), f"{prefix}.python.state")
    whole(int(internal[-1]), 0, _MT_WORDS, "the python state's index")
    gauss_next = py_meta.get("gauss_next")
    if gauss_next is not None and not _is_number(gauss_next):
        raise bad(f"python gauss_next must be None or a finite number, got {shown(gauss_next)}")
    python_state = (3, tuple(int(x) for x in internal.tolist()), None if gauss_next is None else float(gauss_next))

    cuda_devices = whole(meta.get("cuda_devices", 0), 0, _MAX_CUDA_DEVICES, "cuda_devices")
    cuda_states = [tensor(f"cuda.{i}", torch.uint8) for i in range(cuda_devices)]
    return torch_state, numpy_state, python_state, cuda_states
