"""Calls of many tasks sent as one: a burst of 500 requests admitted at once costs a few Redis round trips, not 500.

Each task adds its item and waits (with its own deadline) for the event of the batch that carries it; one task,
:meth:`Batches.run`, sends whatever was queued as soon as anything is, in calls of at most ``most`` items, and sets
that event when they are done, sent or failed. While one batch is on its way the next one fills. A caller that finds
nothing queued and nothing on its way sends its item itself (:meth:`send_alone`): under light load that spares two
task switches per call, and whatever comes while it is on its way queues as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class Batches(Generic[T]):
    def __init__(self, send: Callable[[list[T]], Awaitable[None]], *, most: int = 1000, queued_max: int = 100_000):
        self._send = send  # sends one call's items; handles its own failures
        self.most = most
        self.queued_max = queued_max  # beyond it items are dropped (only a Redis down for long gets there)
        self._items: list[T] = []
        self._queued = trio.Event()
        self._sent = trio.Event()
        self._on_the_way = 0  # calls being sent, by run() or by send_alone()

    def add(self, item: T) -> trio.Event:
        """Queue ``item``; the event is set once the batch that carries it was sent (or failed)."""
        if len(self._items) < self.queued_max:
            self._items.append(item)
        self._queued.set()
        return self._sent

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing on its way: a caller may :meth:`send_alone`."""
        return not self._items and not self._on_the_way

    async def send_alone(self, item: T) -> None:
        """Send ``item`` as a call of its own, in the caller's task."""
        self._on_the_way += 1
        try:
            await self._send([item])
        finally:
            self._on_the_way -= 1

    async def run(self) -> None:
        while True:
            await self._queued.wait()
            self._queued = trio.Event()
            batch, self._items = self._items, []
            sent, self._sent = self._sent, trio.Event()
            self._on_the_way += 1
            try:
                for start in range(0, len(batch), self.most):
                    await self._send(batch[start : start + self.most])
            finally:
                self._on_the_way -= 1
                sent.set()
