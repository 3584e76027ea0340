"""What a cached answer answers, sans I/O: the request normalised into a key, whether it may be cached at all, and
the client's ``Cache-Control``.

The key is the SHA-256 of the request's canonical JSON (sorted keys, no whitespace) with a version prefix
(``v1:<hex>``), over every field of the body except those that cannot change the answer: ``stream`` (the shape of
the answer, kept apart by :func:`slot` instead), ``stream_options``, and the caller's own labels ``user``,
``metadata``, ``store``, ``safety_identifier``, ``prompt_cache_key`` (unless the policy says to vary on them). Every
other field is part of it, ones the relay does not know included: a field that changes the answer must never be
missed (a wrong answer), while one that does not only costs a hit. A top-level null is left out (the API treats it as
absent) and a whole-number float is written as the integer (``"temperature": 0`` and ``0.0`` are one request).
The protocol (chat, messages, responses) and a scope (the client key's, when the cache is per key) are part of it.

Which requests are cached is the operator's: by default every one, as LiteLLM's and Portkey's caches do (the
cache is opt-in per upstream or key already); :class:`CachePolicy` can leave out sampled requests
(``max_temperature``) and several-choice ones (``max_n``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KEY_VERSION = "v1"
CACHE_HEADER = "x-moonrelay-cache"  # hit or miss, on each answer to a request the cache could serve
# Fields that label a request without changing its answer.
LABELS = frozenset({"user", "metadata", "store", "safety_identifier", "prompt_cache_key"})
SHAPE = frozenset({"stream", "stream_options"})  # how the answer is sent, not what it is


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """Which requests are cached and what their key holds. ``max_temperature``: requests sampled hotter are not
    cached (None: no limit; a request without ``temperature`` counts as ``default_temperature``, the OpenAI API's
    1.0); ``max_n``: requests for more choices are not (None: no limit); ``vary_on``: label fields that are part of
    the key after all (``{"user"}``: each end user their own answers)."""

    max_temperature: float | None = None
    default_temperature: float = 1.0
    max_n: int | None = None
    vary_on: frozenset[str] = frozenset()

    @property
    def ignored(self) -> frozenset[str]:
        return SHAPE | (LABELS - self.vary_on)


DEFAULT_POLICY = CachePolicy()


def cache_key(data: Mapping[str, Any], *, protocol: str = "chat", scope: str = "",
              policy: CachePolicy = DEFAULT_POLICY) -> str:  # fmt: skip
    """The key of a parsed request body: ``v1:`` and 64 hex digits. ``scope``: what else parts answers (a client
    key's fingerprint when the cache is per key; empty when shared)."""
    ignored = policy.ignored
    fields = {name: _number(value) for name, value in data.items() if value is not None and name not in ignored}
    canonical = json.dumps([protocol, scope, fields], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{KEY_VERSION}:{hashlib.sha256(canonical.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _number(value: Any) -> Any:
    return int(value) if type(value) is float and value.is_integer() else value


def slot(key: str, stream: bool) -> str:
    """Where the answer to ``key`` is stored: a stream and a JSON answer to one question are kept apart."""
    return f"{key}:{'sse' if stream else 'json'}"


def uncacheable(data: Mapping[str, Any], policy: CachePolicy = DEFAULT_POLICY) -> str | None:
    """Why a request is not cached under ``policy`` (``temperature``, ``n``), or None when it may be."""
    if policy.max_temperature is not None:
        temperature = data.get("temperature")
        if type(temperature) not in (int, float):
            temperature = policy.default_temperature
        if temperature > policy.max_temperature:
            return "temperature"
    if policy.max_n is not None:
        n = data.get("n")
        if type(n) is int and n > policy.max_n:
            return "n"
    return None


@dataclass(frozen=True, slots=True)
class CacheControl:
    """What the client's ``Cache-Control`` lets the cache do: ``read`` a stored answer, ``write`` this one."""

    read: bool = True
    write: bool = True


def cache_control(value: str | None) -> CacheControl:
    """``no-store``: neither read nor write; ``no-cache``: answer afresh (and store that answer); anything else,
    or no header: both. Directive names are case-insensitive; unknown ones and arguments are ignored."""
    if not value:
        return CacheControl()
    directives = {part.partition("=")[0].strip().lower() for part in value.split(",")}
    if "no-store" in directives:
        return CacheControl(read=False, write=False)
    if "no-cache" in directives:
        return CacheControl(read=False, write=True)
    return CacheControl()
