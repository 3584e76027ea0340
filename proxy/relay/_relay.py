"""The relay object: the request path (admit, route, exchange, body) and the views, with explicit dependencies."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
import trio
from quart import Response, request

from ..config import Settings
from ..errors import Refused, RelayError, shutting_down, upstream_failure
from ..limits import ClientKey, ClientLimits, LocalStore, Refusal, Store
from ..observability import model_from_body
from ..protocol import (
    JSON,
    ChatRequest,
    InvalidRequest,
    asked_for_usage,
    check_chat_object,
    check_content_type,
    parse_chat_request,
    with_usage,
)
from ..routing import (
    AllKeysResting,
    Candidates,
    Upstream,
    Upstreams,
    at_its_limit,
    limited_of,
    model_not_found,
    not_processed,
    resend_reason,
    send_with_retries,
)
from ..state import STATE, RequestState
from ..stream import Heartbeats, MeteredNDJSON, MeteredSSE, NDJSONBody, SSEBody, UsageStrippedSSE
from ..transport import Pump, read_body
from . import _passthrough as passthrough
from ._admission import Streams
from ._charging import answered, reserve
from ._models import merged_models
from ._responses import keys_resting, relayed_headers

UPSTREAM_HEADER = passthrough.UPSTREAM_HEADER  # also a response header: the upstream that answered
log = logging.getLogger("moonrelay")


class Relay:
    """The relay's request handling, with explicit dependencies: no sockets needed to test a method.

    ``upstreams`` may be set later (an app that opens its own when serving starts); ``streams`` holds the
    worker's in-flight chat requests (admission, drain); ``heartbeats``, if given and running, pings silent
    SSE streams; ``store``: where limits and upstream health are counted (proxy.limits); ``pump``: the worker's
    :class:`proxy.transport.Pump`, which relays the streams the edge has write straight to their client.
    """

    def __init__(
        self,
        settings: Settings,
        upstreams: Upstreams | None,
        streams: Streams,
        heartbeats: Heartbeats | None = None,
        *,
        store: Store | None = None,
        pump: Pump | None = None,
    ) -> None:
        self.settings = settings
        self.upstreams = upstreams
        self.streams = streams
        self.heartbeats = heartbeats
        self.pump = pump  # where directly written streams are relayed
        self.store: Store = store if store is not None else LocalStore()  # limits and upstream health (proxy.limits)
        self.client_limits = ClientLimits(self.store)  # client keys' limits
        # (from, to, reason) of a request moved to a fallback upstream: the metrics' counter, when metrics are on
        self.count_fallback: Callable[[str, str, str], None] | None = None

    # -- admission and routing --------------------------------------------------------------------

    async def limit_client(self, state: RequestState, key: ClientKey) -> None:
        """Check ``key``'s limits before anything else: admitted (its admission is settled when the call ends,
        :meth:`Streams.release`), or the key's :class:`proxy.limits.Refusal` raised (429, nothing sent upstream)."""
        verdict = await self.client_limits.admit(key)
        if isinstance(verdict, Refusal):
            state.limited = (verdict.limit, key.label)
            raise verdict
        state.client = verdict

    async def reserve(self, state: RequestState, route: str, data: dict[str, Any] | None, body_bytes: int) -> None:
        """A client key that counts tokens: its reserve held once the body is read (proxy/relay/_charging.py)."""
        await reserve(self.client_limits, state, route, data, body_bytes, max(0, self.settings.key_reserve_tokens))

    def refuse_if_draining(self) -> None:
        if self.streams.draining:
            raise shutting_down()

    async def hold(self, state: RequestState, upstream: Upstream, model: str | None = None) -> None:
        """Take one of ``upstream``'s ``max_concurrent`` slots for this request (for ``model``, else the one the
        request names), or refuse at once (429)."""
        if not await self.streams.hold(state, upstream):
            raise at_its_limit(upstream, model if model is not None else state.model)

    async def admit(self, state: RequestState, upstream: Upstream) -> None:
        """Take one of this worker's stream slots and one of the upstream's, or refuse at once (429, or
        503 while draining)."""
        self.refuse_if_draining()
        if not self.streams.admit(state):
            raise self.overloaded()
        await self.hold(state, upstream)

    def overloaded(self) -> Refused:
        return Refused(f"The relay is at its limit of {self.settings.max_streams} concurrent requests; retry "
                       "shortly.", "relay_overloaded")  # fmt: skip

    def route(self, state: RequestState, model: str) -> Upstream:
        """The upstream for ``model`` (noted for the log and metrics), or 404 model_not_found."""
        upstream = self.upstreams.route(model)  # type: ignore[union-attr]
        if upstream is None:
            raise model_not_found(model)
        state.upstream = upstream.name
        return upstream

    async def upstream_health(self) -> dict[str, Any]:
        """Every upstream's breaker and rest as the store has them ({name: proxy.routing.Seen}; {} before
        serving)."""
        return {} if self.upstreams is None else await self.upstreams.health.report()

    # -- the exchange with the upstream -----------------------------------------------------------

    def body(self, response: httpx.Response, state: RequestState, *, ndjson: bool, strip_usage: bool) -> SSEBody:
        """The streaming body that relays ``response`` (SSE, or the seed's NDJSON), tracked for drain and
        heartbeats."""
        tap = state.tap
        pump = self.pump
        meter = state.meter  # a client key that counts tokens: the stream's events and usage
        body: SSEBody
        if ndjson:
            if strip_usage or meter is not None:
                body = MeteredNDJSON(response, state, meter, strip_usage, tap=tap, pump=pump)
            else:
                body = NDJSONBody(response, tap=tap, pump=pump)
        else:
            if strip_usage:
                body = UsageStrippedSSE(response, state, meter, tap=tap, pump=pump)
            elif meter is not None:
                body = MeteredSSE(response, meter, tap=tap, pump=pump)
            else:
                body = SSEBody(response, tap=tap, pump=pump)
            if self.heartbeats is not None:
                self.heartbeats.watch(body)
        self.streams.track_body(state, body)
        return body

    async def exchange(
        self, state: RequestState, client_method: str, upstream: Upstream | Candidates, method: str, path: str,
        body: bytes | None, stream: bool, ndjson: bool = False, strip_usage: bool = False,
    ) -> Response:  # fmt: skip
        """Send the request upstream (retried as ``send_with_retries`` allows) and answer with what came back.

        ``upstream``: one upstream, or the request's :class:`Candidates` with the first one's slot taken. When an
        upstream's attempts end in a failure that lets the request go out again (proxy.routing._attempts: never
        reached, or answered "not processed"), the request goes to the next candidate (the model's other
        deployments, then ``fallbacks``); each answer feeds that deployment's breaker. Once an answer is chosen
        nothing else is tried: a stream that breaks later ends with the in-band error event."""
        candidates = upstream if isinstance(upstream, Candidates) else Candidates.lone(upstream)
        upstream = candidates.current  # type: ignore[assignment]
        assert upstream is not None
        try:
            while True:
                try:
                    response, content = await send_with_retries(
                        upstream,
                        lambda key, send=upstream.send: send(method, path, body, stream=stream, key=key),
                        self.settings,
                        rests=candidates.rests,
                    )
                except (httpx.TransportError, AllKeysResting) as exc:
                    await candidates.settle(None, neutral=isinstance(exc, AllKeysResting))
                    reason = resend_reason(exc, on_timeout=upstream.config.retry_on_timeout)
                    moved = None if reason is None else await self.move(state, candidates, upstream, reason)
                    if moved is not None:
                        upstream = moved
                        continue
                    if isinstance(exc, AllKeysResting):
                        raise keys_resting(exc, state.model) from None
                    raise upstream_failure(exc) from None
                status = response.status_code
                limited = limited_of(response, content)  # a 429's body is always read
                try:
                    await candidates.settle(status, response.headers.get("retry-after"), limited=limited)
                except BaseException:
                    if content is None:
                        await response.aclose()
                    raise
                if not_processed(status, limited):
                    moved = await self.move(state, candidates, upstream, f"http_{status}")
                    if moved is not None:
                        if content is None:
                            await response.aclose()
                        upstream = moved
                        continue
                break
        finally:
            await candidates.abandon()  # a probe still held: the request was cancelled before its verdict
        relayed = relayed_headers(response)
        relayed[UPSTREAM_HEADER] = upstream.name
        if content is None and stream and status == 200:
            body_iter = self.body(response, state, ndjson=ndjson, strip_usage=strip_usage)
            if ndjson:
                return Response(body_iter, status=200, headers=relayed, content_type="application/x-ndjson")
            relayed["cache-control"] = "no-cache"
            relayed["x-accel-buffering"] = "no"  # tell nginx in front of us not to buffer either
            content_type = response.headers.get("content-type", "text/event-stream")
            return Response(body_iter, status=200, headers=relayed, content_type=content_type)
        if content is None:
            try:
                content = await read_body(response)
            except httpx.TransportError as exc:
                raise upstream_failure(exc) from None
            finally:
                await response.aclose()
            if state.meter is not None:
                state.meter.document(content)
        content_type = response.headers.get("content-type", JSON)
        if ndjson:
            content = content.rstrip(b"\n") + b"\n"
            content_type = "application/x-ndjson"
        return Response(content, status=status, headers=relayed, content_type=content_type)

    async def move(self, state: RequestState, candidates: Candidates, failed: Upstream,
                   reason: str) -> Upstream | None:  # fmt: skip
        """The request's next candidate after ``failed`` (which failed before the first byte for ``reason``), its
        slot taken; None when none is left. Counted in ``moonrelay_fallbacks_total`` and logged."""
        nxt = await candidates.next(state)
        if nxt is None:
            return None
        log.warning("upstream %s failed before the first byte (%s): the request goes to %s", failed.name,
                    reason, nxt.name)  # fmt: skip
        if self.count_fallback is not None:
            self.count_fallback(failed.name, nxt.name, reason)
        return nxt

    async def until_answered(self, answer: Callable[[], Awaitable[Response]]) -> Response:
        """``answer()``, unless a drain that ran out of time cancels it first (then 503 shutting_down)."""
        # One cancel scope per request (not per chunk): a drain that runs out of time cancels it.
        scope = trio.CancelScope()
        waiting = self.streams.waiting
        waiting.add(scope)
        try:
            with scope:
                return await answer()
        finally:
            waiting.discard(scope)
        # Only reached when the drain cancelled the scope.
        raise shutting_down()

    async def choose(self, state: RequestState, model: str) -> Candidates:
        """The upstreams that may serve ``model``, the first usable one's slot taken; refused at once (404, 429,
        503) when there is none, or every one is open, resting or full (nothing sent upstream)."""
        deployments = self.upstreams.deployments(model)  # type: ignore[union-attr]
        if not deployments:
            raise model_not_found(model)
        state.upstream = deployments[0].name
        if len(deployments) == 1 and not deployments[0].config.fallbacks:  # the single-upstream path, unchanged
            await self.admit(state, deployments[0])
            return Candidates.lone(deployments[0])
        self.refuse_if_draining()
        if not self.streams.admit(state):
            raise self.overloaded()
        candidates = await Candidates.plan(self.upstreams, deployments)  # type: ignore[arg-type]
        if await candidates.next(state) is None:
            raise candidates.refusal(model)
        return candidates

    async def relay_chat(self, state: RequestState, chat: ChatRequest, client_method: str, *, ndjson: bool) -> Response:
        state.model = chat.model  # for the access log
        await self.reserve(state, "/v1/chat/completions", chat.data, len(chat.body))
        try:
            response = await self._relay_chat(state, chat, client_method, ndjson=ndjson)
        except RelayError as exc:  # refused, or failed, before the answer started
            answered(state, exc.status)
            raise
        answered(state, response.status_code)
        return response

    async def _relay_chat(self, state: RequestState, chat: ChatRequest, client_method: str, *,
                          ndjson: bool) -> Response:  # fmt: skip
        candidates = await self.choose(state, chat.model)
        upstream = candidates.current
        assert upstream is not None
        body, strip_usage = chat.body, False
        client = state.client  # a client key that counts tokens needs every stream's usage
        counts_tokens = client is not None and client.key.counts_tokens
        if chat.stream and (upstream.config.include_usage or counts_tokens) and not asked_for_usage(chat.data):
            body, strip_usage = with_usage(chat.data), True
        path = "/chat/completions"
        exchange = partial(self.exchange, state, client_method, candidates, "POST", path, body, chat.stream, ndjson,
                           strip_usage)  # fmt: skip
        return await self.until_answered(exchange)

    async def read_chat(self, state: RequestState, *, allow_text: bool = False) -> ChatRequest:
        check_content_type(request.mimetype, allow_text=allow_text)
        raw = await request.get_data(cache=False)
        try:
            return parse_chat_request(raw, self.settings.default_model)
        except InvalidRequest:
            state.model = model_from_body(raw)  # the access log names what the refused body asked for
            raise

    # -- the views (Quart's ``request`` is the one now being handled) -------------------------------

    async def chat_completions(self) -> Response:
        state = request.scope[STATE]
        return await self.relay_chat(state, await self.read_chat(state), request.method, ndjson=False)

    async def models(self) -> Response:
        state = request.scope[STATE]
        everyone = self.upstreams.all  # type: ignore[union-attr]
        if len(everyone) == 1:  # one upstream: its own answer, status and all
            state.upstream = everyone[0].name
            return await self.until_answered(partial(self.exchange, state, "GET", everyone[0], "GET", "/models",
                                                     None, False))  # fmt: skip
        state.upstream = "all"
        return await self.until_answered(partial(merged_models, everyone))

    async def seed_chat(self) -> Response:
        """The seed's browser format: NDJSON lines of chunk JSON over chunked HTTP."""
        state = request.scope[STATE]
        if request.method == "GET":
            content = request.args.get("content", "")
            data: dict[str, Any] = {"messages": [{"role": "user", "content": content}], "stream": True}
            if "model" in request.args:
                data["model"] = request.args["model"]
            chat = check_chat_object(data, None, self.settings.default_model)
        else:
            chat = await self.read_chat(state, allow_text=True)  # a browser's fetch() sends text/plain by default
        return await self.relay_chat(state, chat, request.method, ndjson=True)

    async def pass_through(self, allowed: Any, forwarded: frozenset[bytes]) -> Response:
        """Every other /v1/* endpoint, both bodies streamed (proxy/relay/_passthrough.py)."""
        state = request.scope[STATE]
        settings = self.settings
        path = passthrough.checked_path(request, allowed)
        self.refuse_if_draining()
        content, data = await passthrough.read_body(request, settings)
        size = len(content) if isinstance(content, bytes) else request.content_length or 0
        await self.reserve(state, path, data, size)
        strip = False
        if state.meter is not None and path == "/v1/completions" and data is not None and data.get("stream") is True:
            if not asked_for_usage(data):  # a stream's usage, for the key's windows (cut from what the client gets)
                content, strip = with_usage(data), True
        named = request.headers.get(passthrough.UPSTREAM_HEADER)
        model = passthrough.named_model(data)
        try:
            upstream = passthrough.choose(self.upstreams, named, model)  # type: ignore[arg-type]
            state.upstream = upstream.name
            await self.hold(state, upstream, model)
            relay = partial(passthrough.relay, upstream, request, path, content, settings, forwarded, model,
                            state.meter, strip)  # fmt: skip
            response = await self.until_answered(relay)
        except RelayError as exc:  # refused, or failed, before the answer started
            answered(state, exc.status)
            raise
        answered(state, response.status_code)
        return response
