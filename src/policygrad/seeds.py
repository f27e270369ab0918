"""Several seeds of one configuration: ``policygrad train --seeds 0,1,2 [--jobs N]``.

The same holds for the sequence tasks (``--env seq:TASK``): each seed is a sequence run, and the
summary reports its greedy held-out success rate instead of an evaluation return.

Each seed is an ordinary run directory, ``<base>/seed_<K>``, where ``<base>`` is the ``--out``
directory or ``runs/<algo>-<env>-<time>``. ``policygrad eval``, ``plot`` and ``train --resume``
read each one as any other run, and ``policygrad plot <base>`` plots them all as one group.

Everything is checked before a directory is created: the seeds, every seed's resolved
configuration, the run directories (each missing or empty), and one session built and closed
(environment, spaces, backend, device), so bad input leaves no trace. The runs then go to
separate processes (``spawn``), at most ``jobs`` at once. Each run is quiet (no progress bar),
uses the threads its config asks for (``torch_threads`` and ``blas_threads``, 1 each by
default), and has whatever it prints prefixed with ``[seed K]``. A run that fails stops only
itself: the others go on, and its directory is kept or removed exactly as a single run's would be
(kept with its last checkpoint after a training error, removed after bad input found at the
start).
"""

from __future__ import annotations

import io
import multiprocessing
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, TextIO

from policygrad.errors import InputError, PolicygradError, shown
from policygrad.rundir import check_new_run_dir

__all__ = ["SeedResult", "check_seed_run_dirs", "format_results", "parse_seeds", "run_seeds", "seed_run_dir"]

SEED_DIR_PREFIX = "seed_"
"""A seed's run directory is ``<base>/seed_<K>``."""


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``.

    Raises:
        InputError: an entry that is not an integer, or a seed listed twice.
    """
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise InputError(f"--seeds expects comma-separated integers such as 0,1,2, got {shown(text)}") from None
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise InputError(f"--seeds lists seed {repeated[0]} more than once")
    return seeds


def seed_run_dir(base: Path, seed: int) -> Path:
    """The run directory of ``seed`` under ``base``."""
    return base / f"{SEED_DIR_PREFIX}{seed}"


def check_seed_run_dirs(base: Path, seeds: Sequence[int]) -> list[Path]:
    """The seeds' run directories under ``base``, each checked to be missing or empty.

    ``base`` itself may exist and hold other seeds' runs (``--seeds 3,4`` next to ``0,1,2``).

    Raises:
        InputError: ``base`` is a file, or a seed's directory holds anything.
    """
    if base.exists() and not base.is_dir():
        raise InputError(f"--out {base} exists and is not a directory")
    run_dirs = [seed_run_dir(base, seed) for seed in seeds]
    for run_dir in run_dirs:
        check_new_run_dir(run_dir)
    return run_dirs


@dataclass(frozen=True)
class SeedResult:
    """How one seed's run ended."""

    seed: int
    run_dir: Path
    exit_code: int
    """0, or the exit code ``policygrad train`` would have had for this run alone."""
    seconds: float
    """Wall time of the run's process, start to end."""
    summary: dict[str, Any] | None
    """:func:`policygrad.training.train`'s summary (None if the run failed)."""
    error: str | None
    """The one-line error of a failed run."""


class _Prefixed(io.TextIOBase):
    """A text stream that starts every line it passes on with ``prefix``."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self.stream, self.prefix, self.at_line_start = stream, prefix, True

    def write(self, text: str) -> int:
        pieces = []
        for line in text.splitlines(keepends=True):
            if self.at_line_start:
                pieces.append(self.prefix)
            pieces.append(line)
            self.at_line_start = line.endswith("\n")
        self.stream.write("".join(pieces))
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _run(spec: Any, run_dir: Path, device: str | None) -> dict[str, Any]:
    """Train one seed's run (a classic or a sequence run) and return its summary."""
    from policygrad.sequence_training import SequenceSpec, start_sequence_run

    if isinstance(spec, SequenceSpec):
        session, summary = start_sequence_run(spec, run_dir, quiet=True)
        session.close()
        return summary
    from policygrad.plots import plot_learning_curve
    from policygrad.rundir import start_run

    session, summary = start_run(spec, run_dir, device, quiet=True)
    session.close()
    if not summary.get("interrupted"):
        try:
            plot_learning_curve(run_dir)
        except PolicygradError:
            pass  # as a quiet single run: no curve to draw is not an error
    summary["eval_returns"] = [float(r) for r in summary["eval_returns"]]
    return summary


def _train_one(spec: Any, run_dir: str, device: str | None, conn: Connection) -> None:
    """One seed's run, in its own process: what ``policygrad train --quiet`` does for one run,
    with the outcome sent to the parent instead of printed."""
    sys.stdout = _Prefixed(sys.stdout, f"[seed {spec.seed}] ")
    sys.stderr = _Prefixed(sys.stderr, f"[seed {spec.seed}] ")
    from policygrad.errors import signal_name

    message: dict[str, Any]
    try:
        summary = _run(spec, Path(run_dir), device)
        signum = summary.get("interrupted")
        if signum:  # a stopped run is not a finished one: its exit code is the single run's
            message = {"exit_code": 128 + signum, "error": f"stopped by {signal_name(signum)} at step "
                       f"{summary['step']}; continue with: policygrad train --resume {run_dir}"}
        else:
            message = {"exit_code": 0, "summary": summary}
    except PolicygradError as err:
        message = {"exit_code": err.exit_code, "error": str(err)}
    except KeyboardInterrupt:
        message = {"exit_code": 130, "error": "interrupted"}
    except Exception as err:  # noqa: BLE001  (a bug: the traceback helps, the other seeds go on)
        traceback.print_exc()
        message = {"exit_code": 1, "error": f"{type(err).__name__}: {err}"}
    conn.send(message)
    conn.close()


def run_seeds(specs: Sequence[Any], run_dirs: Sequence[Path], device: str | None, jobs: int,
              quiet: bool = False) -> list[SeedResult]:
    """Train each spec into its run directory in its own process, at most ``jobs`` at once.

    Args:
        specs: one resolved run per seed (:class:`~policygrad.runconfig.RunSpec`, or
            :class:`~policygrad.sequence_training.SequenceSpec` for a sequence task), checked (see
            the module docstring).
        run_dirs: their run directories, missing or empty.
        device: as ``--device``.
        jobs: how many processes run at once (at least 1).
        quiet: print nothing but errors (otherwise a line when each run starts and ends).

    Returns:
        One result per spec, in the order of ``specs``.
    """
    context = multiprocessing.get_context("spawn")  # not fork: the parent has torch's threads
    pending = list(zip(specs, run_dirs))
    running: dict[Connection, tuple[Any, Any, Path, float]] = {}
    results: dict[int, SeedResult] = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                spec, run_dir = pending.pop(0)
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_train_one, args=(spec, str(run_dir), device, send),
                                          name=f"policygrad-seed-{spec.seed}")
                process.start()
                send.close()  # the child holds the only writer: its exit makes `receive` readable
                running[receive] = (process, spec, run_dir, time.perf_counter())
                if not quiet:
                    print(f"seed {spec.seed}: training in {run_dir}", flush=True)
            for receive in wait(list(running)):
                process, spec, run_dir, started = running.pop(receive)  # type: ignore[index]
                try:
                    message = receive.recv()
                except EOFError:  # the process ended without a word (killed, out of memory)
                    message = None
                receive.close()
                process.join()
                if message is None:
                    code = process.exitcode if process.exitcode and process.exitcode > 0 else 1
                    message = {"exit_code": code, "error": f"its process ended with exit code {process.exitcode}"}
                result = SeedResult(spec.seed, run_dir, message["exit_code"], time.perf_counter() - started,
                                    message.get("summary"), message.get("error"))
                results[spec.seed] = result
                _report(result, quiet)
    finally:
        for process, *_ in running.values():  # interrupted: the children had the same signal
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()
    return [results[spec.seed] for spec in specs]


def _report(result: SeedResult, quiet: bool) -> None:
    if result.exit_code:
        print(f"[seed {result.seed}] policygrad: error: {result.error}", file=sys.stderr, flush=True)
    elif not quiet:
        summary = result.summary
        assert summary is not None
        if "success_rate" in summary:
            print(f"seed {result.seed}: {summary['step']} steps in {result.seconds:.1f} s; greedy evaluation on "
                  f"{summary['prompts']} held-out prompts: success rate {summary['success_rate']:.3f}, mean reward "
                  f"{summary['mean_return']:.3f}", flush=True)
            return
        mean, std = _mean_std(summary["eval_returns"])
        print(f"seed {result.seed}: {summary['step']} steps in {result.seconds:.1f} s; deterministic "
              f"evaluation return {mean:.2f} ± {std:.2f}", flush=True)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def format_results(results: Sequence[SeedResult], sequence: bool = False) -> str:
    """The summary table: seed, run directory, steps, the final evaluation, wall time, status. The
    final evaluation is the deterministic return (mean and standard deviation over the episodes),
    or with ``sequence`` the greedy held-out success rate and mean reward of a sequence run."""
    from policygrad.logging import format_table

    rows = []
    for r in results:
        row: dict[str, Any] = {"seed": r.seed, "run_dir": str(r.run_dir), "seconds": round(r.seconds, 1)}
        if r.summary is not None and sequence:
            row.update(steps=r.summary["step"], success_rate=round(r.summary["success_rate"], 4),
                       mean_reward=round(r.summary["mean_return"], 4), status="done")
        elif r.summary is not None:
            mean, std = _mean_std(r.summary["eval_returns"])
            row.update(steps=r.summary["step"], final_return=round(mean, 2), std=round(std, 2),
                       status="target reached" if r.summary["stopped_early"] else "done")
        else:
            row["status"] = f"failed (exit {r.exit_code})"
        rows.append(row)
    evaluation = ["success_rate", "mean_reward"] if sequence else ["final_return", "std"]
    return format_table(rows, ["seed", "run_dir", "steps", *evaluation, "seconds", "status"])
