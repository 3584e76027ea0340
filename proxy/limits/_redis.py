"""The store on a Redis every worker and instance shares (``--state redis://HOST:PORT/DB``).

Each operation is one Lua script (proxy/limits/_scripts.py) sent by ``EVALSHA``; the scripts are loaded once and
again when Redis answers ``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``). Every call has a deadline
(``timeout_s``): a Redis that does not answer in time raises :class:`StoreUnavailable` instead of holding the
request, and the client (proxy/limits/_resp.py, on trio's own sockets) never blocks the event loop.

The store remembers the leases it handed out and not yet released, and :meth:`RedisStore.run` renews them all
(one script call) every third of their TTL, so callers only acquire and release; a worker that dies stops renewing
and its slots lapse by themselves. Acquires and releases go out in batches (proxy/limits/_batch.py): every one
queued while the previous call was on its way, in one script call.
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

    def __init__(self, url: str, *, prefix: str = "moonrelay:", timeout_s: float = 0.25) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self._client: Connection | None = None  # opened by run()
        self._shas = {name: _sha(text) for name, text in _scripts.ALL.items()}
        self._leases: dict[str, tuple[str, float]] = {}  # token → (name, ttl_s): handed out, not released
        self._shortest_ttl = math.inf  # of every lease handed out: renewals run every third of it
        self._ttl_changed = trio.Event()
        self._asks = Batches(self._send_asks)
        self._releases = Batches(self._send_releases)  # (name, token) given back
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

    async def _send_asks(self, asks: list[_Ask]) -> None:
        args: list[Any] = []
        for ask in asks:
            args += [ask.limit, _ms(ask.ttl_s), ask.token]
        try:
            taken = await self._call("acquire", [self._key(ask.name) for ask in asks], args)
        except StoreUnavailable:
            return  # every ask stays unanswered: its caller raises
        for ask, one in zip(asks, taken, strict=True):
            ask.taken = bool(one)

    async def _send_releases(self, leases: list[tuple[str, str]]) -> None:
        try:
            await self._call("release", [self._key(name) for name, _ in leases], [token for _, token in leases])
        except StoreUnavailable:
            pass  # not renewed any more: those leases lapse after their TTL

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
        the deadline, unless ``wait`` is false (a Redis known to be down: it lapses)."""
        if self._leases.pop(token, None) is None:
            return
        sent = self._releases.add((name, token))
        if wait:
            with trio.move_on_after(self.timeout_s):
                await sent.wait()

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
