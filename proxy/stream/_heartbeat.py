"""SSE heartbeats: a ``: ping`` comment after every K seconds of upstream silence, from one task per worker.

Nothing is done per chunk: the transport already stores, per read, the deadline of the current
wait, from which the start of the silence follows (``silent_since``). This task keeps a heap with
one entry per stream, due when that stream could next need a ping (at most one entry per stream
per K seconds: ~670 heap operations a second at 10,000 streams and K = 15 s), and wakes a silent
stream's reader with ``interrupt(HEARTBEAT)``; its body then returns the comment and reads on.

Streams are registered only once the upstream answered 200 (a ping before the status is known
would commit the client to a 200), and a ping is never a chunk: it carries no ``data:`` line. It
can go out whenever it is due, since the body has only ever forwarded whole events (an upstream
that stalls mid-event has its partial event held back, :class:`proxy.stream.SSEBody`): the ping is
always an event of its own, never inside a ``data:`` line.
"""

from __future__ import annotations

import heapq
import itertools
import weakref
from typing import Any

import trio

from ..transport import HEARTBEAT

# Entries of ended streams leave the heap when they come up or, once they outnumber the live streams and this many,
# all at once: the heap stays within twice the streams open plus this, however many streams went through it.
STALE_SLACK = 16


class Heartbeats:
    def __init__(self, interval_s: float, live: set[Any]) -> None:
        self.interval_s = interval_s
        self._live = live  # bodies still being sent; others are dropped from the heap when they come up
        # (due, seq, weak ref to the body, last ping). Weak: an entry outlives its stream by up to K seconds,
        # and a strong one kept the ended body (response, headers, decoder: a few KB) alive that long.
        self._heap: list[tuple[float, int, weakref.ref, float]] = []
        self._seq = itertools.count()

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def watch(self, body: Any) -> None:
        if self.enabled:
            now = trio.current_time()
            heap = self._heap
            if len(heap) > 2 * len(self._live) + STALE_SLACK:
                heap[:] = [entry for entry in heap if entry[2]() in self._live]
                heapq.heapify(heap)
            heapq.heappush(heap, (now + self.interval_s, next(self._seq), weakref.ref(body), -float("inf")))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # A quarter of K (at most 1 s) between looks: a ping is late by at most that, and an
        # idle worker wakes 1-4 times a second.
        tick_s = min(self.interval_s / 4, 1.0)
        interval = self.interval_s
        heap = self._heap
        task_status.started()
        while True:
            await trio.sleep(tick_s)
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, ref, last_ping = heapq.heappop(heap)
                body = ref()
                if body is None or body not in self._live:
                    continue
                since = body.silent_since()
                if since is None:  # bytes are flowing (or the client is slow to take them)
                    due = now + interval
                else:
                    quiet_from = max(since, last_ping)
                    if now - quiet_from >= interval:
                        body.interrupt(HEARTBEAT)
                        last_ping = now
                        due = now + interval
                    else:
                        due = quiet_from + interval
                heapq.heappush(heap, (due, next(self._seq), ref, last_ping))
