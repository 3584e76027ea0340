"""Stream bodies for clients of another protocol than chat completions (Anthropic Messages, OpenAI Responses): a
native stream of theirs relayed event by event, and a chat stream translated into their events.

Both keep :class:`SSEBody`'s guarantees (whole events only, cancel on disconnect, deadlines, the pump, direct
writes) and speak the client's protocol where the relay adds something of its own: the heartbeat (``ping``:
Messages' ``event: ping``; else an SSE comment, which every client ignores) and the last event of a stream that
failed after it started (the upstream's failure, a malformed event, shutdown). The usage either kind reports is
left in the request's meter (tokens per minute, budgets, the access log and metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import httpx

from ..errors import shutting_down, upstream_failure
from ..protocol import ChatStreamTranslator, ReportedUsage, Usage, UsageMeter, event_data
from ._bodies import SSEBody
from ._metered import MeteredSSE

MALFORMED_STATUS, MALFORMED_CODE = 502, "upstream_malformed"
MALFORMED_MESSAGE = "The upstream sent an event that is not valid JSON; the stream was stopped."

# (events relayed so far, status, code, message) -> the protocol's last event of a stream that failed
ErrorEvent = Callable[[int, int, str, str], bytes]


class UsageReader(Protocol):
    """Reads a native stream's usage from its events' data (e.g. Messages' ``message_start``/``message_delta``)."""

    usage: Usage | None

    def feed(self, payload: bytes) -> None: ...


def reported(usage: Usage | None) -> ReportedUsage | None:
    """A protocol's usage as the relay charges it (every input token, cached ones included, plus the output)."""
    if usage is None:
        return None
    return ReportedUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


class NativeSSE(MeteredSSE):
    """A stream of the client's own protocol, its events passed through byte for byte and counted; ``error_event``
    makes the relay's last event of a stream that failed. Usage: read by ``usage`` (a :class:`UsageReader`) where
    given, else by the meter (a usage object in an event, as in ``response.completed``); only events holding
    ``"usage"`` are parsed again."""

    __slots__ = ("_error_event", "_ping_event", "_usage_reader")

    def __init__(self, response: httpx.Response, meter: UsageMeter, error_event: ErrorEvent, *,
                 ping: bytes | None = None, usage: UsageReader | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(response, meter, **kwargs)
        self._error_event = error_event
        self._ping_event = ping
        self._usage_reader = usage

    def _usage(self, event: bytes) -> None:
        reader = self._usage_reader
        if reader is None:
            super()._usage(event)
            return
        payload = event_data(event)
        if payload is not None:
            reader.feed(payload)
            self._meter.usage = reported(reader.usage)

    def _ping(self) -> bytes:
        return self._ping_event if self._ping_event is not None else super()._ping()

    def _malformed(self) -> bytes:
        return self._error_event(self._meter.events, MALFORMED_STATUS, MALFORMED_CODE, MALFORMED_MESSAGE)

    def _error(self, exc: httpx.TransportError) -> bytes:
        failed = upstream_failure(exc)
        return self._error_event(self._meter.events, failed.status, failed.code, str(failed))

    def _shutdown(self) -> bytes:
        refused = shutting_down()
        return self._error_event(self._meter.events, refused.status, refused.code, str(refused))


class TranslatedSSE(SSEBody):
    """A chat-completions stream as another protocol's events: each whole upstream event's data goes through
    ``translator`` (a :class:`proxy.protocol.ChatStreamTranslator`: Messages', Responses'), whose bytes go out at
    once, whole events, so the relay's own may follow at any moment. A failure after the first byte, or a shutdown,
    ends the client's stream in the protocol's own way (``translator.fail``).

    After the translator completed, the rest of the upstream body (the ``[DONE]`` after the usage) is still read, so
    that the upstream connection goes back to the pool; a translation that failed stops reading at once."""

    __slots__ = ("_translator", "_meter", "_ping_event")

    def __init__(self, response: httpx.Response, translator: ChatStreamTranslator, meter: UsageMeter, *,
                 ping: bytes | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(response, **kwargs)
        self._translator = translator
        self._meter = meter
        self._ping_event = ping

    def _convert(self, data: bytes) -> bytes:
        events = self._splitter.feed(data)
        self._meter.events += len(events)
        translator = self._translator
        out = [translator.feed(payload) for event in events if (payload := event_data(event)) is not None]
        return self._settled(out[0] if len(out) == 1 else b"".join(out))

    def _end(self) -> bytes | None:
        translator = self._translator
        rest = self._splitter.pending
        out = b""
        if rest.strip():
            self._meter.events += 1
            payload = event_data(rest)
            if payload is not None:
                out = translator.feed(payload)
        return self._settled(out + translator.end()) or None

    def _error(self, exc: httpx.TransportError) -> bytes:
        failed = upstream_failure(exc)
        return self._settled(self._translator.fail(failed.status, failed.code, str(failed)))

    def _shutdown(self) -> bytes:
        refused = shutting_down()
        return self._settled(self._translator.fail(refused.status, refused.code, str(refused)))

    def _ping(self) -> bytes:
        return self._ping_event if self._ping_event is not None else super()._ping()

    def _settled(self, out: bytes) -> bytes:
        """``out`` as it is; the usage, once come, to the meter; a translation that failed reads no more."""
        translator = self._translator
        if translator.done:
            self._meter.usage = reported(translator.usage) or self._meter.usage
            if translator.finish_reason is None:
                self._finished = True
        return out
