"""Metrics of a run: ``metrics.csv``, TensorBoard scalars, a progress bar, and text tables.

``metrics.csv`` in the run directory has one header line (the columns, fixed when the logger is
created) and one line per :meth:`MetricsLogger.log` call, flushed at once so that a crash loses at
most the line being written. A blank field means "no value in this row" (for instance no episode
finished during that update).

Reading an existing ``metrics.csv`` (a resumed run keeps its rows; ``policygrad plot`` reads it
through :func:`policygrad.plots.read_metrics`) goes through :func:`policygrad.files.read_lines`: a
regular file only, at most :data:`METRICS_MAX_BYTES`, lines of at most :data:`METRICS_MAX_LINE`
bytes, UTF-8, read line by line, so a run directory received from someone else cannot make it
hang or fill the memory.

TensorBoard scalars go to ``<run_dir>/tb/`` through ``torch.utils.tensorboard.SummaryWriter``, with
the ``step`` column as the global step and the tags of :data:`TENSORBOARD_TAGS` (``train/…``,
``rollout/…``, ``time/…``, ``eval/…``). The writer is imported only by a logger that writes events,
tqdm only by a progress bar.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from policygrad.errors import InputError
from policygrad.files import open_new, read_lines

__all__ = [
    "MetricsLogger",
    "ProgressBar",
    "format_table",
    "tensorboard_tag",
    "METRICS_FILE",
    "METRICS_MAX_BYTES",
    "METRICS_MAX_LINE",
    "STEP_COLUMN",
    "TENSORBOARD_TAGS",
]

METRICS_FILE = "metrics.csv"
"""Name of the metrics file inside a run directory."""

METRICS_MAX_BYTES = 256 * 2**20
"""The largest ``metrics.csv`` read (256 MiB). A row of the training columns takes about 200 bytes,
so this is some 1.3 million updates: A2C's CartPole preset (a row every 40 steps) for 50 million
environment steps."""

METRICS_MAX_LINE = 64 * 2**10
"""The longest line of ``metrics.csv`` read (64 KiB; a row of the training columns takes about
200 bytes)."""

STEP_COLUMN = "step"
"""The column holding the environment-step count: TensorBoard's global step and the resume key."""

TENSORBOARD_TAGS: Mapping[str, str | None] = {
    # the global step of every event, not a scalar of its own
    STEP_COLUMN: None,
    # episodes that finished during the update's rollout, and the rollout's reward rate
    "episode_return_mean": "rollout/ep_return_mean",
    "episode_length_mean": "rollout/ep_len_mean",
    "reward_per_step": "rollout/reward_per_step",  # written only by a logger with continuing=True
    # throughput and clock
    "steps_per_second": "time/steps_per_second",
    "wall_time": "time/time_elapsed",
    # the update
    "policy_loss": "train/policy_loss",
    "value_loss": "train/value_loss",
    "entropy": "train/entropy",
    "approx_kl": "train/approx_kl",
    "clip_fraction": "train/clip_fraction",
    "explained_variance": "train/explained_variance",
    "grad_norm": "train/grad_norm",
    "learning_rate": "train/learning_rate",
}
"""The TensorBoard tag of each ``metrics.csv`` column (``None``: not written to TensorBoard), in the
namespaces of Stable-Baselines3 and CleanRL: ``rollout/`` for episode statistics, ``time/`` for
throughput, ``train/`` for update metrics, ``eval/`` for evaluations. A column not listed here gets
its tag from :func:`tensorboard_tag`'s rule: ``eval_<name>`` → ``eval/<name>``, any other column (an
update metric such as ``rho`` or ``kl_beta``) → ``train/<column>``."""


def tensorboard_tag(column: str) -> str | None:
    """The TensorBoard tag of the ``metrics.csv`` column ``column``: see :data:`TENSORBOARD_TAGS`."""
    if column in TENSORBOARD_TAGS:
        return TENSORBOARD_TAGS[column]
    if column.startswith("eval_"):
        return "eval/" + column[len("eval_"):]
    return "train/" + column


class MetricsLogger:
    """Append rows of scalars to ``<run_dir>/metrics.csv`` and, optionally, to TensorBoard.

    Args:
        run_dir: the run directory; created if missing.
        columns: the CSV header, in order. Must contain ``"step"`` when ``tensorboard`` is on or
            ``resume_step`` is given.
        tensorboard: also write every finite numeric value as a TensorBoard scalar under
            ``run_dir/tb``, tagged as :data:`TENSORBOARD_TAGS` says.
        resume: continue an existing ``metrics.csv`` instead of starting a new one; without a
            file there, start a new one. Its header must hold each of its columns once, all of
            them among ``columns`` (``"step"`` among them if it is in ``columns``): a file of an earlier version that lacks some of them (a
            column added since) is rewritten atomically with the header ``columns``, those
            columns blank in its rows.
        resume_step: with ``resume``, the step the run resumes from: rows with a larger ``step``
            were logged after the checkpoint and are dropped (and hidden in TensorBoard), since the
            resumed run logs them again. ``None`` keeps every row.
        continuing: the run is a continuing task (criterion ``"average"``): write the
            ``reward_per_step`` column to TensorBoard as ``rollout/reward_per_step``, the curve of
            such a task. Otherwise that column goes to ``metrics.csv`` only.
        tensorboard_every: write a row to TensorBoard only when its step is at least this far past
            the last row written there (the first row always, a row with a value in an ``eval_``
            column always, and the last row at :meth:`close`); 0 or 1: every row. ``metrics.csv``
            gets every row.

    A fresh logger (``resume=False``) overwrites an existing ``metrics.csv``.

    Raises:
        ValueError: ``columns`` is empty, has duplicates, or lacks ``"step"`` where it is needed.
        InputError: the existing ``metrics.csv`` has a column that is not in ``columns``, or one
            twice.
        ImportError: ``tensorboard`` is on and the tensorboard package is missing.
    """

    def __init__(
        self,
        run_dir: str | Path,
        columns: Sequence[str],
        tensorboard: bool = True,
        resume: bool = False,
        resume_step: int | None = None,
        continuing: bool = False,
        tensorboard_every: int = 0,
    ) -> None:
        columns = list(columns)
        if not columns:
            raise ValueError("MetricsLogger needs at least one column")
        if len(set(columns)) != len(columns):
            raise ValueError(f"MetricsLogger columns repeat a name: {columns}")
        if (tensorboard or resume_step is not None) and STEP_COLUMN not in columns:
            raise ValueError(f"MetricsLogger columns must include {STEP_COLUMN!r} for TensorBoard or resuming")
        self.run_dir = Path(run_dir)
        self.columns = columns
        self._known = frozenset(columns)
        self.path = self.run_dir / METRICS_FILE
        self._rows_logged = 0
        self._closed = False
        self.run_dir.mkdir(parents=True, exist_ok=True)

        if resume and os.path.lexists(self.path):  # lexists: a symlink there is refused, not written through
            self._rows_logged = self._truncate_existing(resume_step)
            self._file = open(self.path, "a", newline="", encoding="utf-8")
        else:
            self._file = open(self.path, "w", newline="", encoding="utf-8")
            self._file.write(_csv_line(columns))
            self._file.flush()

        self._csv = csv.writer(self._file, lineterminator="\n")
        self._tags = {c: tensorboard_tag(c) for c in columns}
        if not continuing and "reward_per_step" in self._tags:
            self._tags["reward_per_step"] = None
        # Evaluations are rare and each one counts: a row holding one is never held back.
        self._eval_tags = frozenset(t for t in self._tags.values() if t is not None and t.startswith("eval/"))
        self._writer: _ScalarWriter | None = None
        self._tb_every = max(int(tensorboard_every), 0)
        self._tb_last: int | None = None  # the step of the last row written to TensorBoard
        self._tb_pending: tuple[int, dict[str, float]] | None = None  # a row held back, written at close
        if tensorboard:
            # purge_step hides events a crashed run wrote after the step it resumes from.
            purge_step = resume_step + 1 if resume and resume_step is not None else None
            try:
                self._writer = _ScalarWriter(self.run_dir / "tb", purge_step=purge_step)
            except BaseException:
                self._file.close()
                raise

    def _truncate_existing(self, resume_step: int | None) -> int:
        """Keep the rows up to ``resume_step`` and rewrite the file atomically, with the header
        ``columns`` (see ``resume``); returns the rows' count. Read line by line (see the module
        docstring), so the memory taken does not grow with the file."""
        lines = read_lines(self.path, "metrics file", METRICS_MAX_BYTES, METRICS_MAX_LINE)
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        kept = 0
        try:
            header = _csv_row(next(lines, ""))
            if not header:
                raise InputError(f"cannot resume: {self.path} is empty")
            if (len(set(header)) != len(header) or not set(header) <= self._known
                    or (STEP_COLUMN in self._known and STEP_COLUMN not in header)):
                raise InputError(
                    f"cannot resume: {self.path} has columns {header}, this run logs {self.columns}"
                )
            strict = resume_step is not None or header != self.columns
            at = header.index(STEP_COLUMN) if resume_step is not None else -1
            where = {name: i for i, name in enumerate(header)}
            with open(open_new(tmp), "w", newline="", encoding="utf-8") as f:
                f.write(_csv_line(self.columns))
                for line in lines:
                    if not line.endswith("\n"):
                        break  # the last line, cut short by a crash
                    row = _csv_row(line)
                    if not row or (strict and len(row) != len(header)):
                        continue
                    if resume_step is not None and _step_of(row[at]) > resume_step:
                        continue
                    if header != self.columns:  # an earlier version's file: the columns added since are blank
                        row = [row[where[c]] if c in where else "" for c in self.columns]
                    f.write(_csv_line(row))
                    kept += 1
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except csv.Error as err:
            raise InputError(f"cannot resume: {self.path} is not a readable CSV file ({err})") from None
        finally:
            lines.close()
            tmp.unlink(missing_ok=True)
        return kept

    def log(self, row: Mapping[str, Any]) -> None:
        """Append one row; columns missing from ``row`` (or ``None``) stay blank.

        Values may be Python, NumPy or one-element torch scalars, or strings (CSV only).

        Raises:
            ValueError: ``row`` has a key that is not a column, or a value that is not a scalar.
        """
        if self._closed:
            raise ValueError("MetricsLogger.log called after close()")
        unknown = [k for k in row if k not in self._known]
        if unknown:
            raise ValueError(f"metrics row has unknown columns {unknown}; the columns are {self.columns}")
        values = {k: _scalar(k, v) for k, v in row.items()}
        self._csv.writerow(["" if values.get(c) is None else _format_value(values[c]) for c in self.columns])
        self._file.flush()  # whole rows on disk: a killed run leaves no half-written line to resume from
        self._rows_logged += 1
        if self._writer is not None:
            step = values.get(STEP_COLUMN)
            global_step = int(step) if _is_finite(step) else self._rows_logged
            tags = self._tags
            scalars = {tags[name]: value for name, value in values.items() if tags[name] is not None and _is_finite(value)}
            due = self._tb_last is None or global_step - self._tb_last >= self._tb_every
            if due or not self._eval_tags.isdisjoint(scalars):
                self._writer.scalars(global_step, scalars)
                self._tb_last, self._tb_pending = global_step, None
            else:
                self._tb_pending = (global_step, scalars)

    def close(self) -> None:
        """Flush and close the CSV file and the TensorBoard writer; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._file.close()
        if self._writer is not None:
            if self._tb_pending is not None:  # the run's last row, whatever its distance
                self._writer.scalars(*self._tb_pending)
            self._writer.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ScalarWriter:
    """Scalars to TensorBoard through ``torch.utils.tensorboard.SummaryWriter``, one event per row.

    Args:
        log_dir: the directory of the event files; created if missing.
        purge_step: hide events of earlier files at this step and after (a resumed run writes
            them again); ``None`` hides nothing.

    Why SummaryWriter and not tensorboard's own ``EventFileWriter``: both import the same
    ``tensorboard.summary`` package (most of the ~0.15-0.25 s import); SummaryWriter adds ~5 ms of
    its own modules and writes the purge events itself. Each row is one ``Summary`` of all its
    scalars handed to the writer's ``file_writer``, not one ``add_scalar`` call per value: the
    writer thread computes each event's CRCs in pure Python, so a dozen events per row cost about
    eight times as much (~1 ms instead of ~0.12 ms per row).
    """

    def __init__(self, log_dir: Path, purge_step: int | None) -> None:
        try:
            from tensorboard.compat.proto.summary_pb2 import Summary
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(
                f"writing TensorBoard events needs the tensorboard package ({err}); install it, or turn tensorboard off"
            ) from err
        self._summary = Summary
        if log_dir.is_symlink():
            raise InputError(f"{log_dir} is a symlink; refusing to write TensorBoard events through it")
        if purge_step is not None:
            _wait_past_event_files(log_dir)
        self._writer = SummaryWriter(str(log_dir), purge_step=purge_step, flush_secs=10)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One event at ``step`` holding every ``tag: value`` of ``values`` (none: no event)."""
        if not values:
            return
        Summary = self._summary
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in values.items()])
        self._writer.file_writer.add_summary(summary, step)

    def close(self) -> None:
        self._writer.close()


def _wait_past_event_files(log_dir: Path) -> None:
    """Sleep until the clock is past the second in the name of every event file in ``log_dir``.

    TensorBoard reads a directory's event files in name order, and a name is
    ``events.out.tfevents.<second>.<host>.<pid>.<n>`` with an unpadded n: a file written in the same
    second as an earlier one may sort before it (n = 10 before n = 9), and then the purge of a resumed
    run would act before the events it hides. Resuming within a second of the last start is rare
    (a test, ``Model.learn`` of a few steps twice); then it waits less than a second.
    """
    seconds = []
    for path in log_dir.glob("events.out.tfevents.*"):
        field = path.name.split(".")[3]
        if field.isascii() and field.isdigit() and len(field) <= 12:
            seconds.append(int(field))
    if seconds:
        delay = max(seconds) + 1 - time.time()
        if 0 < delay <= 1:  # a name further ahead is no file of this clock (copied, or made up): no waiting
            time.sleep(delay)


def _is_finite(value: Any) -> bool:
    """A number TensorBoard can plot: an int, or a float other than nan and ±inf."""
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _csv_row(line: str) -> list[str]:
    """The fields of one CSV line (``[]`` for a blank one)."""
    return next(csv.reader([line]), [])


def _csv_line(fields: Iterable[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(list(fields))
    return out.getvalue()


def _step_of(field: str) -> float:
    """The step of a CSV row; a blank or unreadable step sorts after every real one."""
    try:
        return float(field)
    except ValueError:
        return math.inf


def _scalar(name: str, value: Any) -> int | float | str | None:
    if type(value) is float:  # the usual case, first
        return value
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    item = getattr(value, "item", None)  # NumPy scalars, 0-d arrays, one-element tensors
    if item is not None:
        try:
            return _scalar(name, item())
        except (ValueError, RuntimeError):
            pass
    raise ValueError(f"metrics value for {name!r} is not a scalar: {type(value).__name__}")


def _format_value(value: int | float | str) -> str:
    # repr keeps every digit of a float, so the CSV round-trips exactly.
    return repr(value) if isinstance(value, float) else str(value)


class ProgressBar:
    """A progress bar over environment steps on stderr: steps/s, ETA, and the recent episode return.

    Args:
        total_steps: environment steps of the whole run.
        initial: steps already done (a resumed run).
        enabled: ``False`` prints nothing at all.

    The recent return shown is the last ``episode_return`` given; it stays on the bar until a new
    one arrives.
    """

    def __init__(self, total_steps: int, initial: int = 0, enabled: bool = True) -> None:
        from tqdm import tqdm

        self._postfix: dict[str, str] = {}
        self._latest: dict[str, Any] = {}  # values given since the postfix was last formatted
        self._bar = tqdm(
            total=total_steps,
            initial=initial,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            file=sys.stderr,
            disable=not enabled,
            mininterval=0.5,
        )

    def update(self, steps: int, episode_return: float | None = None, extra: Mapping[str, Any] | None = None) -> None:
        """Advance by ``steps`` environment steps (an increment, not a total).

        Args:
            steps: environment steps taken since the previous call.
            episode_return: the return of recently finished episodes, if any finished.
            extra: other values to show, e.g. ``{"kl": 0.01}``.
        """
        bar = self._bar
        if bar.disable:
            return
        # The values are formatted only when tqdm may redraw (mininterval has passed since its last
        # print): formatting them on every call costs more than a small update.
        if episode_return is not None:
            self._latest["return"] = episode_return
        if extra:
            self._latest.update(extra)
        if self._latest and time.time() - bar.last_print_t >= bar.mininterval:  # tqdm's clock is time.time
            self._postfix.update((name, _short(value)) for name, value in self._latest.items())
            self._latest.clear()
            bar.set_postfix(self._postfix, refresh=False)
        bar.update(steps)

    def write(self, message: str) -> None:
        """Print a line above the bar without breaking it."""
        if self._bar.disable:
            return
        self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        if self._latest and not self._bar.disable:  # the final bar shows the latest values
            self._postfix.update((name, _short(value)) for name, value in self._latest.items())
            self._latest.clear()
            self._bar.set_postfix(self._postfix, refresh=False)
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(value: Any) -> str:
    value = _plain(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Render ``rows`` as an aligned text table with a header line and a rule.

    Columns whose values are all numbers are right-aligned (floats to 6 significant digits), the
    others left-aligned; a missing key or ``None`` is blank. No trailing newline.

    Example::

        algo  return   steps
        ----  ------  ------
        ppo    487.3  100000
        a2c   201.25   50000
    """
    columns = list(columns)
    values = [[_plain(row.get(c)) for c in columns] for row in rows]
    numeric = [
        all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in (r[i] for r in values))
        for i in range(len(columns))
    ]
    cells = [["" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v) for v in r] for r in values]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(fields: Sequence[str]) -> str:
        parts = [f.rjust(w) if num else f.ljust(w) for f, w, num in zip(fields, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _plain(value: Any) -> Any:
    """NumPy and torch scalars as Python numbers; everything else unchanged."""
    if not isinstance(value, (str, bool, int, float)) and hasattr(value, "item"):
        try:
            return value.item()
        except (TypeError, ValueError, RuntimeError):
            return value
    return value
