"""The store on a Redis every worker and instance shares (``--state redis://HOST:PORT/DB``).

Each operation is one Lua script (proxy/limits/_scripts.py) sent by ``EVALSHA``; the scripts are loaded once and
again when Redis answers ``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``). Every call has a deadline: the rest of
its request's budget (proxy/limits/_budget.py: ``timeout_s`` for all of a request's admission, as much for its end),
or ``timeout_s`` of its own outside a request. A Redis that does not answer in time raises
:class:`StoreUnavailable` instead of holding the request, and the client (proxy/limits/_resp.py, on trio's own
sockets) never blocks the event loop.

Every slot is a lease of ``lease_s``, whoever takes it (an upstream's ``max_concurrent``, a client key's
``concurrent``, a half-open deployment's probe): the store remembers the leases it handed out and not yet released,
and :meth:`RedisStore.run` renews them all (one script call per thousand) every third of ``lease_s``. A lease nobody
renews lapses within ``lease_s``: its worker died, its release was lost while Redis was unreachable, or Redis applied
an acquire after its caller had given up (that one is not remembered, so never renewed).

A release waits until Redis applied it (within the deadline): a slot is free before the request that held it
answers its last bytes, so a client that waits for its answer never finds its own slot taken. Acquires, and
releases, of one moment go out in one script call each (proxy/limits/_batch.py); one with nothing else queued or on
its way is sent by its own caller.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import trio

from . import _scripts
from ._address import RedisAddress, StateURLError, parse_state_url
from ._batch import Batches
from ._budget import current_budget
from ._resp import RedisConnection, RedisRefused, RedisUnavailable, ReplyError
from ._store import StoreUnavailable, Window


@dataclass(slots=True, eq=False)
class _Ask:
    """One acquire in a batch: ``taken`` stays None until Redis answered."""

    name: str
    limit: int
    token: str
    taken: bool | None = None


@dataclass(slots=True, eq=False)
class _Give:
    """One release in a batch: ``done`` once Redis applied it."""

    name: str
    token: str
    done: bool = False


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisStore:
    """The shared store. ``url``: a ``--state`` URL (proxy/limits/_address.py; a bad one raises StateURLError);
    ``prefix`` before every key; ``timeout_s``: the most a request waits on it (its admission; as much again at its
    end); ``lease_s``: every slot's lease; ``window_origin_s``: when windows start (the Unix epoch; a test moves it
    to start a window when it begins). Serve :meth:`run` in a nursery before the first call."""

    shared = True

    def __init__(self, url: str, *, prefix: str = "moonrelay:", timeout_s: float = 0.25, lease_s: float = 30.0,
                 window_origin_s: float = 0.0) -> None:  # fmt: skip
        self.address = parse_state_url(url)
        self.url = self.address.shown  # what logs may show: the password is ***
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.lease_s = lease_s
        self._lease_ms = _ms(lease_s)
        self._origin_ms = round(window_origin_s * 1000)
        self._client: RedisConnection | None = None  # opened by run()
        self._shas = {name: _sha(text) for name, text in _scripts.ALL.items()}
        self._leases: dict[str, str] = {}  # token → name: handed out, not released
        self._asks = Batches(self._send_asks)
        self._releases = Batches(self._send_releases)
        # Tokens unique across instances: a random part per store, a counter per lease.
        self._tag = os.urandom(6).hex()
        self._count = itertools.count(1)

    # -- the connection and the scripts -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the client, then renew the leases held every third of ``lease_s``, until cancelled. Redis need not
        answer yet: calls fail with StoreUnavailable until it does."""
        client = RedisConnection(self.address)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            self._client = client
            try:
                nursery.start_soon(self._asks.run)
                nursery.start_soon(self._releases.run)
                task_status.started()
                while True:
                    await trio.sleep(self.lease_s / 3)
                    try:
                        await self.renew_held()
                    except StoreUnavailable:
                        pass  # the next round tries again; a lease that lapsed meanwhile is added back then
            finally:
                self._client = None

    @contextmanager
    def _deadline(self) -> Iterator[trio.CancelScope]:
        """A cancel scope for a call or a wait: the rest of the request's budget (deducted by what this took), or
        ``timeout_s`` outside a request."""
        budget = current_budget()
        limit = self.timeout_s if budget is None else budget.left_s
        began = trio.current_time()
        try:
            with trio.move_on_after(max(0.0, limit)) as scope:
                yield scope
        finally:
            if budget is not None:
                budget.left_s -= trio.current_time() - began

    def _late(self) -> StoreUnavailable:
        return StoreUnavailable(f"Redis did not answer within the deadline ({self.timeout_s} s per request)")

    async def _send_asks(self, asks: list[_Ask]) -> None:
        keys = [self._key(ask.name) for ask in asks]
        args: list[Any] = [self._lease_ms]
        for ask in asks:
            args += [ask.limit, ask.token]
        try:
            taken = await self._call("acquire", keys, args)
        except StoreUnavailable:
            return  # every ask stays unanswered: its caller raises
        for ask, one in zip(asks, taken, strict=True):
            ask.taken = bool(one)

    async def _send_releases(self, gives: list[_Give]) -> None:
        try:
            await self._call("release", [self._key(give.name) for give in gives], [give.token for give in gives])
        except StoreUnavailable:
            return  # not renewed any more: those leases lapse after lease_s
        for give in gives:
            give.done = True

    async def _call(self, op: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run script ``op`` within the deadline; loads it when Redis does not know it."""
        client = self._client
        if client is None:
            raise StoreUnavailable("the Redis store is not running")
        with self._deadline():
            try:
                try:
                    return await client.call("EVALSHA", self._shas[op], len(keys), *keys, *args)
                except ReplyError as exc:
                    if not str(exc).startswith("NOSCRIPT"):
                        raise
                    await client.call("SCRIPT", "LOAD", _scripts.ALL[op])
                    return await client.call("EVALSHA", self._shas[op], len(keys), *keys, *args)
            except (RedisUnavailable, ReplyError) as exc:
                raise StoreUnavailable(f"Redis: {exc}") from exc
        raise self._late()

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers within the deadline."""
        await self._call("held", [self.prefix + "ping"], [])

    def _key(self, name: str) -> str:
        return self.prefix + name

    # -- slots ---------------------------------------------------------------------------------------

    async def acquire(self, name: str, limit: int) -> str | None:
        """Sent with the acquires of the same moment (module docstring); waits at most the deadline."""
        if self._client is None:
            raise StoreUnavailable("the Redis store is not running")
        ask = _Ask(name, limit, f"{self._tag}.{next(self._count)}")
        if self._asks.idle:
            await self._asks.send_alone(ask)  # within the deadline of _call
        else:
            answered = self._asks.add(ask)
            with self._deadline():
                await answered.wait()
        # Remembered (and renewed) only once Redis said yes: an ask answered after its caller gave up may have taken
        # the slot, and that lease, renewed by nobody, lapses after lease_s.
        if ask.taken is None:
            raise self._late()
        if not ask.taken:
            return None
        self._leases[ask.token] = name
        return ask.token

    async def release(self, name: str, token: str) -> None:
        """Give the slot back and wait until Redis applied it (at most the deadline: past it, StoreUnavailable, and
        the lease, renewed no more, lapses within lease_s)."""
        if self._leases.pop(token, None) is None or self._client is None:
            return
        give = _Give(name, token)
        if self._releases.idle:
            await self._releases.send_alone(give)
        else:
            sent = self._releases.add(give)
            with self._deadline():
                await sent.wait()
        if not give.done:
            raise self._late()

    def forget(self, token: str) -> None:
        """Stop renewing a lease without telling Redis (it is unreachable): the slot lapses within lease_s."""
        self._leases.pop(token, None)

    async def renew(self, leases: Sequence[tuple[str, str]]) -> None:
        """Extend these ``(name, token)`` leases to ``lease_s`` from now (added back where Redis lost them)."""
        if leases:
            keys = [self._key(name) for name, _ in leases]
            await self._call("renew", keys, [self._lease_ms, *(token for _, token in leases)])

    async def renew_held(self) -> None:
        """Renew every lease this store handed out and that is not released yet."""
        held = [(name, token) for token, name in self._leases.items()]
        for start in range(0, len(held), 1000):  # bounded script calls, whatever is held
            batch = held[start : start + 1000]
            await self.renew(batch)
            # A lease released while this renewal was on its way may have been added back after its ZREM.
            for name, token in batch:
                if token not in self._leases:
                    self._releases.add(_Give(name, token))

    async def held(self, name: str) -> int:
        return int(await self._call("held", [self._key(name)], []))

    # -- windows -------------------------------------------------------------------------------------

    async def hit(self, name: str, window_s: float, limit: int, cost: int = 1) -> Window:
        args = [_ms(window_s), self._origin_ms, limit, cost]
        allowed, total, reset = await self._call("hit", [self._key(name)], args)
        return Window(bool(allowed), int(total), limit, int(reset) / 1000)

    async def add(self, name: str, window_s: float, amount: int) -> int:
        total, _ = await self._call("add", [self._key(name)], [_ms(window_s), self._origin_ms, amount])
        return int(total)

    async def used(self, name: str, window_s: float) -> tuple[int, float]:
        total, reset = await self._call("used", [self._key(name)], [_ms(window_s), self._origin_ms])
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


async def check_redis(address: RedisAddress, timeout_s: float = 1.0) -> None:
    """Ask Redis once, at start-up, whether it takes ``address``'s credentials and database: a StateURLError when it
    refuses them; nothing when it answers, or does not in ``timeout_s`` (the workers count locally until it does)."""
    client = RedisConnection(address)
    refused = None
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        try:
            with trio.move_on_after(timeout_s):
                await client.call("PING")
        except RedisRefused as exc:
            refused = str(exc)
        except ReplyError as exc:
            refused = f"Redis refused PING: {exc}"
            if str(exc).startswith("NOAUTH"):
                how = "redis://:PASSWORD@HOST:PORT/DB, or redis://USER:PASSWORD@HOST:PORT/DB for an ACL user"
                refused = f"Redis needs a password ({exc}): {how}"
        except RedisUnavailable:
            pass
        nursery.cancel_scope.cancel()
    if refused is not None:
        raise StateURLError(f"state {address.shown}: {refused}")
