"""The learner's account of the experience it trained on: which fragments, from whom, how old.

Every fragment a rollout worker returns carries a key ``(worker, incarnation, seq)``: the worker's
slot, which life of that slot made it (a replaced worker is a new incarnation), and its sequence
number within that life. The learner accepts a fragment only through :meth:`Ledger.accept`,
which refuses a key it has seen (a duplicate or a replay: sequence numbers only grow within an
incarnation) and a fragment older than the allowed lag, and counts the environment steps of
every fragment it accepts. The ledger is plain data, saved in each checkpoint, so that a resumed
run goes on counting, and numbers the incarnations of its workers after the ones it has seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from policygrad.errors import InputError, shown

__all__ = ["FragmentKey", "Ledger", "Rejected"]


@dataclass(frozen=True, order=True)
class FragmentKey:
    """Who made a fragment: worker slot, incarnation of that slot, sequence number in it."""

    worker: int
    incarnation: int
    seq: int


class Rejected(Exception):
    """A fragment the ledger refused (a duplicate key, or older than the allowed lag)."""


@dataclass
class Ledger:
    """Counts of accepted experience, and what was refused.

    Attributes:
        max_lag: the largest lag (learner version − fragment version) accepted.
        accepted_steps: environment steps of the accepted fragments (with those of the run's
            steps before it had workers, when resumed from a run without them).
        fragments: accepted fragments.
        duplicates, stale: fragments refused as a duplicate key, as older than ``max_lag``.
        replaced: workers replaced (killed, lost with their node, or failed and restarted).
        lags: how many accepted fragments had each lag (``{lag: count}``).
        last_seq: the highest accepted sequence number of each ``(worker, incarnation)``.
        incarnations: the number of incarnations each worker slot has had.
    """

    max_lag: int = 0
    accepted_steps: int = 0
    fragments: int = 0
    duplicates: int = 0
    stale: int = 0
    replaced: int = 0
    lags: dict[int, int] = field(default_factory=dict)
    last_seq: dict[tuple[int, int], int] = field(default_factory=dict)
    incarnations: dict[int, int] = field(default_factory=dict)

    def new_incarnation(self, worker: int) -> int:
        """The incarnation number of a new worker in slot ``worker`` (0, 1, ... over the whole run)."""
        number = self.incarnations.get(worker, 0)
        self.incarnations[worker] = number + 1
        return number

    def accept(self, key: FragmentKey, version: int, learner_version: int, steps: int) -> int:
        """Account for a fragment made by policy ``version`` and trained on at ``learner_version``.

        Returns:
            Its lag, ``learner_version − version``.

        Raises:
            Rejected: the key was accepted before (or a later one of its incarnation was), or the
                lag exceeds :attr:`max_lag`. Nothing is counted then but the refusal.
        """
        last = self.last_seq.get((key.worker, key.incarnation))
        if last is not None and key.seq <= last:
            self.duplicates += 1
            raise Rejected(f"fragment {key} was accepted before (last sequence number {last})")
        lag = learner_version - version
        if lag > self.max_lag or lag < 0:
            self.stale += 1
            raise Rejected(f"fragment {key} has lag {lag}, outside [0, {self.max_lag}]")
        self.last_seq[(key.worker, key.incarnation)] = key.seq
        self.accepted_steps += int(steps)
        self.fragments += 1
        self.lags[lag] = self.lags.get(lag, 0) + 1
        return lag

    def median_lag(self) -> float | None:
        """The median lag of the accepted fragments (None before any)."""
        import statistics

        lags = [lag for lag, count in sorted(self.lags.items()) for _ in range(count)]
        return float(statistics.median(lags)) if lags else None

    # --- checkpoints ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON for a checkpoint's meta."""
        return {
            "max_lag": self.max_lag,
            "accepted_steps": self.accepted_steps,
            "fragments": self.fragments,
            "duplicates": self.duplicates,
            "stale": self.stale,
            "replaced": self.replaced,
            "lags": {str(k): v for k, v in sorted(self.lags.items())},
            "last_seq": [[w, i, s] for (w, i), s in sorted(self.last_seq.items())],
            "incarnations": {str(k): v for k, v in sorted(self.incarnations.items())},
        }

    @classmethod
    def from_state(cls, meta: Any, max_lag: int) -> Ledger:
        """The ledger :meth:`state` saved, checked, with the run's (possibly new) ``max_lag``.

        Raises:
            InputError: one line naming the malformed entry.
        """

        def bad(why: str) -> InputError:
            return InputError(f"checkpoint's fragment ledger is malformed ({why})")

        def whole(value: Any, what: str) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
                raise bad(f"{what} must be a whole number >= 0, got {shown(value)}")
            return value

        if not isinstance(meta, dict):
            raise bad("not an object")
        ledger = cls(max_lag=max_lag)
        for name in ("accepted_steps", "fragments", "duplicates", "stale", "replaced"):
            setattr(ledger, name, whole(meta.get(name), name))
        for name, target in (("lags", ledger.lags), ("incarnations", ledger.incarnations)):
            table = meta.get(name)
            if not isinstance(table, dict):
                raise bad(f"{name} must be an object")
            for key, value in table.items():
                if not (isinstance(key, str) and key.isdigit()):
                    raise bad(f"{name} has the key {shown(key)}")
                target[int(key)] = whole(value, f"{name}[{key}]")
        rows = meta.get("last_seq")
        if not isinstance(rows, list):
            raise bad("last_seq must be a list")
        for row in rows:
            if not (isinstance(row, list) and len(row) == 3):
                raise bad(f"last_seq holds {shown(row)}")
            worker, incarnation, seq = (whole(v, "last_seq") for v in row)
            ledger.last_seq[(worker, incarnation)] = seq
        if sum(ledger.lags.values()) != ledger.fragments:
            raise bad("the lags do not add up to the fragments")
        return ledger
