"""Token usage of native Anthropic Messages answers, sans I/O, for the relay to charge.

A stream reports usage twice: ``message_start.message.usage`` (``input_tokens``, the cache counts, a first
``output_tokens``) and ``message_delta.usage`` (cumulative: its counts replace the earlier ones; a count it leaves
out keeps the earlier value). A non-streamed Message has one ``usage``. Anthropic counts cached input apart
(``input_tokens`` + ``cache_creation_input_tokens`` + ``cache_read_input_tokens`` is the whole prompt), so the
prompt the relay charges is their sum. Only events whose data holds ``"usage"`` are parsed.
"""

from __future__ import annotations

import json
from typing import Any

from .. import Usage, count

_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")


def _as_usage(fields: dict[str, int]) -> Usage:
    cached, written = fields["cache_read_input_tokens"], fields["cache_creation_input_tokens"]
    return Usage(
        prompt_tokens=fields["input_tokens"] + written + cached,
        completion_tokens=fields["output_tokens"],
        cached_tokens=cached,
        cache_write_tokens=written,
    )


class MessagesUsageReader:
    """Feed it each event's data of a native Messages stream; ``usage`` is what they reported (None: nothing)."""

    __slots__ = ("_fields",)

    def __init__(self) -> None:
        self._fields: dict[str, int] | None = None

    def feed(self, payload: bytes) -> None:
        if b'"usage"' not in payload:
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        if obj.get("type") == "message_start":
            message = obj.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
        elif obj.get("type") == "message_delta":
            usage = obj.get("usage")
        else:
            return
        if isinstance(usage, dict):
            fields = self._fields if self._fields is not None else dict.fromkeys(_FIELDS, 0)
            for name in _FIELDS:
                if usage.get(name) is not None:
                    fields[name] = count(usage[name])
            self._fields = fields

    @property
    def usage(self) -> Usage | None:
        return None if self._fields is None else _as_usage(self._fields)


def message_usage(message: Any) -> Usage | None:
    """The usage of a non-streamed Message (its parsed JSON, or the body's bytes)."""
    if isinstance(message, (bytes, str)):
        try:
            message = json.loads(message)
        except ValueError:
            return None
    usage = message.get("usage") if isinstance(message, dict) else None
    if not isinstance(usage, dict):
        return None
    return _as_usage({name: count(usage.get(name)) for name in _FIELDS})
