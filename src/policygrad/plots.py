"""Learning curves from the ``metrics.csv`` of run directories.

What is plotted against the ``step`` column (environment steps):

* ``episode_return_mean``: the mean return of the episodes that finished in each logged update
  (``episode_return`` is accepted as well);
* ``reward_per_step``: the average reward per step, for continuing tasks where episodes never end.

Each of the two gets its own panel when a run has values for it. One run's learning curve also
shows the evaluations during training (``eval_return``, the deterministic policy's mean return)
as points on the return panel. A row where no episode finished
(a blank return) keeps the last value logged before it, so that a run's curve reaches its last
logged step. Several runs whose ``config.json`` share the same ``algo`` and ``env`` are one group
(seeds of one setting): the mean across runs is a line and the min-max range a shaded band, after
interpolating every run onto a common step grid, drawn only at steps every run covers (a mean over
only some of the seeds would jump where the others end). A directory that is not a run but holds
runs (``policygrad train --seeds`` writes ``DIR/seed_K``) stands for the runs in it.

A run directory may come from someone else: ``metrics.csv`` is read as
:mod:`policygrad.logging` says (a regular file of at most ``METRICS_MAX_BYTES``, lines of at most
``METRICS_MAX_LINE``, UTF-8), into at most :data:`MAX_VALUES` numbers, and ``config.json`` as
:func:`policygrad.files.read_json` reads JSON; whatever they hold, plotting ends with an image or
one :class:`~policygrad.errors.InputError` line.

matplotlib is imported inside the functions that draw, and draws with the Agg backend
(``matplotlib.figure.Figure`` + ``FigureCanvasAgg``, no ``pyplot``, no display needed).
Images are written atomically: to a temporary file that is then renamed.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from policygrad.errors import InputError
from policygrad.files import open_new, read_json, read_lines
from policygrad.logging import METRICS_FILE, METRICS_MAX_BYTES, METRICS_MAX_LINE, STEP_COLUMN

__all__ = [
    "read_metrics", "plot_learning_curve", "plot_runs", "expand_run_dirs", "main_plot", "RETURN_COLUMNS",
    "REWARD_RATE_COLUMN", "EVAL_COLUMN", "MAX_VALUES",
]

RETURN_COLUMNS = ("episode_return_mean", "episode_return")
"""Columns read as the episode return, in order of preference."""

REWARD_RATE_COLUMN = "reward_per_step"
"""Column read as the average reward per step (continuing tasks)."""

EVAL_COLUMN = "eval_return"
"""Column read as the evaluations during training (blank in rows without one)."""

MAX_VALUES = 2**24
"""The most numbers (rows × columns) :func:`read_metrics` reads: 128 MiB as float64, some 1.2 million
rows of the 14 training columns (a 256 MiB metrics.csv holds about that many)."""

_Y_LABELS = {RETURN_COLUMNS[0]: "episode return", REWARD_RATE_COLUMN: "reward per step"}
_GRID_POINTS = 400


def read_metrics(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Read ``<run_dir>/metrics.csv`` into one float array per column.

    Blank or non-numeric fields become NaN, as do the fields missing from a row cut short; fields
    beyond the header's are ignored.

    Raises:
        InputError: ``run_dir`` or its ``metrics.csv`` is missing, unreadable, not a regular file,
            larger than ``METRICS_MAX_BYTES``, has a line longer than ``METRICS_MAX_LINE``, more
            than :data:`MAX_VALUES` numbers, or has no rows.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory {run_dir} does not exist")
    path = run_dir / METRICS_FILE
    header: list[str] | None = None
    chunks: list[np.ndarray] = []
    rows: list[list[float]] = []
    count = 0
    try:
        lines = read_lines(path, "metrics file", METRICS_MAX_BYTES, METRICS_MAX_LINE)
        for row in csv.reader(lines):
            if not row:
                continue
            if header is None:
                header = row
                continue
            values = [math.nan] * len(header)
            for j, field in enumerate(row[: len(header)]):
                try:
                    values[j] = float(field)
                except ValueError:
                    pass
            rows.append(values)
            count += 1
            if count * len(header) > MAX_VALUES:
                raise InputError(f"{path} holds more than {MAX_VALUES} values; too many to plot")
            if len(rows) == 4096:  # whole arrays: a list of floats takes four times the memory
                chunks.append(np.array(rows, dtype=np.float64))
                rows = []
    except FileNotFoundError:
        raise InputError(f"{run_dir} has no {METRICS_FILE}") from None
    except csv.Error as err:
        raise InputError(f"{path} is not a readable CSV file ({err})") from None
    if header is None:
        raise InputError(f"{path} is empty")
    if rows:
        chunks.append(np.array(rows, dtype=np.float64))
    if not chunks:
        raise InputError(f"{path} has a header but no rows")
    data = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    return {name: data[:, j].copy() for j, name in enumerate(header)}


def plot_learning_curve(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Plot one run's learning curve(s) against environment steps.

    Args:
        run_dir: the run directory.
        out: the image to write; default ``<run_dir>/learning_curve.png``. The format follows the
            suffix (``.png``, ``.svg``, ``.pdf``, ...).

    Returns:
        The path written.

    Raises:
        InputError: the metrics are missing or hold no return or reward-per-step values.
    """
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    curves = _curves(metrics, run_dir)
    if not curves:
        raise InputError(f"{run_dir / METRICS_FILE} has no values of {RETURN_COLUMNS[0]} or {REWARD_RATE_COLUMN}")
    evaluations = _points(metrics, EVAL_COLUMN)
    fig = _figure(len(curves))
    for ax, (column, (x, y)) in zip(fig.axes, curves.items()):
        ax.plot(x, y, linewidth=1.5, label="training episodes")
        if column == RETURN_COLUMNS[0] and evaluations is not None:
            ax.plot(*evaluations, marker="o", markersize=3, linewidth=1, label="evaluation (deterministic)")
            ax.legend(loc="best", fontsize="small")
        _style(ax, column)
    fig.axes[0].set_title(_run_label(run_dir))
    return _save(fig, run_dir / "learning_curve.png" if out is None else Path(out))


def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """``paths`` with each directory of runs replaced by the runs in it.

    A directory without ``metrics.csv`` whose subdirectories have one (the seeds of
    ``policygrad train --seeds``) stands for those subdirectories, in natural order (``seed_2``
    before ``seed_10``); every other path is kept as it is.
    """
    expanded: list[Path] = []
    for path in map(Path, paths):
        runs = [] if (path / METRICS_FILE).exists() or not path.is_dir() else [
            child for child in path.iterdir() if (child / METRICS_FILE).is_file()]
        expanded.extend(sorted(runs, key=_natural_key) if runs else [path])
    return expanded


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Overlay the learning curves of several runs, one line and band per (algo, env) group.

    Args:
        run_dirs: run directories, or directories of runs (:func:`expand_run_dirs`). Runs are
            grouped by the ``algo`` and ``env`` of their ``config.json``; a run without them is
            a group named after its directory.
        out: the image to write (format from the suffix; parent directories are created).

    Returns:
        The path written.

    Raises:
        InputError: no run directories, a run without metrics, or no values to plot.
    """
    if not run_dirs:
        raise InputError("plot needs at least one run directory")
    run_dirs = expand_run_dirs(run_dirs)
    groups: dict[str, list[dict[str, tuple[np.ndarray, np.ndarray]]]] = {}
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        groups.setdefault(_run_label(run_dir), []).append(_curves(read_metrics(run_dir), run_dir))

    present = {column for runs in groups.values() for run in runs for column in run}
    columns = [c for c in (RETURN_COLUMNS[0], REWARD_RATE_COLUMN) if c in present]
    if not columns:
        raise InputError(f"none of the runs has values of {RETURN_COLUMNS[0]} or {REWARD_RATE_COLUMN}")
    fig = _figure(len(columns))
    colors = [f"C{i % 10}" for i in range(len(groups))]
    for ax, column in zip(fig.axes, columns):
        for color, (label, runs) in zip(colors, groups.items()):
            curves = [run[column] for run in runs if column in run]
            if not curves:
                continue
            if len(curves) == 1:
                ax.plot(*curves[0], color=color, linewidth=1.5, label=label)
                continue
            grid, mean, low, high = _aggregate(curves)
            ax.plot(grid, mean, color=color, linewidth=1.5, label=f"{label} (mean, min-max of {len(curves)} runs)")
            ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
        _style(ax, column)
        ax.legend(loc="best", fontsize="small")
    return _save(fig, Path(out))


def main_plot(args: argparse.Namespace) -> int:
    """``policygrad plot RUN_DIR... [--out FILE.png]``: overlay runs, print the image's path."""
    out = Path(args.out) if args.out else Path("learning_curves.png")
    path = plot_runs(args.run_dirs, out)
    print(path)
    return 0


def _curves(metrics: dict[str, np.ndarray], run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Plotted quantity -> (steps, values), sorted by step, for the quantities with finite values.

    The keys are ``RETURN_COLUMNS[0]`` (from the first return column with values) and
    ``REWARD_RATE_COLUMN``.
    """
    if STEP_COLUMN not in metrics:
        raise InputError(f"{run_dir / METRICS_FILE} has no {STEP_COLUMN!r} column")
    steps = metrics[STEP_COLUMN]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for column in (*RETURN_COLUMNS, REWARD_RATE_COLUMN):
        key = RETURN_COLUMNS[0] if column in RETURN_COLUMNS else column
        if column not in metrics or key in curves:
            continue
        logged = np.isfinite(steps)
        order = np.argsort(steps[logged], kind="stable")
        x, y = steps[logged][order], metrics[column][logged][order]
        known = np.isfinite(y)
        if not known.any():
            continue
        first = int(np.argmax(known))
        x, y, known = x[first:], y[first:], known[first:]
        last_known = np.maximum.accumulate(np.where(known, np.arange(len(y)), 0))  # carry the last value forward
        curves[key] = (x, y[last_known])
    return curves


def _points(metrics: dict[str, np.ndarray], column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values) of the rows with a value in ``column``, sorted by step; None if there are none."""
    if column not in metrics or STEP_COLUMN not in metrics:
        return None
    steps, values = metrics[STEP_COLUMN], metrics[column]
    known = np.isfinite(steps) & np.isfinite(values)
    if not known.any():
        return None
    order = np.argsort(steps[known], kind="stable")
    return steps[known][order], values[known][order]


def _aggregate(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Mean, min and max of several curves on a common step grid (linear interpolation).

    Only grid points inside every run's step range are kept: each statistic is over all the runs.
    """
    all_steps = np.unique(np.concatenate([x for x, _ in curves]))
    grid = all_steps if len(all_steps) <= _GRID_POINTS else np.linspace(all_steps[0], all_steps[-1], _GRID_POINTS)
    ys = np.stack([np.interp(grid, x, y, left=np.nan, right=np.nan) for x, y in curves])  # [runs, grid]
    covered = np.isfinite(ys).all(axis=0)
    grid, ys = grid[covered], ys[:, covered]
    return grid, np.nanmean(ys, axis=0), np.nanmin(ys, axis=0), np.nanmax(ys, axis=0)


def _run_label(run_dir: Path) -> str:
    """``"<algo> <env>"`` from ``config.json`` when it names them, else the directory's name."""
    config_path = run_dir / "config.json"
    if os.path.lexists(config_path):
        try:
            config: Any = read_json(config_path, "run configuration")
        except FileNotFoundError:
            config = None
        if isinstance(config, dict):
            parts = [str(config[k]) for k in ("algo", "env") if config.get(k) is not None]
            if parts:
                return " ".join(parts)
    return run_dir.resolve().name


# Fixed margins (inches) instead of a layout engine: constrained layout costs a second draw pass
# at save time (about 40% of the drawing). They leave room for the y label with tick labels of
# up to about seven characters ("−1500.0"), the x label, and a title or offset text above.
_WIDTH, _PANEL_HEIGHT = 7.0, 3.2
_LEFT, _RIGHT, _BOTTOM, _TOP, _GAP = 1.0, 0.2, 0.55, 0.35, 0.3


def _figure(panels: int) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height = _PANEL_HEIGHT * panels
    fig = Figure(figsize=(_WIDTH, height))
    FigureCanvasAgg(fig)
    axes_height = (height - _BOTTOM - _TOP - _GAP * (panels - 1)) / panels
    fig.subplots_adjust(
        left=_LEFT / _WIDTH, right=1 - _RIGHT / _WIDTH, bottom=_BOTTOM / height, top=1 - _TOP / height,
        hspace=_GAP / axes_height,
    )
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    axes[-1].set_xlabel("environment steps")
    return fig


def _style(ax: Any, column: str) -> None:
    ax.set_ylabel(_Y_LABELS.get(column, column))
    ax.grid(True, alpha=0.3)


def _save(fig: Any, out: Path) -> Path:
    """Write ``fig`` to ``out`` atomically (temporary file, then rename); InputError if it cannot be."""
    fmt = out.suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        choices = ", ".join(sorted(supported))
        raise InputError(f"cannot write image {out}: unknown format {fmt!r} (use one of {choices})")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # zlib level 1 instead of PIL's 6: a third less encoding time for a ~20% larger file.
        extra = {"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}
        with open(open_new(tmp), "wb") as f:  # never through a symlink planted under the temporary name
            fig.savefig(f, format=fmt, dpi=120, **extra)
        os.replace(tmp, out)
    except OSError as err:  # e.g. a directory where the image goes
        raise InputError(f"cannot write image {out}: {err.strerror or err}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return out
