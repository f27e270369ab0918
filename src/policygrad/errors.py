"""Errors that the command line turns into one clear line and an exit code.

Library code raises these for bad input instead of letting a traceback escape; ``policygrad.cli``
prints ``policygrad: error: <message>`` and exits with :attr:`PolicygradError.exit_code`.

A message is one line whatever it quotes: a name read from a file (a run directory received from
someone else may hold any text) cannot add lines or terminal control sequences, since ``str()`` of
an error escapes every character that is not printable (``\\n``, ``\\x1b``, ``\\u202e``). A
message that echoes a user's value shows it through :func:`shown`, cut to about 100 characters, so
that a 50 MB string never becomes a 50 MB line. :func:`check_seed` is the one range of seeds, for
every layer that takes one.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = [
    "PolicygradError", "InputError", "TrainingError", "Interrupted", "signal_name", "shown", "one_line", "check_seed",
    "MAX_SEED",
]

SHOWN_CHARS = 100
"""About how many characters of a user's value an error message shows (:func:`shown`)."""

MAX_SEED = 2**63
"""Seeds are integers in [0, 2**63), which torch, NumPy and Gymnasium all accept."""


class PolicygradError(Exception):
    """Base class of the errors the command line reports without a traceback.

    Args:
        detail: more than the one line, e.g. an environment's own traceback (printed by the
            command line's ``--debug``).
    """

    exit_code: int = 1

    def __init__(self, *args: object, detail: str | None = None) -> None:
        super().__init__(*args)
        self.detail = detail

    def __str__(self) -> str:
        text = super().__str__()
        if text.isprintable():
            return text
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class InputError(PolicygradError, ValueError):
    """The user's input is invalid: a file, a shape, a setting, a hyperparameter. Exit code 2."""

    exit_code = 2


class TrainingError(PolicygradError, RuntimeError):
    """Training had to stop (non-finite values, an environment that raised). Exit code 1."""

    exit_code = 1


class Interrupted(BaseException):
    """A signal that stops the command at once (a second SIGINT or SIGTERM during training, or
    one outside it). Exit code 128 + the signal's number, as a shell reports a killed process.

    Like ``KeyboardInterrupt``, a ``BaseException``: nothing catches it by accident.

    Args:
        signum: the signal's number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    """``"SIGTERM"`` for 15, ``"SIGINT"`` for 2, ..."""
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_error(err: BaseException, limit: int = 600, *, first_line: bool = False) -> str:
    """``"Type: message"`` on one line: every line of the message, joined by spaces (a binding's
    ``TypeError`` says what it was given only after its first line), or with ``first_line`` only
    the first (an environment step's error), cut after ``limit`` characters."""
    lines = str(err).strip().splitlines()
    text = " ".join((lines[0] if first_line and lines else str(err)).split())
    if len(text) > limit:
        text = text[:limit] + "…"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8
_repr.maxstring = _repr.maxother = _repr.maxlong = SHOWN_CHARS


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters.

    A long string keeps its first ``limit`` characters and says how long it was; an integer too
    long to print is named by its number of digits; a container shows its first entries and
    levels (``reprlib``); a value whose repr fails shows its type. Never longer than about
    ``limit`` + 30 characters, whatever the value.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3 * limit:
        return f"<an integer of about {int(value.bit_length() * 0.30103) + 1:,} digits>"  # log10(2) per bit
    try:
        text = _repr.repr(value)
    except Exception:  # a repr that raises (or recurses too deep): say what it was
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(message: str, limit: int = 2000) -> str:
    """``message`` on one line (line breaks become spaces), cut to ``limit`` characters."""
    text = " ".join(str(message).split("\n")).replace("\r", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` if it is an int in [0, 2**63) (:data:`MAX_SEED`), else InputError naming ``name``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
        raise InputError(f"{name} must be an integer in [0, 2**63), got {shown(seed)}")
    return seed
