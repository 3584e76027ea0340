"""Garbage-collector settings for a process that holds thousands of open streams.

Why: CPython starts a full (oldest-generation) collection each time the long-lived heap has grown by a
quarter, and a full collection walks every tracked object. A relay ramping up to N streams grows its heap
by a few hundred tracked objects per stream, so the ramp itself triggers a series of ever larger full
collections, each a stall of the whole worker that delays every stream's next chunk.

What: freeze everything alive at start-up (modules, the app: objects that a full collection would otherwise
walk forever) and collect the young generations less often. Cyclic garbage is rare here: almost all of it
dies in the youngest generation. So the oldest generation's threshold can rise until full collections become
rare (after ~``YOUNG * MIDDLE * OLD`` net allocations); the heap still falls back to its idle size after a
load.

Its cost: more live memory per open stream at high stream counts. ``--gc-tuning off`` restores CPython's defaults where
memory matters more than CPU.

After a burst (:class:`Reclaim`, whatever the policy): once the requests in flight have stayed at a quarter of a
peak of at least ``BURST`` (or fewer) for ``QUIET_S``, one full collection and glibc's ``malloc_trim``, so the burst's
memory goes back to the system instead of staying with the worker until the next burst. Without it, the burst's
cyclic garbage waits in the oldest generation for a full collection (rare, by the policy above) and freed memory
stays in the allocator's free lists (what it gives back, and what CPython's own allocator keeps: results/PERF-LOG.md,
"memory over a relay's life").
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

import trio

YOUNG = 20_000  # net tracked allocations between youngest-generation collections (CPython: 700)
MIDDLE = 20  # youngest collections per middle one (CPython: 10)
OLD = 100  # middle collections before a full one is considered (CPython: 10)


def tune_gc() -> tuple[int, int, int]:
    """Freeze the start-up heap and raise the thresholds; returns the previous thresholds.

    Call once per process before serving, and before forking workers (a frozen heap is also not
    copied-on-write by the children's collections).
    """
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
    return previous


BURST = 256  # requests in flight at once, at least, for a peak to be a burst
FALLEN = 4  # the burst is over once the requests in flight are a quarter of its peak or fewer ...
QUIET_S = 45.0  # ... for this long: the burst's idle upstream connections have closed by then (pool_idle_s, 30 s)
CHECK_S = 1.0  # how often the requests in flight are looked at


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (free memory back to the system, the heap's middle included); None elsewhere."""
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


class Reclaim:
    """Gives a worker's memory back after a burst; ``in_flight()``: its requests in flight now."""

    def __init__(self, in_flight: Callable[[], int], *, check_s: float = CHECK_S, quiet_s: float = QUIET_S) -> None:
        self.in_flight = in_flight
        self.check_s = check_s
        self.quiet_s = quiet_s
        self.runs = 0  # bursts reclaimed after (tests, logs)
        self._trim = _malloc_trim()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        peak = 0
        fallen_at = None  # trio time the load was first seen fallen from the peak
        task_status.started()
        while True:
            await trio.sleep(self.check_s)
            now = self.in_flight()
            peak = max(peak, now)
            if peak < BURST or now * FALLEN > peak:
                fallen_at = None
            elif fallen_at is None:
                fallen_at = trio.current_time()
            elif trio.current_time() - fallen_at >= self.quiet_s:
                self.reclaim()
                peak, fallen_at = now, None

    def reclaim(self) -> None:
        """One full collection, then the allocator's free memory back to the system (a stall of milliseconds)."""
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        self.runs += 1
