"""What a sampled request's span says of its answer, read from the last bytes the client was sent, sans I/O: the
response's id and model, and its finish reasons (``gen_ai.response.*``). Read once, when the request ends, and only
for a span that records: the relay never parses a stream for tracing."""

from __future__ import annotations

import json
from typing import Any


def answer_of(tail: bytes, *, whole_json: bool) -> dict[str, Any]:
    """``id``, ``model`` and ``finish_reasons`` (a list) of a chat answer from its tail: a whole JSON body, or the
    last SSE ``data:`` lines (an event cut at the tail's start is skipped). Missing fields are left out."""
    objects: list[Any] = []
    if whole_json:
        try:
            objects.append(json.loads(tail))
        except ValueError:  # UnicodeDecodeError too
            return {}
    else:
        for line in tail.split(b"\n"):
            line = line.strip()
            if not line.startswith(b"data:") or line.endswith(b"[DONE]"):
                continue
            try:
                objects.append(json.loads(line[5:]))
            except ValueError:
                continue
    out: dict[str, Any] = {}
    reasons: list[str] = []
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        for name in ("id", "model"):
            value = obj.get(name)
            if isinstance(value, str) and value:
                out[name] = value
        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                reason = choice.get("finish_reason") if isinstance(choice, dict) else None
                if isinstance(reason, str) and reason:
                    reasons.append(reason)
    if reasons:
        out["finish_reasons"] = reasons
    return out
