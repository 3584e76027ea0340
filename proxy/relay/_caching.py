"""The response cache on the request path: which chat requests it may answer, the lookup (after the client key's
``rpm`` check, before its token reserve and the admission slots), a hit answered from the entry, and a miss recorded
and stored once its call ended complete (proxy/cache holds the key, the entries and the stores).

A request may be cached when its upstream says ``cache = true`` (one cache for every client) or its client key says
``cache=on`` (a cache of its own: the key's id is the key's scope), the policy allows it (``--cache-max-temperature``)
and its ``Cache-Control`` does not say ``no-store``. A hit is a request like any other for ``rpm`` and is charged
nothing; a miss goes upstream as always, its answer recorded as the client is sent it (a stream before its usage
chunk is cut: proxy/stream/_recording.py) and stored when the call ends, only if the client received all of it and
the stream ended with its end event.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import trio
from quart import Response

from ..cache import (
    CACHE_HEADER,
    CachePolicy,
    Entry,
    MemoryCache,
    RedisCache,
    StreamRecorder,
    cache_control,
    cache_key,
    json_entry,
    replay,
    slot,
    uncacheable,
)
from ..config import Settings
from ..protocol import ChatRequest, asked_for_usage
from ..routing import Upstreams
from ..state import RequestState
from ..stream import SSEBody, recorded

log = logging.getLogger("moonrelay")

STORE_TIMEOUT_S = 2.0  # storing an entry as the call ends, shielded (the Redis store has its own deadline)
MAX_GAP_S = 1.0  # a paced replay waits at most this long between two pieces


class Store(Protocol):
    async def get(self, key: str) -> Entry | None: ...

    async def put(self, key: str, entry: Entry, ttl_s: float | None = None) -> bool: ...


class Counters(Protocol):
    """Where hits, misses, stores and their bytes are counted (proxy.observability.Metrics)."""

    def cache_hit(self, size: int) -> None: ...

    def cache_miss(self) -> None: ...

    def cache_stored(self, size: int, evicted: int) -> None: ...


def check_cache(settings: Settings) -> None:
    """At start-up: the ``cache_*`` settings the relay cannot use, as a ValueError naming the setting."""
    if settings.cache_pace not in ("on", "off"):
        raise ValueError(f"cache_pace: expected on or off, got {settings.cache_pace!r}")
    for name in ("cache_ttl_s", "cache_max_entries", "cache_max_bytes"):
        if not getattr(settings, name) > 0:
            raise ValueError(f"{name}: must be more than 0, got {getattr(settings, name)}")
    if settings.cache_max_temperature is not None and settings.cache_max_temperature < 0:
        raise ValueError(f"cache_max_temperature: must be 0 or more, got {settings.cache_max_temperature}")


def cache_store(settings: Settings) -> MemoryCache | RedisCache:
    """This worker's store: its memory, or with ``--state`` the Redis every worker and instance shares (run its
    ``run`` in a nursery)."""
    if settings.state:
        return RedisCache(settings.state, prefix=settings.state_prefix, ttl_s=settings.cache_ttl_s,
                          timeout_s=settings.state_timeout_s)  # fmt: skip
    return MemoryCache(max_entries=settings.cache_max_entries, max_bytes=settings.cache_max_bytes,
                       ttl_s=settings.cache_ttl_s)  # fmt: skip


class ResponseCache:
    """The request path's side of the cache (the module docstring): ``store`` where entries are kept; ``counters``,
    when metrics are on."""

    def __init__(self, store: Store, settings: Settings, counters: Counters | None = None) -> None:
        self.store = store
        self.pace = settings.cache_pace == "on"
        self.policy = CachePolicy(max_temperature=settings.cache_max_temperature)
        self.counters = counters

    async def lookup(self, state: RequestState, chat: ChatRequest, upstreams: Upstreams | None,
                     control: str | None) -> Response | None:  # fmt: skip
        """The answer from the cache (a hit), or None: the request goes upstream (a miss is recorded when it may be
        stored: ``state.cache_fill``). ``upstreams``: where the request's model routes (does its first deployment
        say ``cache = true``?); ``control``: its ``Cache-Control``."""
        client = state.client
        if client is not None and client.key.cache:
            scope = f"key:{client.key.id}"
        elif upstreams is not None and (found := upstreams.deployments(chat.model)) and found[0].config.cache:
            scope = ""
        else:
            return None
        allowed = cache_control(control)
        if (not allowed.read and not allowed.write) or uncacheable(chat.data, self.policy) is not None:
            return None
        where = slot(cache_key(chat.data, protocol="chat", scope=scope, policy=self.policy), chat.stream)
        counters = self.counters
        if allowed.read:
            entry = await self.store.get(where)
            if entry is not None and entry.stream == chat.stream:
                state.cache = "hit"
                state.upstream = "cache"  # the access log's and the metrics' upstream: none was asked
                if counters is not None:
                    counters.cache_hit(entry.size)
                return self._answer(entry, chat)
        state.cache = "miss"
        if counters is not None:
            counters.cache_miss()
        if allowed.write:
            state.cache_fill = CacheFill(self, where)
        return None

    def _answer(self, entry: Entry, chat: ChatRequest) -> Response:
        headers = {CACHE_HEADER: "hit", "age": str(max(0, int(time.time() - entry.stored_at)))}
        content_type = dict(entry.headers).get("content-type")
        if entry.pieces is None:
            return Response(entry.body, status=entry.status, headers=headers,
                            content_type=content_type or "application/json")  # fmt: skip
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        pieces = replay(entry, pace=self.pace, max_gap_s=MAX_GAP_S, strip_usage=not asked_for_usage(chat.data))
        return Response(pieces, status=entry.status, headers=headers, content_type=content_type or "text/event-stream")

    async def put(self, where: str, entry: Entry) -> None:
        store = self.store
        stats = getattr(store, "stats", None)
        evicted = stats.evictions if stats is not None else 0
        with trio.move_on_after(STORE_TIMEOUT_S, shield=True):
            stored = await store.put(where, entry)
            if stored and self.counters is not None:
                after = stats.evictions if stats is not None else 0
                self.counters.cache_stored(entry.size, after - evicted)


def body_class(cls: type[SSEBody], fill: CacheFill | None) -> type[SSEBody]:
    """An SSE body class, or its recorded variant for a miss the cache records."""
    return cls if fill is None else recorded(cls)


class CacheFill:
    """A miss on its way into the cache: its answer (JSON, or the stream's recorder), stored by :meth:`store` when
    the call ended complete."""

    __slots__ = ("_cache", "_where", "_entry", "_recorder")

    def __init__(self, cache: ResponseCache, where: str) -> None:
        self._cache = cache
        self._where = where
        self._entry: Entry | None = None
        self._recorder: StreamRecorder | None = None

    def recorder(self, headers: Any) -> StreamRecorder:
        """A stream's recorder (``headers``: the upstream's, of which the entry keeps the content type)."""
        self._recorder = StreamRecorder(200, headers.items() if hasattr(headers, "items") else headers)
        return self._recorder

    def answered(self, status: int, headers: Any, body: bytes) -> None:
        """A whole JSON answer: kept when it is a 200."""
        if status == 200:
            items = headers.items() if hasattr(headers, "items") else headers
            self._entry = json_entry(status, items, body, stored_at=time.time())

    async def store(self, model: str | None = None) -> None:
        """The call ended with the client holding the whole answer: store it (a stream only if it completed
        cleanly: proxy.cache.StreamRecorder)."""
        entry = self._entry
        if entry is None and self._recorder is not None:
            entry = self._recorder.finish(model=model)
        if entry is not None:
            await self._cache.put(self._where, entry)
