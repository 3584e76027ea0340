"""Usage read from a response body as it is relayed, sans I/O, never keeping the body whole.

:class:`JSONUsage` finds a JSON answer's top-level ``usage`` in one pass over its pieces, keeping nothing but the
usage object itself; :class:`EventMeter` splits a stream into events, holding one event at a time (at most
``MAX_EVENT_BYTES``). Both pass every byte on unchanged, and report to a :class:`proxy.protocol.UsageMeter`.
"""

from __future__ import annotations

import json
import re

from ._sse import EventSplitter
from ._usage import UsageMeter, carries_usage, usage_of

MAX_EVENT_BYTES = 1 << 20  # one event of a metered pass-through stream held at most; beyond, usage is not read
MAX_USAGE_BYTES = 1 << 14  # a usage object larger than this is not one

# A whole string (escapes included), the rest of one begun before, and a "usage" key whose value is an object.
# Possessive, and an opening quote never follows a backslash: no backtracking, and no new attempt at each escaped
# quote of a string that does not end in this piece, so each is linear in its text.
_STRING = re.compile(rb'"(?<!\\")[^"\\]*+(?:\\.[^"\\]*+)*+"', re.S)
_STRING_REST = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+"', re.S)
_USAGE_KEY = re.compile(rb'"usage"\s*:\s*\{')
HELD_BACK = 64  # bytes of each piece looked at with the next one: a "usage": { cut in two is seen whole
_decode = json.JSONDecoder().raw_decode


def _balance(text: bytes) -> tuple[int, bool]:
    """How the bracket depth changes over ``text`` (which starts outside a string), and whether it ends inside one.
    C-speed passes only: strings are cut out by one regex substitution, what is left is counted."""
    rest = _STRING.sub(b"", text)
    unclosed = rest.find(b'"')  # every whole string is gone: a quote left opens one that has not ended
    if unclosed >= 0:
        rest = rest[:unclosed]
    return rest.count(b"{") + rest.count(b"[") - rest.count(b"}") - rest.count(b"]"), unclosed >= 0


class JSONUsage:
    """A JSON answer fed in pieces as it is relayed, unchanged: its top-level ``usage`` goes to ``meter``.

    No copy of the document is kept: only the last ``HELD_BACK`` bytes of a piece, until the next one comes, and the
    usage object itself (``MAX_USAGE_BYTES`` at most). Per piece a few C-speed passes, never a Python step per
    byte or per string: the strings are cut out with one regex substitution and the brackets left are counted
    (:func:`_balance`), which gives the depth at the piece's end; a ``"usage": {`` (found by a regex: a key, since
    a quote inside a string is escaped) is taken when the depth before it is 1, in the document's own object, and
    its object is read with ``json``'s decoder once it is whole. Once found, the rest of the body is not looked at.
    """

    __slots__ = ("meter", "_depth", "_in_string", "_held", "_object", "_capture", "_size", "_done")

    def __init__(self, meter: UsageMeter) -> None:
        self.meter = meter
        self._depth = 0
        self._in_string = False
        self._held = b""  # the end of the last piece, not looked at yet
        self._object: bool | None = None  # whether the document is an object (None: not seen yet)
        self._capture: list[bytes] | None = None  # the usage object's bytes so far
        self._size = 0
        self._done = False

    def feed(self, data: bytes) -> bytes:
        if self._done:
            return data
        if self._capture is not None:
            self._more(data)
            return data
        text = self._held + data if self._held else data
        cut = len(text) - HELD_BACK
        run = 0
        while cut - run > 0 and text[cut - run - 1] == 0x5C:
            run += 1
        cut -= run % 2  # never between a backslash and the byte it escapes
        if cut <= 0:
            self._held = text
            return data
        self._held = text[cut:]
        self._scan(text, cut)
        return data

    def end(self) -> bytes:
        if not self._done and self._capture is None and self._held:
            text, self._held = self._held, b""
            self._scan(text, len(text))
        return b""

    def _scan(self, text: bytes, cut: int) -> None:
        """``text[:cut]``, from the state the last piece left; a usage key may reach past ``cut``."""
        if self._object is None:
            first = text[:cut].lstrip()[:1]
            if not first:
                return
            self._object = first == b"{"
        start = 0
        if self._in_string:
            rest = _STRING_REST.match(text, 0, cut)
            if rest is None:
                return  # the string goes on past this piece
            start = rest.end()
            self._in_string = False
        depth = self._depth
        if self._object:
            for key in _USAGE_KEY.finditer(text, start):
                if key.start() >= cut:
                    break
                change, inside = _balance(text[start : key.start()])
                if not inside and depth + change == 1:
                    self._capture = [text[key.end() - 1 :]]
                    self._size = len(self._capture[0])
                    self._held = b""
                    self._more(b"")
                    return
        change, self._in_string = _balance(text[start:cut])
        self._depth = depth + change

    def _more(self, data: bytes) -> None:
        """The usage object's bytes so far, and ``data``: read it once it is whole."""
        capture = self._capture
        assert capture is not None
        if data:
            capture.append(data)
            self._size += len(data)
        try:  # what follows the object may end in a character cut in two: replaced, it does not matter
            found, size = _decode(b"".join(capture).decode("utf-8", "replace"))
        except ValueError:  # not whole yet
            if self._size - len(data) > MAX_USAGE_BYTES:  # too large already before this piece
                self._done, self._capture = True, None
            return
        self._done, self._capture = True, None
        if size <= MAX_USAGE_BYTES:
            self.meter.report(usage_of(found))


class EventMeter:
    """A stream's SSE bytes fed as they are relayed, unchanged: ``meter`` counts its events and reads their usage.

    It holds one event at a time (what the splitter keeps of an event not ended yet); an event over
    ``MAX_EVENT_BYTES`` (a Responses ``response.completed`` repeats the whole output) stops it, with the events
    counted so far kept: the stream is then charged as one without usage.
    """

    __slots__ = ("meter", "_splitter")

    def __init__(self, meter: UsageMeter) -> None:
        self.meter = meter
        self._splitter: EventSplitter | None = EventSplitter()

    def feed(self, data: bytes) -> bytes:
        splitter = self._splitter
        if splitter is not None:
            self._count(splitter.feed(data))
            if len(splitter.pending) > MAX_EVENT_BYTES:
                self._splitter = None
        return data

    def end(self) -> bytes:
        if self._splitter is not None:
            self._count(self._splitter.end())
            self._splitter = None
        return b""

    def _count(self, events: list[bytes]) -> None:
        meter = self.meter
        meter.events += len(events)
        for event in events:
            if carries_usage(event):
                meter.event(event)
