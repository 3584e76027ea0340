"""An SSE body whose stream is recorded as it passes, for the response cache (proxy/cache): each read's whole events
as the upstream sent them, before any usage chunk is cut (a replay cuts it for a client that did not ask), and
nothing of a stream that failed, was malformed or was shut down.

A subclass made once per body class (:func:`recording`) rather than a flag in :class:`SSEBody`: a stream that is not
recorded runs the same code as before, and one that is pays one more call per read (and, where the body cuts the
usage chunk, a second split of the read into whole events).
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from ..protocol import MALFORMED_SSE, EventSplitter
from ._bodies import SSEBody
from ._metered import UsageStrippedSSE


class Recorder(Protocol):
    """What a recorded body feeds (proxy.cache.StreamRecorder)."""

    def piece(self, data: bytes) -> None: ...

    def fail(self, why: str = "failed") -> None: ...


class _Recording:
    """What every recorded body adds to its class (the slots are the made subclass's)."""

    __slots__ = ()
    _recorder: Recorder
    _raw: EventSplitter | None  # the upstream's own events, where the body's output is not them (usage cut)

    def start_recording(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._raw = EventSplitter() if isinstance(self, UsageStrippedSSE) else None

    def _convert(self, data: bytes) -> bytes:
        out: bytes = super()._convert(data)  # type: ignore[misc]
        raw = self._raw
        if raw is None:
            whole = out
        else:
            events = raw.feed(data)
            whole = b"".join(event + b"\n\n" for event in events)
        if out.endswith(MALFORMED_SSE):
            self._recorder.fail("malformed")
        elif whole:
            self._recorder.piece(whole)
        return out

    def _end(self) -> Any:
        rest = self._raw.pending if self._raw is not None else self._splitter.pending  # type: ignore[attr-defined]
        if rest.strip():
            self._recorder.piece(rest)  # an unterminated last event: the recorder decides whether it ended the stream
        return super()._end()  # type: ignore[misc]

    def _error(self, exc: httpx.TransportError) -> bytes:
        self._recorder.fail("upstream_error")
        return super()._error(exc)  # type: ignore[misc,no-any-return]

    def _shutdown(self) -> bytes:
        self._recorder.fail("shutting_down")
        return super()._shutdown()  # type: ignore[misc,no-any-return]


_MADE: dict[type, type] = {}


def recorded(cls: type[SSEBody]) -> type[SSEBody]:
    """The recorded variant of an SSE body class (made once); call ``start_recording`` on a new one before it
    relays."""
    made = _MADE.get(cls)
    if made is None:
        made = _MADE[cls] = type(f"Recorded{cls.__name__}", (_Recording, cls), {"__slots__": ("_recorder", "_raw")})
    return made
