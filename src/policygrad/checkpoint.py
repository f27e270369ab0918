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
save) and, optionally, ``<run_dir>/checkpoints/step_<N>/`` (kept); :func:`checkpoint_path` names
them and :func:`latest_checkpoint` finds the one to resume from.

Helpers turn live state into ``(tensors, meta)`` pairs and back: :func:`module_state`,
:func:`optimizer_state` and :func:`rng_state`. Their tensors go into one dict and their JSON parts
under keys of the caller's choosing in ``meta``.
"""

from __future__ import annotations

import hashlib
import json
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

__all__ = [
    "FORMAT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_path",
    "latest_checkpoint",
    "module_state",
    "load_module_state",
    "optimizer_state",
    "load_optimizer_state",
    "rng_state",
    "set_rng_state",
    "write_atomically",
]

FORMAT_VERSION = 1
"""Version of the on-disk layout; :func:`load_checkpoint` refuses any other."""

_LIBRARY = "policygrad"
_META_FILE = "meta.json"
_TENSORS_RE = re.compile(r"tensors-[0-9a-f]{16}\.safetensors")
_TMP_MARK = ".tmp-"
_STEP_RE = re.compile(r"step_(\d+)")


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
        InputError: ``path`` is a file or a foreign directory, a tensor name or value is invalid,
            or ``meta`` is not JSON-serialisable.
    """
    path = Path(path)
    _check_writable_target(path)
    if not isinstance(meta, dict):
        raise InputError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    blob = _serialize_tensors(tensors)
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
    write_atomically(path / tensors_file, blob)
    write_atomically(path / _META_FILE, record_text.encode("utf-8"))  # the commit point
    _remove_leftovers(path, keep=tensors_file)


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """Read a checkpoint written by :func:`save_checkpoint`, verifying it completely.

    Args:
        path: the checkpoint directory.

    Returns:
        ``(tensors, meta)``: CPU tensors by name, and the caller's meta as saved.

    Raises:
        InputError: the path is missing, is not a policygrad checkpoint, has an unknown format
            version, or its tensors are truncated or corrupt, or its meta.json is not valid JSON.
    """
    path = Path(path)
    # A concurrent save may delete the tensors file named by the meta.json just read; the new
    # meta.json then names a complete one, so one retry suffices.
    for attempt in range(2):
        record = _read_record(path)
        try:
            blob = (path / record["tensors_file"]).read_bytes()
        except FileNotFoundError:
            if attempt == 0:
                continue
            raise InputError(
                f"checkpoint {path} is incomplete: {record['tensors_file']} is missing"
            ) from None
        break
    if len(blob) != record["tensors_bytes"]:
        raise InputError(
            f"checkpoint {path} is truncated: {record['tensors_file']} has {len(blob)} bytes, "
            f"expected {record['tensors_bytes']}"
        )
    if hashlib.sha256(blob).hexdigest() != record["tensors_sha256"]:
        raise InputError(f"checkpoint {path} is corrupt: sha256 of {record['tensors_file']} does not match")
    try:
        tensors = safetensors.torch.load(blob)
    except Exception as err:  # safetensors raises several types for malformed input
        raise InputError(f"checkpoint {path} is corrupt: cannot parse {record['tensors_file']} ({err})") from None
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


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume ``run_dir`` from, or ``None`` if it has none.

    ``checkpoints/last`` wins when it holds a committed checkpoint (it is rewritten at every save);
    otherwise the ``checkpoints/step_<N>`` with the largest N. A directory counts when it has a
    ``meta.json``; leftovers of interrupted saves (``*.tmp-*``) never count. Nothing is verified
    here: :func:`load_checkpoint` does that.
    """
    base = Path(run_dir) / "checkpoints"
    if not base.is_dir():
        return None
    last = base / "last"
    if (last / _META_FILE).is_file():
        return last
    best: tuple[int, Path] | None = None
    for entry in base.iterdir():
        match = _STEP_RE.fullmatch(entry.name)
        if match and (entry / _META_FILE).is_file():
            step = int(match.group(1))
            if best is None or step > best[0]:
                best = (step, entry)
    return None if best is None else best[1]


def _check_writable_target(path: Path) -> None:
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
    if not meta_path.is_file():
        hint = "; it looks like a run directory, pass its checkpoints/last" if (path / "checkpoints").is_dir() else ""
        raise InputError(f"{path} is not a policygrad checkpoint (no {_META_FILE}){hint}")
    raw = meta_path.read_bytes()
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{meta_path} is not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{meta_path} is not valid JSON (line {err.lineno} column {err.colno}: {err.msg})") from None
    if not isinstance(record, dict) or record.get("library") != _LIBRARY:
        raise InputError(f"{path} is not a policygrad checkpoint ({_META_FILE} does not name the library)")
    version = record.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise InputError(
            f"checkpoint {path} has unknown format version {shown(version)} (this policygrad reads version {FORMAT_VERSION})"
        )
    tensors_file = record.get("tensors_file")
    if (
        not isinstance(tensors_file, str)
        or not _TENSORS_RE.fullmatch(tensors_file)  # also keeps the name inside the directory
        or not isinstance(record.get("tensors_sha256"), str)
        or not isinstance(record.get("tensors_bytes"), int)
        or not isinstance(record.get("meta"), dict)
    ):
        raise InputError(f"checkpoint {path} is corrupt: {_META_FILE} lacks a valid tensors_file/sha256/bytes/meta")
    return record


def write_atomically(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that readers see the old file or the new one, never a mix.

    The bytes go to ``<target>.tmp-<pid>`` (fsync), which then replaces ``target`` in one
    ``os.replace``, made durable by an fsync of the directory. The one atomic writer of the
    library: checkpoints and a run directory's config.json both go through it.
    """
    target = Path(target)
    tmp = target.with_name(f"{target.name}{_TMP_MARK}{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
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
        InputError: an expected entry is missing, an entry under the prefix is unexpected, or a
            shape differs: the checkpoint was written for another model.
    """
    own = module.state_dict()
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
        if isinstance(value, Tensor) and found[name].shape != value.shape:
            raise InputError(
                f"checkpoint does not fit the model: {shown(_join(prefix, name))} has shape "
                f"{tuple(found[name].shape)}, the model expects {tuple(value.shape)}"
            )
    module.load_state_dict(found, strict=True)


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

    Raises:
        InputError: a tensor is missing, ``meta`` is malformed, or the state does not fit the
            optimizer (different number of parameter groups or parameters).
    """
    state = _decode(meta, tensors, prefix)
    if not isinstance(state, dict):
        raise InputError(f"optimizer state under {prefix!r} is malformed: expected a dict")
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"optimizer state under {prefix!r} does not fit the optimizer: {err}") from None


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


def _decode(value: Any, tensors: dict[str, Tensor], prefix: str) -> Any:
    if isinstance(value, dict):
        if _T in value:
            name = value[_T]
            if name not in tensors:
                raise InputError(f"checkpoint lacks tensor {shown(name)} needed by the state under {shown(prefix)}")
            return tensors[name]
        if _TUPLE in value:
            return tuple(_decode(v, tensors, prefix) for v in value[_TUPLE])
        if _ITEMS in value:
            items = value[_ITEMS]
            if not isinstance(items, list) or not all(
                isinstance(i, list) and len(i) == 2 and isinstance(i[0], (str, int)) for i in items
            ):
                raise InputError(f"state under {shown(prefix)} is malformed: bad {_ITEMS} entry")
            return {k: _decode(v, tensors, prefix) for k, v in items}
        return {k: _decode(v, tensors, prefix) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, tensors, prefix) for v in value]
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
    otherwise (a run resumed on CPU has no CUDA generator to seed).

    Raises:
        InputError: a state tensor or field is missing or malformed.
    """
    try:
        torch_state = tensors[f"{prefix}.torch"]
        numpy_key = tensors[f"{prefix}.numpy.key"]
        python_state = tensors[f"{prefix}.python.state"]
        np_meta, py_meta = meta["numpy"], meta["python"]
        numpy_state = (
            np_meta["bit_generator"],
            numpy_key.numpy().astype(np.uint32),
            int(np_meta["pos"]),
            int(np_meta["has_gauss"]),
            float(np_meta["cached_gaussian"]),
        )
        python_tuple = (py_meta["version"], tuple(int(x) for x in python_state.tolist()), py_meta["gauss_next"])
        cuda_devices = int(meta.get("cuda_devices", 0))
        cuda_states = [tensors[f"{prefix}.cuda.{i}"] for i in range(cuda_devices)]
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"random-generator state under {prefix!r} is missing or malformed ({err})") from None
    try:
        torch.set_rng_state(torch_state.to(torch.uint8))
        np.random.set_state(numpy_state)
        random.setstate(python_tuple)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"random-generator state under {prefix!r} is malformed ({err})") from None
    if cuda_states and torch.cuda.is_available() and torch.cuda.device_count() >= len(cuda_states):
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in cuda_states])
