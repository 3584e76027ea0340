"""The store on a Redis every worker and instance shares (``--state redis://HOST:PORT/DB``).

Each operation is one Lua script (proxy/limits/_scripts.py) sent by ``EVALSHA``; the scripts are loaded once and
again when Redis answers ``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``). Every call has a deadline
(``timeout_s``): a Redis that does not answer in time raises :class:`StoreUnavailable` instead of holding the
request, and the client (proxy/limits/_resp.py, on trio's own sockets) never blocks the event loop.

The store remembers the leases it handed out and not yet released, and :meth:`RedisStore.run` renews them all
(one script call) every third of their TTL, so callers only acquire and release; a worker that dies stops renewing
and its slots lapse by themselves. Acquires and releases go out in batches (proxy/limits/_batch.py): every one
queued while the previous call was on its way, in one script call.

A release need not wait for Redis (``wait=False``, what the relay's requests do): it is queued and rides with the
next acquire (one round trip per request under steady load), or :meth:`RedisStore.run` sends it within
``release_delay_s`` when no acquire comes; this store's own :meth:`RedisStore.held` sends what is queued first. A
worker that dies with releases queued loses them, and those slots lapse by their TTL.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from . import _scripts
from ._batch import Batches
from ._resp import Connection, RedisUnavailable, ReplyError
from ._store import StoreUnavailable, Window


@dataclass(slots=True, eq=False)
class _Ask:
    """One acquire in a batch: ``taken`` stays None until Redis answered."""

    name: str
    limit: int
    ttl_s: float
    token: str
    taken: bool | None = None


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisStore:
    """The shared store. ``url``: ``redis://HOST:PORT/DB`` (or ``unix:///path?db=N``); ``prefix`` before every key;
    ``timeout_s``: the most any call waits. Serve :meth:`run` in a nursery before the first call."""

    shared = True

    def __init__(
        self, url: str, *, prefix: str = "moonrelay:", timeout_s: float = 0.25, release_delay_s: float = 0.05
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.release_delay_s = release_delay_s  # the longest a release not waited for stays queued
        self._client: Connection | None = None  # opened by run()
        self._shas = {name: _sha(text) for name, text in _scripts.ALL.items()}
        self._leases: dict[str, tuple[str, float]] = {}  # token → (name, ttl_s): handed out, not released
        self._shortest_ttl = math.inf  # of every lease handed out: renewals run every third of it
        self._ttl_changed = trio.Event()
        self._asks = Batches(self._send_asks)
        self._releases = Batches(self._send_releases)  # (name, token) given back
        self._queued_releases: list[tuple[str, str]] = []  # given back without waiting: ride with the next call
        self._release_queued = trio.Event()
        # Tokens unique across instances: a random part per store, a counter per lease.
        self._tag = os.urandom(6).hex()
        self._count = itertools.count(1)

    # -- the connection and the scripts -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the client, then renew the leases held every third of the shortest TTL, until cancelled. Redis need
        not answer yet: calls fail with StoreUnavailable until it does."""
        client = Connection(self.url)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            self._client = client
            try:
                nursery.start_soon(self._asks.run)
                nursery.start_soon(self._releases.run)
                nursery.start_soon(self._send_queued_releases)
                task_status.started()
                while True:
                    with trio.move_on_after(self._shortest_ttl / 3):  # no lease handed out yet: only the event
                        await self._ttl_changed.wait()  # a shorter lease than any before: renew on its clock
                    self._ttl_changed = trio.Event()
                    try:
                        await self.renew_held()
                    except StoreUnavailable:
                        pass  # the next round tries again; a lease that lapsed meanwhile is added back then
            finally:
                self._client = None

    async def _send_queued_releases(self) -> None:
        """Send the releases no acquire took along, ``release_delay_s`` after the first of them was queued."""
        while True:
            await self._release_queued.wait()
            self._release_queued = trio.Event()
            await trio.sleep(self.release_delay_s)
            if self._queued_releases:
                for lease in self._take_queued_releases():
                    self._releases.add(lease)

    def _take_queued_releases(self) -> list[tuple[str, str]]:
        queued, self._queued_releases = self._queued_releases, []
        return queued

    async def _send_asks(self, asks: list[_Ask]) -> None:
        releases = self._take_queued_releases()
        if len(releases) > 1000:  # bounded calls: the rest wait for the next
            releases, self._queued_releases = releases[:1000], releases[1000:] + self._queued_releases
        keys = [self._key(name) for name, _ in releases] + [self._key(ask.name) for ask in asks]
        args: list[Any] = [len(releases), *(token for _, token in releases)]
        for ask in asks:
            args += [ask.limit, _ms(ask.ttl_s), ask.token]
        try:
            taken = await self._call("acquire", keys, args)
        except StoreUnavailable:
            return  # every ask stays unanswered: its caller raises
        for ask, one in zip(asks, taken, strict=True):
            ask.taken = bool(one)

    async def _send_releases(self, leases: list[tuple[str, str]]) -> None:
        leases = leases + self._take_queued_releases()
        for start in range(0, len(leases), 1000):  # bounded script calls
            batch = leases[start : start + 1000]
            try:
                await self._call("release", [self._key(name) for name, _ in batch], [token for _, token in batch])
            except StoreUnavailable:
                return  # not renewed any more: those leases lapse after their TTL

    async def _call(self, op: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run script ``op`` within the deadline; loads it when Redis does not know it."""
        client = self._client
        if client is None:
            raise StoreUnavailable("the Redis store is not running")
        try:
            with trio.fail_after(self.timeout_s):
                try:
                    return await client.call("EVALSHA", self._shas[op], len(keys), *keys, *args)
                except ReplyError as exc:
                    if not str(exc).startswith("NOSCRIPT"):
                        raise
                    await client.call("SCRIPT", "LOAD", _scripts.ALL[op])
                    return await client.call("EVALSHA", self._shas[op], len(keys), *keys, *args)
        except trio.TooSlowError as exc:
            raise StoreUnavailable(f"Redis did not answer within {self.timeout_s} s") from exc
        except (RedisUnavailable, ReplyError) as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers within the deadline."""
        await self._call("held", [self.prefix + "ping"], [])

    def _key(self, name: str) -> str:
        return self.prefix + name

    # -- slots ---------------------------------------------------------------------------------------

    async def acquire(self, name: str, limit: int, ttl_s: float) -> str | None:
        """Sent with the acquires of the same moment (module docstring); waits at most the deadline."""
        if self._client is None:
            raise StoreUnavailable("the Redis store is not running")
        ask = _Ask(name, limit, ttl_s, f"{self._tag}.{next(self._count)}")
        if self._asks.idle:
            await self._asks.send_alone(ask)  # within the deadline of _call
        else:
            answered = self._asks.add(ask)
            with trio.move_on_after(self.timeout_s):
                await answered.wait()
        # Remembered (and renewed) only once Redis said yes: an ask answered after its caller gave up may have taken
        # the slot, and that lease, renewed by nobody, lapses after its TTL.
        if ask.taken is None:
            raise StoreUnavailable(f"Redis did not take an acquire within {self.timeout_s} s")
        if not ask.taken:
            return None
        self._leases[ask.token] = (name, ttl_s)
        if ttl_s < self._shortest_ttl:
            self._shortest_ttl = ttl_s
            self._ttl_changed.set()
        return ask.token

    async def release(self, name: str, token: str, *, wait: bool = True) -> None:
        """Renewals of it stop at once; the release goes out with the next batch, which this waits for, at most
        the deadline, unless ``wait`` is false: then it is queued (module docstring)."""
        if self._leases.pop(token, None) is None:
            return
        if not wait:
            self._queued_releases.append((name, token))
            self._release_queued.set()
            return
        sent = self._releases.add((name, token))
        with trio.move_on_after(self.timeout_s):
            await sent.wait()

    async def flush(self) -> None:
        """Send the releases still queued (a worker about to stop: its slots come back now, not after their TTL)."""
        if self._queued_releases:
            await self._send_releases([])

    async def renew(self, leases: Sequence[tuple[str, str]], ttl_s: float) -> None:
        if leases:
            await self._call("renew", [self._key(name) for name, _ in leases], [_ms(ttl_s), *(t for _, t in leases)])

    async def renew_held(self) -> None:
        """Renew every lease this store handed out and that is not released yet, each by its own TTL."""
        by_ttl: dict[float, list[tuple[str, str]]] = {}
        for token, (name, ttl) in list(self._leases.items()):
            by_ttl.setdefault(ttl, []).append((name, token))
        for ttl, leases in by_ttl.items():
            for start in range(0, len(leases), 1000):  # bounded script calls, whatever is held
                batch = leases[start : start + 1000]
                await self.renew(batch, ttl)
                # A lease released while this renewal was on its way may have been added back after its ZREM.
                for name, token in batch:
                    if token not in self._leases:
                        self._releases.add((name, token))

    async def held(self, name: str) -> int:
        if self._queued_releases:  # this store's own releases count before it reads
            await self._send_releases([])
        return int(await self._call("held", [self._key(name)], []))

    # -- windows -------------------------------------------------------------------------------------

    async def hit(self, name: str, window_s: float, limit: int, cost: int = 1) -> Window:
        allowed, total, reset = await self._call("hit", [self._key(name)], [_ms(window_s), limit, cost])
        return Window(bool(allowed), int(total), limit, int(reset) / 1000)

    async def add(self, name: str, window_s: float, amount: int) -> int:
        total, _ = await self._call("add", [self._key(name)], [_ms(window_s), amount])
        return int(total)

    async def used(self, name: str, window_s: float) -> tuple[int, float]:
        total, reset = await self._call("used", [self._key(name)], [_ms(window_s)])
        return int(total), int(reset) / 1000

    # -- rests ---------------------------------------------------------------------------------------

    async def rest(self, name: str, seconds: float) -> None:
        if seconds > 0:
            await self._call("rest", [self._key(name)], [_ms(seconds)])

    async def resting(self, names: Sequence[str]) -> list[float]:
        if not names:
            return []
        left = await self._call("resting", [self._key(n) for n in names], [])
        return [int(ms) / 1000 for ms in left]

    async def clear(self, name: str) -> None:
        await self._call("clear", [self._key(name)], [])
