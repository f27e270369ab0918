"""Metrics of a run: ``metrics.csv``, TensorBoard scalars, a progress bar, and text tables.

``metrics.csv`` in the run directory has one header line (the columns, fixed when the logger is
created) and one line per :meth:`MetricsLogger.log` call, flushed at once so that a crash loses at
most the line being written. A blank field means "no value in this row" (for instance no episode
finished during that update). TensorBoard scalars go to ``<run_dir>/tb/`` with the ``step``
column as the global step.

TensorBoard events are encoded here (a few protocol-buffer fields, see :class:`EventFile`), so
writing them imports neither tensorboard nor protobuf; tqdm is imported only when used.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from policygrad.errors import InputError

__all__ = ["MetricsLogger", "EventFile", "ProgressBar", "format_table", "METRICS_FILE", "STEP_COLUMN"]

METRICS_FILE = "metrics.csv"
"""Name of the metrics file inside a run directory."""

STEP_COLUMN = "step"
"""The column holding the environment-step count: TensorBoard's global step and the resume key."""


class MetricsLogger:
    """Append rows of scalars to ``<run_dir>/metrics.csv`` and, optionally, to TensorBoard.

    Args:
        run_dir: the run directory; created if missing.
        columns: the CSV header, in order. Must contain ``"step"`` when ``tensorboard`` is on or
            ``resume_step`` is given.
        tensorboard: also write every numeric value as a TensorBoard scalar under ``run_dir/tb``.
        resume: continue an existing ``metrics.csv`` (whose header must equal ``columns``)
            instead of starting a new one; without a file there, start a new one.
        resume_step: with ``resume``, the step the run resumes from: rows with a larger ``step``
            were logged after the checkpoint and are dropped (and hidden in TensorBoard), since the
            resumed run logs them again. ``None`` keeps every row.

    A fresh logger (``resume=False``) overwrites an existing ``metrics.csv``.

    Raises:
        ValueError: ``columns`` is empty, has duplicates, or lacks ``"step"`` where it is needed.
        InputError: the existing ``metrics.csv`` has other columns than ``columns``.
    """

    def __init__(
        self,
        run_dir: str | Path,
        columns: Sequence[str],
        tensorboard: bool = True,
        resume: bool = False,
        resume_step: int | None = None,
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

        if resume and self.path.exists():
            self._rows_logged = self._truncate_existing(resume_step)
            self._file = open(self.path, "a", newline="", encoding="utf-8")
        else:
            self._file = open(self.path, "w", newline="", encoding="utf-8")
            self._file.write(_csv_line(columns))
            self._file.flush()

        self._csv = csv.writer(self._file, lineterminator="\n")
        self._writer: EventFile | None = None
        if tensorboard:
            # purge_step hides events a crashed run wrote after the step it resumes from.
            purge_step = resume_step + 1 if resume and resume_step is not None else None
            self._writer = EventFile(self.run_dir / "tb", purge_step=purge_step)

    def _truncate_existing(self, resume_step: int | None) -> int:
        """Keep the rows up to ``resume_step`` and rewrite the file atomically; returns their count."""
        text = self.path.read_text(encoding="utf-8")
        lines = list(csv.reader(io.StringIO(text)))
        if not lines:
            raise InputError(f"cannot resume: {self.path} is empty")
        if lines[0] != self.columns:
            raise InputError(
                f"cannot resume: {self.path} has columns {lines[0]}, this run logs {self.columns}"
            )
        rows = lines[1:]
        if rows and not text.endswith("\n"):
            rows.pop()  # a line cut short by a crash
        if resume_step is not None:
            at = self.columns.index(STEP_COLUMN)
            rows = [r for r in rows if len(r) == len(self.columns) and _step_of(r[at]) <= resume_step]
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            f.write(_csv_line(self.columns))
            for r in rows:
                f.write(_csv_line(r))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return len(rows)

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
            global_step = int(step) if isinstance(step, (int, float)) else self._rows_logged
            self._writer.scalars(
                global_step,
                {name: value for name, value in values.items() if name != STEP_COLUMN and isinstance(value, (int, float))},
            )

    def close(self) -> None:
        """Flush and close the CSV file and the TensorBoard writer; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventFile:
    """A TensorBoard event file, written in the calling thread.

    What ``torch.utils.tensorboard.SummaryWriter`` writes, without its writer thread: a file
    ``events.out.tfevents.<time>.<host>.<pid>.<n>`` of TFRecords (the length, the masked CRC-32C of
    the length, an ``Event`` protocol buffer, its masked CRC-32C), starting with the file-version
    event, then (``purge_step``) the session-start event that makes TensorBoard hide older events
    from that step on, then one event per :meth:`scalars` call holding all its scalars. Events are
    flushed to disk every ``flush_secs`` and at :meth:`close`.

    Why not SummaryWriter: its thread computes the CRCs in pure Python while holding the
    interpreter lock, and hands every event over through a queue; for a run that logs a row per
    update (A2C: thousands) that took about a fifth of the training time. Why not tensorboard's
    ``Event`` classes: importing them (protobuf) cost ~11 ms per process, for the handful of fields
    :func:`_event` writes.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None, flush_secs: float = 10.0) -> None:
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_EVENT_FILES)}"
        self.path = log_dir / name
        self._file = open(self.path, "wb")
        self._flush_secs = float(flush_secs)
        self._prefixes: dict[str, bytes] = {}
        self._write(_event(wall_time=time.time(), file_version="brain.Event:2", writer="policygrad.logging"))
        if purge_step is not None:
            self._write(_event(step=purge_step, file_version="brain.Event:2"))
            self._write(_event(step=purge_step, session_status=_SESSION_START))
        self.flush()

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """One event at ``step`` with every ``tag: value`` of ``values`` as a scalar."""
        prefixes = self._prefixes
        summary = b"".join(
            (prefixes.get(tag) or self._prefix(tag)) + _float32(float(v)) for tag, v in values.items()
        )
        self._write(_event(wall_time=time.time(), step=int(step), summary=summary))
        if time.monotonic() - self._flushed > self._flush_secs:
            self.flush()

    def _prefix(self, tag: str) -> bytes:
        """The bytes of a ``Summary.Value`` for ``tag`` up to its 4-byte float (cached per tag)."""
        body = _string(1, tag) + _FLOAT_2
        prefix = self._prefixes[tag] = bytes([1 << 3 | 2]) + _varint(len(body) + 4) + body
        return prefix

    def _write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._file.write(b"".join((header, struct.pack("<I", masked_crc32c(header)), data, struct.pack("<I", masked_crc32c(data)))))

    def flush(self) -> None:
        self._file.flush()
        self._flushed = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


_EVENT_FILES = itertools.count()

# The protocol-buffer messages of tensorboard/compat/proto/{event,summary}.proto that EventFile
# writes, field numbers in brackets:
#   Event: wall_time [1] double, step [2] int64, file_version [3] string, summary [5] Summary,
#          session_log [7] SessionLog, source_metadata [10] SourceMetadata
#   Summary: value [1] repeated Value;  Value: tag [1] string, simple_value [2] float
#   SessionLog: status [1] enum (START = 1);  SourceMetadata: writer [1] string
# A field is its key (number << 3 | wire type) then a varint (wire type 0), 8 little-endian bytes
# (1), a varint length and that many bytes (2), or 4 little-endian bytes (5); fields in order of
# number. Proto3 leaves out a field holding its default (0, ""), except a member of a oneof
# (file_version, summary, session_log, simple_value), which is written whenever it is set.
_SESSION_START = 1
_DOUBLE_1 = bytes([1 << 3 | 1])  # Event.wall_time
_FLOAT_2 = bytes([2 << 3 | 5])  # Summary.Value.simple_value


def _varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF  # a negative int64 is its two's complement: 10 bytes
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or message), written even when empty."""
    return bytes([number << 3 | 2]) + _varint(len(payload)) + payload


def _string(number: int, text: str) -> bytes:
    """A proto3 string field outside a oneof: nothing when empty."""
    return _field(number, text.encode("utf-8")) if text else b""


def _float32(value: float) -> bytes:
    try:
        return struct.pack("<f", value)
    except OverflowError:  # beyond float32's range: ±inf, as protobuf's C cast gives
        return struct.pack("<f", math.copysign(math.inf, value))


def _event(
    wall_time: float = 0.0,
    step: int = 0,
    *,
    file_version: str | None = None,
    summary: bytes | None = None,
    session_status: int | None = None,
    writer: str | None = None,
) -> bytes:
    """A serialized ``Event``; ``summary`` is the encoded body of a ``Summary`` message.

    Give at most one of ``file_version``, ``summary`` and ``session_status`` (Event's oneof).
    """
    out = b""
    if wall_time:
        out += _DOUBLE_1 + struct.pack("<d", wall_time)
    if step:
        out += bytes([2 << 3]) + _varint(step)
    if file_version is not None:
        out += _field(3, file_version.encode("utf-8"))
    if summary is not None:
        out += _field(5, summary)
    if session_status is not None:
        out += _field(7, bytes([1 << 3]) + _varint(session_status) if session_status else b"")
    if writer is not None:
        out += _field(10, _string(1, writer))
    return out


# CRC-32C (Castagnoli), as TFRecord frames records. For speed with NumPy: the CRC is affine in the
# message bits, so the CRC of an n-byte message is the XOR of one table entry per byte, the entry
# for byte value v at distance k from the end being _CRC_TABLES[k, v] (v followed by k zero bytes);
# the initial value 0xFFFFFFFF acts as the first four bytes XORed with 0xFF.
_CRC_POLY = 0x82F63B78


def _crc_byte_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for v in range(256):
        c = v
        for _ in range(8):
            c = (c >> 1) ^ _CRC_POLY if c & 1 else c >> 1
        table[v] = c
    return table


_CRC_BYTE = _crc_byte_table()
_CRC_BYTE_LIST = [int(c) for c in _CRC_BYTE]
_CRC_TABLES = _CRC_BYTE[None, :].copy()  # grown on demand to the longest message seen


def crc32c(data: bytes) -> int:
    """The CRC-32C of ``data``."""
    if len(data) <= 16:  # a short loop beats the NumPy calls
        crc = 0xFFFFFFFF
        for b in data:
            crc = _CRC_BYTE_LIST[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF
    global _CRC_TABLES
    n = len(data)
    if n > len(_CRC_TABLES):
        tables = np.empty((max(n, 2 * len(_CRC_TABLES)), 256), dtype=np.uint32)
        tables[: len(_CRC_TABLES)] = _CRC_TABLES
        for k in range(len(_CRC_TABLES), len(tables)):
            tables[k] = _CRC_BYTE[tables[k - 1] & 0xFF] ^ (tables[k - 1] >> 8)
        _CRC_TABLES = tables
    message = np.frombuffer(data, dtype=np.uint8).copy()
    message[:4] ^= 0xFF
    return int(np.bitwise_xor.reduce(_CRC_TABLES[np.arange(n - 1, -1, -1), message])) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xA282EAD8, modulo 2³²."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


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
