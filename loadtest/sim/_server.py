"""The sim's server: the listening socket, one task per connection, requests read with h11 and routed.

A connection task reads a request, routes it (chat, Messages, Responses, models, pass-through, the ``/sim/*``
control endpoints) and runs its handler in the same task; keep-alive connections loop. Only an answer in progress
adds a second task (its EOF watch, :mod:`loadtest.sim._stream`). Keys, plans and refusals are handled here once for
the three answering routes, each refusal in its route's own shape.
"""

from __future__ import annotations

import json
import random
import socket
from functools import partial

import h11
import trio

from loadtest import simcontent
from loadtest.sim import _chat, _messages, _responses
from loadtest.sim._config import SimConfig
from loadtest.sim._http import (
    Abort,
    ClosedErrors,
    format_url,
    next_event,
    path_of,
    send_error,
    send_simple,
    server_ssl_context,
    write_tls_files,
)
from loadtest.sim._passthrough import PASS_THROUGH, serve_pass_through
from loadtest.sim._plan import BadRequest, make_plan
from loadtest.sim._state import Sim, SimServer, SimStats
from loadtest.sim._stream import serve_reply
from loadtest.timer import DeadlineTimer
from wire import listen_socket

__all__ = ["serve_sim"]

MAX_BODY = 16 * 1024 * 1024
# The answering routes, each a protocol module: key(headers), error(status, message, kind), reply(sim, body, plan),
# LENGTH_KEYS (the body fields that set the answer's length).
ROUTES = {
    "/v1/chat/completions": _chat,
    **dict.fromkeys(_messages.PATHS, _messages),
    "/v1/responses": _responses,
}
TLS_HANDSHAKE_TIMEOUT = 10.0


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
        sock = listen_socket(config.host, config.port, config.backlog)
    listener: trio.abc.Listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    host, port = sock.getsockname()[:2]
    scheme = "http"
    if config.tls_dir is not None:
        if not config.tls_reuse:
            write_tls_files(config.tls_dir, config.host)
        listener = trio.SSLListener(listener, server_ssl_context(config.tls_dir), https_compatible=True)
        scheme = "https"
    server = SimServer(
        url=format_url(scheme, config.host, port), host=config.host, port=port, stats=stats or SimStats()
    )
    timer = DeadlineTimer()
    sim = Sim(config, server, timer, random.Random(config.seed))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(timer.run)
            await nursery.start(partial(trio.serve_listeners, partial(_handle, sim), [listener],
                                        handler_nursery=nursery))
            task_status.started(server)
    finally:
        await trio.aclose_forcefully(listener)


async def _handle(sim: Sim, stream: trio.abc.Stream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        async with trio.open_nursery() as nursery:
            try:
                if isinstance(stream, trio.SSLStream):
                    with trio.fail_after(TLS_HANDSHAKE_TIMEOUT):
                        await stream.do_handshake()
                await _serve_requests(sim, stream, conn, nursery)
            except (*ClosedErrors, Abort, trio.TooSlowError):
                # The one place where a peer's departure (or our own abrupt close) ends a connection.
                pass
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await _close(stream)


async def _close(stream: trio.abc.Stream) -> None:
    if isinstance(stream, trio.SSLStream):
        # No close_notify: the peer may be gone, and an abrupt close is what a dropped upstream looks like.
        stream = stream.transport_stream
    await trio.aclose_forcefully(stream)


async def _serve_requests(sim: Sim, stream: trio.abc.Stream, conn: h11.Connection, nursery: trio.Nursery) -> None:
    while True:
        request = await _read_request(stream, conn)
        if request is None:
            return
        await _dispatch(sim, stream, conn, nursery, *request)
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


async def _read_request(stream, conn):
    """(method, target, headers, body); the body is None for an upload, which its handler reads as it arrives."""
    event = await next_event(stream, conn)
    if not isinstance(event, h11.Request):
        return None  # ConnectionClosed (or PAUSED after a close)
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
    method, target = event.method.decode(), event.target.decode("latin-1")
    if method == "POST" and path_of(target) == "/v1/files":
        return method, target, headers, None
    parts: list[bytes] = []
    size = 0
    while True:
        part = await next_event(stream, conn)
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


async def _answer(sim: Sim, stream, conn, nursery, route, method: str, headers: dict, body, bad_json: bool) -> None:
    """One request to an answering route: its key, its plan, its answer, every refusal in the route's own shape."""
    start = trio.current_time()
    config = sim.config
    if method != "POST":
        return await send_simple(stream, conn, *route.error(405, "Method not allowed", "invalid_request_error"))
    key = route.key(headers)
    if config.require_key is not None and key != config.require_key:
        return await send_simple(stream, conn, *route.error(401))
    key_fault = config.key_faults.get(key) if key is not None else None
    if key_fault is not None:
        headers = {**headers, "x-sim-fault": key_fault}
    if bad_json or not isinstance(body, dict):
        return await send_simple(stream, conn, *route.error(400, "Invalid request: body is not a JSON object"))
    try:
        plan = make_plan(config, body, headers, route.LENGTH_KEYS)
        reply = route.reply(sim, body, plan)
    except BadRequest as exc:
        return await send_simple(stream, conn, *route.error(400, f"Invalid request: {exc}"))
    refusal = route.error(plan.fault_arg) if plan.fault == "status" else None
    await serve_reply(sim, stream, conn, nursery, plan, reply, start=start, error_response=refusal, user=_user(body))


def _user(body: dict) -> str | None:
    """Who the request is for, as a client may name it (chat and Responses ``user``, Messages
    ``metadata.user_id``): recorded with a cancel."""
    user = body.get("user")
    if isinstance(user, str):
        return user
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return user if isinstance(user, str) else None


async def _dispatch(
    sim: Sim, stream, conn, nursery, method: str, target: str, headers: dict, raw: bytes | None
) -> None:
    config = sim.config
    path = path_of(target)
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
    sim.server.recent.append({"method": method, "path": path, "headers": headers, "body": body})

    route = ROUTES.get(path)
    if route is not None:
        return await _answer(sim, stream, conn, nursery, route, method, headers, body, bad_json)
    if path in _messages.COUNT_TOKENS_PATHS:
        if method != "POST":
            return await send_simple(stream, conn, *_messages.error(405, "Method not allowed"))
        if config.require_key is not None and _messages.key(headers) != config.require_key:
            return await send_simple(stream, conn, *_messages.error(401))
        if not isinstance(body, dict):
            return await send_simple(stream, conn, *_messages.error(400, "body is not a JSON object"))
        try:
            return await send_simple(stream, conn, 200, _messages.count_tokens(body))
        except BadRequest as exc:
            return await send_simple(stream, conn, *_messages.error(400, str(exc)))
    if path == "/anthropic/v1/models" and method == "GET":
        return await send_simple(stream, conn, 200, _messages.models_body(config.models))
    if path.startswith("/anthropic/"):
        return await send_simple(stream, conn, *_messages.error(404, f"Not found: {method} {path}"))
    if path == "/v1/models" and method == "GET":
        return await send_simple(stream, conn, 200, simcontent.models_body(models=config.models))
    if path in PASS_THROUGH or path.startswith("/v1/files/"):
        if config.require_key is not None:
            if headers.get("authorization", "") != f"Bearer {config.require_key}":
                return await send_error(stream, conn, 401)
        return await serve_pass_through(sim, stream, conn, method, path, headers, body, bad_json)
    if path == "/sim/stats" and method == "GET":
        return await send_simple(stream, conn, 200, simcontent.dumps(sim.stats.snapshot()))
    if path == "/sim/cancels" and method == "GET":
        cancels = {"cancel_ns": list(sim.stats.cancel_ns), "user": list(sim.stats.cancel_users)}
        return await send_simple(stream, conn, 200, simcontent.dumps(cancels))
    if path == "/sim/reset" and method == "POST":
        sim.stats.reset()
        sim.server.recent.clear()
        return await send_simple(stream, conn, 200, simcontent.dumps(sim.stats.snapshot()))
    return await send_error(stream, conn, 404, f"Not found: {method} {path}", "resource_not_found_error")
