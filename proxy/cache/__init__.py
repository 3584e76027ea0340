"""The response cache, exact match: a request normalised into a key (sans I/O), a complete answer as a versioned
entry, a recorder that makes one of a stream that completed cleanly and a replayer that sends it back with its
original event boundaries, and the stores: this worker's memory, or the ``--state`` Redis."""

from ._entry import ENTRY_VERSION, KEPT_HEADERS, Entry, decode, encode, json_entry, kept_headers
from ._key import (
    CACHE_HEADER,
    DEFAULT_POLICY,
    KEY_VERSION,
    CacheControl,
    CachePolicy,
    cache_control,
    cache_key,
    slot,
    uncacheable,
)
from ._memory import DEFAULT_TTL_S, CacheStats, MemoryCache
from ._record import MAX_ENTRY_BYTES, StreamRecorder, replay, schedule
from ._redis import RedisCache

__all__ = [
    "CACHE_HEADER",
    "CacheControl",
    "CachePolicy",
    "CacheStats",
    "DEFAULT_POLICY",
    "DEFAULT_TTL_S",
    "ENTRY_VERSION",
    "Entry",
    "KEPT_HEADERS",
    "KEY_VERSION",
    "MAX_ENTRY_BYTES",
    "MemoryCache",
    "RedisCache",
    "StreamRecorder",
    "cache_control",
    "cache_key",
    "decode",
    "encode",
    "json_entry",
    "kept_headers",
    "replay",
    "schedule",
    "slot",
    "uncacheable",
]
