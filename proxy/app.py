"""The relay's routes on quart-trio: OpenAI-compatible /v1 and the seed's NDJSON /chat/completions."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import trio
from quart import Response, request
from quart_trio import QuartTrio

from .admission import Streams
from .auth import bearer_token, fingerprint, load_client_keys
from .config import Settings
from .errors import JSON, SHUTTING_DOWN, error_body, map_transport_error
from .heartbeat import Heartbeats
from .observe import TAP, install_observability
from .relay import NDJSONBody, SSEBody
from .retry import RETRY_STATUSES, retry_delay
from .upstream import Upstream
from .validate import ChatRequest, InvalidRequest, check_chat_object, check_content_type, parse_chat_request

log = logging.getLogger("moonrelay")

# Routes anyone may call, client keys or not (load balancers probe them).
_OPEN_PATHS = frozenset({"/healthz"})

# Response headers worth passing back from the upstream (rate limits matter to callers).
_RELAYED = ("retry-after", "x-request-id", "x-sim-chunks")


def _relayed_headers(response: httpx.Response) -> dict[str, str]:
    out = {}
    for name, value in response.headers.items():
        if name in _RELAYED or name.startswith("x-ratelimit-"):
            out[name] = value
    return out


def _json_error(status: int, body: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, content_type=JSON, headers=headers)


def _count_tasks() -> int:
    """Live trio tasks in this worker (~1 µs per task: fine for a probe, not for a hot path)."""
    count = 0
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        count += 1
        for child_nursery in task.child_nurseries:
            todo.extend(child_nursery.child_tasks)
    return count


def _ndjson_error(status: int, body: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body) + "\n", status=status, content_type="application/x-ndjson", headers=headers)


def create_app(
    settings: Settings,
    upstream: Upstream | None = None,
    *,
    streams: Streams | None = None,
    heartbeats: Heartbeats | None = None,
) -> QuartTrio:
    """The app; with no ``upstream`` it opens its own when serving starts and closes it when serving stops.

    ``streams`` holds the worker's in-flight chat requests (admission, drain); ``heartbeats``, if
    given and running, pings silent SSE streams.
    """
    app = QuartTrio("moonrelay")
    # Quart would cut every response at 60 s; a long completion streams for minutes.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    streams = streams if streams is not None else Streams(settings.max_streams)
    app.asgi_app = streams.wrap(app.asgi_app)  # type: ignore[method-assign]  # releases each call's slot
    client_keys = load_client_keys(settings)
    if client_keys is not None:
        log.info("client keys required: %d configured", len(client_keys))
    state: dict[str, Upstream] = {}
    if upstream is not None:
        state["upstream"] = upstream
    else:

        @app.before_serving
        async def open_upstream() -> None:
            state["upstream"] = Upstream(settings)

        @app.after_serving
        async def close_upstream() -> None:
            await state.pop("upstream").aclose()

    def upstream_error(exc: httpx.TransportError, ndjson: bool) -> Response:
        status, err = map_transport_error(exc)
        return _ndjson_error(status, err) if ndjson else _json_error(status, err)

    async def send_with_retries(
        method: str, path: str, body: bytes | None, stream: bool
    ) -> tuple[httpx.Response, bytes | None]:
        """The upstream's answer (headers in), retried while nothing reached the client; and its body
        if it had to be read (a failed attempt that is not retried). Raises the last TransportError."""
        attempt = 0
        while True:
            try:
                response = await state["upstream"].send(method, path, body, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                delay = retry_delay(attempt, None, settings.retry_max_wait_s) if attempt < settings.retries else None
                if delay is None:
                    raise
                attempt += 1
                await trio.sleep(delay)
                continue
            if response.status_code not in RETRY_STATUSES or attempt >= settings.retries:
                return response, None
            try:
                content = await response.aread()
            finally:
                await response.aclose()
            delay = retry_delay(attempt, response.headers.get("retry-after"), settings.retry_max_wait_s)
            if delay is None or b"exceeded_current_quota" in content:  # waiting will not refill a quota
                return response, content
            attempt += 1
            await trio.sleep(delay)

    async def exchange(method: str, path: str, body: bytes | None, stream: bool, ndjson: bool) -> Response:
        try:
            response, content = await send_with_retries(method, path, body, stream)
        except httpx.TransportError as exc:
            return upstream_error(exc, ndjson)
        relayed = _relayed_headers(response)
        if content is None and stream and response.status_code == 200:
            body_iter: SSEBody
            direct = request.method if settings.direct_writes != "off" else None
            tap = request.scope.get(TAP)
            if ndjson:
                body_iter = NDJSONBody(response, direct=direct, tap=tap)
                out = Response(body_iter, status=200, headers=relayed, content_type="application/x-ndjson")
            else:
                relayed["cache-control"] = "no-cache"
                relayed["x-accel-buffering"] = "no"  # tell nginx in front of us not to buffer either
                body_iter = SSEBody(response, direct=direct, tap=tap)
                content_type = response.headers.get("content-type", "text/event-stream")
                out = Response(body_iter, status=200, headers=relayed, content_type=content_type)
                if heartbeats is not None:
                    heartbeats.watch(body_iter)
            streams.track_body(request.scope, body_iter)
            return out
        if content is None:
            try:
                content = await response.aread()
            except httpx.TransportError as exc:
                return upstream_error(exc, False)
            finally:
                await response.aclose()
        content_type = response.headers.get("content-type", JSON)
        if ndjson:
            content = content.rstrip(b"\n") + b"\n"
            content_type = "application/x-ndjson"
        return Response(content, status=response.status_code, headers=relayed, content_type=content_type)

    async def forward(method: str, path: str, body: bytes | None, stream: bool, ndjson: bool = False) -> Response:
        # One cancel scope per request (not per chunk): a drain that runs out of time cancels it.
        scope = trio.CancelScope()
        streams.waiting.add(scope)
        try:
            with scope:
                return await exchange(method, path, body, stream, ndjson)
        finally:
            streams.waiting.discard(scope)
        # Only reached when the drain cancelled the scope.
        return _ndjson_error(503, SHUTTING_DOWN) if ndjson else _json_error(503, SHUTTING_DOWN)

    def admit() -> None:
        """Take one of this worker's stream slots, or refuse at once (429, or 503 while draining)."""
        if streams.draining:
            raise InvalidRequest(SHUTTING_DOWN["error"]["message"], "shutting_down", 503)
        if not streams.admit(request.scope):
            raise InvalidRequest(
                f"The relay is at its limit of {settings.max_streams} concurrent requests; retry shortly.",
                "relay_overloaded",
                429,
            )

    async def read_chat(*, allow_text: bool = False) -> ChatRequest:
        check_content_type(request.mimetype, allow_text=allow_text)
        raw = await request.get_data(cache=False)
        return parse_chat_request(raw, settings.default_model)

    @app.before_request
    async def authenticate() -> Response | None:
        if client_keys is None or request.path in _OPEN_PATHS:
            return None
        token = bearer_token(request.headers.get("authorization"))
        if client_keys.allows(token):
            return None
        if token is not None:
            log.info("refused a client key (sha256 %s) for %s", fingerprint(token), request.path)
        msg = "Invalid or missing API key: send Authorization: Bearer <key>."
        return _json_error(401, error_body(msg, "invalid_request_error", "invalid_api_key"))

    @app.errorhandler(InvalidRequest)
    async def invalid(exc: InvalidRequest) -> Response:
        type_ = {429: "rate_limit_error", 503: "server_error"}.get(exc.status, "invalid_request_error")
        headers = {"retry-after": "1"} if exc.status in (429, 503) else None
        body = error_body(str(exc), type_, exc.code)
        if request.path == "/chat/completions":
            return _ndjson_error(exc.status, body, headers)
        return _json_error(exc.status, body, headers)

    @app.errorhandler(413)
    async def too_large(_: Any) -> Response:
        msg = f"Request body exceeds the limit of {settings.max_body_bytes} bytes."
        return _json_error(413, error_body(msg, "invalid_request_error", "request_too_large"))

    @app.errorhandler(404)
    async def not_found(_: Any) -> Response:
        return _json_error(404, error_body(f"No route for {request.path}.", "invalid_request_error", "not_found"))

    @app.errorhandler(405)
    async def not_allowed(_: Any) -> Response:
        msg = f"Method {request.method} is not allowed on {request.path}."
        return _json_error(405, error_body(msg, "invalid_request_error", "method_not_allowed"))

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        chat = await read_chat()
        admit()
        return await forward("POST", "/chat/completions", chat.body, chat.stream)

    @app.get("/v1/models")
    async def models() -> Response:
        return await forward("GET", "/models", None, False)

    @app.route("/chat/completions", methods=["GET", "POST"])
    async def seed_chat() -> Response:
        """The seed's browser format: NDJSON lines of chunk JSON over chunked HTTP."""
        if request.method == "GET":
            content = request.args.get("content", "")
            data: dict[str, Any] = {"messages": [{"role": "user", "content": content}], "stream": True}
            if "model" in request.args:
                data["model"] = request.args["model"]
            chat = check_chat_object(data, None, settings.default_model)
        else:
            chat = await read_chat(allow_text=True)  # a browser's fetch() sends text/plain by default
        admit()
        return await forward("POST", "/chat/completions", chat.body, chat.stream, ndjson=True)

    @app.get("/healthz")
    async def healthz() -> Response:
        # Counts, not contents: requests in flight (this one included) and live trio tasks, so a leak shows.
        body = {"status": "ok", "in_flight": streams.calls, "tasks": _count_tasks()}
        return Response(json.dumps(body), content_type=JSON)

    install_observability(app, settings, streams)  # request ids, access log, /metrics, /readyz, CORS, GET /
    return app
