"""Errors that the command line turns into one clear line and an exit code.

Library code raises these for bad input instead of letting a traceback escape; ``policygrad.cli``
prints ``policygrad: error: <message>`` and exits with :attr:`PolicygradError.exit_code`. A message
that echoes a user's value shows it through :func:`shown`, cut to about 100 characters, so that a
50 MB string never becomes a 50 MB line. :func:`check_seed` is the one range of seeds, for every
layer that takes one.
"""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["PolicygradError", "InputError", "TrainingError", "shown", "one_line", "check_seed", "MAX_SEED"]

SHOWN_CHARS = 100
"""About how many characters of a user's value an error message shows (:func:`shown`)."""

MAX_SEED = 2**63
"""Seeds are integers in [0, 2**63), which torch, NumPy and Gymnasium all accept."""


class PolicygradError(Exception):
    """Base class of the errors the command line reports without a traceback."""

    exit_code: int = 1


class InputError(PolicygradError, ValueError):
    """The user's input is invalid: a file, a shape, a setting, a hyperparameter. Exit code 2."""

    exit_code = 2


class TrainingError(PolicygradError, RuntimeError):
    """Training had to stop (non-finite values, an environment that raised). Exit code 1."""

    exit_code = 1


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
