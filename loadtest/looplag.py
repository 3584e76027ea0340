"""How long the load generator's event loop ran tasks without looking at its sockets.

A chunk that arrives while the loop is busy is read, and stamped, only when the loop next polls: every such
stretch is time that the load generator, not the target, adds to the latencies it measures. The CPU share
over a whole run hides it (a process mostly idle can still be saturated for a moment: when a thousand sessions
start, or their first chunks arrive, at once), so :class:`LoopLag` times each stretch, from the end of one poll
to the start of the next (two clock reads per loop iteration, none per task), and :func:`warning` words it for
the run's report. The stretch is wall time: a process the machine's other work preempts is as late.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

__all__ = ["BUSY_WARN_MS", "LoopBusy", "LoopLag", "measuring", "warning"]

BUSY_WARN_MS = 10.0  # a stretch this long delays a read, and its stamp, by as much


@dataclass
class LoopBusy:
    """What one process's loop did: its longest stretch without polling, how many stretches were over
    :data:`BUSY_WARN_MS` and their total (ms)."""

    longest_ms: float = 0.0
    over: int = 0
    over_total_ms: float = 0.0


class LoopLag(trio.abc.Instrument):
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
    lag = LoopLag()
    trio.lowlevel.add_instrument(lag)
    try:
        yield lag.busy
    finally:
        trio.lowlevel.remove_instrument(lag)


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
