"""Learning curves from the ``metrics.csv`` of run directories.

What is plotted against the ``step`` column (environment steps):

* ``episode_return_mean``: the mean return of the episodes that finished in each logged update
  (``episode_return`` is accepted as well);
* ``reward_per_step``: the average reward per step, for continuing tasks where episodes never end.

Each of the two gets its own panel when a run has values for it. A row where no episode finished
(a blank return) keeps the last value logged before it, so that a run's curve reaches its last
logged step. Several runs whose ``config.json`` share the same ``algo`` and ``env`` are one group
(seeds of one setting): the mean across runs is a line and the min-max range a shaded band, after
interpolating every run onto a common step grid, drawn only at steps every run covers (a mean over
only some of the seeds would jump where the others end).

matplotlib is imported inside the functions that draw, and draws with the Agg backend
(``matplotlib.figure.Figure`` + ``FigureCanvasAgg``, no ``pyplot``, no display needed).
Images are written atomically: to a temporary file that is then renamed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from policygrad.errors import InputError
from policygrad.logging import METRICS_FILE, STEP_COLUMN

__all__ = ["read_metrics", "plot_learning_curve", "plot_runs", "main_plot", "RETURN_COLUMNS", "REWARD_RATE_COLUMN"]

RETURN_COLUMNS = ("episode_return_mean", "episode_return")
"""Columns read as the episode return, in order of preference."""

REWARD_RATE_COLUMN = "reward_per_step"
"""Column read as the average reward per step (continuing tasks)."""

_Y_LABELS = {RETURN_COLUMNS[0]: "episode return", REWARD_RATE_COLUMN: "reward per step"}
_GRID_POINTS = 400


def read_metrics(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Read ``<run_dir>/metrics.csv`` into one float array per column.

    Blank or non-numeric fields become NaN, as do the fields missing from a row cut short.

    Raises:
        InputError: ``run_dir`` or its ``metrics.csv`` is missing, unreadable, or has no rows.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory {run_dir} does not exist")
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise InputError(f"{run_dir} has no {METRICS_FILE}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = [line for line in csv.reader(f) if line]
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path} is not a readable CSV file ({err})") from None
    if not lines:
        raise InputError(f"{path} is empty")
    header, rows = lines[0], lines[1:]
    if not rows:
        raise InputError(f"{path} has a header but no rows")
    data = np.full((len(rows), len(header)), np.nan)
    for i, row in enumerate(rows):
        for j, field in enumerate(row[: len(header)]):
            try:
                data[i, j] = float(field)
            except ValueError:
                pass
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
    fig = _figure(len(curves))
    for ax, (column, (x, y)) in zip(fig.axes, curves.items()):
        ax.plot(x, y, linewidth=1.5)
        _style(ax, column)
    fig.axes[0].set_title(_run_label(run_dir))
    return _save(fig, run_dir / "learning_curve.png" if out is None else Path(out))


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Overlay the learning curves of several runs, one line and band per (algo, env) group.

    Args:
        run_dirs: run directories. Runs are grouped by the ``algo`` and ``env`` of their
            ``config.json``; a run without them is a group named after its directory.
        out: the image to write (format from the suffix; parent directories are created).

    Returns:
        The path written.

    Raises:
        InputError: no run directories, a run without metrics, or no values to plot.
    """
    if not run_dirs:
        raise InputError("plot needs at least one run directory")
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
    if config_path.is_file():
        try:
            config: Any = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{config_path} is not valid JSON ({err})") from None
        except (ValueError, RecursionError, MemoryError) as err:  # an int of 5,000 digits; deep nesting
            raise InputError(f"{config_path} cannot be read ({type(err).__name__})") from None
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
    """Write ``fig`` to ``out`` atomically (temporary file, then rename)."""
    fmt = out.suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        choices = ", ".join(sorted(supported))
        raise InputError(f"cannot write image {out}: unknown format {fmt!r} (use one of {choices})")
    if out.is_dir():
        raise InputError(f"cannot write image {out}: it is a directory; name a file such as {out / 'curves.png'}")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # zlib level 1 instead of PIL's 6: a third less encoding time for a ~20% larger file.
        extra = {"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}
        fig.savefig(tmp, format=fmt, dpi=120, **extra)
        os.replace(tmp, out)
    except OSError as err:  # a parent that is a file, no permission, a full disk
        where = f" ({err.filename})" if err.filename and str(err.filename) != str(out) else ""
        raise InputError(f"cannot write image {out}: {err.strerror or err}{where}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return out
