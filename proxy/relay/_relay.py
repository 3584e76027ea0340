"""The relay object: the request path (admit, route, exchange, body) and the views, with explicit dependencies."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from functools import partial
from typing import Any

import httpx
import trio
from quart import Response, request

from ..config import Settings
from ..errors import Refused, RelayError, shutting_down, upstream_failure
from ..limits import ClientKey, ClientLimits, LocalStore, Refusal, Store
from ..observability import model_from_body
from ..pricing import PriceTable
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
    Send,
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
from ..transport import Pump
from . import _passthrough as passthrough
from ._admission import Streams
from ._caching import CACHE_HEADER, ResponseCache, body_class
from ._charging import answered, reserve
from ._messages import ANTHROPIC_CLIENT, messages_models
from ._models import merged_models
from ._responses import keys_resting, other_protocol, read_all, relayed_headers, streaming
from ._traced import traced

UPSTREAM_HEADER = passthrough.UPSTREAM_HEADER  # also a response header: the upstream that answered
CHAT_APIS = ("chat",)  # the upstream protocols a chat-completions request goes to
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
        count_fallback: Callable[[str, str, str], None] | None = None,
        cache: ResponseCache | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.settings = settings
        self.cache = cache  # the response cache (proxy/relay/_caching.py)
        self.prices = prices if prices is not None else PriceTable()  # the models' prices (proxy/pricing.py)
        self.upstreams = upstreams
        self.streams = streams
        self.heartbeats = heartbeats
        self.pump = pump  # where directly written streams are relayed
        self.store: Store = store if store is not None else LocalStore()  # limits and upstream health (proxy.limits)
        self.client_limits = ClientLimits(self.store)  # client keys' limits
        # (from, to, reason) of a request moved to a fallback upstream: the metrics' counter, when metrics are on
        self.count_fallback = count_fallback

    # -- admission and routing --------------------------------------------------------------------

    async def limit_client(self, state: RequestState, key: ClientKey) -> None:
        """Check ``key``'s limits before anything else: admitted (its admission is settled when the call ends,
        :meth:`Streams.release`), or the key's :class:`proxy.limits.Refusal` raised (429, nothing sent upstream)."""
        verdict = await self.client_limits.admit(key)
        if isinstance(verdict, Refusal):
            state.limited = (verdict.limit, key.label)
            raise verdict
        state.client = verdict

    async def reserve(self, state: RequestState, route: str, data: dict[str, Any] | None, body_bytes: int, *,
                      model: str | None = None) -> None:  # fmt: skip
        """A client key that counts tokens: its reserve held once the body is read (proxy/relay/_charging.py), in
        money too at ``model``'s price."""
        price = self.prices.of(model) if state.client is not None and state.client.key.money else None
        await reserve(self.client_limits, state, route, data, body_bytes, max(0, self.settings.key_reserve_tokens),
                      price)  # fmt: skip

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
            fill = state.cache_fill  # a miss the response cache records (proxy/relay/_caching.py)
            if strip_usage:
                body = body_class(UsageStrippedSSE, fill)(response, state, meter, tap=tap, pump=pump)
            elif meter is not None:
                body = body_class(MeteredSSE, fill)(response, meter, tap=tap, pump=pump)
            else:
                body = body_class(SSEBody, fill)(response, tap=tap, pump=pump)
            if fill is not None:
                body.start_recording(fill.recorder(response.headers))  # type: ignore[attr-defined]
            return self.track(state, body)
        self.streams.track_body(state, body)
        return body

    def track(self, state: RequestState, body: SSEBody) -> SSEBody:
        """An SSE body about to be sent: watched for heartbeats, tracked for drain."""
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
        upstream, response, content = await self.reach(
            state, candidates, lambda u: traced(state, u, method, path, body, stream)
        )
        status = response.status_code
        relayed = relayed_headers(response)
        relayed[UPSTREAM_HEADER] = upstream.name
        if state.cache is not None:
            relayed[CACHE_HEADER] = state.cache
        if content is None and stream and status == 200:
            body_iter = self.body(response, state, ndjson=ndjson, strip_usage=strip_usage)
            if ndjson:
                return Response(body_iter, status=200, headers=relayed, content_type="application/x-ndjson")
            content_type = response.headers.get("content-type", "text/event-stream")
            return Response(body_iter, status=200, headers=streaming(relayed), content_type=content_type)
        if content is None:
            content = await read_all(response)
            if state.meter is not None:
                state.meter.document(content)
        if state.cache_fill is not None:
            state.cache_fill.answered(status, response.headers, content)
        content_type = response.headers.get("content-type", JSON)
        if ndjson:
            content = content.rstrip(b"\n") + b"\n"
            content_type = "application/x-ndjson"
        return Response(content, status=status, headers=relayed, content_type=content_type)

    async def reach(
        self, state: RequestState, candidates: Candidates, send_for: Callable[[Upstream], Send]
    ) -> tuple[Upstream, httpx.Response, bytes | None]:
        """The answer (headers in) of the first of ``candidates`` that gives one: (that upstream, its response, its
        body if it had to be read). ``send_for(upstream)`` makes one attempt there with a key (the request in that
        upstream's protocol). A failure that lets the request go out again (proxy.routing._attempts: never
        reached, or answered "not processed") moves it to the next candidate; each answer feeds that deployment's
        breaker; the last failure is raised as the relay's error."""
        upstream = candidates.current
        assert upstream is not None
        try:
            while True:
                try:
                    response, content = await send_with_retries(
                        upstream, send_for(upstream), self.settings, rests=candidates.rests
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
                return upstream, response, content
        finally:
            await candidates.abandon()  # a probe still held: the request was cancelled before its verdict

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

    async def choose(self, state: RequestState, model: str, apis: Collection[str] = CHAT_APIS,
                     unserved: RelayError | None = None) -> Candidates:  # fmt: skip
        """The upstreams that may serve ``model`` to a client of this route (those speaking one of ``apis``, the
        protocols it relays natively or translates onto, for this request), the first usable one's slot taken;
        refused at once (400, 404, 429, 503) when there is none, or every one is open, resting or full (nothing sent
        upstream). ``unserved``: the 400 when the model has upstreams but none of ``apis`` (by default: it is served
        over another protocol), e.g. why a request cannot be translated when only its native upstreams may take it."""
        deployments = self.upstreams.deployments(model)  # type: ignore[union-attr]
        if not deployments:
            raise model_not_found(model)
        state.upstream = deployments[0].name
        if len(deployments) == 1 and not deployments[0].config.fallbacks:  # the single-upstream path, unchanged
            if deployments[0].config.api not in apis:
                raise unserved or other_protocol(model, deployments[0])
            await self.admit(state, deployments[0])
            return Candidates.lone(deployments[0])
        self.refuse_if_draining()
        if not self.streams.admit(state):
            raise self.overloaded()
        candidates = await Candidates.plan(self.upstreams, deployments)  # type: ignore[arg-type]
        if not candidates.keep(lambda u: u.config.api in apis):
            raise unserved or other_protocol(model, deployments[0])
        if await candidates.next(state) is None:
            raise candidates.refusal(model)
        return candidates

    async def relay_chat(self, state: RequestState, chat: ChatRequest, client_method: str, *, ndjson: bool) -> Response:
        state.model = chat.model  # for the access log
        if state.span is not None:  # the request's model and sampling parameters, on its span and its attempts
            state.span.request(chat.data)
        if self.cache is not None and not ndjson:  # after the key's rpm, before its reserve and any slot
            hit = await self.cache.lookup(state, chat, self.upstreams, request.headers.get("cache-control"))
            if hit is not None:
                return hit
        await self.reserve(state, "/v1/chat/completions", chat.data, len(chat.body), model=chat.model)
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
        if ANTHROPIC_CLIENT in request.headers:  # an Anthropic SDK: the list in its shape (proxy/relay/_messages.py)
            return await self.until_answered(partial(messages_models, self.upstreams, state))
        everyone = [u for u in self.upstreams.all if u.config.api in CHAT_APIS]  # type: ignore[union-attr]
        if len(everyone) == 1 and len(self.upstreams.all) == 1:  # type: ignore[union-attr]
            # one upstream: its own answer, status and all
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
        return await passthrough.serve(self, request, allowed, forwarded)
