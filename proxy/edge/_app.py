"""The relay's routes on quart-trio: OpenAI-compatible /v1 (chat completions, Responses), Anthropic's /v1/messages
and the seed's NDJSON /chat/completions.

:func:`create_app` makes the Quart app around one :class:`proxy.relay.Relay` (``_relay``): authentication, error
handlers, the routes, ``/healthz`` and the observability layer.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from ..admin import PREFIX as ADMIN_PREFIX
from ..admin import AdminAPI
from ..auth import KeySource, bearer_token, fingerprint
from ..config import Settings
from ..errors import InvalidRequest, RelayError
from ..limits import LocalStore, Store
from ..observability import CONTENT_TYPE
from ..pricing import price_table
from ..protocol import JSON
from ..relay import (
    PASSTHROUGH_METHODS,
    MessagesRoutes,
    Relay,
    ResponseCache,
    ResponsesRoute,
    Streams,
    body_limit,
    cache_store,
    ending_broken_bodies,
    header_names,
    path_filter,
)
from ..routing import Upstream, Upstreams, configured_models
from ..state import STATE
from ..stream import Heartbeats
from ..tracing import Tracing
from ..transport import Pump
from ._errors import render
from ._gate import fast_paths_allowed
from ._lifecycle import install_observability
from ._reload import RELOADER
from ._tcpserver import OpenConnections
from ._worker import prepare_app, request_class

if TYPE_CHECKING:
    from ..observability import Metrics

log = logging.getLogger("moonrelay")

# Routes anyone may call, client keys or not (load balancers probe them).
_OPEN_PATHS = frozenset({"/healthz"})


def _count_tasks() -> int:
    """Live trio tasks in this worker, by walking the task tree: once, when serving starts."""
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
    walk of the task tree per probe grows with the open streams and stalls the worker while it runs. Costs a call
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


def worker_metrics(settings: Settings) -> Metrics | None:
    """This worker's metrics, or None with ``--metrics off``."""
    if settings.metrics == "off":
        return None
    from ..observability import Metrics

    return Metrics(configured_models(settings))  # the only model names that label a series


def create_app(
    settings: Settings,
    upstreams: Upstreams | Upstream | None = None,
    *,
    streams: Streams | None = None,
    heartbeats: Heartbeats | None = None,
    store: Store | None = None,
    keys: KeySource | None = None,
    pump: Pump | None = None,
    tracing: Tracing | None = None,
    cache: Any = None,
    admin: AdminAPI | None = None,
    connections: OpenConnections | None = None,
) -> QuartTrio:
    """The app around one :class:`Relay`; with no ``upstreams`` it opens its own when serving starts and closes
    them when serving stops.

    ``streams`` holds the worker's in-flight chat requests (admission, drain); ``heartbeats``, if
    given and running, pings silent SSE streams; ``store`` is where limits and upstream health are counted
    (proxy.limits; given upstreams bring theirs, else this worker's memory); ``keys``: the client keys in force
    (reloaded on SIGHUP by whoever holds it; read from ``settings`` when not given); ``pump``, if given and running,
    relays directly written streams from its task; ``tracing``: this worker's spans (proxy/tracing); ``cache``: the
    response cache's store (this worker's memory when not given: proxy/relay/_caching.py); ``admin``: the admin API
    (proxy/admin), its routes behind its own key instead of a client key's; ``connections``: the worker's open
    client connections, for ``/healthz`` (counted by each connection, proxy.edge._tcpserver).
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
    keys = keys if keys is not None else KeySource(settings)
    if keys.current is not None:
        log.info("client keys required: %d configured, %d with limits", len(keys.current), keys.current.limited)
    if isinstance(upstreams, Upstream):
        upstreams = Upstreams(settings, [upstreams], store=store)
    if store is None:
        store = upstreams.store if upstreams is not None else LocalStore()
    direct = fast and settings.direct_writes != "off"  # streamed bodies written straight to the client (_inline)
    app.config["MOONRELAY_DIRECT_WRITES"] = direct
    metrics = worker_metrics(settings)
    prices = price_table(settings)
    responses = ResponseCache(cache if cache is not None else cache_store(settings), settings, metrics)
    relay = Relay(settings, upstreams, streams, heartbeats, store=store, pump=pump if direct else None,
                  count_fallback=metrics.fallback if metrics is not None else None, cache=responses,
                  prices=prices)  # fmt: skip
    on_circuit = metrics.circuit if metrics is not None else None
    if upstreams is None:

        @app.before_serving
        async def open_upstreams() -> None:
            relay.upstreams = Upstreams(settings, store=relay.store, on_circuit=on_circuit)

        @app.after_serving
        async def close_upstreams() -> None:
            opened, relay.upstreams = relay.upstreams, None
            await opened.aclose()  # type: ignore[union-attr]

    @app.before_request
    async def authenticate() -> Response | None:
        client_keys = keys.current  # read once: a reload (SIGHUP) swaps it whole
        if client_keys is None or request.path in _OPEN_PATHS:
            return None
        if admin is not None and request.path.startswith(ADMIN_PREFIX):
            return None  # the admin API checks its own key
        token = bearer_token(request.headers.get("authorization")) or request.headers.get("x-api-key")  # Anthropic's
        key = client_keys.identify(token)
        if key is not None:
            request.scope[STATE].key = key
            if not key.limited or request.path == "/metrics":
                return None
            await relay.limit_client(request.scope[STATE], key)  # its limits: a Refusal raised, rendered below
            return None
        if token is not None:
            log.debug("refused a client key (sha256 %s) for %s", fingerprint(token), request.path)
        raise InvalidRequest("Invalid or missing API key: send Authorization: Bearer <key> (or x-api-key: <key>).",
                             "invalid_api_key", 401)  # fmt: skip

    @app.after_request
    async def ratelimit_headers(response: Response) -> Response:
        """A client key with limits: OpenAI's ``x-ratelimit-*`` headers, as its admission found the windows."""
        admission = request.scope[STATE].client
        if admission is not None and admission.headers:
            response.headers.update(admission.headers)
        return response

    @app.errorhandler(RelayError)
    async def relay_error(exc: RelayError) -> Response:
        return render(exc, request.path, request.headers)  # the one place an error becomes a response (_errors.py)

    @app.errorhandler(413)
    async def too_large(_: Any) -> Response:
        msg = f"Request body exceeds the limit of {settings.max_body_bytes} bytes."
        return render(InvalidRequest(msg, "request_too_large", 413), request.path, request.headers)

    @app.errorhandler(404)
    async def not_found(_: Any) -> Response:
        return render(InvalidRequest(f"No route for {request.path}.", "not_found", 404), request.path, request.headers)

    @app.errorhandler(405)
    async def not_allowed(_: Any) -> Response:
        msg = f"Method {request.method} is not allowed on {request.path}."
        return render(InvalidRequest(msg, "method_not_allowed", 405), request.path, request.headers)

    if admin is not None:
        admin.install(app)
    app.add_url_rule("/v1/chat/completions", view_func=relay.chat_completions, methods=["POST"])
    app.add_url_rule("/v1/models", view_func=relay.models, methods=["GET"])
    messages = MessagesRoutes(relay)
    app.add_url_rule("/v1/messages", view_func=messages.messages, methods=["POST"])
    app.add_url_rule("/v1/messages/count_tokens", view_func=messages.count_tokens, methods=["POST"])
    app.add_url_rule("/v1/responses", view_func=ResponsesRoute(relay).responses, methods=["POST"])
    app.add_url_rule("/chat/completions", view_func=relay.seed_chat, methods=["GET", "POST"])

    allowed = path_filter(settings.passthrough)
    if allowed is not None:
        forwarded = header_names(settings.passthrough_headers)
        app.request_class = request_class(body_limit(settings))
        app.asgi_app = ending_broken_bodies(app.asgi_app)  # type: ignore[method-assign]

        async def pass_through(rest: str) -> Response:
            return await relay.pass_through(allowed, forwarded)

        app.add_url_rule("/v1/<path:rest>", view_func=pass_through, methods=PASSTHROUGH_METHODS)

    tasks = TaskCount()
    app.before_serving(tasks.install)
    app.after_serving(tasks.uninstall)

    @app.get("/healthz")
    async def healthz() -> Response:
        # Counts the relay keeps anyway, O(1) whatever the load, each back to its idle value once a load has passed
        # (so a leak shows): requests in flight (this one included), streams being relayed, open client connections
        # (this one included), live trio tasks.
        body = {"status": "ok", "in_flight": streams.calls, "streams": len(streams.bodies)}
        if connections is not None:
            body["connections"] = connections.count
        if tasks.installed:
            body["tasks"] = tasks.live
        reloader = app.extensions.get(RELOADER)
        if reloader is not None:  # the config generation this worker runs (1 at start, one more per reload)
            body["config"] = reloader.generation
        return Response(json.dumps(body), content_type=JSON)

    # request ids, access log, /metrics, /readyz, CORS, GET /
    observer = install_observability(app, settings, streams, metrics=metrics, upstream_health=relay.upstream_health,
                                     tracing=tracing, prices=prices)  # fmt: skip
    app.extensions["moonrelay"] = (relay, observer)  # the server's reload swaps what they hold (_reload)
    if metrics is not None:
        metrics.watch_store(store)
        if upstreams is not None:  # given, not opened here: made before this worker's metrics
            upstreams.health.watch(metrics.circuit)

    if metrics is not None and settings.metrics_auth == "on":

        @app.get("/metrics")
        async def scrape() -> Response:
            """``--metrics-auth on``: /metrics answered here, after the client-key check (else the observer
            answers it before any check)."""
            return Response(metrics.render(), content_type=CONTENT_TYPE)

    return app
