"""The transport's timeout watchdog: one task enforces every connection's first-byte, idle and total deadlines."""

from __future__ import annotations

import heapq
import itertools
import math

import trio

from ._connection import Connection, Timeouts

# Stale entries (a request ended, a deadline moved earlier) leave the heap when they come up or, once they outnumber
# the live ones and this many, all at once: the heap stays within twice the waits watched plus this, however many
# requests went through it.
STALE_SLACK = 16


class Watchdog:
    """Mixed into ``H11Transport``: deadlines on a heap, checked every tick by ``run_watchdog``.

    An entry is ``[due, seq, conn]``; a connection has at most one live entry (``conn.entry``, due at
    ``conn.queued``). An entry due before the connection's deadline is re-queued when it comes up, so a read
    that pushes the deadline later adds nothing. When a request ends its entry drops its connection at once
    (``entry[2] = None``): a stale entry holds no connection, and a closed connection is freed when it closes.
    """

    _timeouts: Timeouts

    def __init__(self) -> None:
        self._watching = False
        self._deadlines: list[list] = []
        self._seq = itertools.count()
        self._stale = 0  # entries in the heap whose connection was dropped

    async def run_watchdog(self, *, tick_s: float = 0.1, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Enforce first-byte, idle and total timeouts for every connection from one task.

        Each read only stores an absolute deadline; this task wakes every ``tick_s``, pops the
        deadlines that passed from a heap, re-queues those that moved, and expires the rest.
        Without it running, each read falls back to its own cancel scope. The same task closes the
        transport's idle connections once they expired (:meth:`expire_idle`).
        """
        self._watching = True
        task_status.started()
        try:
            heap = self._deadlines
            while True:
                await trio.sleep(tick_s)
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    conn = heapq.heappop(heap)[2]
                    if conn is None:
                        self._stale -= 1
                        continue  # that request is over, or a newer entry stands for it
                    conn.entry, conn.queued = None, math.inf
                    due = min(conn.deadline, conn.total)
                    if due > now:
                        if due != math.inf:  # moved on since it was queued (inf: not waiting, nothing to keep)
                            self._queue(conn, due)
                    else:
                        conn.expire("total" if conn.total <= now else "idle or first-byte")
                await self.expire_idle(now)
        finally:
            self._watching = False

    async def expire_idle(self, now: float) -> None:
        """Close the idle connections that expired by ``now`` (the pool's; none here)."""

    def _queue(self, conn: Connection, due: float) -> None:
        if conn.entry is not None:
            self._drop_entry(conn)
        conn.entry = entry = [due, next(self._seq), conn]
        conn.queued = due
        heapq.heappush(self._deadlines, entry)

    def _drop_entry(self, conn: Connection) -> None:
        """``conn``'s entry lets go of it; once stale entries outnumber live ones, the heap is rebuilt without
        them (amortised O(1) per entry)."""
        conn.entry[2] = None  # type: ignore[index]
        conn.entry, conn.queued = None, math.inf
        self._stale += 1
        heap = self._deadlines
        if self._stale > STALE_SLACK and self._stale * 2 > len(heap):
            heap[:] = [entry for entry in heap if entry[2] is not None]
            heapq.heapify(heap)
            self._stale = 0

    def _watch(self, conn: Connection) -> None:
        now = trio.current_time()
        conn.expired = None
        conn.ping = False
        conn.deadline = now + self._timeouts.first_byte_s
        conn.total = now + self._timeouts.total_s
        due = min(conn.deadline, conn.total)
        if self._watching and due < conn.queued:
            self._queue(conn, due)

    def _unwatch(self, conn: Connection) -> None:
        """The request on ``conn`` ended: no deadline, and its entry leaves the heap."""
        conn.deadline = conn.total = math.inf
        if conn.entry is not None:
            self._drop_entry(conn)
