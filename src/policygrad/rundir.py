"""Run directories: where a new run goes, the checks before it starts, and undoing a failed start.

A run directory holds::

    config.json          algo, env, seed, the fully resolved hyperparameters, library versions
    metrics.csv          one row per update (policygrad.training.METRIC_COLUMNS)
    tb/                  the same values as TensorBoard scalars
    checkpoints/last/    the latest checkpoint (rewritten at every save)
    checkpoints/step_N/  periodic checkpoints, kept
    checkpoints/best/    the best policy the evaluations during training found (eval_every)
    learning_curve.png   episode return against environment steps

A new run never writes into a directory that holds anything. If setting it up fails,
:class:`CreatedPaths` removes what this invocation created, so bad input leaves no trace.
config.json is written with :func:`policygrad.checkpoint.write_atomically`, like checkpoints.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from policygrad.checkpoint import write_atomically
from policygrad.errors import InputError
from policygrad.runconfig import CONFIG_FILE, RunSpec

__all__ = ["default_run_dir", "check_new_run_dir", "CreatedPaths", "write_run_config", "start_run", "reopen_run"]


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


def start_run(spec: RunSpec, run_dir: Path, device: str | None = None, *, quiet: bool = False,
              callback: Any = None, env: Any = None, policy: Any = None) -> tuple[Any, dict[str, Any]]:
    """Build the session of a new run, write its config.json into ``run_dir`` (missing or empty)
    and train it (``policygrad train`` and ``Model.learn``). ``env`` and ``policy``: objects given
    in Python (see :func:`policygrad.training.build_session`).

    Returns:
        ``(session, summary)``: the session still open (the caller closes it) and
        :func:`policygrad.training.train`'s summary.

    Raises:
        InputError: bad input up to the start of training; nothing of the run is left behind.
    """
    from policygrad.training import build_session, train

    check_new_run_dir(run_dir)
    session = build_session(spec, device, env=env, policy=policy)  # every InputError up to here leaves no trace
    created = CreatedPaths(run_dir)
    try:
        try:
            created.create()
            write_run_config(run_dir, spec, session.algorithm.backend)
        except OSError as err:
            created.undo()
            raise InputError(f"cannot create run directory {run_dir}: {err}") from None
        try:
            summary = train(session, run_dir, quiet=quiet, callback=callback)
        except InputError:  # only set-up failures: training turns them into TrainingError
            created.undo()
            raise
    except BaseException:
        session.close()
        raise
    return session, summary


def reopen_run(run_dir: Path, spec: RunSpec, device: str | None = None, *, env: Any = None,
               policy: Any = None, checkpoint: Path | None = None) -> Any:
    """The training session of ``spec`` with ``run_dir``'s latest checkpoint restored (``--resume``,
    ``Model.learn`` on a saved run, ``policygrad.load``), or the checkpoint ``checkpoint`` of it
    (``policygrad.load("RUN/checkpoints/best")``); ``env`` and ``policy`` as for :func:`start_run`.

    Raises:
        InputError: no checkpoint, or one that does not load into ``spec``'s session.
    """
    from policygrad.checkpoint import latest_checkpoint
    from policygrad.training import build_session, check_fits_run, load_run_checkpoint, restore_session

    path = latest_checkpoint(run_dir) if checkpoint is None else checkpoint
    if path is None:
        raise InputError(f"{run_dir} has no checkpoint to resume from")
    tensors, meta = load_run_checkpoint(path, run_dir)
    check_fits_run(spec, tensors, meta)  # before the session (and its network) is built
    session = build_session(spec, device, env=env, policy=policy)
    try:
        restore_session(session, tensors, meta)
    except BaseException:
        session.close()
        raise
    return session
