"""The simulated Moonshot/OpenAI upstream: a raw trio + h11 server cheap enough for 10,000 open streams.

Run it with ``python -m loadtest.sim --bind 127.0.0.1:9100``; it prints ``sim listening on URL`` once
every worker listens. In-process (tests, demos)::

    server = await nursery.start(serve_sim, SimConfig(port=0, ttft=0.05, interval=0.01))
    server.url  # "http://127.0.0.1:43121/v1"

Endpoints: ``POST /v1/chat/completions`` (streaming and not), ``GET /v1/models``, ``GET /sim/stats``,
``GET /sim/cancels``, ``POST /sim/reset``; for pass-through, ``POST /v1/embeddings``,
``POST /v1/tokenizers/estimate-token-count``, ``GET /v1/users/me/balance``, ``POST /v1/files`` (read as it
arrives) and ``GET /v1/files/{id}/content`` (sent in timed parts). Timing, content size and fault injection can
be overridden per request by ``sim_*`` body fields or ``X-Sim-*`` headers (the body wins).

Why no framework: hypercorn + Quart spend hundreds of µs per chunk and a task tree per request; this
module keeps one connection task (plus one EOF-watch task while a response is in progress), sends
precomputed bytes (:mod:`loadtest.simcontent`) and sleeps on one shared timer (:mod:`loadtest.timer`).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import socket
import ssl
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import h11
import trio

from loadtest import simcontent
from loadtest.fdlimit import raise_nofile_limit
from loadtest.timer import DeadlineTimer

__all__ = ["SimConfig", "SimServer", "SimStats", "SharedSimStats", "serve_sim", "main"]

RECEIVE_SIZE = 65536
MAX_BODY = 16 * 1024 * 1024
RECENT = 200
CANCELS_KEPT = 100_000
TLS_HANDSHAKE_TIMEOUT = 10.0
FAULTS = ("status", "stall", "drop", "malformed", "drip", "headers-then-stall")
_COUNTERS = ("started", "completed", "cancelled", "open")
_ClosedErrors = (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError, ssl.SSLError)


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 9100
    ttft: float = 1.0  # seconds to the first chunk; uniform in [ttft - ttft_jitter, ttft + ttft_jitter], >= 0
    ttft_jitter: float = 0.0
    chunks: int = 20  # content chunks per stream
    interval: float = 0.1  # seconds between chunks; each uniform in [interval +- interval_jitter], >= 0
    interval_jitter: float = 0.0
    tokens_per_chunk: int = 1
    seed: int | None = None
    backlog: int = 4096
    tls_dir: str | None = None  # serve https with a trustme cert; writes DIR/ca.pem, DIR/server.pem, DIR/server.key
    require_key: str | None = None  # requests without "Authorization: Bearer <key>" get Moonshot's 401
    tls_reuse: bool = False  # load DIR's cert instead of writing a new one (the CLI's workers share one)
    models: tuple[str, ...] = simcontent.MODELS  # what GET /v1/models lists
    key_faults: dict[str, str] = field(default_factory=dict)  # bearer key -> fault for its chat requests (a 429ing key)


# ---------------------------------------------------------------------------------------------------
# Counters


class SimStats:
    """Counters of chat requests: started, completed, cancelled (client left first), open (in progress).

    Every started request ends as exactly one of completed or cancelled.
    """

    def __init__(self) -> None:
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self.cancel_ns: collections.deque[int] = collections.deque(maxlen=CANCELS_KEPT)
        # The request's OpenAI ``user`` field, index for index with cancel_ns: a client pairs its close with its cancel.
        self.cancel_users: collections.deque[str | None] = collections.deque(maxlen=CANCELS_KEPT)

    def _add(self, name: str, n: int) -> None:
        self._counts[name] += n

    def on_started(self) -> None:
        self._add("started", 1)
        self._add("open", 1)

    def on_completed(self) -> None:
        self._add("completed", 1)
        self._add("open", -1)

    def on_cancelled(self, ns: int, user: str | None = None) -> None:
        self._add("cancelled", 1)
        self._add("open", -1)
        self.cancel_ns.append(ns)
        self.cancel_users.append(user)

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)

    def reset(self) -> None:
        """Zero the totals (``open`` is a gauge of requests in progress and keeps its value)."""
        for name in ("started", "completed", "cancelled"):
            self._counts[name] = 0
        self.cancel_ns.clear()
        self.cancel_users.clear()


class SharedSimStats(SimStats):
    """Counters in a shared-memory array, one row per worker process; :meth:`snapshot` sums the rows."""

    def __init__(self, array, row: int, workers: int) -> None:
        super().__init__()
        self._array = array
        self._base = row * len(_COUNTERS)
        self._workers = workers
        self._index = {name: i for i, name in enumerate(_COUNTERS)}

    @classmethod
    def allocate(cls, workers: int, ctx=multiprocessing):
        return ctx.RawArray("q", workers * len(_COUNTERS))

    def _add(self, name: str, n: int) -> None:
        self._array[self._base + self._index[name]] += n

    def snapshot(self) -> dict[str, int]:
        width = len(_COUNTERS)
        return {
            name: sum(self._array[row * width + i] for row in range(self._workers)) for i, name in enumerate(_COUNTERS)
        }

    def reset(self) -> None:
        width = len(_COUNTERS)
        for row in range(self._workers):
            for name in ("started", "completed", "cancelled"):
                self._array[row * width + self._index[name]] = 0
        self.cancel_ns.clear()
        self.cancel_users.clear()


@dataclass
class SimServer:
    """What ``serve_sim`` reports when it listens."""

    url: str  # base URL ending in /v1
    host: str
    port: int
    stats: SimStats
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT))
    # Pass-through endpoints, watched in-process by tests that prove streaming:
    upload_bytes: int = 0  # body bytes of the current (or last) POST /v1/files read so far
    parts_sent: int = 0  # body parts of the current (or last) file content download sent so far
    downloads_cut: int = 0  # downloads whose client left before the last part
    files: dict[str, int] = field(default_factory=dict)  # uploaded file id -> size in bytes


# ---------------------------------------------------------------------------------------------------
# Per-request plan (pure)


class BadRequest(Exception):
    """A request the sim answers with 400 invalid_request_error."""


@dataclass(slots=True)
class Plan:
    ttft: float
    ttft_jitter: float
    chunks: int
    interval: float
    interval_jitter: float
    tokens_per_chunk: int
    fault: str | None
    fault_arg: int
    deterministic: bool


_OVERRIDES = {
    # body field / header suffix -> (Plan attribute, parser)
    "ttft": ("ttft", float),
    "ttft_jitter": ("ttft_jitter", float),
    "chunks": ("chunks", int),
    "interval": ("interval", float),
    "tokens_per_chunk": ("tokens_per_chunk", int),
    "fault": ("fault", str),
    "deterministic": ("deterministic", None),
}


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def make_plan(config: SimConfig, body: Mapping, headers: Mapping[str, str]) -> Plan:
    """The request's timing and faults: config defaults, then ``X-Sim-*`` headers, then ``sim_*`` body fields."""
    values: dict[str, object] = {
        "ttft": config.ttft,
        "ttft_jitter": config.ttft_jitter,
        "chunks": config.chunks,
        "interval": config.interval,
        "interval_jitter": config.interval_jitter,
        "tokens_per_chunk": config.tokens_per_chunk,
        "fault": None,
        "deterministic": False,
    }
    for key, (attr, parse) in _OVERRIDES.items():
        raw = headers.get("x-sim-" + key.replace("_", "-"))
        if "sim_" + key in body:
            raw = body["sim_" + key]
        if raw is None:
            continue
        try:
            if parse is None:
                values[attr] = _truthy(raw)
            elif parse is str:
                values[attr] = str(raw).strip().lower()
            elif isinstance(raw, bool):
                raise ValueError("booleans are not numbers")
            else:
                number = parse(raw)
                if parse is float and not math.isfinite(number):
                    raise ValueError("not finite")
                values[attr] = number
        except (TypeError, ValueError):
            raise BadRequest(f"sim_{key}: invalid value {raw!r}") from None
    for attr in ("ttft", "ttft_jitter", "interval", "chunks"):
        if values[attr] < 0:
            raise BadRequest(f"sim_{attr}: must not be negative")
    if values["tokens_per_chunk"] < 1:
        raise BadRequest("sim_tokens_per_chunk: must be at least 1")
    if values["chunks"] > 1_000_000:
        raise BadRequest("sim_chunks: too many")
    fault, fault_arg = _parse_fault(values.pop("fault"))
    return Plan(fault=fault, fault_arg=fault_arg, **values)


def _parse_fault(spec: object) -> tuple[str | None, int]:
    if spec is None or spec in ("", "none"):
        return None, 0
    name, _, arg = str(spec).partition(":")
    if name not in FAULTS:
        raise BadRequest(f"sim_fault: unknown fault {spec!r}; known: {', '.join(FAULTS)}")
    if name in ("status", "drop", "malformed"):
        try:
            number = int(arg)
        except ValueError:
            raise BadRequest(f"sim_fault: {name} needs an integer, e.g. {name}:3") from None
        if number < 0 or (name == "status" and not 200 <= number <= 599):
            raise BadRequest(f"sim_fault: bad argument in {spec!r}")
        return name, number
    return name, 0


def schedule(plan: Plan, start: float, rng: random.Random) -> list[float]:
    """Absolute send times of the ``plan.chunks`` content chunks (at least one entry)."""
    ttft = plan.ttft
    if plan.ttft_jitter:
        ttft = max(0.0, rng.uniform(ttft - plan.ttft_jitter, ttft + plan.ttft_jitter))
    times = [start + ttft]
    for _ in range(plan.chunks - 1):
        gap = plan.interval
        if plan.interval_jitter:
            gap = max(0.0, rng.uniform(gap - plan.interval_jitter, gap + plan.interval_jitter))
        times.append(times[-1] + gap)
    return times


# ---------------------------------------------------------------------------------------------------
# TLS


def write_tls_files(tls_dir: str | os.PathLike, host: str) -> None:
    """Issue a trustme CA and a server cert for ``host``, localhost and 127.0.0.1 into ``tls_dir``."""
    import trustme

    directory = Path(tls_dir)
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    names = list(dict.fromkeys([host, "localhost", "127.0.0.1", "::1"]))
    cert = ca.issue_cert(*names)
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(directory / "server.pem"), append=True)
    cert.private_key_pem.write_to_path(str(directory / "server.key"))


def server_ssl_context(tls_dir: str | os.PathLike) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(Path(tls_dir) / "server.pem"), str(Path(tls_dir) / "server.key"))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# ---------------------------------------------------------------------------------------------------
# The server


class _Exchange:
    """One chat response in progress, shared with its EOF-watch task."""

    __slots__ = ("scope", "watch_scope", "watch_done", "gone_ns")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()  # the response; cancelled when the client leaves
        self.watch_scope = trio.CancelScope()
        self.watch_done = trio.Event()
        self.gone_ns: int | None = None  # monotonic ns when the client was seen leaving


class _Abort(Exception):
    """Close the connection now, without finishing the response (the ``drop`` fault)."""


def _chunk(data: bytes) -> bytes:
    # Chunked framing by hand: h11's send(Data) costs a state-machine pass per chunk; at 10,000 streams
    # the hot path is one bytes format. h11 does not count chunked bytes, so its state stays right and
    # EndOfMessage still produces the terminator.
    return b"%x\r\n%b\r\n" % (len(data), data)


async def _send(stream: trio.abc.Stream, data: bytes) -> None:
    """``stream.send_all(data)``, with a fast path for plain sockets whose send buffer has room.

    trio's ``SocketStream.send_all`` passes through two checkpoints per call; measured at 1,000 streams
    (5,000 chunks/s) the direct non-blocking write below saves about a third of the CPU per chunk. The
    caller's timer sleep is its checkpoint. A partial write or a full buffer falls back to trio.
    """
    if type(stream) is trio.SocketStream:
        try:
            sent = os.write(stream.socket.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc
        if sent == len(data):
            return
        data = data[sent:]
    await stream.send_all(data)


class _Sim:
    def __init__(self, config: SimConfig, server: SimServer, timer: DeadlineTimer, rng: random.Random) -> None:
        self.config = config
        self.server = server
        self.stats = server.stats
        self.timer = timer
        self.rng = rng
        self.tls = config.tls_dir is not None

    # -- connection -------------------------------------------------------------------------------

    async def handle(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            async with trio.open_nursery() as nursery:
                try:
                    if isinstance(stream, trio.SSLStream):
                        with trio.fail_after(TLS_HANDSHAKE_TIMEOUT):
                            await stream.do_handshake()
                    await self._serve_requests(stream, conn, nursery)
                except (*_ClosedErrors, _Abort, trio.TooSlowError):
                    # The one place where a peer's departure (or our own abrupt close) ends a connection.
                    pass
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            await self._close(stream)

    @staticmethod
    async def _close(stream: trio.abc.Stream) -> None:
        if isinstance(stream, trio.SSLStream):
            # No close_notify: the peer may be gone, and an abrupt close is what a dropped upstream looks like.
            stream = stream.transport_stream
        await trio.aclose_forcefully(stream)

    async def _serve_requests(self, stream: trio.abc.Stream, conn: h11.Connection, nursery: trio.Nursery) -> None:
        while True:
            request = await self._read_request(stream, conn)
            if request is None:
                return
            await self._dispatch(stream, conn, nursery, *request)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _next_event(self, stream: trio.abc.Stream, conn: h11.Connection):
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await stream.receive_some(RECEIVE_SIZE))

    async def _read_request(self, stream, conn):
        """(method, target, headers, body); the body is None for an upload, which its handler reads as it arrives."""
        event = await self._next_event(stream, conn)
        if not isinstance(event, h11.Request):
            return None  # ConnectionClosed (or PAUSED after a close)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
        method, target = event.method.decode(), event.target.decode("latin-1")
        if method == "POST" and _path(target) == "/v1/files":
            return method, target, headers, None
        parts: list[bytes] = []
        size = 0
        while True:
            part = await self._next_event(stream, conn)
            if isinstance(part, h11.Data):
                size += len(part.data)
                if size > MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large")
                parts.append(part.data)
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                return None
        return method, target, headers, b"".join(parts)

    # -- routing ----------------------------------------------------------------------------------

    async def _dispatch(
        self, stream, conn, nursery, method: str, target: str, headers: dict, raw: bytes | None
    ) -> None:
        path = _path(target)
        body: object = None
        if raw:
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                body = None
                bad_json = True
            else:
                bad_json = False
        else:
            bad_json = False
        self.server.recent.append({"method": method, "path": path, "headers": headers, "body": body})

        if path == "/v1/chat/completions":
            if method != "POST":
                return await self._error(stream, conn, 405, "Method not allowed", "invalid_request_error")
            if self.config.require_key is not None:
                if headers.get("authorization", "") != f"Bearer {self.config.require_key}":
                    return await self._error(stream, conn, 401)
            key_fault = self.config.key_faults.get(headers.get("authorization", "").removeprefix("Bearer "))
            if key_fault is not None:
                headers = {**headers, "x-sim-fault": key_fault}
            if bad_json or not isinstance(body, dict):
                return await self._error(stream, conn, 400, "Invalid request: body is not a JSON object")
            try:
                plan = make_plan(self.config, body, headers)
            except BadRequest as exc:
                return await self._error(stream, conn, 400, f"Invalid request: {exc}")
            return await self._chat(stream, conn, nursery, body, plan)
        if path == "/v1/models" and method == "GET":
            return await self._send_simple(stream, conn, 200, simcontent.models_body(models=self.config.models))
        if path in _PASS_THROUGH or path.startswith("/v1/files/"):
            if self.config.require_key is not None:
                if headers.get("authorization", "") != f"Bearer {self.config.require_key}":
                    return await self._error(stream, conn, 401)
            return await self._pass_through(stream, conn, method, path, headers, body, bad_json)
        if path == "/sim/stats" and method == "GET":
            return await self._send_simple(stream, conn, 200, simcontent.dumps(self.stats.snapshot()))
        if path == "/sim/cancels" and method == "GET":
            cancels = {"cancel_ns": list(self.stats.cancel_ns), "user": list(self.stats.cancel_users)}
            return await self._send_simple(stream, conn, 200, simcontent.dumps(cancels))
        if path == "/sim/reset" and method == "POST":
            self.stats.reset()
            self.server.recent.clear()
            return await self._send_simple(stream, conn, 200, simcontent.dumps(self.stats.snapshot()))
        return await self._error(stream, conn, 404, f"Not found: {method} {path}", "resource_not_found_error")

    # -- the other endpoints a relay passes through ------------------------------------------------

    async def _pass_through(self, stream, conn, method: str, path: str, headers: dict, body, bad_json: bool) -> None:
        if path == "/v1/files" and method == "POST":
            return await self._upload(stream, conn)
        if path.startswith("/v1/files/") and path.endswith("/content") and method == "GET":
            return await self._download(stream, conn, path.split("/")[3], headers)
        if path == "/v1/users/me/balance" and method == "GET":
            return await self._send_simple(stream, conn, 200, simcontent.BALANCE)
        if method != "POST":
            return await self._error(stream, conn, 405, "Method not allowed", "invalid_request_error")
        if bad_json or not isinstance(body, dict):
            return await self._error(stream, conn, 400, "Invalid request: body is not a JSON object")
        try:
            if path == "/v1/embeddings":
                answer = simcontent.embeddings(body.get("model"), body.get("input"))
            else:
                answer = simcontent.token_count(body.get("messages"))
        except ValueError as exc:
            return await self._error(stream, conn, 400, f"Invalid request: {exc}")
        await self._send_simple(stream, conn, 200, answer)

    async def _upload(self, stream, conn) -> None:
        """``POST /v1/files``: counts and hashes the body as it arrives (``upload_bytes`` shows how far it is),
        then answers with Moonshot's file object."""
        self.server.upload_bytes = 0
        digest = hashlib.sha256()
        start = b""  # the first bytes, where a multipart body names the file and its purpose
        while True:
            part = await self._next_event(stream, conn)
            if isinstance(part, h11.EndOfMessage):
                break
            if not isinstance(part, h11.Data):
                return
            digest.update(part.data)
            if len(start) < 4096:
                start += part.data[: 4096 - len(start)]
            self.server.upload_bytes += len(part.data)
        size = self.server.upload_bytes
        file_id = f"file-sim{len(self.server.files) + 1:04d}"
        self.server.files[file_id] = size
        answer = simcontent.file_object(file_id, size, start, digest.hexdigest(), int(time.time()))
        await self._send_simple(stream, conn, 200, answer)

    async def _download(self, stream, conn, file_id: str, headers: dict) -> None:
        """``GET /v1/files/{id}/content``: the sim's chunks/interval/ttft (``X-Sim-*``) shape a slow body of
        ``chunks`` parts; ``parts_sent`` shows how far it is (``X-Sim-Fault: status:N`` answers N instead)."""
        try:
            plan = make_plan(self.config, {}, headers)
        except BadRequest as exc:
            return await self._error(stream, conn, 400, f"Invalid request: {exc}")
        if plan.fault == "status":
            return await self._error(stream, conn, plan.fault_arg)
        if file_id not in self.server.files:
            return await self._error(stream, conn, 404, f"Not found: file {file_id}", "resource_not_found_error")
        head = [
            ("content-type", "application/octet-stream"),
            ("content-disposition", f'attachment; filename="{file_id}.txt"'),
            ("transfer-encoding", "chunked"),
        ]
        self.server.parts_sent = 0
        await _send(stream, conn.send(h11.Response(status_code=200, headers=head)))
        try:
            for k, at in enumerate(schedule(plan, trio.current_time(), self.rng)[: plan.chunks]):
                await self.timer.sleep_until(at)
                await _send(stream, conn.send(h11.Data(data=simcontent.file_part(file_id, k))))
                self.server.parts_sent += 1
            await _send(stream, conn.send(h11.EndOfMessage()))
        except _ClosedErrors:
            self.server.downloads_cut += 1
            raise

    async def _send_simple(self, stream, conn, status: int, body: bytes, extra: list | None = None) -> None:
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        headers += extra or []
        data = conn.send(h11.Response(status_code=status, headers=headers))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        await _send(stream, data)

    async def _error(self, stream, conn, status: int, message: str | None = None, kind: str | None = None) -> None:
        if kind is None:
            body = simcontent.error_body(status, message)
        else:
            body = simcontent.dumps({"error": {"message": message, "type": kind}})
        extra = []
        if status == 429:
            reset = int(time.time()) + 1
            extra = [("retry-after", "1"), ("x-ratelimit-limit", "3"), ("x-ratelimit-remaining", "0")]
            extra.append(("x-ratelimit-reset", str(reset)))
        await self._send_simple(stream, conn, status, body, extra)

    # -- chat -------------------------------------------------------------------------------------

    async def _chat(self, stream, conn, nursery: trio.Nursery, body: dict, plan: Plan) -> None:
        start = trio.current_time()
        self.stats.on_started()
        exchange = _Exchange()
        finished = False
        nursery.start_soon(self._watch_eof, stream, conn, exchange)
        try:
            with exchange.scope:
                await self._respond(stream, conn, body, plan, start)
                finished = True
        except _Abort:
            finished = True
            raise
        finally:
            exchange.watch_scope.cancel()
            if finished:
                self.stats.on_completed()
            else:
                user = body.get("user") if isinstance(body.get("user"), str) else None
                self.stats.on_cancelled(exchange.gone_ns or time.monotonic_ns(), user)
            # The watcher must have stopped reading before anyone else reads from this stream.
            with trio.CancelScope(shield=True):
                await exchange.watch_done.wait()
        if not finished:
            raise trio.BrokenResourceError("client went away")

    async def _watch_eof(self, stream, conn: h11.Connection, exchange: _Exchange) -> None:
        """Read while the response is in progress, so a client's EOF cancels it at once."""
        try:
            with exchange.watch_scope:
                try:
                    data = await stream.receive_some(RECEIVE_SIZE)
                except _ClosedErrors:
                    data = b""
                if data:
                    # A pipelined next request: keep it for the next cycle and stop watching.
                    conn.receive_data(data)
                else:
                    exchange.gone_ns = time.monotonic_ns()
                    exchange.scope.cancel()
        finally:
            exchange.watch_done.set()

    async def _respond(self, stream, conn: h11.Connection, body: dict, plan: Plan, start: float) -> None:
        fault = plan.fault
        if fault == "status":
            return await self._error(stream, conn, plan.fault_arg)
        if fault == "stall":
            await trio.sleep_forever()

        model = body.get("model") if isinstance(body.get("model"), str) and body.get("model") else None
        model = model or simcontent.DEFAULT_MODEL
        messages = body.get("messages")
        digest = simcontent.request_hash(model, messages)
        if plan.deterministic:
            completion_id = "chatcmpl-" + digest[:12].hex()
            created = simcontent.DETERMINISTIC_CREATED
        else:
            completion_id = f"chatcmpl-{self.rng.getrandbits(96):024x}"
            created = int(time.time())
        chunks = plan.chunks
        words = simcontent.tokens(digest, chunks * plan.tokens_per_chunk)
        prompt = simcontent.prompt_tokens(messages)
        times = schedule(plan, start, self.rng)
        stamp = _zero if plan.deterministic else time.monotonic_ns
        chunked = conn.their_http_version != b"1.0"

        if not _truthy(body.get("stream", False)):
            # Non-streaming: one body at ttft + (chunks - 1) * interval.
            content = simcontent.completion(
                completion_id=completion_id,
                created=created,
                model=model,
                words=words,
                chunks=chunks,
                tokens_per_chunk=plan.tokens_per_chunk,
                prompt=prompt,
            )
            await self.timer.sleep_until(times[-1])
            if fault == "drop":
                raise _Abort
            payload = b"{not json" if fault == "malformed" else content.render(stamp())
            head = [("content-type", "application/json"), ("content-length", str(len(payload)))]
            await _send(stream, conn.send(h11.Response(status_code=200, headers=head)))
            if fault == "headers-then-stall":
                await trio.sleep_forever()
            if fault == "drip":
                await self._drip(stream, payload, plan.interval, frame=lambda p: conn.send(h11.Data(data=p)))
                conn.send(h11.EndOfMessage())  # no bytes with content-length
            else:
                await _send(stream, conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
            return

        include_usage = isinstance(body.get("stream_options"), dict) and _truthy(
            body["stream_options"].get("include_usage")
        )
        events = simcontent.stream_events(
            completion_id=completion_id,
            created=created,
            model=model,
            words=words,
            chunks=chunks,
            tokens_per_chunk=plan.tokens_per_chunk,
            prompt=prompt,
            include_usage=include_usage,
        )
        head = [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("x-sim-chunks", str(len(events))),
        ]
        if chunked:
            head.append(("transfer-encoding", "chunked"))
        await _send(stream, conn.send(h11.Response(status_code=200, headers=head)))
        frame = _chunk if chunked else bytes
        if fault == "headers-then-stall":
            await trio.sleep_forever()
        # Content chunks 0..N-2 alone; the last content chunk, the final chunk(s), [DONE] and the chunked
        # terminator in one write.
        last = max(chunks - 1, 0)
        timer = self.timer
        for k in range(last):
            if fault == "drop" and k == plan.fault_arg:
                raise _Abort
            await timer.sleep_until(times[k])
            if fault == "malformed" and k == plan.fault_arg:
                data = simcontent.MALFORMED_EVENT
            else:
                data = events[k].render(stamp())
            if fault == "drip":
                await self._drip(stream, data, plan.interval, frame=frame)
            else:
                await _send(stream, frame(data))
        await timer.sleep_until(times[last])
        if fault == "drop":  # K >= last: the content chunks that are left, but no final chunk
            if plan.fault_arg > last and chunks:
                await _send(stream, frame(events[last].render(stamp())))
            raise _Abort
        ns = stamp()
        tail = [
            simcontent.MALFORMED_EVENT if fault == "malformed" and plan.fault_arg == k else events[k].render(ns)
            for k in range(last, len(events))
        ]
        tail.append(simcontent.DONE_EVENT)
        data = b"".join(tail)
        if fault == "drip":
            await self._drip(stream, data, plan.interval, frame=frame, end=conn.send(h11.EndOfMessage()))
        elif chunked:
            await _send(stream, frame(data) + conn.send(h11.EndOfMessage()))
        else:
            await _send(stream, data)
            conn.send(h11.EndOfMessage())

    async def _drip(self, stream, data: bytes, spread: float, *, frame, end: bytes = b"") -> None:
        """Send ``data`` in pieces of at most 7 bytes, each framed by ``frame``, spread evenly over ``spread`` s.

        ``end`` goes out with the last piece: nothing may await after a response's last byte, or a client
        that leaves as soon as it has the whole response would be counted as cancelled.
        """
        pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
        step = spread / len(pieces) if pieces else 0.0
        at = trio.current_time()
        for i, piece in enumerate(pieces):
            if i == len(pieces) - 1:
                await _send(stream, frame(piece) + end)
                return
            await _send(stream, frame(piece))
            at += step
            await self.timer.sleep_until(at)
        await _send(stream, end)


def _zero() -> int:
    return 0


# Moonshot's other endpoints (and OpenAI's embeddings) that the sim answers, for the relay's pass-through.
_PASS_THROUGH = frozenset(
    {"/v1/embeddings", "/v1/tokenizers/estimate-token-count", "/v1/users/me/balance", "/v1/files"}
)


def _path(target: str) -> str:
    return target.split("?", 1)[0].rstrip("/") or "/"


def _format_url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}/v1"


def _listen_socket(host: str, port: int, backlog: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_sim(
    config: SimConfig,
    *,
    sock: socket.socket | None = None,
    stats: SimStats | None = None,
    task_status: trio.TaskStatus[SimServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the simulated upstream until cancelled; ``task_status.started(SimServer)`` once listening.

    ``sock``: an already bound and listening socket (the CLI's workers each get their own
    SO_REUSEPORT socket); by default one is bound to ``config.host:config.port`` (0: ephemeral).
    ``stats``: where the counters live (shared memory across workers); a fresh :class:`SimStats` by default.
    """
    if sock is None:
        sock = _listen_socket(config.host, config.port, config.backlog)
    listener: trio.abc.Listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    host, port = sock.getsockname()[:2]
    scheme = "http"
    if config.tls_dir is not None:
        if not config.tls_reuse:
            write_tls_files(config.tls_dir, config.host)
        listener = trio.SSLListener(listener, server_ssl_context(config.tls_dir), https_compatible=True)
        scheme = "https"
    server = SimServer(
        url=_format_url(scheme, config.host, port), host=config.host, port=port, stats=stats or SimStats()
    )
    timer = DeadlineTimer()
    sim = _Sim(config, server, timer, random.Random(config.seed))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(timer.run)
            await nursery.start(partial(trio.serve_listeners, sim.handle, [listener], handler_nursery=nursery))
            task_status.started(server)
    finally:
        await trio.aclose_forcefully(listener)


# ---------------------------------------------------------------------------------------------------
# CLI


def _parse_bind(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--bind", type=_parse_bind, default=("127.0.0.1", 9100), metavar="HOST:PORT")
    p.add_argument("--ttft", type=float, help="seconds to the first chunk (default 1.0)")
    p.add_argument("--ttft-jitter", type=float)
    p.add_argument("--chunks", type=int, help="content chunks per stream (default 20)")
    p.add_argument("--interval", type=float, help="seconds between chunks (default 0.1)")
    p.add_argument("--interval-jitter", type=float)
    p.add_argument("--tokens-per-chunk", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port via SO_REUSEPORT")
    p.add_argument("--backlog", type=int)
    p.add_argument("--tls", metavar="DIR", help="serve https; writes DIR/ca.pem for clients to trust")
    p.add_argument("--require-key", metavar="KEY")
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    config = SimConfig(host=args.bind[0], port=args.bind[1])
    for name in ("ttft", "ttft_jitter", "chunks", "interval", "interval_jitter", "tokens_per_chunk", "seed", "backlog"):
        value = getattr(args, name)
        if value is not None:  # only flags the user passed override the defaults
            setattr(config, name, value)
    config.tls_dir = args.tls
    config.require_key = args.require_key
    return config


async def _run_until_signal(config: SimConfig, *, sock=None, stats=None, on_ready) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_sim, config, sock=sock, stats=stats))
            on_ready(server)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def _announce(server: SimServer) -> None:
    print(f"sim listening on {server.url}", flush=True)


def _worker(config: SimConfig, sock: socket.socket, array, row: int, workers: int, ready) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    raise_nofile_limit()
    if config.seed is not None:
        config.seed += row
    stats = SharedSimStats(array, row, workers)

    def on_ready(server: SimServer) -> None:
        ready.send(server.url)
        ready.close()

    trio.run(partial(_run_until_signal, config, sock=sock, stats=stats, on_ready=on_ready))


class _Stop(Exception):
    pass


def _raise_stop(signum, frame) -> None:
    raise _Stop


def _run_workers(config: SimConfig, workers: int) -> int:
    ctx = multiprocessing.get_context("fork")
    socks = []
    port = config.port
    for _ in range(workers):
        sock = _listen_socket(config.host, port, config.backlog, reuse_port=True)
        port = sock.getsockname()[1]  # with port 0, the first socket picks the port for the rest
        socks.append(sock)
    if config.tls_dir is not None:
        write_tls_files(config.tls_dir, config.host)
        config.tls_reuse = True
    array = SharedSimStats.allocate(workers, ctx)
    procs, pipes = [], []
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    code = 0
    try:
        for row, sock in enumerate(socks):
            receiver, sender = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(config, sock, array, row, workers, sender), daemon=True)
            proc.start()
            sender.close()
            sock.close()
            procs.append(proc)
            pipes.append(receiver)
        url = None
        for receiver in pipes:
            try:
                url = receiver.recv()
            except EOFError:
                print("sim: a worker failed to start", file=sys.stderr, flush=True)
                return 1
        print(f"sim listening on {url}", flush=True)
        multiprocessing.connection.wait([p.sentinel for p in procs])
        code = 1  # a worker exited on its own
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    raise_nofile_limit()
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        return _run_workers(config, args.workers)
    try:
        trio.run(partial(_run_until_signal, config, on_ready=_announce))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
