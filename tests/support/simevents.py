"""Reading the simulated upstream's answers in tests: named SSE events, parsed, with the load generator's reader."""

from __future__ import annotations

import json

from loadtest.ssereader import SSEReader


def sse_events(content: bytes) -> list[tuple[str, object]]:
    """(event type, data) of every event in a whole SSE body: the data parsed as JSON, or left as bytes when it is
    not JSON (a malformed event, chat's ``[DONE]``). An event without an ``event:`` line has type ``message``."""
    out: list[tuple[str, object]] = []
    for event in SSEReader().feed_events(content):
        try:
            data: object = json.loads(event.data)
        except ValueError:
            data = event.data
        out.append((event.type.decode(), data))
    return out
