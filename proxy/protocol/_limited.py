"""Who an upstream's 429 is about, sans I/O: the account (its key, quota or service is at a limit: waiting, or
another key or deployment, may serve) or the request itself (it is too large for the limit: it fails the same way
whenever and wherever it is sent again).

Why it matters: a 429 about the account rests the key or deployment that gave it, so that other requests go
elsewhere; resting on a 429 about one request would let one client's oversized request take a model away from
everyone. The providers say which it is in the body and the headers:

- about the request: OpenAI's ``Request too large for … tokens per min`` (``code: rate_limit_exceeded``, as for a
  limit reached: only the message tells them apart), ``context_length_exceeded``, ``request_too_large``;
- about the account: Moonshot's types ``rate_limit_reached_error``, ``exceeded_current_quota_error``,
  ``engine_overloaded_error``; OpenAI's ``rate_limit_exceeded`` / ``insufficient_quota`` (``type`` ``requests`` or
  ``tokens``); Anthropic's ``rate_limit_error``; or, whatever the body, a ``Retry-After`` (waiting will help: the
  request itself is not the problem) or a rate-limit header saying nothing is left
  (``x-ratelimit-remaining-*: 0``, ``anthropic-ratelimit-*-remaining: 0``).

A 429 that says neither is :attr:`Limited.UNKNOWN`: it rests nothing (the safe side: a wrong rest refuses every
client, a missed one costs a round trip), and the request may still go to another key or upstream.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping

MAX_BODY = 16384  # an error body longer than this is not parsed: the headers alone decide

_ABOUT_REQUEST_CODES = frozenset({"context_length_exceeded", "request_too_large", "string_above_max_length"})
_ABOUT_REQUEST_WORDS = ("request too large", "must be reduced", "context length", "exceeded model token limit")
_ABOUT_ACCOUNT_CODES = frozenset(
    {"rate_limit_reached_error", "exceeded_current_quota_error", "engine_overloaded_error", "rate_limit_exceeded",
     "insufficient_quota", "requests", "tokens", "rate_limit_error", "overloaded_error"}
)  # fmt: skip


class Limited(enum.Enum):
    ACCOUNT = "account"  # rest the key or deployment; another may serve
    REQUEST = "request"  # answer the client: no other key, upstream or wait changes it
    UNKNOWN = "unknown"  # rest nothing; another key or upstream may still serve


def limited_by(headers: Mapping[str, str], body: bytes) -> Limited:
    """Who the 429 with these ``headers`` (names in lower case, as httpx gives them) and ``body`` is about."""
    code, kind, message = _error_fields(body)
    if code in _ABOUT_REQUEST_CODES or kind in _ABOUT_REQUEST_CODES or any(w in message for w in _ABOUT_REQUEST_WORDS):
        return Limited.REQUEST
    if code in _ABOUT_ACCOUNT_CODES or kind in _ABOUT_ACCOUNT_CODES:
        return Limited.ACCOUNT
    for name, value in headers.items():
        if name in ("retry-after", "retry-after-ms"):
            return Limited.ACCOUNT
        remaining = name.startswith("x-ratelimit-remaining") or (
            name.startswith("anthropic-ratelimit-") and name.endswith("-remaining")
        )
        if remaining and _is_zero(value):
            return Limited.ACCOUNT
    return Limited.UNKNOWN


def _error_fields(body: bytes) -> tuple[str, str, str]:
    """``error.code``, ``error.type`` and ``error.message`` (lower case; "" where absent): the shape OpenAI, Moonshot
    and Anthropic (``{"type": "error", "error": {…}}``) share."""
    if not body or len(body) > MAX_BODY:
        return "", "", ""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return "", "", ""
    if not isinstance(error, dict):
        return "", "", ""
    fields = (error.get("code"), error.get("type"), error.get("message"))
    return tuple(f.lower() if isinstance(f, str) else "" for f in fields)  # type: ignore[return-value]


def _is_zero(value: str) -> bool:
    try:
        return float(value) <= 0
    except ValueError:
        return False
