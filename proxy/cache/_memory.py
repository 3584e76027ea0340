"""The cache in this worker's memory: entries by key, each with its time to live, within bounds in entries and in
bytes, the least recently used going first. The default store; one per worker (workers do not share it: with
``--state`` the Redis store is shared by all)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ._entry import Entry
from ._record import MAX_ENTRY_BYTES

DEFAULT_TTL_S = 600.0  # LiteLLM's in-memory default; an answer older than this is asked again


@dataclass(slots=True)
class CacheStats:
    """What a store did, since it started (per worker). ``bytes_stored``: what it holds now (memory), or wrote in
    all (Redis); ``bytes_served``: of the answers it gave back."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0  # entries dropped for room (entries or bytes bound)
    expirations: int = 0  # entries found past their time to live
    too_big: int = 0  # entries refused for the per-entry bound
    errors: int = 0  # calls the store failed (Redis down, late, or a reply it could not read): misses
    bytes_stored: int = 0
    bytes_served: int = 0
    entries: int = 0  # held now (memory only)


class MemoryCache:
    """``max_entries`` and ``max_bytes`` (of :attr:`Entry.size`) bound what it holds; an entry over
    ``max_entry_bytes`` is refused; ``ttl_s`` unless :meth:`put` says otherwise; ``clock``: seconds, monotonic."""

    shared = False

    def __init__(self, *, max_entries: int = 1000, max_bytes: int = 64 * 1024 * 1024,
                 max_entry_bytes: int = MAX_ENTRY_BYTES, ttl_s: float = DEFAULT_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self.ttl_s = ttl_s
        self.stats = CacheStats()
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Entry, float, int]] = OrderedDict()  # key → (entry, expires, size)

    async def get(self, key: str) -> Entry | None:
        return self.get_now(key)

    async def put(self, key: str, entry: Entry, ttl_s: float | None = None) -> bool:
        return self.put_now(key, entry, ttl_s)

    def get_now(self, key: str) -> Entry | None:
        """The entry under ``key`` that has not expired (now the most recently used), or None."""
        held = self._entries.get(key)
        stats = self.stats
        if held is None:
            stats.misses += 1
            return None
        entry, expires, size = held
        if self._clock() >= expires:
            self._drop(key, size)
            stats.expirations += 1
            stats.misses += 1
            return None
        self._entries.move_to_end(key)
        stats.hits += 1
        stats.bytes_served += size
        return entry

    def put_now(self, key: str, entry: Entry, ttl_s: float | None = None) -> bool:
        """Store ``entry`` (replacing what ``key`` held), evicting the least recently used while a bound is
        exceeded; False when the entry alone is over ``max_entry_bytes`` or the time to live is not positive."""
        size = entry.size
        ttl_s = self.ttl_s if ttl_s is None else ttl_s
        if size > self.max_entry_bytes:
            self.stats.too_big += 1
            return False
        if ttl_s <= 0:
            return False
        if (old := self._entries.get(key)) is not None:
            self._drop(key, old[2])
        self._entries[key] = (entry, self._clock() + ttl_s, size)  # the most recently used
        stats = self.stats
        stats.stores += 1
        stats.bytes_stored += size
        stats.entries += 1
        now = self._clock()
        while stats.entries > self.max_entries or stats.bytes_stored > self.max_bytes:
            oldest, (_, expires, oldest_size) = next(iter(self._entries.items()))
            self._drop(oldest, oldest_size)
            if now >= expires:
                stats.expirations += 1
            else:
                stats.evictions += 1
        return True

    def _drop(self, key: str, size: int) -> None:
        del self._entries[key]
        self.stats.bytes_stored -= size
        self.stats.entries -= 1
