"""How late the load generator's own event loop runs: a task that sleeps a short while again and again.

Every timing the load generator takes (TTFC, gaps, E2E) is read when its task next runs; when the loop is
busy, that is late by as much as the loop lags, and the target gets the blame. :class:`LoopLag` measures it:
each wake-up's lateness past its deadline, in ms. A loop that keeps up wakes within a millisecond or so.
"""

from __future__ import annotations

import trio

__all__ = ["INTERVAL_S", "LoopLag"]

INTERVAL_S = 0.02  # 50 wake-ups a second: negligible work, fine enough to see a busy loop


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
