"""The load generator's own reading of ``text/event-stream`` bodies, sans I/O: bytes in, event data out.

Written from the WHATWG HTML standard ("Parsing an event stream" and "Interpreting an event stream",
https://html.spec.whatwg.org/multipage/server-sent-events.html), not from the relay's code: the load
generator judges the relay's SSE output, so it must not share the relay's parser (a parser bug would
grade itself). ``tests/loadtest/test_ssereader.py`` feeds both the same tricky streams and writes down where the
relay's splitter is knowingly narrower.

The rules, as implemented here:

- a UTF-8 byte order mark at the very start of the stream is dropped (once, even if it arrives split);
- a line ends at CRLF, LF or CR; a CR that ends one read and an LF that starts the next are ONE line break;
- an empty line dispatches the event; the end of the stream does not (an unterminated event is dropped);
- a line starting with ``:`` is a comment;
- ``name:value`` is a field (one space after the colon is dropped); a line without a colon is a field
  named by the whole line with an empty value;
- ``data`` appends its value to the event's data (several ``data`` lines are joined with LF);
  ``event`` sets the event's type; ``id`` sets the last event ID unless the value holds a NUL;
  ``retry`` sets the reconnection time when the value is ASCII digits only; other fields are ignored;
- an event without any ``data`` field is not dispatched.

Bytes stay bytes (the caller parses the data as JSON, which decodes it). Work is per read, not per byte
in Python: line endings are normalised with two ``bytes.replace`` only when a CR is present, events are
cut with one ``bytes.split``, and an event that is a single ``data: `` line (every chunk of an
OpenAI-compatible stream) is taken by one slice. The unended tail is joined to the next read, so an event
split over k reads is scanned k times: cheap for chat chunks of a few hundred bytes.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["BOM", "Event", "SSEReader"]

BOM = b"\xef\xbb\xbf"


class Event(NamedTuple):
    """One dispatched event."""

    type: bytes  # b"message" unless an ``event`` field named another
    data: bytes
    id: bytes  # the last event ID in force when the event was dispatched (b"" when none was set)


class SSEReader:
    """Incremental reader: ``feed(read)`` returns the data of every event that read completed, in order.

    :meth:`feed_events` returns whole :class:`Event` tuples instead (type, data, last event ID); the load
    generator grades data only (a chat completion stream sends every chunk as a default-type event). An
    event's fields take effect when its blank line arrives, so ``last_event_id`` and ``retry_ms`` are those
    of the events ended so far (the standard applies ``retry`` at once: they differ only for an event that
    the stream's end cuts off).
    """

    __slots__ = ("_buf", "_cr", "_head", "last_event_id", "retry_ms")

    def __init__(self) -> None:
        self._buf = b""  # normalised (LF-only) bytes of the event not yet ended
        self._cr = False  # the last read ended with a CR: an LF at the start of the next one is its CRLF
        self._head: bytes | None = b""  # bytes at the stream's start while a BOM may still be arriving
        self.last_event_id = b""
        self.retry_ms: int | None = None

    @property
    def pending(self) -> bytes:
        """Bytes of an event that has not ended yet (non-blank at the end of a stream: it was cut)."""
        return self._head + self._buf if self._head else self._buf

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of each event ``chunk`` completes (any type; comments and data-less events give none)."""
        out: list[bytes] = []
        for block in self._blocks(chunk):
            # One `data: ` line: the whole event is its value (the hot path, one slice).
            if block[:6] == b"data: " and block.find(b"\n", 6) < 0:
                out.append(block[6:])
            else:
                event = self._interpret(block)
                if event is not None:
                    out.append(event[1])
        return out

    def feed_events(self, chunk: bytes) -> list[Event]:
        """Every event ``chunk`` completes, with its type and last event ID."""
        out: list[Event] = []
        for block in self._blocks(chunk):
            # ``event: NAME`` then one ``data: `` line (every event of Anthropic's and OpenAI's Responses streams):
            # two slices, the hot path of those protocols.
            if block[:7] == b"event: ":
                nl = block.find(b"\n", 7)
                if nl > 7 and block[nl + 1 : nl + 7] == b"data: " and block.find(b"\n", nl + 7) < 0:
                    out.append(Event(block[7:nl], block[nl + 7 :], self.last_event_id))
                    continue
            event = self._interpret(block)
            if event is not None:
                out.append(Event(event[0], event[1], self.last_event_id))
        return out

    def _blocks(self, chunk: bytes) -> list[bytes]:
        """The events ``chunk`` ends, each as LF-separated lines without its blank line."""
        if self._head is not None:
            chunk = self._head + chunk
            if len(chunk) < len(BOM) and BOM.startswith(chunk):
                self._head = chunk  # may still become a BOM: wait for more
                return []
            self._head = None
            if chunk.startswith(BOM):
                chunk = chunk[len(BOM) :]
        if not chunk:
            return []  # an empty read changes nothing (a pending CR stays pending)
        if self._cr or b"\r" in chunk:
            if self._cr and chunk[:1] == b"\n":
                chunk = chunk[1:]  # the LF of a CRLF whose CR ended the last read
            self._cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        # After normalising, an empty line is an LF right after another line's LF: "\n\n" ends an event.
        # An empty line that follows a dispatch stays as a leading LF of the next block (see _interpret).
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        return blocks

    def _interpret(self, block: bytes) -> tuple[bytes, bytes] | None:
        """``(type, data)`` of one ended event, or None when it has no ``data`` field."""
        data: list[bytes] | None = None
        kind = b""
        for line in block.split(b"\n"):
            if not line or line[:1] == b":":
                # Empty: only a leading blank line, which dispatches an empty buffer (nothing). ':': a comment.
                continue
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                if data is None:
                    data = [value]
                else:
                    data.append(value)
            elif name == b"event":
                kind = value
            elif name == b"id":
                if b"\0" not in value:
                    self.last_event_id = value
            elif name == b"retry":
                if value.isdigit():  # bytes.isdigit: ASCII digits only, and not empty
                    self.retry_ms = int(value)
        if data is None:
            return None
        return kind or b"message", b"\n".join(data)
