"""``include_usage`` for upstreams that send stream usage only when asked, sans I/O.

With ``include_usage = true`` on an upstream, every streaming chat request goes upstream with
``"stream_options": {"include_usage": true}``, so the access log and the token metrics know the
usage of every stream. A client that did not ask for it must not get the extra chunk it adds
(OpenAI's shape: ``{"choices": [], "usage": {...}}`` before ``[DONE]``; an SDK that did not ask
for it may choke on a chunk without choices), so that chunk is cut out of what it receives and
kept for the log. Everything else in the stream stays byte for byte what the upstream sent.

Only usage-bearing events are parsed a second time (one or two per stream): every event is
already checked by :func:`proxy.protocol.well_formed`, and only those that contain ``"usage"`` are
looked at again.
"""

from __future__ import annotations

import json
from typing import Any

from ._sse import EventSplitter, event_data, well_formed


def asked_for_usage(data: dict[str, Any]) -> bool:
    """Whether the client's request already asks for stream usage."""
    options = data.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def with_usage(data: dict[str, Any]) -> bytes:
    """The request body with ``stream_options.include_usage`` set (other stream options kept)."""
    options = data.get("stream_options")
    options = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    return json.dumps({**data, "stream_options": options}, ensure_ascii=False, separators=(",", ":")).encode()


def usage_only(payload: bytes) -> bool:
    """Whether one event's data is the usage chunk ``include_usage`` adds: no choices, a top-level usage."""
    if b'"usage"' not in payload:
        return False
    try:
        obj = json.loads(payload)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


class UsageStripper:
    """SSE bytes in, the same bytes out without the usage chunk; ``usage`` keeps the chunk's JSON.

    It passes on whole events only: the bytes of an event that has not ended yet are held until it
    does (or the stream ends), since the chunk cannot be cut once half of it has gone out. A
    malformed event stops it: ``malformed`` is set and what came before that event is returned.
    """

    __slots__ = ("_splitter", "_held", "usage", "malformed")

    def __init__(self) -> None:
        self._splitter = EventSplitter()
        self._held = b""  # == the splitter's pending bytes
        self.usage: bytes | None = None
        self.malformed = False

    def feed(self, data: bytes) -> bytes:
        buf = self._held + data
        events = self._splitter.feed(data)
        end = len(buf) - len(self._splitter.pending)
        self._held = buf[end:]
        out = []
        kept_from = pos = 0
        cutting = False
        for event in events:
            start = buf.find(event, pos)
            if cutting:  # the cut chunk ends where the next event starts: its blank line goes with it
                kept_from, cutting = start, False
            if not well_formed(event):
                self.malformed = True
                out.append(buf[kept_from:start])
                return b"".join(out)
            if b'"usage"' in event and self._cut(event):
                out.append(buf[kept_from:start])
                cutting = True
            pos = start + len(event)
        if not cutting:
            out.append(buf[kept_from:end])
        return b"".join(out)

    def end(self) -> bytes:
        """What is left when the upstream's body ends: an event without its blank line, passed on as sent."""
        rest, self._held = self._held, b""
        if rest.strip() and self._cut(rest.strip()):
            return b""
        return rest

    def _cut(self, event: bytes) -> bool:
        payload = event_data(event)
        if payload is None or not usage_only(payload):
            return False
        self.usage = payload
        return True
