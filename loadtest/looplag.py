"""How late the load generator's own event loop runs, two ways.

Every timing the load generator takes (TTFC, gaps, E2E) is read when its task next runs; when the loop is busy,
that is late by as much, and the target gets the blame.

- :class:`LoopLag`, a task that sleeps a short while again and again: each wake-up's lateness past its deadline,
  in ms (the run's ``loadtest_loop_lag_ms`` percentiles). A loop that keeps up wakes within a millisecond or so.
- :class:`PollStretches`, a trio instrument timing each stretch from the end of one poll of the sockets to the
  start of the next (two clock reads per loop iteration, none per task): a chunk arriving during a stretch is
  read, and stamped, only after it. The CPU share over a whole run, or a sampled lateness, hides a burst (a
  process mostly idle can still be saturated for a moment: when a thousand sessions start, or their first chunks
  arrive, at once); :func:`warning` words the longest for the run's report. Both are wall time: a process the
  machine's other work preempts is as late.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

__all__ = ["BUSY_WARN_MS", "INTERVAL_S", "LoopBusy", "LoopLag", "PollStretches", "measuring", "warning"]

INTERVAL_S = 0.02  # 50 wake-ups a second: negligible work, fine enough to see a busy loop
BUSY_WARN_MS = 10.0  # a stretch this long delays a read, and its stamp, by as much


class LoopLag:
    __slots__ = ("samples_ms",)

    def __init__(self) -> None:
        self.samples_ms: list[float] = []

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            due = trio.current_time() + INTERVAL_S
            await trio.sleep_until(due)
            self.samples_ms.append(max(0.0, (trio.current_time() - due) * 1000))


@dataclass
class LoopBusy:
    """What one process's loop did: its longest stretch without polling, how many stretches were over
    :data:`BUSY_WARN_MS` and their total (ms)."""

    longest_ms: float = 0.0
    over: int = 0
    over_total_ms: float = 0.0


class PollStretches(trio.abc.Instrument):
    """A trio instrument timing the stretches between polls (see the module docstring)."""

    def __init__(self) -> None:
        self.busy = LoopBusy()
        self._polled = 0
        self._limit_ns = int(BUSY_WARN_MS * 1e6)

    def after_io_wait(self, timeout: float) -> None:
        self._polled = time.monotonic_ns()

    def before_io_wait(self, timeout: float) -> None:
        if not self._polled:
            return
        ns = time.monotonic_ns() - self._polled
        busy = self.busy
        if ns > self._limit_ns:
            busy.over += 1
            busy.over_total_ms += ns / 1e6
        if ns / 1e6 > busy.longest_ms:
            busy.longest_ms = ns / 1e6


@contextmanager
def measuring() -> Iterator[LoopBusy]:
    """Time the running trio loop's stretches inside the block; the figures fill the yielded :class:`LoopBusy`."""
    stretches = PollStretches()
    trio.lowlevel.add_instrument(stretches)
    try:
        yield stretches.busy
    finally:
        trio.lowlevel.remove_instrument(stretches)


def warning(phase: str, busy: Iterable[tuple[int, LoopBusy]]) -> str | None:
    """The report's warning for the processes ``(pid, busy)`` of one phase, None when no stretch was long."""
    worst = [(pid, b) for pid, b in busy if b.over]
    if not worst:
        return None
    pid, b = max(worst, key=lambda pb: pb[1].longest_ms)
    n = sum(b.over for _, b in worst)
    return (f"load generator busy: its event loop ran up to {b.longest_ms:.0f} ms without reading its sockets "
            f"(process {pid}, {phase}; {n} stretch(es) over {BUSY_WARN_MS:g} ms in "
            f"{len(worst)} process(es)): a chunk arriving then was read and stamped that much late — add "
            "--workers, lengthen --ramp-up or lower the load")
