"""A LiveStats that tells when n sessions are open at once: readiness without sleeps, for load tests."""

from __future__ import annotations

import trio

from loadtest.progress import LiveStats


class OpenWatch(LiveStats):
    """Sets ``reached`` once ``n`` sessions are open at the same time."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.reached = trio.Event()

    def started(self) -> None:
        super().started()
        if self.open >= self.n:
            self.reached.set()
