"""Errors that the command line turns into one clear line and an exit code.

Library code raises these for bad input instead of letting a traceback escape; ``policygrad.cli``
prints ``policygrad: error: <message>`` and exits with :attr:`PolicygradError.exit_code`.

A message is one line whatever it quotes: a name read from a file (a run directory received from
someone else may hold any text) cannot add lines or terminal control sequences, since ``str()`` of
an error escapes every character that is not printable (``\\n``, ``\\x1b``, ``\\u202e``).
"""

from __future__ import annotations


class PolicygradError(Exception):
    """Base class of the errors the command line reports without a traceback."""

    exit_code: int = 1

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
