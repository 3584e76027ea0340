"""Stream bodies for Anthropic Messages clients: a native Messages stream relayed event by event, and a chat stream
translated into Messages events (proxy/protocol/messages/).

Both keep :class:`SSEBody`'s guarantees (whole events only, cancel on disconnect, deadlines, the pump, direct
writes) and speak the client's protocol where the relay adds something of its own: the heartbeat is
``event: ping``, and a failure after the start (the upstream's, a malformed event, shutdown) is the stream's last
event, ``event: error``. The usage either kind reports is left in the request's meter (tokens per minute, budgets,
the access log and metrics).
"""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import shutting_down, upstream_failure
from ..protocol import ReportedUsage, Usage, UsageMeter, event_data
from ..protocol.messages import PING, MessagesRequest, MessagesStream, MessagesUsageReader, messages_error_event
from ._bodies import SSEBody
from ._metered import MeteredSSE

MALFORMED_STATUS, MALFORMED_CODE = 502, "upstream_malformed"
MALFORMED_MESSAGE = "The upstream sent an event that is not valid JSON; the stream was stopped."


def reported(usage: Usage | None) -> ReportedUsage | None:
    """A protocol's usage as the relay charges it (every input token, cached ones included, plus the output)."""
    if usage is None:
        return None
    return ReportedUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


def _ends_in_error(out: bytes) -> bool:
    """Whether these events hold the stream's ``event: error`` (a line that starts an event: never inside data)."""
    return out.startswith(b"event: error\n") or b"\n\nevent: error\n" in out


class _MessagesEvents(SSEBody):
    """What both Messages bodies add to :class:`SSEBody`: the relay's own events in the Messages shape."""

    __slots__ = ()

    def _ping(self) -> bytes:
        return PING

    def _error(self, exc: httpx.TransportError) -> bytes:
        failed = upstream_failure(exc)
        return self._fail(failed.status, failed.code, str(failed))

    def _shutdown(self) -> bytes:
        refused = shutting_down()
        return self._fail(refused.status, refused.code, str(refused))

    def _fail(self, status: int, code: str, message: str) -> bytes:
        return messages_error_event(status, code, message)


class NativeMessagesSSE(_MessagesEvents, MeteredSSE):
    """A Messages upstream's stream, its events passed through byte for byte and counted; usage read from
    ``message_start`` and ``message_delta`` (only events holding ``"usage"`` are parsed again)."""

    __slots__ = ("_reported",)

    def __init__(self, response: httpx.Response, meter: UsageMeter, **kwargs: Any) -> None:
        super().__init__(response, meter, **kwargs)
        self._reported = MessagesUsageReader()

    def _usage(self, event: bytes) -> None:
        payload = event_data(event)
        if payload is not None:
            self._reported.feed(payload)
            self._meter.usage = reported(self._reported.usage)

    def _malformed(self) -> bytes:
        return self._fail(MALFORMED_STATUS, MALFORMED_CODE, MALFORMED_MESSAGE)


class TranslatedMessagesSSE(_MessagesEvents):
    """A chat-completions stream as Messages events (:class:`proxy.protocol.messages.MessagesStream`): each upstream
    event in, the client's events out; always whole events, so the relay's own may follow at any moment."""

    __slots__ = ("_translator", "_meter")

    def __init__(self, response: httpx.Response, request: MessagesRequest, meter: UsageMeter, **kwargs: Any) -> None:
        super().__init__(response, **kwargs)
        self._translator = MessagesStream(request)
        self._meter = meter

    def _convert(self, data: bytes) -> bytes:
        translator = self._translator
        out = []
        events = self._splitter.feed(data)
        self._meter.events += len(events)
        for event in events:
            payload = event_data(event)
            if payload is not None:
                out.append(translator.feed(payload))
        return self._settled(b"".join(out))

    def _end(self) -> bytes | None:
        out = []
        rest = self._splitter.pending.strip()
        if rest:
            payload = event_data(rest)
            if payload is not None:
                out.append(self._translator.feed(payload))
        out.append(self._translator.end())
        return self._settled(b"".join(out)) or None

    def _settled(self, out: bytes) -> bytes:
        translator = self._translator
        if translator.usage is not None:
            self._meter.usage = reported(translator.usage)
        if translator.done and _ends_in_error(out):  # failed: nothing the upstream sends later goes out
            self._finished = True
        return out

    def _fail(self, status: int, code: str, message: str) -> bytes:
        return self._translator.fail(status, code, message)
