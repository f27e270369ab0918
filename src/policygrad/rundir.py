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

One writer. A process that writes a run directory (a new run, ``--resume``, ``Model.learn``)
first takes its :class:`RunLock`, an OS file lock on ``<run_dir>/.lock`` that the kernel releases
when the process ends, however it ends: no stale lock survives a crash. A second writer is
refused with one line naming the holder's process id. Readers (``eval``, ``plot``,
``policygrad.load``) take no lock; every file they read is replaced atomically.

No dead ends. A new run writes a step-0 checkpoint right after its config.json, so a run
directory holds a loadable checkpoint from its first moment; a directory with a config.json but
no checkpoint (written by an older version, or stopped between the two writes) resumes from its
saved configuration at step 0. ``--resume`` takes the newest complete checkpoint, whichever its
name (``last`` or a ``step_N`` written after it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Any, Callable

from policygrad.checkpoint import write_atomically
from policygrad.errors import InputError, TrainingError
from policygrad.runconfig import CONFIG_FILE, RunSpec

__all__ = [
    "default_run_dir", "check_new_run_dir", "CreatedPaths", "RunLock", "write_run_config", "start_run", "reopen_run",
    "newest_checkpoint",
]

LOCK_FILE = ".lock"
"""The file of a run directory that its writer holds locked (and which names its process id)."""

_HELD: dict[str, RunLock] = {}  # run directories this process holds, by real path


class RunLock:
    """The exclusive right to write a run directory, held until :meth:`release` or the process ends.

    A POSIX record lock (``fcntl.lockf``) on ``<run_dir>/.lock``: the kernel drops it when the
    process dies, and processes forked from the holder (async environment workers) do not
    inherit it. Within one process a directory can be held once.

    Args:
        run_dir: an existing run directory.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock; InputError naming the holder if another process (or model) has it."""
        key = os.path.realpath(self.run_dir)
        if key in _HELD:
            raise InputError(f"run directory {self.run_dir} is being written by another model in this process (pid {os.getpid()})")
        try:
            import fcntl
        except ImportError:  # no POSIX locks (Windows): one writer is the user's responsibility
            _HELD[key] = self
            return self
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) \
            | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as err:
            raise InputError(f"cannot lock run directory {self.run_dir}: {err.strerror or err}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device received with the directory
            os.close(fd)
            raise InputError(f"cannot lock run directory {self.run_dir}: {self.path} is not a regular file")
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise InputError(
                f"run directory {self.run_dir} is in use by process {holder} (one process writes a run at a time)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        _HELD[key] = self
        return self

    @staticmethod
    def holder(run_dir: Path) -> str | None:
        """The id of another process that holds ``run_dir``'s lock now (as its lock file says), or
        None (no one, or this process)."""
        if os.path.realpath(run_dir) in _HELD:
            return None
        path = Path(run_dir) / LOCK_FILE
        try:
            import fcntl

            fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                         | getattr(os, "O_NONBLOCK", 0))
        except (ImportError, OSError):
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None  # no lock of this library (acquire refuses it)
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            except OSError:
                return "unknown"
        finally:
            os.close(fd)  # not held by this process (checked above), so closing drops only the probe
        return None

    def release(self) -> None:
        """Give the lock up (the file stays; it names no holder once released)."""
        _HELD.pop(os.path.realpath(self.run_dir), None)
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing drops the POSIX lock
            self._fd = None


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
    """InputError unless ``path`` is missing or an empty directory (``--out`` of a new run).

    A directory that holds only what a start killed before its config.json was written leaves
    behind (the lock file, temporary ``*.tmp-<pid>`` files) counts as empty: it is no run, and
    ``--resume`` could not continue it, so ``--out`` may take it again (:func:`start_run` removes
    the leftovers).
    """
    if path.exists():
        if not path.is_dir():
            raise InputError(f"--out {path} exists and is not a directory")
        holder = RunLock.holder(path)
        if holder is not None:
            raise InputError(f"run directory {path} is in use by process {holder} (one process writes a run at a time)")
        if any(not _leftover(e) for e in path.iterdir()):
            raise InputError(f"--out {path} already exists and is not empty; continue it with --resume {path} or choose another --out")


def _leftover(entry: Path) -> bool:
    """The lock file, or a temporary file of an interrupted write (``*.tmp-<pid>``, a regular file)."""
    if entry.name == LOCK_FILE:
        return True
    return ".tmp-" in entry.name and entry.is_file() and not entry.is_symlink()


def _remove_leftovers(run_dir: Path) -> None:
    for entry in run_dir.iterdir():
        if entry.name != LOCK_FILE and _leftover(entry):
            entry.unlink(missing_ok=True)


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

    from policygrad.checkpoint import checkpoint_path, save_checkpoint
    from policygrad.training import checkpoint_state

    check_new_run_dir(run_dir)
    session = build_session(spec, device, env=env, policy=policy)  # every InputError up to here leaves no trace

    def write_first() -> None:
        write_run_config(run_dir, spec, session.algorithm.backend)
        tensors, meta = checkpoint_state(session)
        save_checkpoint(checkpoint_path(run_dir), tensors, meta)  # step 0: never a dead end

    summary = open_new_run(run_dir, session, write_first, lambda: train(session, run_dir, quiet=quiet, callback=callback),
                           undo_before_first_update=True)
    return session, summary


def open_new_run(run_dir: Path, session: Any, write_first: Callable[[], None], train: Callable[[], dict], *,
                 undo_before_first_update: bool = False) -> dict:
    """Create ``run_dir`` for a built ``session``, lock it, ``write_first()`` (config.json and the
    step-0 checkpoint) and ``train()``; returns what ``train`` returns. The one way a new run
    directory comes to exist (classic and sequence runs alike).

    Another process may take the same directory in the meantime: the lock decides, and the loser
    leaves everything as it is. Bad input (an InputError, or a write that fails before training)
    removes what this call created; with ``undo_before_first_update`` so does a TrainingError at
    step 0 (an environment that fails at once). The session is closed on any failure.
    """
    created = CreatedPaths(run_dir)
    try:
        try:
            created.create()
        except OSError as err:
            created.undo()
            raise InputError(f"cannot create run directory {run_dir}: {err.strerror or err}") from None
        session.lock = RunLock(run_dir).acquire()
        check_new_run_dir(run_dir)
        _remove_leftovers(run_dir)
        try:
            write_first()
        except OSError as err:
            session.close()
            created.undo()
            raise InputError(f"cannot write run directory {run_dir}: {err.strerror or err}") from None
        try:
            return train()
        except InputError:  # only set-up failures: training turns them into TrainingError
            session.close()
            created.undo()
            raise
        except TrainingError:
            if undo_before_first_update and session.step == 0:
                session.close()
                created.undo()
            raise
    except BaseException:
        session.close()
        raise


def reopen_run(run_dir: Path, spec: RunSpec, device: str | None = None, *, env: Any = None,
               policy: Any = None, checkpoint: Path | None = None, lock: bool = False) -> Any:
    """The training session of ``spec`` with ``run_dir``'s newest checkpoint restored (``--resume``,
    ``Model.learn`` on a saved run, ``policygrad.load``), or the checkpoint ``checkpoint`` of it
    (``policygrad.load("RUN/checkpoints/best")``); ``env`` and ``policy`` as for :func:`start_run`.
    A run with no checkpoint at all starts from its saved configuration (step 0).

    Args:
        lock: take the run's :class:`RunLock` first (to write it: ``--resume``, ``Model.learn``);
            the session holds it until it is closed.

    Raises:
        InputError: the run is locked by another process, or its checkpoint does not load into
            ``spec``'s session.
    """
    from policygrad.training import build_session, check_fits_run, load_run_checkpoint, restore_session

    held = RunLock(run_dir).acquire() if lock else None
    try:
        if held is not None:
            _check_write_targets(Path(run_dir))
        if checkpoint is not None:
            found: tuple[dict, dict] | None = load_run_checkpoint(checkpoint, run_dir)
        else:
            found = newest_checkpoint(run_dir)
        if found is not None:
            check_fits_run(spec, *found)  # before the session (and its network) is built
        session = build_session(spec, device, env=env, policy=policy)
        session.lock = held
        try:
            if found is not None:
                restore_session(session, *found)
        except BaseException:
            session.close()
            raise
    except BaseException:
        if held is not None:
            held.release()
        raise
    return session


def _check_write_targets(run_dir: Path) -> None:
    """InputError before anything is trained if a writer could not save where checkpoints go."""
    import stat as st

    base = run_dir / "checkpoints"
    for path in (base, base / "last"):
        try:
            mode = os.stat(path).st_mode  # a symlinked checkpoint directory is the loader's to judge
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not st.S_ISDIR(mode):
            raise InputError(f"{path} is not a directory; checkpoints cannot be written there")


def newest_checkpoint(run_dir: Path, load: Callable[[Path, Path], tuple[dict, dict]] | None = None,
                      ) -> tuple[dict, dict] | None:
    """``(tensors, meta)`` of the complete checkpoint of ``run_dir`` with the largest step
    (``checkpoints/last`` or a ``step_N``; ``best`` is not a point to resume from), verified by
    ``load(path, run_dir)`` (default :func:`policygrad.training.load_run_checkpoint`; a sequence
    run passes its own); None if there is none.

    Only the ``meta.json`` of each is read to order them by step, newest first; then they are
    loaded in that order until one loads completely. So a resume reads one checkpoint's tensors
    (more only if the newest are damaged), however many a run kept or a received directory holds.

    Raises:
        InputError: checkpoints exist but none of them loads (the newest one's error).
    """
    from policygrad.checkpoint import is_checkpoint
    from policygrad.files import read_json
    from policygrad.training import load_run_checkpoint

    load = load_run_checkpoint if load is None else load
    base = Path(run_dir) / "checkpoints"
    if not base.is_dir():
        return None
    ordered: list[tuple[int, str, Path]] = []
    for path in base.iterdir():
        if not (path.name == "last" or re.fullmatch(r"step_\d+", path.name)) or not is_checkpoint(path):
            continue  # not a point to resume from, or a save that never committed
        try:
            step = read_json(path / "meta.json", "checkpoint")["meta"]["step"]
        except (OSError, ValueError, KeyError, TypeError):  # InputError is a ValueError; loading says what is wrong
            step = -1
        ordered.append((step if isinstance(step, int) and not isinstance(step, bool) else -1, path.name, path))
    first_error: InputError | None = None
    for _, _, path in sorted(ordered, key=lambda entry: (-entry[0], entry[1])):
        try:
            return load(path, run_dir)
        except InputError as err:
            first_error = first_error or err
    if first_error is not None:
        raise first_error
    return None
