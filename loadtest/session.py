"""One chat-completion session, measured into a :class:`~loadtest.record.SessionRecord`.

The pure part, :class:`StreamAccounting`, turns response-body bytes plus receive times into the
record's chunk counts, gaps, relay delays, usage and error verdicts; :func:`run_session` is the thin
I/O shell around it (connect or reuse, send, read, classify).

The sim stamps every data chunk ``"sim": {"ns": send time, "seq": k, "of": n}``, ``k`` counting from 0
to ``n - 1`` (:mod:`loadtest.simcontent`). A stream is *completed* only when it ended cleanly
(``[DONE]`` for SSE, the end of the body for NDJSON) and every data chunk carries a stamp whose seq is
the previous one + 1, starting at 0, ``n`` chunks in all. A stream that ended cleanly with at least one
data chunk but no stamp at all is *unverified* (``SessionRecord.unverified``, no error kind): the
target removed the stamps (or is not the sim), so a lost chunk would go unseen; it is counted apart from
both completed and failed. A non-streaming body is complete when it is one JSON object: HTTP framing
(Content-Length or chunked) already vouches for its end.

Error kinds (``SessionRecord.error_kind``), first match wins:

- ``connect``: the TCP connect failed (after retries);
- ``http_<status>``: a status other than 200;
- ``error_event``: an ``{"error": ...}`` event (SSE) or line (NDJSON) in a 200 response;
- ``malformed``: a chunk that is not JSON, data after ``[DONE]``, or bytes that are not HTTP
  (a chunk-size line that is not hex digits included);
- ``timeout``: the session's overall timeout expired;
- ``reset``: the connection broke before the response ended;
- ``bad_seq``: a stamped chunk whose seq is not the previous + 1 (from 0): a gap, a duplicate or a
  reorder, named in the detail;
- ``unstamped``: some data chunks carry the sim's stamp and some do not (the target altered chunks);
- ``missing_chunks`` / ``extra_chunks``: fewer / more data events than the sim announced;
- ``no_done``: a stream that ended cleanly without ``data: [DONE]``;
- ``empty_stream``: a stream that ended cleanly without a single data chunk (``[DONE]`` alone);
- ``interrupted``: the run was stopped (Ctrl-C) while this session was in flight.

Re-sends: a request goes out on a fresh connection only when the kept-alive connection it was to reuse
is found closed (or dirty) *before* any byte of it was written; ``SessionRecord.resent`` counts that.
Any failure after the first byte was written is that session's failure, never a silent second send: the
target may have read the request.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from loadtest.client import (
    ConnectFailed,
    Connection,
    ConnectionReset,
    Endpoint,
    ProtocolError,
    now_ns,
    open_connection,
)
from loadtest.record import SessionRecord
from loadtest.ssereader import SSEReader

DONE = b"[DONE]"
_SIM_KEY = b'"sim"'
SEQ_START = 0  # the sim's first seq (loadtest.simcontent.stream_events)
_ERROR_DETAIL_BYTES = 300


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """A request built once per distinct prompt and sent by many sessions (as prebuilt h11 events)."""

    path: bytes  # e.g. b"/v1/chat/completions"
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    stream: bool
    ndjson: bool = False
    method: bytes = b"POST"
    request: h11.Request = field(init=False)
    data: h11.Data | None = field(init=False)

    def __post_init__(self) -> None:
        req = h11.Request(method=self.method, target=self.path, headers=list(self.headers))
        object.__setattr__(self, "request", req)
        object.__setattr__(self, "data", h11.Data(data=self.body) if self.body else None)


def build_request(
    endpoint: Endpoint,
    *,
    model: str,
    messages: list[dict[str, Any]],
    max_tokens: int | None,
    stream: bool,
    ndjson: bool = False,
    api_key: str | None = None,
    extra: dict[str, Any] | None = None,
) -> RequestSpec:
    """The request for one prompt. ``--ndjson`` targets the seed's route on the server root."""
    payload: dict[str, Any] = {"model": model, "messages": messages, "stream": stream or ndjson}
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    if extra:
        payload.update(extra)
    if ndjson:
        base = endpoint.base_path.removesuffix("/v1")
        path = base + "/chat/completions"
        accept = b"application/x-ndjson"
    else:
        path = endpoint.base_path + "/chat/completions"
        accept = b"text/event-stream" if stream else b"application/json"
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = [
        (b"host", endpoint.host_header),
        (b"content-type", b"application/json"),
        (b"accept", accept),
        (b"content-length", str(len(body)).encode()),
    ]
    if api_key:
        headers.append((b"authorization", b"Bearer " + api_key.encode()))
    return RequestSpec(path.encode(), tuple(headers), body, stream or ndjson, ndjson)


def _usage_into(rec: SessionRecord, obj: Any) -> None:
    """Moonshot puts usage in ``choices[0].usage`` of the last chunk; OpenAI at the top level."""
    if not isinstance(obj, dict):
        return
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        choices = obj.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            usage = choices[0].get("usage")
    if isinstance(usage, dict):
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(p, int):
            rec.prompt_tokens = p
        if isinstance(c, int):
            rec.completion_tokens = c


def _sim_stamp(data: bytes, i: int) -> tuple[int, int, int] | None:
    """``(ns, seq, of)`` from the ``"sim":{"ns":N,"seq":K,"of":M}`` object at ``data[i:]``.

    Three ``int()`` of byte slices: ~1 µs, against ~5 µs for ``json.loads`` of the stamp object and
    ~15 µs for the whole chunk; at 10,000 streams this is the per-chunk path.
    """
    a = data.find(b'"ns":', i)
    b = data.find(b',"seq":', a)
    o = data.find(b',"of":', b)
    e = data.find(b"}", o)
    if a < 0 or b < 0 or o < 0 or e < 0:
        return None
    try:
        return int(data[a + 5 : b]), int(data[b + 7 : o]), int(data[o + 6 : e])
    except ValueError:
        return None


def _parsed_stamp(obj: dict) -> tuple[int, int, int] | None:
    sim = obj.get("sim")
    if not isinstance(sim, dict):
        return None
    ns, seq, of = sim.get("ns"), sim.get("seq"), sim.get("of")
    if type(ns) is int and type(seq) is int and type(of) is int:
        return ns, seq, of
    return None


class StreamAccounting:
    """Sans-I/O: feed response-body bytes with their receive time; it fills the record.

    Per-chunk cost matters (10,000 streams on two cores shared with the relay and the sim): a chunk
    that carries the sim's stamp and looks whole (``{...}``) is accounted from a byte search plus the
    tiny stamp object; only chunks without a stamp, or that mention ``usage``/``error``, are parsed as
    JSON. The seq check is one comparison per stamped chunk; what went wrong is worked out once, in
    :meth:`verdict`.
    """

    __slots__ = ("rec", "ndjson", "_sse", "_last_ns", "malformed", "error_event", "_line_buf", "stamped",
                 "_next_seq", "_seq_break", "_seqs")

    def __init__(self, rec: SessionRecord, *, ndjson: bool = False) -> None:
        self.rec = rec
        self.ndjson = ndjson
        self._sse = SSEReader()
        self._line_buf = b""
        self._last_ns = 0
        self.malformed: str | None = None
        self.error_event: str | None = None
        self.stamped = 0  # data chunks that carried the sim's stamp
        self._next_seq = SEQ_START
        self._seq_break: tuple[int, int] | None = None  # the first (seq due, seq received) that differed
        self._seqs: list[int] | None = None  # every seq received, kept only once one was out of line

    def feed(self, data: bytes, t_ns: int) -> None:
        rec = self.rec
        rec.bytes += len(data)
        if self.ndjson:
            buf = self._line_buf + data if self._line_buf else data
            lines = buf.split(b"\n")
            self._line_buf = lines.pop()
            for line in lines:
                line = line.strip()
                if line:
                    self._chunk(line, t_ns)
            return
        for payload in self._sse.feed(data):  # comments and events without data give none
            if payload == DONE:
                if rec.done:
                    self._bad("second [DONE]")
                rec.done = True
                continue
            if rec.done:
                self._bad("data after [DONE]")
                continue
            self._chunk(payload, t_ns)

    def end(self, t_ns: int) -> None:
        """The body ended cleanly: flush an unterminated last NDJSON line."""
        if self.ndjson and self._line_buf.strip():
            self._chunk(self._line_buf.strip(), t_ns)
            self._line_buf = b""
        elif not self.ndjson and self._sse.pending.strip():
            self._bad("unterminated event at end of stream")

    def _bad(self, why: str) -> None:
        if self.malformed is None:
            self.malformed = why

    def _chunk(self, data: bytes, t_ns: int) -> None:
        rec = self.rec
        i = data.find(_SIM_KEY)
        slow = i < 0 or data[:1] != b"{" or data[-1:] != b"}" or b'"error"' in data
        obj: Any = None
        if slow:
            try:
                obj = json.loads(data)
            except ValueError:
                self._bad(f"chunk is not JSON: {bytes(data[:80])!r}")
                return
            if isinstance(obj, dict) and obj.get("error") is not None:
                if self.error_event is None:
                    self.error_event = json.dumps(obj["error"])[:_ERROR_DETAIL_BYTES]
                return
            if not isinstance(obj, dict):
                self._bad("chunk is not a JSON object")
                return
        rec.chunks += 1
        if rec.first_chunk_ns is None:
            rec.first_chunk_ns = t_ns
        else:
            rec.gaps_ms.append((t_ns - self._last_ns) / 1e6)
        self._last_ns = t_ns
        if i >= 0:
            stamp = _sim_stamp(data, i) if obj is None else _parsed_stamp(obj)
            if stamp is None and obj is None:  # not the sim's compact bytes (a peer re-serialised them)
                try:
                    obj = json.loads(data)
                except ValueError:
                    self._bad(f"chunk is not JSON: {bytes(data[:80])!r}")
                    return
                stamp = _parsed_stamp(obj) if isinstance(obj, dict) else None
            if stamp is not None:
                ns, seq, of = stamp
                self.stamped += 1
                rec.relay_delay_ms.append((t_ns - ns) / 1e6)
                if seq != self._next_seq or self._seqs is not None:
                    self._out_of_line(seq)
                self._next_seq = seq + 1
                if rec.expected_chunks is None or of > rec.expected_chunks:
                    rec.expected_chunks = of
        if b'"usage"' in data:
            if obj is None:
                try:
                    obj = json.loads(data)
                except ValueError:
                    self._bad("chunk with usage is not JSON")
                    return
            _usage_into(rec, obj)

    def _out_of_line(self, seq: int) -> None:
        """Keep every seq from the first one out of line on (rare: a healthy stream never comes here)."""
        if self._seqs is None:
            self._seq_break = (self._next_seq, seq)
            self._seqs = list(range(SEQ_START, self._next_seq))
        self._seqs.append(seq)

    def _seq_problem(self) -> str:
        """What went wrong with the seqs, in words, from the whole list of them."""
        assert self._seq_break is not None and self._seqs is not None
        due, got = self._seq_break
        seqs = self._seqs
        seen: set[int] = set()
        for k in seqs:
            if k in seen:
                return f"duplicate: seq {k} received twice"
            seen.add(k)
        of = self.rec.expected_chunks or 0
        announced = set(range(SEQ_START, SEQ_START + of))
        if seen == announced:
            return f"reordered: seq {got} arrived where {due} was due"
        missing = sorted(announced - seen)
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            listed = ", ".join(map(str, missing[:5]))
            return f"gap: seq {listed}{more} missing (seq {got} arrived where {due} was due)"
        return f"seq {max(seen)} beyond the {of} announced"

    def verdict(self) -> tuple[str | None, str | None]:
        """``(error kind, detail)`` of a stream that ended cleanly, ``(None, None)`` when it did not fail.

        Sets ``rec.unverified`` for a stream with data chunks but no stamp; sets ``rec.done`` for NDJSON,
        whose clean end is its [DONE].
        """
        rec = self.rec
        n, stamped = rec.chunks, self.stamped
        if self._seq_break is not None:
            return "bad_seq", self._seq_problem()
        if stamped and stamped < n:
            return "unstamped", f"{n - stamped} of {n} data chunks without the sim's stamp"
        expected = rec.expected_chunks
        if expected is not None and n < expected:
            return "missing_chunks", f"{n} of {expected} chunks"
        if expected is not None and n > expected:
            return "extra_chunks", f"{n} chunks, {expected} announced"
        if self.ndjson:
            rec.done = True
        elif not rec.done:
            return "no_done", f"{n} chunks, no [DONE]"
        if n == 0:
            return "empty_stream", "no data chunk before the end of the stream"
        if not stamped:
            rec.unverified = True
        return None, None


def account_full_body(rec: SessionRecord, body: bytes) -> str | None:
    """A non-stream ``chat.completion`` body; returns an error kind or None."""
    try:
        obj = json.loads(body)
    except ValueError:
        rec.error_detail = f"body is not JSON: {body[:80]!r}"
        return "malformed"
    if not isinstance(obj, dict):
        return "malformed"
    if obj.get("error") is not None:
        rec.error_detail = json.dumps(obj["error"])[:_ERROR_DETAIL_BYTES]
        return "error_event"
    rec.chunks = 1
    rec.done = True
    stamp = obj.get("sim")
    if isinstance(stamp, dict) and isinstance(stamp.get("ns"), int) and rec.first_chunk_ns is not None:
        rec.relay_delay_ms.append((rec.first_chunk_ns - stamp["ns"]) / 1e6)
    _usage_into(rec, obj)
    return None


class ConnectionSlot:
    """The keep-alive connection a closed-loop slot carries from one session to the next."""

    __slots__ = ("conn",)

    def __init__(self) -> None:
        self.conn: Connection | None = None

    async def aclose(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await conn.aclose()


class RetryCounter:
    """Connect retries of one process (backlog overflow shows up here)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, k: int) -> None:
        self.n += k


async def run_session(
    endpoint: Endpoint,
    spec: RequestSpec,
    rec: SessionRecord,
    slot: ConnectionSlot,
    *,
    timeout_s: float = math.inf,
    keepalive: bool = True,
    retries: RetryCounter | None = None,
) -> SessionRecord:
    """Run one request into ``rec`` (``intended_ns`` and the identity fields set by the caller).

    The slot's connection is reused when it is alive; one the server closed while idle is replaced
    by a fresh one before the request is written (``rec.resent``); a failure after that is the session's.
    Cancellation from outside (Ctrl-C) propagates after the record is marked ``interrupted``. Never
    raises a :class:`ClientError`.
    """
    rec.stream = spec.stream
    rec.start_ns = now_ns()
    acct = StreamAccounting(rec, ndjson=spec.ndjson) if spec.stream else None
    kind: str | None = None
    detail: str | None = None
    finished = False
    try:
        with trio.move_on_after(timeout_s) as scope:
            try:
                kind = await _exchange(endpoint, spec, rec, slot, acct, retries)
            except ConnectFailed as exc:
                kind, detail = "connect", str(exc)
            except ConnectionReset as exc:
                kind, detail = "reset", str(exc)
            except ProtocolError as exc:
                kind, detail = "malformed", str(exc)
        finished = True
        if scope.cancelled_caught:
            kind, detail = "timeout", f"no end within {timeout_s:g} s"
    finally:
        rec.end_ns = now_ns()
        if not finished:
            rec.error_kind = "interrupted"
        if slot.conn is not None and (not finished or kind is not None or not keepalive or not slot.conn.reusable):
            conn, slot.conn = slot.conn, None
            with trio.CancelScope(shield=True):
                await conn.aclose()
        elif slot.conn is not None:
            slot.conn.next_cycle()
    rec.error_kind, rec.error_detail = _verdict(rec, acct, kind, detail)
    return rec


def _verdict(
    rec: SessionRecord, acct: StreamAccounting | None, kind: str | None, detail: str | None
) -> tuple[str | None, str | None]:
    if rec.status is not None and rec.status != 200:
        return f"http_{rec.status}", rec.error_detail or detail
    if kind == "connect":
        return kind, detail
    if acct is not None:
        if acct.error_event is not None:
            return "error_event", acct.error_event
        if acct.malformed is not None:
            return "malformed", acct.malformed
    if kind is not None:
        return kind, detail or rec.error_detail
    if acct is not None:
        return acct.verdict()
    return None, None


async def _exchange(
    endpoint: Endpoint,
    spec: RequestSpec,
    rec: SessionRecord,
    slot: ConnectionSlot,
    acct: StreamAccounting | None,
    retries: RetryCounter | None,
) -> str | None:
    conn = slot.conn
    if conn is not None and conn.closed_by_peer():
        # The server closed the idle connection before we wrote a byte of this request: it provably never
        # saw it, so it goes on a fresh connection, counted. Once a byte is written, a failure is final.
        slot.conn = None
        await conn.aclose()
        conn = None
        rec.resent += 1
    if conn is None:
        conn = await open_connection(endpoint, on_retry=retries)
        slot.conn = conn
        rec.connected_ns = now_ns()
    await conn.send_request(spec.request, spec.data)
    rec.sent_ns = now_ns()
    response = await conn.receive_response()
    rec.headers_ns = now_ns()
    rec.status = response.status_code

    if rec.status != 200:
        body = bytearray()
        ended = False
        with trio.move_on_after(2.0):
            while not ended and len(body) < 4096:
                data, ended = await conn.receive_body()
                body += data
        rec.bytes = len(body)
        rec.error_detail = bytes(body[:_ERROR_DETAIL_BYTES]).decode("utf-8", "replace")
        return None

    if acct is None:
        parts: list[bytes] = []
        while True:
            data, ended = await conn.receive_body()
            if data:
                if rec.first_chunk_ns is None:
                    rec.first_chunk_ns = now_ns()
                parts.append(data)
            if ended:
                break
        body = b"".join(parts)
        rec.bytes = len(body)
        return account_full_body(rec, body)

    while True:
        data, ended = await conn.receive_body()
        t = now_ns()
        if data:
            acct.feed(data, t)
        if ended:
            acct.end(t)
            return None
