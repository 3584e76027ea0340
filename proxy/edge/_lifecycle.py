"""The request lifecycle: one ASGI layer around the app (request ids, access log, metrics, traces, readiness, CORS).

    client ─▶ Observer ─▶ Quart app         (the Observer also counts the call in the worker's Streams)
              │ answers itself: GET /readyz, GET /metrics, GET / (demo), OPTIONS preflights
              │ (before authentication: probes, scrapers and preflights carry no client key)
              └ everything else: a request id in, ``X-Request-Id`` out, one log line and the
                metrics when the call returns — the last byte went out or the client left.

Per chunk: one call, an int increment, the body's tail kept for the log's usage; a body that writes straight
to the socket (:func:`proxy.edge.current_writer`) tells the request's :class:`Tap` instead. Parsing (the model,
the tail's usage) happens once, after the response.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..limits import StoreBudget
from ..observability import AccessRecord, access_logger, key_prefix, request_id, scan_tail
from ..observability import upstream_error_kind as error_kind
from ..pricing import PriceTable
from ..routing import upstream_label
from ..state import STATE, UNMATCHED, RequestState
from ..tracing import Tracing
from ._bodywatch import BodyWatch, declares_body
from ._cors import CORSPolicy
from ._demo import PAGE
from ._gate import fast_paths_allowed
from ._outcome import begin_trace, end_span, note_outcome
from ._tap import STREAM_TYPES, Tap
from ._tcpserver import send_last, shielding_last, write_timed_out

if TYPE_CHECKING:
    from ..observability import Metrics

# Every upstream's health now ({name: proxy.routing.Seen}): the /readyz detail and the circuit gauge
HealthProbe = Callable[[], Awaitable[dict[str, Any]]]

log = logging.getLogger("moonrelay")

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
UNROUTED = "none"  # the upstream label of a request refused before routing, when several upstreams are configured
MODEL_PATHS = frozenset({"/v1/chat/completions", "/chat/completions", "/v1/messages", "/v1/responses"})  # log model
UNLOGGED = frozenset({"/healthz", "/metrics"})  # probes and scrapes (when the app answers them) would drown the log


def default_upstream(settings: Settings) -> str:
    """How the log and metrics name the upstream of a request not routed (yet): the one upstream, when the flat
    settings configure it."""
    return upstream_label(settings.upstream) if not settings.upstreams else UNROUTED


class Observer:
    def __init__(self, app: ASGIApp, settings: Settings, streams: Any = None, *, metrics: Metrics | None = None,
                 upstream_health: HealthProbe | None = None, tracing: Tracing | None = None,
                 prices: PriceTable | None = None) -> None:  # fmt: skip
        """``metrics``: where requests are counted (None: metrics off); ``upstream_health``: every upstream's
        health now ({name: proxy.routing.Seen}), the /readyz detail and the circuit gauge; ``tracing``: this
        worker's spans (made after the fork), a server span per request; ``prices``: each request's cost
        (proxy/pricing.py)."""
        self.app = app
        self.settings = settings
        self.tracing = tracing
        self.prices = prices if prices is not None else PriceTable()
        self.plain = not fast_paths_allowed(settings.fast_paths)  # no connection internals to read: BodyWatch
        self.streams = streams
        self.upstream = default_upstream(settings)
        self.cors = CORSPolicy(settings.cors_origins)
        self.logger = access_logger() if settings.access_log != "off" else None
        self.metrics = metrics
        self.serving = False
        self.upstream_health = upstream_health

    # -- the answers this layer gives itself ------------------------------------------------------

    def ready(self) -> tuple[int, bytes]:
        if self.streams is not None and getattr(self.streams, "draining", False):
            return 503, b'{"status":"draining"}'
        if not self.serving:
            return 503, b'{"status":"starting"}'
        return 200, b'{"status":"ready"}'

    async def _answer(self, send: Callable, status: int, body: bytes, content_type: bytes, extra: list) -> None:
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send_last(send, {"type": "http.response.body", "body": body, "more_body": False})

    async def _local(self, method: str, path: str, send: Callable, cors: list) -> bool:
        """Answer ``GET /readyz``, ``/metrics``, ``/``; False when the request is not one of them."""
        if method != "GET":
            return False
        if path == "/readyz":
            status, body = self.ready()
            health = await self._health()
            if health is not None:
                detail = {n: {"state": s.circuit.label, "resting_s": round(s.wait_s, 1)} for n, s in health.items()}
                body = json.dumps({**json.loads(body), "upstreams": detail}, separators=(",", ":")).encode()
            await self._answer(send, status, body, b"application/json", [(b"cache-control", b"no-store"), *cors])
        elif path == "/metrics" and self.metrics is not None and self.settings.metrics_auth != "on":  # else: the app
            from ..observability import CONTENT_TYPE

            health = await self._health()
            if health is not None:
                self.metrics.circuits({name: int(seen.circuit) for name, seen in health.items()})
            await self._answer(send, 200, self.metrics.render(), CONTENT_TYPE.encode(), cors)
        elif path in ("/", "/index.html"):
            await self._answer(send, 200, PAGE, b"text/html; charset=utf-8", [(b"cache-control", b"no-cache"), *cors])
        else:
            return False
        return True

    async def _health(self) -> dict[str, Any] | None:
        """The upstreams' health from the store, or None (not known yet, or the store failed: a probe still
        answers)."""
        if self.upstream_health is None:
            return None
        try:
            return await self.upstream_health()
        except Exception:  # noqa: BLE001 - readiness and scrapes must answer whatever the store does
            log.exception("reading upstream health from the store failed")
            return None

    # -- the ASGI call ----------------------------------------------------------------------------

    async def __call__(
        self, scope: dict, receive: Callable, send: Callable, sync_spawn: Any = None, call_soon: Any = None
    ) -> None:
        """The ASGI call; with hypercorn's two extra arguments this is also the app hypercorn calls directly.

        One layer, one coroutine frame for the whole request: the request id, log and metrics, the
        worker's slot accounting (``Streams``), and the last-send shielding of :mod:`proxy.edge`
        used to be four nested ASGI wrappers, each a frame held for as long as its stream was open.
        """
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        streams = self.streams
        if streams is not None:
            streams.calls += 1
        state = scope[STATE] = RequestState()
        budget = StoreBudget(self.settings.state_timeout_s)  # what this call may wait on the --state Redis
        entered = budget.enter()
        try:
            method: str = scope["method"]
            path: str = scope["path"]
            rid_header = authorization = origin = acr_method = acr_headers = traceparent = tracestate = None
            for name, value in scope["headers"]:
                if name == b"x-request-id":
                    rid_header = value
                elif name == b"traceparent":
                    traceparent = value
                elif name == b"tracestate":
                    tracestate = value
                elif name == b"authorization" or (name == b"x-api-key" and authorization is None):
                    authorization = value if name == b"authorization" else b"Bearer " + value
                elif name == b"origin":
                    origin = value
                elif name == b"access-control-request-method":
                    acr_method = value
                elif name == b"access-control-request-headers":
                    acr_headers = value
            cors = self.cors.response_headers(origin) if origin is not None and self.cors.allows(origin) else []
            if method == "OPTIONS" and origin is not None and acr_method is not None:
                status, headers = self.cors.preflight(origin, acr_headers)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send_last(send, {"type": "http.response.body", "body": b"", "more_body": False})
                return
            if await self._local(method, path, send, cors):
                return
            if path in UNLOGGED and not cors:
                return await self.app(scope, receive, shielding_last(send))
            rid = request_id(rid_header.decode("latin-1") if rid_header is not None else None)
            started = time.monotonic_ns()
            metrics = self.metrics
            watch = None
            if self.plain and declares_body(scope["headers"]):
                receive = watch = BodyWatch(receive)
            ending = None if streams is None else partial(streams.give_back, state, budget)  # before the last bytes
            if self.tracing is not None or traceparent is not None:  # a span, or the caller's context passed on
                begin_trace(self.tracing, state, method, path, traceparent, tracestate)
            tap = state.tap = Tap(send, rid.encode(), cors, metrics, watch, ending)
            try:
                await self.app(scope, receive, tap.send)
            finally:
                if tap.streamed and metrics is not None:
                    metrics.in_flight.dec()
                try:
                    self._finish(state, method, path, rid, authorization, started, tap)
                except Exception:  # noqa: BLE001 - a log line must never break a response
                    log.exception("access log / metrics failed for request %s", rid)
                # The tap holds the server's send, the server's stream holds the scope, the scope holds the
                # state: a cycle that would keep the stream, and through it the connection, until a full GC.
                state.tap = tap._send = None
        finally:
            budget.ending()
            if streams is not None:  # the relay's slots back, a client key's admission settled (proxy.relay)
                await streams.leave(state)
            budget.leave(entered)

    def _finish(
        self, state: RequestState, method: str, path: str, rid: str, authorization: bytes | None, started: int, tap: Tap
    ) -> None:
        """After the call: parse what is worth parsing once, write the line, add to the metrics."""
        end = time.monotonic_ns()
        status, head_ns, first_ns, streamed, content_type = (
            tap.status,
            tap.head_ns,
            tap.first_ns,
            tap.streamed,
            tap.content_type,
        )
        tail, chunks, completed = tap.tail, tap.chunks, tap.completed and not tap.gone
        route = state.route
        stripped = state.stripped_usage
        if stripped is not None:
            tail = tail + b"\n" + stripped
        rec = AccessRecord(
            request_id=rid,
            method=method,
            route=route,
            upstream=state.upstream or self.upstream,
            client_key=key_prefix(authorization.decode("latin-1")) if authorization is not None else None,
            status=status,
            ttfc_ms=(first_ns - started) / 1e6 if first_ns else None,
            duration_ms=(end - started) / 1e6,
            chunks=chunks,
            completed=completed,
        )
        if path in MODEL_PATHS:
            rec.model = state.model or self.settings.default_model
        kind = None
        cached = 0  # prompt tokens read from the provider's prompt cache (their own price)
        if state.client is not None:
            rec.extra["key_name"] = state.client.key.label
        if tail and content_type.startswith((b"application/json", *STREAM_TYPES)):
            found = scan_tail(tail, whole_json=content_type.startswith(b"application/json"))
            rec.prompt_tokens, rec.completion_tokens = found.prompt_tokens, found.completion_tokens
            cached = found.cached_tokens
            if path in MODEL_PATHS or path.startswith("/v1/"):
                kind = error_kind(status, found)
                if found.error_code is not None:
                    rec.error = found.error_code
        elif status == 429 or status >= 500:
            kind = f"http_{status}" if path.startswith("/v1/") or path in MODEL_PATHS else None
        usage = state.meter.usage if state.meter is not None else None
        if usage is not None:  # what the relay read as the body went by (a key that counts tokens): the whole body
            rec.prompt_tokens, rec.completion_tokens = usage.prompt, usage.completion
        limited = state.limited
        if limited is not None:  # refused by the client key's limits: the relay's answer, not an upstream error
            kind = None
            rec.extra["key_name"] = limited[1]
        timed_out = write_timed_out()  # the client stopped reading: the connection was aborted (proxy.edge)
        if timed_out:
            rec.completed = False
            rec.error = "client_write_timeout"
        cost = note_outcome(state, rec, cached, self.prices)  # cost, cache, admin change: proxy/edge/_outcome.py
        if self.logger is not None:
            self.logger.info(rec.line())
        if self.metrics is not None:
            # A stream's response starts when the upstream's headers arrive; a buffered answer's only at its end.
            first_byte_s = (head_ns - started) / 1e9 if head_ns and status == 200 and streamed else None
            ttfc_s = rec.ttfc_ms / 1000 if rec.ttfc_ms is not None and status == 200 else None
            self.metrics.record(rec, streamed=streamed, first_byte_s=first_byte_s, ttfc_s=ttfc_s, kind=kind)
            if timed_out:
                self.metrics.client_write_timeouts.inc()
            if limited is not None:
                self.metrics.client_limit_rejections.labels(*limited).inc()
            if cost:
                self.metrics.cost(state.key.label if state.key is not None else "", rec.model, cost)
        if state.span is not None:
            end_span(state, path, rec, kind, tail, content_type, first_ns)


def install_observability(app: Any, settings: Settings, streams: Any = None, *, metrics: Metrics | None = None,
                          upstream_health: HealthProbe | None = None, tracing: Tracing | None = None,
                          prices: PriceTable | None = None) -> Observer:  # fmt: skip
    """Wrap ``app`` (a Quart app) in the observability layer; returns it (tests read its metrics).

    ``streams`` (the worker's :class:`proxy.relay.Streams`) lets ``/readyz`` report a drain; ``tracing``: this
    worker's spans; ``prices``: what each request costs.
    """
    from quart import request

    observer = Observer(app.asgi_app, settings, streams, metrics=metrics, upstream_health=upstream_health,
                        tracing=tracing, prices=prices)  # fmt: skip
    app.asgi_app = observer

    async def note_route() -> None:
        rule = request.url_rule
        request.scope[STATE].route = rule.rule if rule is not None else UNMATCHED

    # First, so that requests refused by authentication still get their route.
    app.before_request_funcs.setdefault(None, []).insert(0, note_route)

    @app.before_serving
    async def serving() -> None:
        observer.serving = True

    @app.after_serving
    async def stopped() -> None:
        observer.serving = False

    return observer
