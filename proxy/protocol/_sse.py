"""Server-sent events framing, sans I/O: bytes in, whole events out.

The relay passes SSE bytes through untouched; this module exists for the places that must see
events: the NDJSON conversion, usage extraction, and the load generator's client.
"""

from __future__ import annotations

import json
import re

# The end of an event: a line break, then an empty line (CRLF, LF or CR each; CR LF is one break). A CR that
# ends the bytes so far may be the first half of a CRLF: it ends nothing until the next byte shows which.
_BREAK = rb"(?:\r\n|\r(?=[^\n])|\n)"
_EVENT_END = re.compile(_BREAK + _BREAK)
_BREAK_AT_END = rb"(?:\r\n|\r(?!\n)|\n)"  # the stream ended: a last CR is a line break
_LAST_EVENT_END = re.compile(_BREAK_AT_END + _BREAK_AT_END)
_BOM = b"\xef\xbb\xbf"


class EventSplitter:
    """Incremental SSE splitter: ``feed(data)`` returns the events completed by ``data``.

    Each event is returned without its terminating blank line. Partial events are kept until their
    terminator arrives, so a TCP read that ends mid-event never produces a broken event.
    """

    __slots__ = ("_buf", "_fresh")

    def __init__(self) -> None:
        self._buf = b""
        self._fresh = True  # nothing fed yet: a byte order mark may lead the stream

    @property
    def pending(self) -> bytes:
        """Bytes of an event that has not ended yet."""
        return self._buf

    def feed(self, data: bytes) -> list[bytes]:
        """The events ``data`` completed, by the standard's line rules (CRLF, LF or CR, mixed).

        A CR that ends one read and an LF that starts the next are one line break: the empty line
        that may follow it then reads as an empty event, which is skipped like any other.
        """
        buf = self._buf + data if self._buf else data
        if self._fresh:  # the standard drops a byte order mark at the start of the stream
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf
                return []
            self._fresh = False
            if buf.startswith(_BOM):
                buf = buf[3:]
        if b"\r" not in buf:
            if b"\n\n" not in buf:
                self._buf = buf
                return []
            # The common case (every OpenAI-compatible upstream we know frames with \n\n).
            parts = buf.split(b"\n\n")
            self._buf = parts.pop()
            return [p for p in parts if p]
        events, start = _split(buf, _EVENT_END)
        self._buf = buf[start:]
        return events

    def end(self) -> list[bytes]:
        """At the end of the stream: the events its last bytes completed (a final CR is a line break now).
        An event without its empty line is not one (the standard drops it) and stays in ``pending``."""
        events, start = _split(self._buf, _LAST_EVENT_END)
        self._buf = self._buf[start:]
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


def _split(buf: bytes, ends: re.Pattern[bytes]) -> tuple[list[bytes], int]:
    """The events in ``buf`` and where the bytes after the last one start."""
    events: list[bytes] = []
    start = 0
    for end in ends.finditer(buf):
        event = buf[start : end.start()].lstrip(b"\r\n")  # leading empty lines dispatch nothing
        if event:
            events.append(event)
        start = end.end()
    return events, start


def event_data(event: bytes) -> bytes | None:
    """The ``data`` field of one event (multi-line data joined with \\n); None for comment-only events."""
    if event.startswith(b"data: ") and b"\n" not in event and b"\r" not in event:
        return event[6:]
    lines = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
        elif line == b"data":  # a field with no colon has an empty value
            lines.append(b"")
    if not lines:
        return None
    return b"\n".join(lines)


DONE = b"[DONE]"


def well_formed(event: bytes) -> bool:
    """Whether one event is what an OpenAI-compatible stream may send: a comment, a field without
    data, ``[DONE]``, or data holding one JSON object. Anything else would break every client SDK."""
    if event[:7] == b"data: {" and b"\n" not in event and b"\r" not in event:  # event_data's usual case, inline
        payload = event[6:]
    else:
        payload = event_data(event)
        if payload is None or payload == DONE:
            return True
        if payload[:1] != b"{":
            return False
    try:
        # json.loads(bytes) would also detect the encoding and match trailing whitespace by regex, once per
        # relayed event.
        text = payload.decode()
        end = _decode_json(text)[1]
    except ValueError:  # UnicodeDecodeError too
        return False
    return end == len(text) or not text[end:].strip(" \t\n\r")


_decode_json = json.JSONDecoder().raw_decode
