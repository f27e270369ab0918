"""Errors that the command line turns into one clear line and an exit code.

Library code raises these for bad input instead of letting a traceback escape; ``policygrad.cli``
prints ``policygrad: error: <message>`` and exits with :attr:`PolicygradError.exit_code`.

A message is one line whatever it quotes: a name read from a file (a run directory received from
someone else may hold any text) cannot add lines or terminal control sequences, since ``str()`` of
an error escapes every character that is not printable (``\\n``, ``\\x1b``, ``\\u202e``).
"""

from __future__ import annotations


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


def describe_error(err: BaseException, limit: int = 600) -> str:
    """``"Type: message"`` on one line: every line of the message, joined by spaces (a binding's
    ``TypeError`` says what it was given only after its first line), cut after ``limit``
    characters."""
    text = " ".join(str(err).split())
    if len(text) > limit:
        text = text[:limit] + "…"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
