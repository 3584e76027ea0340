"""The cache on the ``--state`` Redis, shared by every worker and instance: ``GET`` and ``SET ... PX`` of encoded
entries (proxy/cache/_entry.py) under ``PREFIX + "cache:" + key``, on a connection of its own (the relay's own RESP
client, proxy/limits), so a large entry never queues the limits' calls behind it.

A cache is an optimisation: whatever goes wrong is a miss, never an error. Redis down, late (each call has
``timeout_s``), or holding bytes that are not an entry of this version: the request goes upstream as if nothing
were stored. One line is logged when Redis stops answering and one when it answers again. An entry larger than
``max_entry_bytes`` (of answer) or than the RESP client reads (``MAX_BULK``, encoded) is not written. Redis evicts
by each entry's time to live and by its own ``maxmemory`` policy, which this store cannot see (``evictions`` stays 0).
"""

from __future__ import annotations

import logging
import math

import trio

from ..limits import MAX_BULK, RedisConnection, RedisUnavailable, ReplyError, parse_state_url
from ._entry import Entry, decode, encode
from ._memory import DEFAULT_TTL_S, CacheStats
from ._record import MAX_ENTRY_BYTES

log = logging.getLogger("moonrelay")


class RedisCache:
    """``url``: a ``--state`` URL (a bad one raises StateURLError); serve :meth:`run` in a nursery before the first
    call (calls made before are misses)."""

    shared = True

    def __init__(self, url: str, *, prefix: str = "moonrelay:", ttl_s: float = DEFAULT_TTL_S,
                 max_entry_bytes: int = MAX_ENTRY_BYTES, timeout_s: float = 0.25) -> None:  # fmt: skip
        self.address = parse_state_url(url)
        self.prefix = prefix + "cache:"
        self.ttl_s = ttl_s
        self.max_entry_bytes = max_entry_bytes
        self.timeout_s = timeout_s
        self.stats = CacheStats()
        self._client = RedisConnection(self.address)
        self._running = False
        self._down = False  # the last call failed (logged once)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the connection until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._client.run)
            self._running = True
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._running = False

    async def get(self, key: str) -> Entry | None:
        raw = await self._call("GET", self.prefix + key)
        entry = decode(raw, self.max_entry_bytes) if isinstance(raw, bytes) else None
        if entry is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        self.stats.bytes_served += entry.size
        return entry

    async def put(self, key: str, entry: Entry, ttl_s: float | None = None) -> bool:
        """Store ``entry`` for ``ttl_s`` (the store's default when None); False when it was not (too big, Redis
        failed)."""
        ttl_s = self.ttl_s if ttl_s is None else ttl_s
        if ttl_s <= 0:
            return False
        data = encode(entry) if entry.size <= self.max_entry_bytes else b""
        if not data or len(data) > MAX_BULK:
            self.stats.too_big += 1
            return False
        if await self._call("SET", self.prefix + key, data, "PX", max(1, math.ceil(ttl_s * 1000))) != b"OK":
            return False
        self.stats.stores += 1
        self.stats.bytes_stored += len(data)
        return True

    async def _call(self, *args: str | bytes | int) -> object:
        """The reply, or None when Redis failed or did not answer within ``timeout_s``."""
        if not self._running:
            self.stats.errors += 1
            return None
        why = f"no answer within {self.timeout_s} s"
        with trio.move_on_after(self.timeout_s):
            try:
                reply = await self._client.call(*args)
            except (RedisUnavailable, ReplyError) as exc:
                why = str(exc)
            else:
                if self._down:
                    self._down = False
                    log.info("cache: Redis %s answers again", self.address.shown)
                return reply
        self.stats.errors += 1
        if not self._down:
            self._down = True
            log.warning("cache: Redis %s failed (%s); answers are asked upstream until it is back",
                        self.address.shown, why)  # fmt: skip
        return None
