"""The transport's timeout watchdog: one task enforces every connection's first-byte, idle and total deadlines."""

from __future__ import annotations

import heapq
import itertools
import math

import trio

from ._connection import Connection, Timeouts


class Watchdog:
    """Mixed into ``H11Transport``: deadlines on a heap, checked every tick by ``run_watchdog``."""

    _timeouts: Timeouts

    def __init__(self) -> None:
        self._watching = False
        self._deadlines: list[tuple[float, int, Connection, int]] = []
        self._seq = itertools.count()

    async def run_watchdog(self, *, tick_s: float = 0.1, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Enforce first-byte, idle and total timeouts for every connection from one task.

        Each read only stores an absolute deadline; this task wakes every ``tick_s``, pops the
        deadlines that passed from a heap, re-queues those that moved, and expires the rest.
        Without it running, each read falls back to its own cancel scope.
        """
        self._watching = True
        task_status.started()
        try:
            heap = self._deadlines
            while True:
                await trio.sleep(tick_s)
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    at, _, conn, gen = heapq.heappop(heap)
                    if conn.gen != gen or at != conn.queued:
                        continue  # that request is over, or a newer entry stands for it
                    due = min(conn.deadline, conn.total)
                    if due > now:
                        # Moved on since it was queued (or not waiting: look again after an idle period).
                        self._queue(conn, due if due != math.inf else now + self._timeouts.idle_s)
                    else:
                        conn.queued = math.inf
                        conn.expire("total" if conn.total <= now else "idle or first-byte")
        finally:
            self._watching = False

    def _queue(self, conn: Connection, due: float) -> None:
        conn.queued = due
        heapq.heappush(self._deadlines, (due, next(self._seq), conn, conn.gen))

    def _watch(self, conn: Connection) -> None:
        now = trio.current_time()
        conn.gen += 1
        conn.expired = None
        conn.ping = False
        conn.deadline = now + self._timeouts.first_byte_s
        conn.total = now + self._timeouts.total_s
        if self._watching:
            self._queue(conn, min(conn.deadline, conn.total))
