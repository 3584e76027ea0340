"""Stream bodies for clients that speak another protocol than chat completions: a native stream of theirs relayed
as it came (only its final error in the protocol's own form), and a chat stream translated into their events.

Both keep every guarantee of :class:`SSEBody`: whole events only, heartbeats as SSE comments (``: ping``, which
every SSE client ignores), the upstream's deadlines, the client's disconnect cancelling the upstream request, the
direct-write and pump paths. Both read the stream's usage into a meter, for the access log, the token metrics and a
client key's windows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from ..errors import upstream_failure
from ..protocol import ChatStreamTranslator, ReportedUsage, UsageMeter, event_data
from ._bodies import SSEBody
from ._metered import MeteredSSE

SHUTDOWN_MESSAGE = "The relay is shutting down; retry the request."
MALFORMED_MESSAGE = "The upstream sent an event that is not valid JSON; the stream was stopped."

# (events relayed so far, status, code, message) -> the protocol's final error event
ErrorEvent = Callable[[int, int, str, str], bytes]


class NativeSSE(MeteredSSE):
    """A native stream of the client's own protocol (OpenAI Responses, Anthropic Messages), relayed byte for byte;
    a failure after the first byte, an event that is not JSON or a shutdown ends it with ``error_event``'s event
    instead of chat's ``data: {"error": ...}``. Always metered: the protocol's usage rides in its own events."""

    __slots__ = ("_error_event",)

    def __init__(self, response: httpx.Response, meter: UsageMeter, error_event: ErrorEvent, **kwargs: Any) -> None:
        super().__init__(response, meter, **kwargs)
        self._error_event = error_event

    def _malformed(self) -> bytes:
        return self._error_event(self._meter.events, 502, "upstream_malformed", MALFORMED_MESSAGE)

    def _error(self, exc: httpx.TransportError) -> bytes:
        failed = upstream_failure(exc)
        return self._error_event(self._meter.events, failed.status, failed.code, failed.message)

    def _shutdown(self) -> bytes:
        return self._error_event(self._meter.events, 503, "shutting_down", SHUTDOWN_MESSAGE)


class TranslatedSSE(SSEBody):
    """A chat-completions stream as another protocol's events: each whole upstream event's data goes through
    ``translator`` (a :class:`proxy.protocol.ChatStreamTranslator`), whose bytes go out at once. A failure after
    the first byte, or a shutdown, ends the client's stream in the protocol's own way (``translator.fail``).

    After the translator completed, the rest of the upstream body (the ``[DONE]`` after the usage) is still read, so
    that the upstream connection goes back to the pool; a translation that failed stops reading at once."""

    __slots__ = ("_translator", "_meter", "_settled")

    def __init__(self, response: httpx.Response, translator: ChatStreamTranslator, meter: UsageMeter,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(response, **kwargs)
        self._translator = translator
        self._meter = meter
        self._settled = False

    def _convert(self, data: bytes) -> bytes:
        events = self._splitter.feed(data)
        self._meter.events += len(events)
        translator = self._translator
        out = [translator.feed(payload) for event in events if (payload := event_data(event)) is not None]
        if translator.done:
            self._settle()
        return out[0] if len(out) == 1 else b"".join(out)

    def _end(self) -> bytes | None:
        translator = self._translator
        rest = self._splitter.pending
        out = b""
        if rest.strip():
            self._meter.events += 1
            payload = event_data(rest)
            if payload is not None:
                out = translator.feed(payload)
        out += translator.end()
        self._settle()
        return out or None

    def _error(self, exc: httpx.TransportError) -> bytes:
        failed = upstream_failure(exc)
        out = self._translator.fail(failed.status, failed.code, failed.message)
        self._settle()
        return out

    def _shutdown(self) -> bytes:
        out = self._translator.fail(503, "shutting_down", SHUTDOWN_MESSAGE)
        self._settle()
        return out

    def _settle(self) -> None:
        """The translation is over: its usage to the meter (once); a failed one reads no more."""
        if self._settled:
            return
        self._settled = True
        translator = self._translator
        usage = translator.usage
        if usage is not None:
            self._meter.report(ReportedUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens))
        if translator.finish_reason is None:
            self._finished = True
