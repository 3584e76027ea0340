"""One session (a chat completion, or a Messages or Responses answer), measured into a
:class:`~loadtest.record.SessionRecord`.

:func:`run_session` is the thin I/O shell (connect or reuse, send, read, classify); what the response's
bytes mean (SSE events, the sim's stamps and seqs, usage, completed / unverified) is judged sans I/O by
:mod:`loadtest.accounting` (chat) and :mod:`loadtest.protocols` (Messages, Responses: the same kinds below,
in their events).

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
- ``no_finish_reason``: a stream that ended cleanly, but no chunk carried a ``finish_reason``;
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

from loadtest.accounting import ERROR_DETAIL_BYTES
from loadtest.client import (
    ConnectFailed,
    Connection,
    ConnectionReset,
    Endpoint,
    ProtocolError,
    now_ns,
    open_connection,
)
from loadtest.protocols import Accounting, judge_body, new_accounting
from loadtest.record import SessionRecord

__all__ = ["RequestSpec", "build_request", "ConnectionSlot", "RetryCounter", "run_session"]


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """A request built once per distinct prompt and sent by many sessions (as prebuilt h11 events)."""

    path: bytes  # e.g. b"/v1/chat/completions"
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    stream: bool
    ndjson: bool = False
    method: bytes = b"POST"
    usage_asked: bool = False  # the body asks for stream usage (stream_options.include_usage)
    api: str = "chat"  # the protocol the answer is judged by (loadtest.protocols)
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
    options = payload.get("stream_options")
    usage_asked = isinstance(options, dict) and options.get("include_usage") is True
    return RequestSpec(path.encode(), tuple(headers), body, stream or ndjson, ndjson, usage_asked=usage_asked)


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
    acct = new_accounting(spec.api, rec, ndjson=spec.ndjson, usage_asked=spec.usage_asked) if spec.stream else None
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
    rec: SessionRecord, acct: Accounting | None, kind: str | None, detail: str | None
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
    acct: Accounting | None,
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
        rec.error_detail = bytes(body[:ERROR_DETAIL_BYTES]).decode("utf-8", "replace")
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
        return judge_body(spec.api, rec, body)

    while True:
        data, ended = await conn.receive_body()
        t = now_ns()
        if data:
            acct.feed(data, t)
        if ended:
            acct.end(t)
            return None
