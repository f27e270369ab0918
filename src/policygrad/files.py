"""Reading the files of a run directory, which may come from someone else.

A run directory is often received (a colleague's results, an archive from the internet) and then
read by ``policygrad eval``, ``train --resume``, ``plot`` and ``policygrad.load``. Every read of one
goes through here, so that what is in it can make the reader fail with one
:class:`~policygrad.errors.InputError` line, but not read without end, wait without end, run out of
memory or crash:

* Only regular files are opened. A symlink where a file is expected is refused, whatever it points
  to (``os.lstat`` first, then ``open`` with ``O_NOFOLLOW``), and so are FIFOs, devices, sockets and
  directories; the file opened is checked again (``fstat``: a regular file, the one ``lstat`` saw).
  Opening never waits (``O_NONBLOCK``: a FIFO swapped in between the two checks cannot block it).
* The size is checked before reading (``fstat``) and at most the limit plus one byte is read, so a
  file that grows while it is read is caught too.
* JSON (:func:`read_json`): at most :data:`MAX_JSON_BYTES`, nested at most :data:`MAX_JSON_DEPTH`
  deep (a scan of the bytes before parsing, so the parser never recurses deeper, whatever the
  interpreter's recursion limit), UTF-8, no key twice in one object (two readers could otherwise
  see two values). ``NaN`` and ``Infinity`` literals parse (a checkpoint's meta keeps them, like
  Python's ``json``); each field's reader decides whether it takes one.
* Text read line by line (:func:`read_lines`, metrics.csv): a cap on the size and on each line.
* A directory that the reader descends into below the directory it was given (a checkpoint of a
  run) must lie inside it once symlinks are resolved: :func:`check_inside`.
* Temporary files written beside received files (``--resume`` writes into the run) are created
  afresh, never through a symlink planted under their name: :func:`open_new`.

Not covered: another process changing the directory while it is read.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from policygrad.errors import InputError, shown

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "read_bytes",
    "read_json",
    "parse_json",
    "read_lines",
    "check_inside",
    "open_new",
]

MAX_JSON_BYTES = 4 * 2**20
"""Largest config.json or meta.json read (4 MiB). A CartPole run writes a 1.5 kB config.json and an
8 kB meta.json (about 0.5 kB per parameter tensor, for the optimiser's state), so this is some 500
times a real one; parsing 4 MiB of the costliest JSON (``[{},{},...]``) takes about 100 MB and
0.3 s, 16 MiB four times that."""

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects in a JSON file read (a checkpoint's meta.json nests 9 deep)."""

_O_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
    | getattr(os, "O_BINARY", 0)
_CHUNK = 1 << 20


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: Path, what: str) -> tuple[int, int]:
    """``(fd, size)`` of the regular file ``path``; FileNotFoundError if it is missing, InputError
    for anything else than a regular file that can be opened."""
    try:
        seen = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise InputError(f"cannot read {what} {path}: {err.strerror}") from None
    if not stat.S_ISREG(seen.st_mode):
        raise InputError(f"{what} {path} is {_kind(seen.st_mode)}, not a regular file; refusing to read it")
    try:
        fd = os.open(path, _O_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise InputError(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):
            raise InputError(f"{what} {path} changed while it was opened; refusing to read it")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, opened.st_size


def _human(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} bytes"


def read_bytes(path: str | os.PathLike, what: str, limit: int, *, size: int | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Args:
        path: the file; a symlink, FIFO, device or directory there is refused.
        what: what the file is, for messages ("meta.json", "checkpoint tensors file").
        limit: the largest size accepted; a larger file is refused before anything is read.
        size: the exact size expected (e.g. declared by another file), or None.

    Raises:
        FileNotFoundError: ``path`` does not exist (the caller says what that means).
        InputError: anything else: not a regular file, too large, another size than ``size``,
            unreadable.
    """
    path = Path(path)
    fd, found = _open_regular(path, what)
    with os.fdopen(fd, "rb", buffering=0) as f:
        if size is not None and found < size:
            raise InputError(f"{what} {path} is truncated: {found} bytes, expected {size}")
        if size is not None and found > size:
            raise InputError(f"{what} {path} has {found} bytes, more than the {size} expected")
        if found > limit:
            raise InputError(f"{what} {path} is too large ({_human(found)}; at most {_human(limit)} is read)")
        want = (found if size is None else size) + 1  # one more byte: a file still growing is caught
        data = bytearray()
        try:
            while len(data) < min(want, limit + 1):
                chunk = f.read(min(_CHUNK, min(want, limit + 1) - len(data)))
                if not chunk:
                    break
                data += chunk
        except OSError as err:
            raise InputError(f"cannot read {what} {path}: {err.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{what} {path} is too large (more than {_human(limit)})")
    if size is not None and len(data) != size:
        raise InputError(f"{what} {path} has {len(data)} bytes, expected {size} (it changed while read)")
    return bytes(data)


class _DuplicateKey(ValueError):
    pass


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in the JSON text ``raw`` (brackets inside strings
    do not count), by a few whole-array passes: about 15 ms per MiB, whatever the nesting."""
    # Escaped backslashes, then escaped quotes, removed: every quote left opens or closes a string.
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    a = np.frombuffer(text, dtype=np.uint8)
    if not a.size:
        return 0
    outside = (np.cumsum(a == 0x22, dtype=np.int32) & 1) == 0  # the quote opening a string counts as inside
    step = ((a == 0x5B) | (a == 0x7B)).astype(np.int8) - ((a == 0x5D) | (a == 0x7D)).astype(np.int8)
    step *= outside
    return int(np.cumsum(step, dtype=np.int32).max(initial=0))


def parse_json(raw: bytes, where: str) -> Any:
    """Parse JSON bytes read from ``where`` (for messages): UTF-8, nested at most
    :data:`MAX_JSON_DEPTH` deep, no key twice in an object; InputError (one line) otherwise."""
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise InputError(f"{where} is not valid JSON (nested {depth} deep; at most {MAX_JSON_DEPTH} is read)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{where} is not valid JSON (not UTF-8 text: byte {err.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_object)
    except _DuplicateKey as err:
        raise InputError(f"{where} is not valid JSON (key {shown(err.args[0])} appears twice in one object)") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{where} is not valid JSON (line {err.lineno} column {err.colno}: {err.msg})") from None
    except (RecursionError, ValueError) as err:  # ValueError: e.g. an integer of too many digits
        raise InputError(f"{where} is not valid JSON ({type(err).__name__}: {err})") from None


def read_json(path: str | os.PathLike, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON value in the regular file ``path`` (see :func:`read_bytes` and :func:`parse_json`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputError: not a regular file, larger than ``limit``, or not valid JSON as
            :func:`parse_json` reads it.
    """
    return parse_json(read_bytes(path, what, limit), f"{what} {path}")


def read_lines(path: str | os.PathLike, what: str, limit: int, max_line: int) -> Iterator[str]:
    """The lines of the UTF-8 text file ``path``, each with its newline (the last one may lack it).

    The file is refused at once (InputError) when it is no regular file or larger than ``limit``,
    and when reading reaches a line longer than ``max_line`` bytes or one that is not UTF-8;
    memory stays O(``max_line``) whatever the file holds.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputError: see above.
    """
    path = Path(path)
    fd, found = _open_regular(path, what)
    with os.fdopen(fd, "rb") as f:
        if found > limit:
            raise InputError(f"{what} {path} is too large ({_human(found)}; at most {_human(limit)} is read)")
        total, number = 0, 0
        while True:
            try:
                line = f.readline(max_line + 1)
            except OSError as err:
                raise InputError(f"cannot read {what} {path}: {err.strerror}") from None
            if not line:
                return
            number += 1
            total += len(line)
            if len(line) > max_line:
                raise InputError(f"{what} {path} has a line longer than {_human(max_line)} (line {number})")
            if total > limit:
                raise InputError(f"{what} {path} is too large (more than {_human(limit)})")
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{what} {path} is not UTF-8 text (line {number})") from None


def check_inside(base: str | os.PathLike, path: str | os.PathLike, what: str) -> None:
    """InputError unless ``path`` resolves (symlinks followed) to ``base`` or a place inside it.

    A directory a reader descends into (``RUN/checkpoints/last``) may be a symlink received with
    the run; it may point within the run, not elsewhere on the machine.
    """
    try:
        root = Path(base).resolve(strict=True)
        target = Path(path).resolve(strict=True)
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
        raise InputError(f"cannot resolve {what} {path}: {err}") from None
    if target != root and root not in target.parents:
        raise InputError(f"{what} {path} lies outside {base} (it resolves to {target}); refusing to read it")


def open_new(path: str | os.PathLike) -> int:
    """A file descriptor of a new, empty file at ``path`` (write only), whatever was there.

    Temporary files are written beside files of a run directory, which may hold anything under a
    temporary name (say a symlink to a file elsewhere, planted for a guessable process id): what is
    at ``path`` is removed first (a symlink itself, not what it points to), and the file is created
    with ``O_CREAT | O_EXCL | O_NOFOLLOW``, so writing never goes through a link.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_BINARY", 0)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise FileExistsError(f"{path} is a directory") from None
    return os.open(path, flags, 0o666)
