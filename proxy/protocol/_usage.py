"""Token usage, sans I/O: reading it from answers of every shape, and ``include_usage`` for streams.

**Reading usage.** :func:`usage_in` finds it wherever the shapes we know put it: at the top of an answer (OpenAI's
chat, completions and embeddings; Anthropic's messages), in ``choices[0]`` (Moonshot's final stream chunk), under
``response`` (the Responses API's ``response.completed``) or ``message`` (Anthropic's ``message_start``), counted as
``prompt_tokens``/``completion_tokens`` or ``input_tokens``/``output_tokens``, with ``total_tokens`` when given. A
:class:`UsageMeter` keeps what one response told as it went by: its usage and, for a stream, how many events it
relayed (the output counted as it goes, for a client key's charge when no usage comes: proxy/limits/_charge.py).
Bodies are read as they pass, never kept whole (proxy/protocol/_usagescan.py).

**include_usage.** With ``include_usage = true`` on an upstream, or for a client key that counts tokens, every
streaming chat request goes upstream with ``"stream_options": {"include_usage": true}``, so the access log, the
token metrics and the key's windows know the usage of every stream. A client that did not ask for it must not get
the extra chunk it adds (OpenAI's shape: ``{"choices": [], "usage": {...}}`` before ``[DONE]``; an SDK that did not
ask for it may choke on a chunk without choices), so that chunk is cut out of what it receives and kept for the
log. Everything else in the stream stays byte for byte what the upstream sent.

Only usage-bearing events are parsed a second time (one or two per stream): every event is already checked by
:func:`proxy.protocol.well_formed`, and only those with a ``"usage"`` that is not ``null`` are looked at again
(OpenAI puts ``"usage":null`` in every chunk of a stream that asked for it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._sse import DONE, EventSplitter, event_data, well_formed


@dataclass(slots=True)
class ReportedUsage:
    """Token usage as an answer reported it (None: a count it left out)."""

    prompt: int | None = None
    completion: int | None = None
    total: int | None = None

    @property
    def tokens(self) -> int:
        """What a client key is charged: ``total_tokens`` when given, else prompt + completion."""
        if self.total is not None:
            return self.total
        return (self.prompt or 0) + (self.completion or 0)

    def then(self, later: ReportedUsage) -> ReportedUsage:
        """This usage updated by one the same answer reported later (Anthropic's stream gives its input tokens in
        ``message_start`` and its output in ``message_delta``): a count the later one leaves out is kept."""
        return ReportedUsage(
            later.prompt if later.prompt is not None else self.prompt,
            later.completion if later.completion is not None else self.completion,
            later.total,
        )


def _count(usage: dict, *names: str) -> int | None:
    for name in names:
        value = usage.get(name)
        if type(value) is int and value >= 0:
            return value
    return None


def usage_of(usage: Any) -> ReportedUsage | None:
    """A ``usage`` object's counts; None when it is not one."""
    if not isinstance(usage, dict):
        return None
    found = ReportedUsage(
        _count(usage, "prompt_tokens", "input_tokens"),
        _count(usage, "completion_tokens", "output_tokens"),
        _count(usage, "total_tokens"),
    )
    return None if found.prompt is None and found.completion is None and found.total is None else found


def usage_in(obj: Any) -> ReportedUsage | None:
    """The usage one JSON answer or event reports, wherever the shapes we know put it (the module docstring)."""
    if not isinstance(obj, dict):
        return None
    found = usage_of(obj.get("usage"))
    if found is not None:
        return found
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        found = usage_of(choices[0].get("usage"))
        if found is not None:
            return found
    for holder in ("response", "message"):
        inner = obj.get(holder)
        if isinstance(inner, dict):
            return usage_of(inner.get("usage"))
    return None


def carries_usage(data: bytes) -> bool:
    """Whether an event's bytes hold a ``"usage"`` that is not ``null`` (the only ones worth parsing). A
    ``"usage"`` inside a string is escaped (``\\"usage\\"``), so it does not count."""
    at = data.find(b'"usage"')
    while at >= 0:
        after = data[at + 7 : at + 24]
        if not after.startswith(b":null") and not after.lstrip(b" \t\r\n:").startswith(b"null"):
            return True
        at = data.find(b'"usage"', at + 7)
    return False


def json_or_none(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:  # UnicodeDecodeError too
        return None


class UsageMeter:
    """What one response told of its tokens as it went by: ``usage`` (the last reported, merged with earlier ones:
    :meth:`ReportedUsage.then`) and ``events`` (a stream's events relayed)."""

    __slots__ = ("events", "usage")

    def __init__(self) -> None:
        self.events = 0
        self.usage: ReportedUsage | None = None

    def report(self, found: ReportedUsage | None) -> None:
        if found is not None:
            self.usage = found if self.usage is None else self.usage.then(found)

    def payload(self, payload: bytes) -> None:
        """One event's data (or NDJSON line) that :func:`carries_usage`: its usage, if it holds one."""
        self.report(usage_in(json_or_none(payload)))

    def event(self, event: bytes) -> None:
        """One SSE event that :func:`carries_usage`: its usage, if it holds one."""
        payload = event_data(event)
        if payload is not None and payload != DONE:
            self.payload(payload)

    def document(self, body: bytes) -> None:
        """A whole JSON answer: its top-level usage."""
        obj = json_or_none(body)
        if isinstance(obj, dict):
            self.report(usage_of(obj.get("usage")))


def asked_for_usage(data: dict[str, Any]) -> bool:
    """Whether the client's request already asks for stream usage."""
    options = data.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def with_usage(data: dict[str, Any]) -> bytes:
    """The request body with ``stream_options.include_usage`` set (other stream options kept)."""
    options = data.get("stream_options")
    options = {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
    return json.dumps({**data, "stream_options": options}, ensure_ascii=False, separators=(",", ":")).encode()


def _usage_chunk(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


def usage_only(payload: bytes) -> bool:
    """Whether one event's data is the usage chunk ``include_usage`` adds: no choices, a top-level usage."""
    return carries_usage(payload) and _usage_chunk(json_or_none(payload))


class UsageStripper:
    """SSE bytes in, the same bytes out without the usage chunk; ``usage`` keeps the chunk's JSON.

    It passes on whole events only: the bytes of an event that has not ended yet are held until it
    does (or the stream ends), since the chunk cannot be cut once half of it has gone out. A
    malformed event stops it: ``malformed`` is set and what came before that event is returned.
    With a ``meter``, every event is counted and every usage read (Moonshot's, in a chunk that stays).
    """

    __slots__ = ("_splitter", "_held", "usage", "malformed", "meter")

    def __init__(self, meter: UsageMeter | None = None) -> None:
        self._splitter = EventSplitter()
        self._held = b""  # == the splitter's pending bytes
        self.usage: bytes | None = None
        self.malformed = False
        self.meter = meter

    def feed(self, data: bytes) -> bytes:
        buf = self._held + data
        events = self._splitter.feed(data)
        end = len(buf) - len(self._splitter.pending)
        self._held = buf[end:]
        if self.meter is not None:
            self.meter.events += len(events)
        out = []
        kept_from = pos = 0
        cutting = False
        for event in events:
            start = buf.find(event, pos)
            if cutting:  # the cut chunk ends where the next event starts: its blank line goes with it
                kept_from, cutting = start, False
            if not well_formed(event):
                self.malformed = True
                out.append(buf[kept_from:start])
                return b"".join(out)
            if carries_usage(event) and self._cut(event):
                out.append(buf[kept_from:start])
                cutting = True
            pos = start + len(event)
        if not cutting:
            out.append(buf[kept_from:end])
        return b"".join(out)

    def end(self) -> bytes:
        """What is left when the upstream's body ends: an event without its blank line, passed on as sent."""
        rest, self._held = self._held, b""
        if rest.strip():
            if self.meter is not None:
                self.meter.events += 1
            if carries_usage(rest) and self._cut(rest.strip()):
                return b""
        return rest

    def _cut(self, event: bytes) -> bool:
        """Read an event that carries usage; True when it is the usage chunk to cut."""
        payload = event_data(event)
        if payload is None:
            return False
        obj = json_or_none(payload)
        if self.meter is not None:
            self.meter.report(usage_in(obj))
        if not _usage_chunk(obj):
            return False
        self.usage = payload
        return True
