"""One chat-completion session, measured into a :class:`~loadtest.record.SessionRecord`.

The pure part, :class:`StreamAccounting`, turns response-body bytes plus receive times into the
record's chunk counts, gaps, relay delays, usage and error verdicts; :func:`run_session` is the thin
I/O shell around it (connect or reuse, send, read, classify).

Error kinds (``SessionRecord.error_kind``), first match wins:

- ``connect``: the TCP connect failed (after retries);
- ``http_<status>``: a status other than 200;
- ``error_event``: an ``{"error": ...}`` event (SSE) or line (NDJSON) in a 200 response;
- ``malformed``: a chunk that is not JSON, data after ``[DONE]``, or bytes that are not HTTP;
- ``timeout``: the session's overall timeout expired;
- ``reset``: the connection broke before the response ended;
- ``missing_chunks``: fewer data events than the sim announced (``"sim": {"of": n}``);
- ``no_done``: a stream that ended cleanly without ``data: [DONE]``;
- ``interrupted``: the run was stopped (Ctrl-C) while this session was in flight.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from loadtest.client import (
    ClientError,
    ConnectFailed,
    Connection,
    ConnectionReset,
    Endpoint,
    ProtocolError,
    now_ns,
    open_connection,
)
from loadtest.record import SessionRecord
from proxy.sse import EventSplitter, event_data

DONE = b"[DONE]"
_SIM_KEY = b'"sim"'
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


def _sim_stamp(data: bytes, i: int) -> tuple[int, int] | None:
    """``(ns, of)`` from the ``"sim":{"ns":N,"seq":K,"of":M}`` object at ``data[i:]``.

    Two ``int()`` of byte slices: ~1 µs, against ~5 µs for ``json.loads`` of the stamp object and
    ~15 µs for the whole chunk; at 10,000 streams this is the per-chunk path.
    """
    a = data.find(b'"ns":', i)
    b = data.find(b",", a)
    o = data.find(b'"of":', b)
    e = data.find(b"}", o)
    if a < 0 or b < 0 or o < 0 or e < 0:
        return None
    try:
        return int(data[a + 5 : b]), int(data[o + 5 : e])
    except ValueError:
        return None


class StreamAccounting:
    """Sans-I/O: feed response-body bytes with their receive time; it fills the record.

    Per-chunk cost matters (10,000 streams on two cores shared with the relay and the sim): a chunk
    that carries the sim's stamp and looks whole (``{...}``) is accounted from a byte search plus the
    tiny stamp object; only chunks without a stamp, or that mention ``usage``/``error``, are parsed as
    JSON.
    """

    __slots__ = ("rec", "ndjson", "_split", "_last_ns", "malformed", "error_event", "_line_buf")

    def __init__(self, rec: SessionRecord, *, ndjson: bool = False) -> None:
        self.rec = rec
        self.ndjson = ndjson
        self._split = EventSplitter()
        self._line_buf = b""
        self._last_ns = 0
        self.malformed: str | None = None
        self.error_event: str | None = None

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
        for event in self._split.feed(data):
            payload = event_data(event)
            if payload is None:
                continue  # comment / keep-alive
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
        elif not self.ndjson and self._split.pending.strip():
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
            if obj is None:
                stamp = _sim_stamp(data, i)
            else:
                sim = obj.get("sim")
                stamp = (sim.get("ns"), sim.get("of")) if isinstance(sim, dict) else None
            if stamp is not None:
                ns, of = stamp
                if isinstance(ns, int):
                    rec.relay_delay_ms.append((t_ns - ns) / 1e6)
                if isinstance(of, int) and (rec.expected_chunks is None or of > rec.expected_chunks):
                    rec.expected_chunks = of
        if b'"usage"' in data:
            if obj is None:
                try:
                    obj = json.loads(data)
                except ValueError:
                    self._bad("chunk with usage is not JSON")
                    return
            _usage_into(rec, obj)



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

    The slot's connection is reused when it is alive; a reused connection that fails before the
    first response byte (the server closed it while idle: the keep-alive race) is replaced once by a
    fresh one. Cancellation from outside (Ctrl-C) propagates after the record is marked
    ``interrupted``. Never raises a :class:`ClientError`.
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
        if rec.expected_chunks is not None and rec.chunks < rec.expected_chunks:
            return "missing_chunks", f"{rec.chunks} of {rec.expected_chunks} chunks"
        if not rec.done and not acct.ndjson:
            return "no_done", f"{rec.chunks} chunks, no [DONE]"
        if acct.ndjson:
            rec.done = True
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
    if conn is not None:
        try:
            await conn.send_request(spec.request, spec.data)
            rec.sent_ns = now_ns()
            response = await conn.receive_response()
        except ClientError:
            if conn.received_any:
                raise
            # The keep-alive race: the server closed the idle connection as we reused it.
            slot.conn = None
            await conn.aclose()
            conn = None
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
