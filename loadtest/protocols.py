"""Anthropic Messages and OpenAI Responses answers judged, sans I/O, as :mod:`loadtest.accounting` judges chat.

``--api messages|responses`` sends a protocol's request (:mod:`loadtest.apirequest`); what comes back is judged
here by the protocol as published, into the same :class:`~loadtest.record.SessionRecord` and the same error
kinds as chat, so reports, sweeps and merges read every protocol alike.

**Completed.** HTTP 200, no error event, and the protocol's end: Messages ``message_stop`` after a
``message_delta`` with a ``stop_reason``; Responses ``response.completed``, or ``response.incomplete`` with an
``incomplete_details.reason`` (e.g. ``max_output_tokens``): the protocol says the answer ended, as chat's
``finish_reason`` ``length`` does, so it is completed, its reason the record's ``finish_reason``. Failures:
``error_event`` (Messages ``event: error``; Responses ``response.failed`` or ``error``; the detail starts with
the protocol's error type, e.g. ``overloaded_error``), ``malformed`` (an event that is not a JSON object, or
any event after the end), ``no_done`` (no ``message_stop`` / ``response.completed`` / ``response.incomplete``),
``empty_stream`` (the end without ``message_start`` / ``response.created``), ``no_finish_reason`` (no
``stop_reason``, or ``response.incomplete`` without a reason). Event types the protocol may add later are
passed over, as its clients do.

**Chunks are output events.** Both protocols open and close blocks around their deltas, several events per
token on the wire, so per-chunk figures count the events that carry output: Messages ``content_block_delta``
with non-empty ``text``, ``thinking`` or ``partial_json`` (reasoning counts, as chat's ``reasoning_content``
does; ``signature_delta`` and citations do not), Responses any ``*.delta`` event with a non-empty ``delta``
(output text, function call arguments, reasoning text, refusals). TTFC is the first of them, the gaps are
between them, ``SessionRecord.chunks`` counts them and each has the relay delay of its sim stamp. The opening
events (``message_start``, ``response.created``, ...) are bookkeeping a relay may send before the model said
anything: counting them would time the relay's eagerness, not the model.

**Verified.** Every event (each with ``data``) carries the sim's stamp, seq 0, 1, ... in order, as many as
announced (``bad_seq``, ``unstamped``, ``missing_chunks``, ``extra_chunks`` otherwise, the detail in events);
none stamped: unverified (a relay that translated the stream writes events of its own). A ``ping`` without a
stamp is a heartbeat a relay may add anywhere (in Messages' own form, ``event: ping``) and is not counted.

**Tokens.** Messages ``message_start``'s ``usage.input_tokens`` and ``message_delta``'s cumulative
``usage.output_tokens``; Responses the final response's ``usage.input_tokens`` / ``output_tokens``; without
usage :mod:`loadtest.tokens` counts output events.

Per event: the event's name from the SSE ``event`` field (two slices, :meth:`loadtest.ssereader.SSEReader.
feed_events`), the sim's stamp by byte search, and for a delta a byte search for its field; ``json.loads`` only
for the few events that end or describe the message, or for data without the sim's compact bytes.
"""

from __future__ import annotations

import json
from typing import Any

from loadtest.accounting import (
    ERROR_DETAIL_BYTES,
    SEQ_START,
    StreamAccounting,
    account_full_body,
    parsed_stamp,
    seq_problem,
    sim_stamp,
)
from loadtest.record import SessionRecord
from loadtest.ssereader import SSEReader

__all__ = ["APIS", "Accounting", "MessagesAccounting", "ResponsesAccounting", "carries_output", "judge_body",
           "new_accounting"]

APIS = ("chat", "messages", "responses")
_SIM_KEY = b'"sim"'
_MESSAGE = b"message"  # the SSE type of an event without an ``event`` field


def _detail(*parts: object) -> str:
    return ": ".join(str(p) for p in parts if p not in (None, ""))[:ERROR_DETAIL_BYTES]


def _int(d: Any, key: str) -> int | None:
    v = d.get(key) if isinstance(d, dict) else None
    return v if type(v) is int else None


class _EventAccounting:
    """A stream of named events (sans I/O): feed body bytes with their receive time; it fills the record.

    The same interface as :class:`~loadtest.accounting.StreamAccounting` (``feed``, ``end``, ``verdict``,
    ``error_event``, ``malformed``), so :mod:`loadtest.session` reads every protocol alike.
    """

    OPEN: bytes = b""  # the event that opens an answer
    END = ""  # the events that end one, in words

    __slots__ = ("rec", "_sse", "_last_ns", "malformed", "error_event", "events", "stamped", "announced",
                 "_next_seq", "_seq_break", "_seqs", "opened")

    def __init__(self, rec: SessionRecord) -> None:
        self.rec = rec
        self._sse = SSEReader()
        self._last_ns = 0
        self.malformed: str | None = None
        self.error_event: str | None = None
        self.events = 0  # events with data, heartbeats without a stamp left out
        self.stamped = 0
        self.announced: int | None = None  # the largest "of" a stamp announced
        self._next_seq = SEQ_START
        self._seq_break: tuple[int, int] | None = None
        self._seqs: list[int] | None = None
        self.opened = False

    def feed(self, data: bytes, t_ns: int) -> None:
        rec = self.rec
        rec.bytes += len(data)
        for kind, payload, _ in self._sse.feed_events(data):
            if rec.done:
                self._bad(f"event after {self.END}: {bytes(kind[:40])!r}")
                continue
            self._event(kind, payload, t_ns)

    def end(self, t_ns: int) -> None:
        """The body ended cleanly."""
        if self._sse.pending.strip():
            self._bad("unterminated event at end of stream")

    def _bad(self, why: str) -> None:
        if self.malformed is None:
            self.malformed = why

    def _event(self, kind: bytes, data: bytes, t_ns: int) -> None:
        i = data.find(_SIM_KEY)
        obj: Any = None
        if i < 0 or data[:1] != b"{" or data[-1:] != b"}" or kind == _MESSAGE:
            try:
                obj = json.loads(data)
            except ValueError:
                self._bad(f"event data is not JSON: {bytes(data[:80])!r}")
                return
            if not isinstance(obj, dict):
                self._bad("event data is not a JSON object")
                return
            if kind == _MESSAGE:  # no ``event`` field: the data's type names the event
                kind = str(obj.get("type", "")).encode()
        stamp = None
        if i >= 0:
            stamp = sim_stamp(data, i) if obj is None else parsed_stamp(obj)
            if stamp is None and obj is None:  # not the sim's compact bytes
                try:
                    obj = json.loads(data)
                except ValueError:
                    self._bad(f"event data is not JSON: {bytes(data[:80])!r}")
                    return
                stamp = parsed_stamp(obj) if isinstance(obj, dict) else None
        if stamp is None and kind == b"ping":
            return  # a heartbeat
        self.events += 1
        if stamp is not None:
            seq, of = stamp[1], stamp[2]
            self.stamped += 1
            if seq != self._next_seq or self._seqs is not None:
                if self._seqs is None:
                    self._seq_break = (self._next_seq, seq)
                    self._seqs = list(range(SEQ_START, self._next_seq))
                self._seqs.append(seq)
            self._next_seq = seq + 1
            if self.announced is None or of > self.announced:
                self.announced = of
        try:
            self._on(kind, data, obj, t_ns, None if stamp is None else stamp[0])
        except ValueError:  # bytes that looked like the sim's compact JSON, but are not JSON
            self._bad(f"event data is not JSON: {bytes(data[:80])!r}")

    def _on(self, kind: bytes, data: bytes, obj: Any, t_ns: int, sent_ns: int | None) -> None:
        raise NotImplementedError

    def _output(self, t_ns: int, sent_ns: int | None) -> None:
        """An event that carried output: a chunk on the session's timeline."""
        rec = self.rec
        rec.chunks += 1
        if rec.first_chunk_ns is None:
            rec.first_chunk_ns = t_ns
        else:
            rec.gaps_ms.append((t_ns - self._last_ns) / 1e6)
        self._last_ns = t_ns
        if sent_ns is not None:
            rec.relay_delay_ms.append((t_ns - sent_ns) / 1e6)

    def verdict(self) -> tuple[str | None, str | None]:
        """``(error kind, detail)`` of a stream that ended cleanly, ``(None, None)`` when it did not fail; sets
        ``rec.unverified`` for a completed stream without a stamp."""
        rec = self.rec
        n, stamped, of = self.events, self.stamped, self.announced
        if self._seq_break is not None:
            assert self._seqs is not None
            return "bad_seq", seq_problem(self._seq_break, self._seqs, of or 0)
        if stamped and stamped < n:
            return "unstamped", f"{n - stamped} of {n} events without the sim's stamp"
        if of is not None and n < of:
            return "missing_chunks", f"{n} of {of} events"
        if of is not None and n > of:
            return "extra_chunks", f"{n} events, {of} announced"
        if not rec.done:
            return "no_done", f"{n} events, no {self.END}"
        if not self.opened:
            return "empty_stream", f"{self.END} without {self.OPEN.decode()}"
        if rec.finish_reason is None:
            return "no_finish_reason", self._no_reason()
        if not stamped:
            rec.unverified = True
        return None, None

    def _no_reason(self) -> str:
        raise NotImplementedError


# --- Anthropic Messages -------------------------------------------------------------------------------

_MSG_DELTA = b'"delta":{"type":"'
_MSG_FIELDS = {b"text_delta": (b'"text":"', "text"), b"thinking_delta": (b'"thinking":"', "thinking"),
               b"input_json_delta": (b'"partial_json":"', "partial_json")}


def messages_delta_output(data: bytes, obj: Any) -> bool:
    """Whether a ``content_block_delta`` carries output: non-empty text, thinking or tool input JSON."""
    if obj is None:
        j = data.find(_MSG_DELTA)
        if j >= 0:
            j += len(_MSG_DELTA)
            found = _MSG_FIELDS.get(data[j : data.find(b'"', j)])
            if found is None:
                return False  # signature_delta, citations_delta
            k = data.find(found[0], j)
            if k >= 0:
                return data[k + len(found[0]) : k + len(found[0]) + 1] != b'"'
        obj = json.loads(data)  # not compact: read it whole
    delta = obj.get("delta") if isinstance(obj, dict) else None
    if not isinstance(delta, dict):
        return False
    found = _MSG_FIELDS.get(str(delta.get("type", "")).encode())
    return found is not None and bool(delta.get(found[1]))


class MessagesAccounting(_EventAccounting):
    """An Anthropic Messages stream: ``message_start``, blocks of deltas, ``message_delta``, ``message_stop``."""

    OPEN = b"message_start"
    END = "message_stop"
    __slots__ = ()

    def _on(self, kind: bytes, data: bytes, obj: Any, t_ns: int, sent_ns: int | None) -> None:
        if kind == b"content_block_delta":
            if messages_delta_output(data, obj):
                self._output(t_ns, sent_ns)
            return
        rec = self.rec
        if kind == b"message_stop":
            rec.done = True
            return
        if kind not in (b"message_delta", b"message_start", b"error"):
            return  # block starts and stops, pings, and what the protocol adds later
        if obj is None:
            obj = json.loads(data)
        if kind == b"message_delta":
            delta = obj.get("delta")
            reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            if isinstance(reason, str) and reason:
                rec.finish_reason = reason
            _messages_usage(rec, obj.get("usage"))
        elif kind == b"message_start":
            self.opened = True
            message = obj.get("message")
            _messages_usage(rec, message.get("usage") if isinstance(message, dict) else None, output=False)
        elif kind == b"error":
            error = obj.get("error")
            if self.error_event is None:
                self.error_event = _detail(_get(error, "type") or "error", _get(error, "message"))

    def _no_reason(self) -> str:
        return "message_stop, but no message_delta with a stop_reason"


def _get(d: Any, key: str) -> Any:
    return d.get(key) if isinstance(d, dict) else None


def _messages_usage(rec: SessionRecord, usage: Any, *, output: bool = True) -> None:
    """``usage``: ``input_tokens`` where given; ``output_tokens`` (cumulative) from ``message_delta`` only: the
    count in ``message_start`` is where the answer began, not its length."""
    p = _int(usage, "input_tokens")
    if p is not None:
        rec.prompt_tokens = p
    c = _int(usage, "output_tokens") if output else None
    if c is not None:
        rec.completion_tokens = c


# --- OpenAI Responses ---------------------------------------------------------------------------------

_RESP_DELTA = b'"delta":"'
_DELTA_SUFFIX = b".delta"


def responses_delta_output(data: bytes, obj: Any) -> bool:
    """Whether a ``*.delta`` event carries output: a non-empty ``delta``."""
    if obj is None:
        j = data.find(_RESP_DELTA)
        if j >= 0:
            return data[j + len(_RESP_DELTA) : j + len(_RESP_DELTA) + 1] != b'"'
        obj = json.loads(data)
    return isinstance(obj, dict) and bool(obj.get("delta"))


class ResponsesAccounting(_EventAccounting):
    """An OpenAI Responses stream: ``response.created`` ... ``response.completed`` (or ``.incomplete``)."""

    OPEN = b"response.created"
    END = "response.completed or response.incomplete"
    __slots__ = ()

    def _on(self, kind: bytes, data: bytes, obj: Any, t_ns: int, sent_ns: int | None) -> None:
        if kind.endswith(_DELTA_SUFFIX):
            if responses_delta_output(data, obj):
                self._output(t_ns, sent_ns)
            return
        if kind == b"response.created":
            self.opened = True
            return
        if kind not in (b"response.completed", b"response.incomplete", b"response.failed", b"error"):
            return  # .added, .done, in_progress, and what the protocol adds later
        if obj is None:
            obj = json.loads(data)
        if kind == b"error":
            if self.error_event is None:
                self.error_event = _detail("error", obj.get("code"), obj.get("message"))
            return
        response = obj.get("response")
        if kind == b"response.failed":
            if self.error_event is None:
                error = _get(response, "error")
                self.error_event = _detail("response.failed", _get(error, "code"), _get(error, "message"))
            return
        self.rec.done = True
        _responses_final(self.rec, response if isinstance(response, dict) else {})

    def _no_reason(self) -> str:
        return "response.incomplete without incomplete_details.reason"


def _responses_final(rec: SessionRecord, response: dict) -> None:
    """The final response object's status (its reason when incomplete) and usage, into the record."""
    status = response.get("status")
    if status == "completed":
        rec.finish_reason = "completed"
    elif status == "incomplete":
        reason = _get(response.get("incomplete_details"), "reason")
        rec.finish_reason = reason if isinstance(reason, str) and reason else None
    usage = response.get("usage")
    p, c = _int(usage, "input_tokens"), _int(usage, "output_tokens")
    if p is not None:
        rec.prompt_tokens = p
    if c is not None:
        rec.completion_tokens = c


# --- one entry for the session ------------------------------------------------------------------------


Accounting = StreamAccounting | MessagesAccounting | ResponsesAccounting


def new_accounting(api: str, rec: SessionRecord, *, ndjson: bool = False, usage_asked: bool = False) -> Accounting:
    """The judge of one streamed answer in ``api``'s protocol."""
    if api == "messages":
        return MessagesAccounting(rec)
    if api == "responses":
        return ResponsesAccounting(rec)
    return StreamAccounting(rec, ndjson=ndjson, usage_asked=usage_asked)


def carries_output(api: str, kind: bytes, data: bytes) -> bool:
    """Whether one event of ``api``'s stream is what TTFC waits for (chat: any data event)."""
    try:
        if api == "messages":
            return kind == b"content_block_delta" and messages_delta_output(data, None)
        if api == "responses":
            return kind.endswith(_DELTA_SUFFIX) and responses_delta_output(data, None)
    except ValueError:
        return False
    return True


def judge_body(api: str, rec: SessionRecord, body: bytes) -> str | None:
    """A body that was not streamed: one JSON object of the protocol's answer; returns an error kind or None."""
    if api == "chat":
        return account_full_body(rec, body)
    try:
        obj = json.loads(body)
    except ValueError:
        rec.error_detail = f"body is not JSON: {body[:80]!r}"
        return "malformed"
    if not isinstance(obj, dict):
        rec.error_detail = "body is not a JSON object"
        return "malformed"
    error = obj.get("error")
    if api == "messages" and (obj.get("type") == "error" or error is not None):
        rec.error_detail = _detail(_get(error, "type") or "error", _get(error, "message"))
        return "error_event"
    if api == "responses" and (error is not None or obj.get("status") == "failed"):
        rec.error_detail = _detail("failed", _get(error, "code"), _get(error, "message"))
        return "error_event"
    rec.chunks = 1
    rec.done = True
    stamp = parsed_stamp(obj)
    if stamp is not None and rec.first_chunk_ns is not None:
        rec.relay_delay_ms.append((rec.first_chunk_ns - stamp[0]) / 1e6)
    if api == "messages":
        if obj.get("type") != "message":
            rec.error_detail = _detail("not a message", obj.get("type"))
            return "malformed"
        reason = obj.get("stop_reason")
        rec.finish_reason = reason if isinstance(reason, str) and reason else None
        _messages_usage(rec, obj.get("usage"))
        if rec.finish_reason is None:
            rec.error_detail = "a message without a stop_reason"
            return "no_finish_reason"
        return None
    _responses_final(rec, obj)
    if rec.finish_reason is None:
        rec.error_detail = _detail("status", obj.get("status"), "no incomplete_details.reason"
                                   if obj.get("status") == "incomplete" else None)
        return "no_finish_reason"
    return None
