"""CPU-bound competitor processes: a shared machine for the benchmarks that measure under load.

A competitor is a fresh Python process running ``while True: pass``: one core's worth of demand,
no memory, no I/O. :func:`competitors` starts them and, in its ``finally``, ends exactly those
processes by their own PIDs (terminate, then kill if one has not gone after 5 s) and reaps them.
Nothing else is ever signalled.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

BUSY_LOOP = "while True: pass"


def describe(k: int) -> str:
    """The load in words, for a table's heading and its ``load`` column."""
    if k == 0:
        return "idle"
    return f"{k} CPU-bound competitor process{'es' if k != 1 else ''}"


@contextlib.contextmanager
def competitors(k: int, settle: float = 0.3) -> Iterator[list[subprocess.Popen]]:
    """Run ``k`` busy-loop processes for the duration of the ``with`` block (none when ``k`` is 0).

    ``settle`` seconds pass after starting them so that they are on the CPU before the block's
    first measurement. Use :func:`check_alive` before each measurement to be sure the load is on.
    """
    if k < 0:
        raise ValueError(f"competitors must be ≥ 0, got {k}")
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(k):
            procs.append(subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if procs and settle > 0:
            time.sleep(settle)
        yield procs
    finally:
        for proc in procs:  # only the processes started above, each by its own PID
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def check_alive(procs: list[subprocess.Popen]) -> None:
    """Stop the benchmark if a competitor has exited: its results would claim a load it did not have."""
    dead = [p.pid for p in procs if p.poll() is not None]
    if dead:
        raise SystemExit(f"competitor process(es) {dead} exited; the load is no longer on")
