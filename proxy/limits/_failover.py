"""The shared store with a local fallback: what ``--state`` builds.

While Redis answers, every call goes there. When a call fails or runs past its deadline, the store is *down*:
one log line, ``on_change(False)``, and from then on every call is counted in this worker's memory (a
:class:`LocalStore`) without waiting for Redis at all, so no request waits on a dead Redis more than once per
worker. :meth:`FailoverStore.run` probes Redis every ``probe_s``; when it answers again, one log line,
``on_change(True)``, and calls go back to Redis.

Lease tokens carry where they were issued (``r:`` Redis, ``l:`` local), so a release goes to the store that
holds the slot whatever happened in between; a Redis lease given back while Redis is down is no longer renewed and
lapses within ``--state-lease-s``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from ._redis import RedisStore
from ._store import LocalStore, StoreUnavailable, Window

log = logging.getLogger("moonrelay")


class FailoverStore:
    """``shared`` (a :class:`RedisStore`) while it answers, ``local`` while it does not. ``on_change(up)`` and
    ``on_error()`` feed the metrics (set by the app)."""

    shared = True

    def __init__(self, shared: RedisStore, local: LocalStore | None = None, *, probe_s: float = 1.0) -> None:
        self.redis = shared
        self.local = local if local is not None else LocalStore()
        self.probe_s = probe_s
        self.up = True
        self.errors = 0
        self.on_change: Callable[[bool], None] | None = None
        self.on_error: Callable[[], None] | None = None
        self._went_down = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the Redis store (its lease renewals) and, while it is down, probe it until it answers."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.redis.run)
            try:
                await self.redis.ping()
                log.info("state: shared on %s", self.redis.url)
            except StoreUnavailable as exc:
                self._down(exc)
            task_status.started()
            while True:
                if self.up:
                    await self._went_down.wait()  # set by _down
                    continue
                await trio.sleep(self.probe_s)
                try:
                    await self.redis.ping()
                except StoreUnavailable:
                    continue
                self._went_down = trio.Event()
                self.up = True
                log.warning("state: %s answers again: limits are shared again", self.redis.url)
                if self.on_change is not None:
                    self.on_change(True)

    def _down(self, exc: BaseException) -> None:
        self.errors += 1
        if self.on_error is not None:
            self.on_error()
        if not self.up:
            return
        self.up = False
        log.warning("state: %s unavailable (%s): counting in this worker until it answers", self.redis.url, exc)
        if self.on_change is not None:
            self.on_change(False)
        self._went_down.set()  # run() probes from now on

    async def _either(self, shared: Callable[[], Awaitable[Any]], local: Callable[[], Awaitable[Any]]) -> Any:
        if self.up:
            try:
                return await shared()
            except StoreUnavailable as exc:
                self._down(exc)
        return await local()

    # -- slots ---------------------------------------------------------------------------------------

    async def acquire(self, name: str, limit: int) -> str | None:
        if self.up:
            try:
                token = await self.redis.acquire(name, limit)
                return None if token is None else "r:" + token
            except StoreUnavailable as exc:
                self._down(exc)
        token = await self.local.acquire(name, limit)
        return None if token is None else "l:" + token

    async def release(self, name: str, token: str) -> None:
        where, _, own = token.partition(":")
        if where == "l":
            await self.local.release(name, own)
        elif not self.up:
            self.redis.forget(own)  # Redis is down: the lease lapses there within --state-lease-s
        else:
            try:
                await self.redis.release(name, own)
            except StoreUnavailable as exc:
                self._down(exc)

    async def held(self, name: str) -> int:
        return await self._either(lambda: self.redis.held(name), lambda: self.local.held(name))

    # -- windows and rests ---------------------------------------------------------------------------

    async def hit(self, name: str, window_s: float, limit: int, cost: int = 1) -> Window:
        return await self._either(
            lambda: self.redis.hit(name, window_s, limit, cost), lambda: self.local.hit(name, window_s, limit, cost)
        )

    async def add(self, name: str, window_s: float, amount: int) -> int:
        return await self._either(
            lambda: self.redis.add(name, window_s, amount), lambda: self.local.add(name, window_s, amount)
        )

    async def used(self, name: str, window_s: float) -> tuple[int, float]:
        return await self._either(lambda: self.redis.used(name, window_s), lambda: self.local.used(name, window_s))

    async def rest(self, name: str, seconds: float) -> None:
        # Kept locally as well: a rest still holds here if Redis goes down before it ends.
        await self.local.rest(name, seconds)
        await self._either(lambda: self.redis.rest(name, seconds), _nothing)

    async def resting(self, names: Sequence[str]) -> list[float]:
        return await self._either(lambda: self.redis.resting(names), lambda: self.local.resting(names))

    async def clear(self, name: str) -> None:
        await self.local.clear(name)
        await self._either(lambda: self.redis.clear(name), _nothing)


async def _nothing() -> None:
    return None
