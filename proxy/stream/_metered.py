"""Stream bodies that read usage as it passes: for a client key that counts tokens (its events counted, its usage
read: proxy/limits/_charge.py) and for streams whose usage the relay asked for on the client's behalf (the usage
chunk cut out: proxy/protocol/_usage.py).

Subclasses rather than flags in :class:`SSEBody`: a stream that needs neither runs the same code as before.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..protocol import (
    DONE,
    MALFORMED_NDJSON,
    MALFORMED_SSE,
    UsageMeter,
    UsageStripper,
    carries_usage,
    event_data,
    usage_only,
    well_formed,
)
from ..state import RequestState
from ._bodies import NDJSONBody, SSEBody, start_of


class MeteredSSE(SSEBody):
    """An SSE body whose events are counted and whose usage is read as it passes, for a client key that counts
    tokens. Per read one addition; per event a search for ``"usage"`` (a second parse only where it is not null).
    """

    __slots__ = ("_meter",)

    def __init__(self, response: httpx.Response, meter: UsageMeter, **kwargs: Any) -> None:
        super().__init__(response, **kwargs)
        self._meter = meter

    def _convert(self, data: bytes) -> bytes:
        events, whole = self._splitter.feed_whole(data)
        meter = self._meter
        meter.events += len(events)
        for event in events:
            if not well_formed(event):
                self._finished = True
                return whole[: start_of(event, events, whole)] + MALFORMED_SSE
            if b'"usage"' in event and carries_usage(event):  # the cheap test first: most events have none
                meter.event(event)
        return whole

    def _end(self) -> bytes | None:
        rest = self._splitter.pending
        if rest.strip():
            self._meter.events += 1
            if carries_usage(rest):
                self._meter.event(rest.strip())
        return rest or None


class UsageStrippedSSE(SSEBody):
    """An SSE body without the usage chunk the relay asked for on the client's behalf (proxy/protocol/_usage.py),
    its events metered when ``meter`` is given."""

    __slots__ = ("_stripper", "_state")

    def __init__(self, response: httpx.Response, state: RequestState, meter: UsageMeter | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(response, **kwargs)
        self._stripper = UsageStripper(meter)
        self._state = state

    def _convert(self, data: bytes) -> bytes:
        stripper = self._stripper
        out = stripper.feed(data)
        if stripper.usage is not None:
            self._state.stripped_usage = stripper.usage
        if stripper.malformed:
            self._finished = True
            return out + MALFORMED_SSE
        return out

    def _end(self) -> Any:
        rest = self._stripper.end()
        if self._stripper.usage is not None:
            self._state.stripped_usage = self._stripper.usage
        return rest or super()._end()


class MeteredNDJSON(NDJSONBody):
    """NDJSON lines whose events are counted and whose usage is read (``meter``), without the usage chunk the relay
    asked for on the client's behalf (``strip``)."""

    __slots__ = ("_state", "_meter", "_strip")

    def __init__(self, response: httpx.Response, state: RequestState, meter: UsageMeter | None, strip: bool,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(response, **kwargs)
        self._state = state
        self._meter = meter if meter is not None else UsageMeter()
        self._strip = strip

    def _convert(self, data: bytes) -> bytes:
        lines = []
        events = self._splitter.feed(data)
        self._meter.events += len(events)
        for event in events:
            if not well_formed(event):
                self._finished = True
                lines.append(MALFORMED_NDJSON)
                break
            payload = event_data(event)
            if payload is not None and payload != DONE and not self._cut(payload):
                lines.append(payload + b"\n")
        return b"".join(lines)

    def _end(self) -> bytes | None:
        rest = self._splitter.pending.strip()
        if rest:
            self._meter.events += 1
            payload = event_data(rest)
            if payload is not None and payload != DONE and not self._cut(payload):
                return payload + b"\n"
        return None

    def _cut(self, payload: bytes) -> bool:
        """Read a payload's usage; True when it is the usage chunk to cut."""
        if not carries_usage(payload):
            return False
        self._meter.payload(payload)
        if self._strip and usage_only(payload):
            self._state.stripped_usage = payload
            return True
        return False
