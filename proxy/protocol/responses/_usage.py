"""Token usage of native OpenAI Responses answers, sans I/O, for the relay to charge.

A Response's ``usage`` (``input_tokens`` with ``input_tokens_details.cached_tokens`` among them, ``output_tokens``
with ``output_tokens_details.reasoning_tokens``) comes whole, and in a stream only in the terminal event
(``response.completed``, ``.incomplete`` or ``.failed``), inside its ``response``. Only event data holding
``"usage"`` is parsed.
"""

from __future__ import annotations

import json
from typing import Any

from .. import Usage, count

TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _usage_of(response: Any) -> Usage | None:
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details")
    out = usage.get("output_tokens_details")
    return Usage(
        prompt_tokens=count(usage.get("input_tokens")),
        completion_tokens=count(usage.get("output_tokens")),
        cached_tokens=count(details.get("cached_tokens")) if isinstance(details, dict) else 0,
        cache_write_tokens=count(details.get("cache_write_tokens")) if isinstance(details, dict) else 0,
        reasoning_tokens=count(out.get("reasoning_tokens")) if isinstance(out, dict) else 0,
    )


def responses_event_usage(payload: bytes) -> Usage | None:
    """The usage in one event's data of a native Responses stream: a terminal event's, else None."""
    if b'"usage"' not in payload:
        return None
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str) or obj["type"] not in TERMINAL:
        return None
    return _usage_of(obj.get("response"))


def response_usage(response: Any) -> Usage | None:
    """The usage of a non-streamed Response (its parsed JSON, or the body's bytes)."""
    if isinstance(response, (bytes, str)):
        try:
            response = json.loads(response)
        except ValueError:
            return None
    return _usage_of(response)
