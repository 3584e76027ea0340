"""The relay's routes on quart-trio: OpenAI-compatible /v1 and the seed's NDJSON /chat/completions."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import trio
from quart import Response, request
from quart_trio import QuartTrio

from . import passthrough
from .accesslog import model_from_body
from .admission import Streams
from .attempts import send_with_retries
from .auth import bearer_token, fingerprint, load_client_keys
from .config import Settings
from .errors import JSON, SHUTTING_DOWN, error_body
from .heartbeat import Heartbeats
from .keypool import AllKeysResting
from .metrics import CONTENT_TYPE
from .models import merged_models
from .observe import MODEL, TAP, UPSTREAM, install_observability
from .relay import NDJSONBody, SSEBody, UsageStrippedNDJSON, UsageStrippedSSE
from .responses import error_response, json_error, keys_resting, relayed_headers, upstream_error
from .routing import model_not_found
from .serving import fast_paths_allowed, prepare_app
from .upstream import Upstream, Upstreams
from .usage import asked_for_usage, with_usage
from .validate import ChatRequest, InvalidRequest, check_chat_object, check_content_type, parse_chat_request

log = logging.getLogger("moonrelay")

# Routes anyone may call, client keys or not (load balancers probe them).
_OPEN_PATHS = frozenset({"/healthz"})


def _count_tasks() -> int:
    """Live trio tasks in this worker, by walking the task tree (~1 µs per task): once, when serving starts."""
    count = 0
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        count += 1
        for child_nursery in task.child_nurseries:
            todo.extend(child_nursery.child_tasks)
    return count


class TaskCount(trio.abc.Instrument):
    """Live trio tasks in this worker, kept as tasks start and end, so that ``/healthz`` reads a number: a
    walk of the task tree per probe took tens of ms at 10,000 streams, stalling the worker. Costs a call
    per task spawned and exited (a few per connection), nothing per chunk."""

    def __init__(self) -> None:
        self.live = 0
        self.installed = False

    async def install(self) -> None:  # async: Quart runs a plain function in a thread
        self.live = _count_tasks()  # no await between the walk and the hook: no task is missed or counted twice
        trio.lowlevel.add_instrument(self)
        self.installed = True

    async def uninstall(self) -> None:
        if self.installed:
            self.installed = False
            trio.lowlevel.remove_instrument(self)

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.live += 1

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.live -= 1


def create_app(
    settings: Settings,
    upstreams: Upstreams | Upstream | None = None,
    *,
    streams: Streams | None = None,
    heartbeats: Heartbeats | None = None,
) -> QuartTrio:
    """The app; with no ``upstreams`` it opens its own when serving starts and closes them when serving stops.

    ``streams`` holds the worker's in-flight chat requests (admission, drain); ``heartbeats``, if
    given and running, pings silent SSE streams.
    """
    app = QuartTrio("moonrelay")
    # Werkzeug answers "//" in a path with a redirect built from the Host header; the relay refuses it instead
    # (404, or 400 from pass-through's path check). Set before any route of ours is added.
    app.url_map.merge_slashes = False
    fast = fast_paths_allowed(settings.fast_paths)
    prepare_app(app, fast_paths=fast)
    # Quart would cut every response at 60 s; a long completion streams for minutes.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    streams = streams if streams is not None else Streams(settings.max_streams)
    client_keys = load_client_keys(settings)
    if client_keys is not None:
        log.info("client keys required: %d configured", len(client_keys))
    direct_writes = fast and settings.direct_writes != "off"
    state: dict[str, Upstreams] = {}
    if isinstance(upstreams, Upstream):
        upstreams = Upstreams(settings, [upstreams])
    if upstreams is not None:
        state["upstreams"] = upstreams
    else:

        @app.before_serving
        async def open_upstreams() -> None:
            state["upstreams"] = Upstreams(settings)

        @app.after_serving
        async def close_upstreams() -> None:
            await state.pop("upstreams").aclose()

    async def exchange(
        upstream: Upstream, method: str, path: str, body: bytes | None, stream: bool, ndjson: bool, strip_usage: bool
    ) -> Response:
        try:
            response, content = await send_with_retries(
                upstream, lambda key: upstream.send(method, path, body, stream=stream, key=key), settings
            )
        except httpx.TransportError as exc:
            return upstream_error(exc, ndjson=ndjson)
        except AllKeysResting as exc:
            return keys_resting(exc, upstream.name, ndjson=ndjson)
        relayed = relayed_headers(response)
        if content is None and stream and response.status_code == 200:
            body_iter: SSEBody
            direct = request.method if direct_writes else None
            tap = request.scope.get(TAP)
            if ndjson:
                if strip_usage:
                    body_iter = UsageStrippedNDJSON(response, request.scope, direct=direct, tap=tap)
                else:
                    body_iter = NDJSONBody(response, direct=direct, tap=tap)
                out = Response(body_iter, status=200, headers=relayed, content_type="application/x-ndjson")
            else:
                relayed["cache-control"] = "no-cache"
                relayed["x-accel-buffering"] = "no"  # tell nginx in front of us not to buffer either
                if strip_usage:
                    body_iter = UsageStrippedSSE(response, request.scope, direct=direct, tap=tap)
                else:
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
                return upstream_error(exc, ndjson=False)
            finally:
                await response.aclose()
        content_type = response.headers.get("content-type", JSON)
        if ndjson:
            content = content.rstrip(b"\n") + b"\n"
            content_type = "application/x-ndjson"
        return Response(content, status=response.status_code, headers=relayed, content_type=content_type)

    async def until_answered(answer: Callable[[], Awaitable[Response]], ndjson: bool = False) -> Response:
        """``answer()``, unless a drain that ran out of time cancels it first (then 503 shutting_down)."""
        # One cancel scope per request (not per chunk): a drain that runs out of time cancels it.
        scope = trio.CancelScope()
        streams.waiting.add(scope)
        try:
            with scope:
                return await answer()
        finally:
            streams.waiting.discard(scope)
        # Only reached when the drain cancelled the scope.
        return error_response(503, SHUTTING_DOWN, ndjson=ndjson)

    async def forward(
        upstream: Upstream, method: str, path: str, body: bytes | None, stream: bool, *,
        ndjson: bool = False, strip_usage: bool = False,
    ) -> Response:  # fmt: skip
        return await until_answered(
            partial(exchange, upstream, method, path, body, stream, ndjson, strip_usage), ndjson
        )

    def refuse_if_draining() -> None:
        if streams.draining:
            raise InvalidRequest(SHUTTING_DOWN["error"]["message"], "shutting_down", 503)

    def hold(upstream: Upstream) -> None:
        """Take one of ``upstream``'s ``max_concurrent`` slots for this request, or refuse at once (429)."""
        if not streams.hold(request.scope, upstream):
            raise InvalidRequest(
                f"Upstream {upstream.name!r} is at its limit of {upstream.config.max_concurrent} concurrent "
                "requests on this relay worker; retry shortly.",
                "upstream_concurrency_limit",
                429,
            )

    def admit(upstream: Upstream) -> None:
        """Take one of this worker's stream slots and one of the upstream's, or refuse at once (429, or
        503 while draining)."""
        refuse_if_draining()
        if not streams.admit(request.scope):
            raise InvalidRequest(
                f"The relay is at its limit of {settings.max_streams} concurrent requests; retry shortly.",
                "relay_overloaded",
                429,
            )
        hold(upstream)

    def route(model: str) -> Upstream:
        """The upstream for ``model`` (noted for the log and metrics), or 404 model_not_found."""
        upstream = state["upstreams"].route(model)
        if upstream is None:
            raise model_not_found(model)
        request.scope[UPSTREAM] = upstream.name
        return upstream

    async def relay_chat(chat: ChatRequest, *, ndjson: bool) -> Response:
        request.scope[MODEL] = chat.model  # for the access log
        upstream = route(chat.model)
        admit(upstream)
        body, strip_usage = chat.body, False
        if chat.stream and upstream.config.include_usage and not asked_for_usage(chat.data):
            body, strip_usage = with_usage(chat.data), True
        return await forward(
            upstream, "POST", "/chat/completions", body, chat.stream, ndjson=ndjson, strip_usage=strip_usage
        )

    async def read_chat(*, allow_text: bool = False) -> ChatRequest:
        check_content_type(request.mimetype, allow_text=allow_text)
        raw = await request.get_data(cache=False)
        try:
            return parse_chat_request(raw, settings.default_model)
        except InvalidRequest:
            request.scope[MODEL] = model_from_body(raw)  # the access log names what the refused body asked for
            raise

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
        return json_error(401, error_body(msg, "invalid_request_error", "invalid_api_key"))

    @app.errorhandler(InvalidRequest)
    async def invalid(exc: InvalidRequest) -> Response:
        type_ = {429: "rate_limit_error", 503: "server_error"}.get(exc.status, "invalid_request_error")
        headers = {"retry-after": "1"} if exc.status in (429, 503) else None
        body = error_body(str(exc), type_, exc.code)
        return error_response(exc.status, body, headers, ndjson=request.path == "/chat/completions")

    @app.errorhandler(413)
    async def too_large(_: Any) -> Response:
        msg = f"Request body exceeds the limit of {settings.max_body_bytes} bytes."
        return json_error(413, error_body(msg, "invalid_request_error", "request_too_large"))

    @app.errorhandler(404)
    async def not_found(_: Any) -> Response:
        return json_error(404, error_body(f"No route for {request.path}.", "invalid_request_error", "not_found"))

    @app.errorhandler(405)
    async def not_allowed(_: Any) -> Response:
        msg = f"Method {request.method} is not allowed on {request.path}."
        return json_error(405, error_body(msg, "invalid_request_error", "method_not_allowed"))

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        return await relay_chat(await read_chat(), ndjson=False)

    @app.get("/v1/models")
    async def models() -> Response:
        everyone = state["upstreams"].all
        if len(everyone) == 1:  # one upstream: its own answer, status and all
            request.scope[UPSTREAM] = everyone[0].name
            return await forward(everyone[0], "GET", "/models", None, False)
        request.scope[UPSTREAM] = "all"
        return await until_answered(partial(merged_models, everyone))

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
        return await relay_chat(chat, ndjson=True)

    allowed = passthrough.path_filter(settings.passthrough)
    if allowed is not None:
        forwarded = passthrough.header_names(settings.passthrough_headers)
        app.request_class = passthrough.request_class(settings)
        app.asgi_app = passthrough.ending_broken_bodies(app.asgi_app)  # type: ignore[method-assign]

        @app.route("/v1/<path:rest>", methods=passthrough.METHODS)
        async def pass_through(rest: str) -> Response:
            """Every other /v1/* endpoint, both bodies streamed (proxy/passthrough.py)."""
            path = passthrough.checked_path(request, allowed)
            refuse_if_draining()
            content, model = await passthrough.read_body(request, settings)
            named = request.headers.get(passthrough.UPSTREAM_HEADER)
            upstream = passthrough.choose(state["upstreams"], named, model)
            request.scope[UPSTREAM] = upstream.name
            hold(upstream)
            relay = partial(passthrough.relay, upstream, request, path, content, settings, forwarded)
            return await until_answered(relay)

    tasks = TaskCount()
    app.before_serving(tasks.install)
    app.after_serving(tasks.uninstall)

    @app.get("/healthz")
    async def healthz() -> Response:
        # Counts the relay keeps anyway, O(1) whatever the load: requests in flight (this one included), streams
        # being relayed, live trio tasks; so a leak shows.
        body = {"status": "ok", "in_flight": streams.calls, "streams": len(streams.bodies)}
        if tasks.installed:
            body["tasks"] = tasks.live
        return Response(json.dumps(body), content_type=JSON)

    # request ids, access log, /metrics, /readyz, CORS, GET /
    observer = install_observability(app, settings, streams)
    if observer.metrics is not None and settings.metrics_auth == "on":
        metrics = observer.metrics

        @app.get("/metrics")
        async def scrape() -> Response:
            """``--metrics-auth on``: /metrics answered here, after the client-key check (else the observer
            answers it before any check)."""
            return Response(metrics.render(), content_type=CONTENT_TYPE)

    return app
