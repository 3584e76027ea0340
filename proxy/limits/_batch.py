"""Calls of many tasks sent as one: a burst of 500 requests admitted at once costs a few Redis round trips, not 500.

Each task adds its item and waits (with its own deadline) for the event of the batch that carries it; one task,
:meth:`Batches.run`, sends whatever was queued as soon as anything is, in calls of at most ``most`` items, and sets
that event when they are done, sent or failed. While one batch is on its way the next one fills.
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

    def add(self, item: T) -> trio.Event:
        """Queue ``item``; the event is set once the batch that carries it was sent (or failed)."""
        if len(self._items) < self.queued_max:
            self._items.append(item)
        self._queued.set()
        return self._sent

    async def run(self) -> None:
        while True:
            await self._queued.wait()
            self._queued = trio.Event()
            batch, self._items = self._items, []
            sent, self._sent = self._sent, trio.Event()
            try:
                for start in range(0, len(batch), self.most):
                    await self._send(batch[start : start + self.most])
            finally:
                sent.set()
