"""Server-sent events framing, sans I/O: bytes in, whole events out.

The relay passes SSE bytes through untouched; this module exists for the places that must see
events: the NDJSON conversion, usage extraction, and the load generator's client.
"""

from __future__ import annotations

import json

_SEPARATORS = (b"\n\n", b"\r\n\r\n", b"\r\r")


class EventSplitter:
    """Incremental SSE splitter: ``feed(data)`` returns the events completed by ``data``.

    Each event is returned without its terminating blank line. Partial events are kept until their
    terminator arrives, so a TCP read that ends mid-event never produces a broken event.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    @property
    def pending(self) -> bytes:
        """Bytes of an event that has not ended yet."""
        return self._buf

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        if b"\n\n" in buf and b"\r" not in buf:
            # The common case (every OpenAI-compatible upstream we know frames with \n\n).
            parts = buf.split(b"\n\n")
            self._buf = parts.pop()
            return [p for p in parts if p]
        events: list[bytes] = []
        while True:
            cut = -1
            sep_len = 0
            for sep in _SEPARATORS:
                i = buf.find(sep)
                if i != -1 and (cut == -1 or i < cut):
                    cut, sep_len = i, len(sep)
            if cut == -1:
                break
            if cut:
                events.append(buf[:cut])
            buf = buf[cut + sep_len :]
        self._buf = buf
        return events

    def feed_whole(self, data: bytes) -> tuple[list[bytes], bytes]:
        """``feed``, and the bytes those events were: everything fed so far up to the last event's end.

        What a relay may forward so that its output always ends at an event boundary: a read that ends
        mid-event keeps that event's start here until a later read completes it. No copy unless an event
        was split across reads.
        """
        held = self._buf
        events = self.feed(data)
        if held:
            data = held + data
        rest = len(self._buf)
        return events, data[: len(data) - rest] if rest else data


def event_data(event: bytes) -> bytes | None:
    """The ``data`` field of one event (multi-line data joined with \\n); None for comment-only events."""
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:]
    lines = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    if not lines:
        return None
    return b"\n".join(lines)


DONE = b"[DONE]"


def well_formed(event: bytes) -> bool:
    """Whether one event is what an OpenAI-compatible stream may send: a comment, a field without
    data, ``[DONE]``, or data holding one JSON object. Anything else would break every client SDK."""
    payload = event_data(event)
    if payload is None or payload == DONE:
        return True
    if payload[:1] != b"{":
        return False
    try:
        # json.loads(bytes) would also detect the encoding and match trailing whitespace by regex:
        # 8.1 against 4.5 µs for a typical 250-byte chunk here, once per relayed event.
        text = payload.decode()
        end = _decode_json(text)[1]
    except ValueError:  # UnicodeDecodeError too
        return False
    return end == len(text) or not text[end:].strip(" \t\n\r")


_decode_json = json.JSONDecoder().raw_decode
