"""A stream into an entry as it goes out, and an entry back into a stream.

:class:`StreamRecorder` is fed each piece of the stream as it is written (one or more whole SSE events), and makes
an entry only of a stream that completed cleanly: the body ended, nothing failed, and the last event was the
protocol's end (``data: [DONE]`` for chat). A stream the client left (the recorder is never finished), one that
failed (:meth:`StreamRecorder.fail`, or the relay's error event with no ``[DONE]`` after it) or one that grew past
the size bound is never stored. Comment-only pieces (the relay's ``: ping`` heartbeats) are not part of the answer.

:func:`replay` gives an entry's pieces back as they were recorded, each piece one write: the same event
boundaries, and with ``pace`` the recorded gaps between pieces (each capped), not the time to the first one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable

import trio

from ..protocol import DONE, Usage, UsageStripper
from ._entry import Entry, kept_headers

MAX_ENTRY_BYTES = 4 * 1024 * 1024  # ~20,000 chunks of a chat stream; a longer answer is not kept


class StreamRecorder:
    """Records one stream. ``done``: the data of the event that ends a complete stream (None: any end is one, for
    protocols without an end event); ``clock``: seconds, monotonic."""

    __slots__ = ("status", "headers", "why", "_pieces", "_times", "_size", "_max", "_clock", "_done")

    def __init__(self, status: int = 200, headers: Iterable[tuple[str, str]] = (), *,
                 max_bytes: int = MAX_ENTRY_BYTES, done: bytes | None = DONE,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.status = status
        self.headers = kept_headers(headers)
        self.why: str | None = None  # why there is no entry: failed, too_big, truncated, empty
        self._pieces: list[bytes] = []
        self._times: list[float] = []
        self._size = 0
        self._max = max_bytes
        self._clock = clock
        self._done = done

    def piece(self, data: bytes) -> None:
        """One write of the stream: whole events, as the client is sent them."""
        if self.why is not None or not data or (data[:1] == b":" and _comments_only(data)):
            return
        self._size += len(data)
        if self._size > self._max:
            self.fail("too_big")
            return
        self._pieces.append(data)
        self._times.append(self._clock())

    def fail(self, why: str = "failed") -> None:
        """The stream failed (an upstream error, a timeout, a write that did not complete): no entry."""
        if self.why is None:
            self.why = why
            self._pieces, self._times = [], []

    def finish(self, *, usage: Usage | None = None, model: str | None = None) -> Entry | None:
        """The body ended without an error: its entry, or None (see :attr:`why`)."""
        if self.why is not None:
            return None
        if not self._pieces:
            self.why = "empty"
            return None
        if self._done is not None and _last_data(self._pieces[-1]) != self._done:
            self.fail("truncated")
            return None
        first = self._times[0]
        offsets = tuple(round((t - first) * 1000) for t in self._times)
        return Entry(self.status, self.headers, pieces=tuple(self._pieces), offsets_ms=offsets, usage=usage,
                     model=model, stored_at=time.time())  # fmt: skip


def _comments_only(data: bytes) -> bool:
    return all(not line or line.startswith(b":") for line in data.splitlines())


def _last_data(piece: bytes) -> bytes | None:
    """The data of the last event in ``piece`` when that event is one ``data`` line, else None."""
    line = piece.rstrip(b"\r\n").rpartition(b"\n")[2].rstrip(b"\r")
    if not line.startswith(b"data:"):
        return None
    value = line[5:]
    return value[1:] if value.startswith(b" ") else value


def schedule(entry: Entry, *, pace: bool = False, max_gap_s: float = 1.0) -> list[tuple[float, bytes]]:
    """``(seconds to wait first, piece)`` for each piece of a stream entry: no wait without ``pace``; with it, the
    recorded gap to the previous piece, at most ``max_gap_s``."""
    pieces = entry.pieces or ()
    if not pace:
        return [(0.0, piece) for piece in pieces]
    out, previous = [], entry.offsets_ms[0] if entry.offsets_ms else 0
    for offset, piece in zip(entry.offsets_ms, pieces, strict=True):
        out.append((min(max(offset - previous, 0) / 1000, max_gap_s), piece))
        previous = offset
    return out


async def replay(entry: Entry, *, pace: bool = False, max_gap_s: float = 1.0,
                 strip_usage: bool = False) -> AsyncIterator[bytes]:  # fmt: skip
    """The pieces of a stream entry as they were sent (:func:`schedule`). ``strip_usage``: without the usage-only
    chunk (``stream_options.include_usage``), for a client that did not ask for it when the one recorded did."""
    stripper = UsageStripper() if strip_usage else None
    for wait, piece in schedule(entry, pace=pace, max_gap_s=max_gap_s):
        if wait > 0:
            await trio.sleep(wait)
        if stripper is not None:
            piece = stripper.feed(piece)
            if not piece:
                continue
        yield piece
    if stripper is not None and (rest := stripper.end()):
        yield rest
