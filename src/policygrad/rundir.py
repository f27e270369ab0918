"""Run directories: where a new run goes, the checks before it starts, and undoing a failed start.

A run directory holds::

    config.json          algo, env, seed, the fully resolved hyperparameters, library versions
    metrics.csv          one row per update (policygrad.training.METRIC_COLUMNS)
    tb/                  the same values as TensorBoard scalars
    checkpoints/last/    the latest checkpoint (rewritten at every save)
    checkpoints/step_N/  periodic checkpoints, kept
    learning_curve.png   episode return against environment steps

A new run never writes into a directory that holds anything. If setting it up fails,
:class:`CreatedPaths` removes what this invocation created, so bad input leaves no trace.
config.json is written with :func:`policygrad.checkpoint.write_atomically`, like checkpoints.
"""

from __future__ import annotations

from typing import Any

import json
import re
import shutil
import time
from pathlib import Path

from policygrad.checkpoint import write_atomically
from policygrad.errors import InputError
from policygrad.runconfig import CONFIG_FILE, RunSpec

__all__ = ["default_run_dir", "check_new_run_dir", "CreatedPaths", "write_run_config"]


def default_run_dir(algo: str, env: str) -> Path:
    """``runs/<algo>-<env>-<time>``, with a ``-2``, ``-3``, ... suffix if that exists already."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", env).strip("_") or "env"
    base = Path("runs") / f"{algo}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


def check_new_run_dir(path: Path) -> None:
    """InputError unless ``path`` is missing or an empty directory (``--out`` of a new run)."""
    if path.exists():
        if not path.is_dir():
            raise InputError(f"--out {path} exists and is not a directory")
        if any(path.iterdir()):
            raise InputError(f"--out {path} already exists and is not empty; continue it with --resume {path} or choose another --out")


class CreatedPaths:
    """Creates a run directory and remembers what it created, so that a failed set-up can undo it."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.top: Path | None = None  # the outermost directory this invocation created
        self.existed = run_dir.exists()

    def create(self) -> None:
        missing = [p for p in [self.run_dir, *self.run_dir.parents] if not p.exists()]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.top = missing[-1] if missing else None

    def undo(self) -> None:
        if self.top is not None:
            shutil.rmtree(self.top, ignore_errors=True)
        elif self.existed and self.run_dir.is_dir():
            for entry in self.run_dir.iterdir():  # it was empty before this invocation
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def write_run_config(run_dir: Path, spec: RunSpec, backend: Any = None) -> None:
    """Write (or replace) ``run_dir``'s config.json atomically; with the run's ``backend`` (a
    :class:`policygrad.backends.Backend`), which one it resolved to and why (read by nothing: a
    record; ``config.backend`` stays what was asked for, and resolves the same way on resume)."""
    data = spec.to_json()
    if backend is not None:
        data["backend"] = {"name": backend.name, "reason": backend.reason}
    text = json.dumps(data, indent=2) + "\n"
    write_atomically(run_dir / CONFIG_FILE, text.encode("utf-8"))
