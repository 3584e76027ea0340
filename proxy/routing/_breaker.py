"""A circuit breaker per deployment, sans I/O: what its state is and what an answer changes.

States, as the store holds them (names per deployment ``d``; :mod:`proxy.routing._health` does the I/O):

    closed     ── ``breaker_failures`` failures in a row within one window ─────────▶ open
    open       ── ``breaker_cooldown_s`` passed ───────────────────────────────────▶ half-open
    half-open  ── the one probe succeeds ─▶ closed;  the probe fails ─▶ open again

- ``fail:d``: failures counted in epoch-aligned windows of ``breaker_window_s`` (the store's ``add``); a success
  resets the count, as Envoy's ``consecutive_5xx`` does; the failure that brings it to exactly
  ``breaker_failures`` opens the circuit, so one opening is counted however many workers fail at once;
- ``open:d``: a rest of ``breaker_cooldown_s``: nothing is sent while it lasts;
- ``tripped:d``: a rest of the cool-down plus :data:`HALF_OPEN_S`: after ``open:d`` ends it marks half-open, when
  only the holder of ``probe:d`` (a slot of one, the store's ``acquire``) may send;
- ``failing:d``: a rest as long as the window, set by each failure: a success that finds it resets the count
  (one store call more, only after failures);
- ``rest:d``: a 429 on a deployment with one key rests it for the Retry-After (not a failure).

Failures: a transport error before the first byte (connect error or timeout, first-byte timeout, a connection
closed without an answer) or a 5xx. A 429 is neither a failure nor a success.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

HALF_OPEN_S = 3600.0  # a half-open circuit that no request probed within this time after its cool-down is closed


class Circuit(enum.IntEnum):
    """A deployment's circuit; the values are the ``moonrelay_upstream_circuit_state`` gauge's (Envoy's order)."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"  # a 429, keys resting, a request cancelled before an answer: no verdict


class Step(enum.Enum):
    """What the breaker does with an outcome."""

    NOTHING = "nothing"
    COUNT = "count"  # add a failure to the window; it opens the circuit when the count reaches the threshold
    OPEN = "open"  # (a failed probe) open again for a cool-down
    RESET = "reset"  # forget the failures counted so far
    CLOSE = "close"  # (a probe succeeded) closed, failures forgotten


def store_names(deployment: str) -> tuple[str, str, str, str]:
    """The rests read before a request, in :class:`Seen`'s order: open, tripped, resting (429), failing."""
    return f"open:{deployment}", f"tripped:{deployment}", f"rest:{deployment}", f"failing:{deployment}"


@dataclass(frozen=True, slots=True)
class Seen:
    """One deployment's health as read from the store before a request: seconds each rest still lasts."""

    open_s: float = 0.0
    tripped_s: float = 0.0
    rest_s: float = 0.0  # resting after a 429
    failing_s: float = 0.0
    keys_s: float = 0.0  # every key of its pool rests after a 429 (0: one is free, or the pool does not rotate)

    @classmethod
    def of(cls, rests: Sequence[float], keys_s: float = 0.0) -> Seen:
        return cls(*rests, keys_s=keys_s)

    @property
    def circuit(self) -> Circuit:
        if self.open_s > 0:
            return Circuit.OPEN
        if self.tripped_s > 0:
            return Circuit.HALF_OPEN
        return Circuit.CLOSED

    @property
    def usable(self) -> bool:
        """Whether a request may go there now (half-open: if it gets the probe)."""
        return self.open_s <= 0 and self.rest_s <= 0 and self.keys_s <= 0

    @property
    def wait_s(self) -> float:
        """Seconds until it may take a request again (0: now, or as soon as a probe is free)."""
        return max(self.open_s, self.rest_s, self.keys_s, 0.0)


CLOSED = Seen()


def outcome(status: int | None) -> Outcome:
    """The breaker's view of an answer's status, or of a transport error before the first byte (``None``)."""
    if status is None or status >= 500:
        return Outcome.FAILURE
    if status == 429:
        return Outcome.NEUTRAL
    return Outcome.SUCCESS


def step(result: Outcome, seen: Seen, *, probing: bool) -> Step:
    """What ``result`` changes, given the health seen before the request and whether it was the probe."""
    if result is Outcome.FAILURE:
        return Step.OPEN if probing else Step.COUNT
    if result is Outcome.SUCCESS:
        if probing:
            return Step.CLOSE
        return Step.RESET if seen.failing_s > 0 else Step.NOTHING
    return Step.NOTHING


def opens(total: int, failures: int) -> bool:
    """Whether the failure that brought the window's count to ``total`` opens the circuit: only the one that
    reaches the threshold, so concurrent failures open it (and count an opening) once."""
    return failures > 0 and total == failures
