"""The Anthropic Messages routes: ``POST /v1/messages``, ``POST /v1/messages/count_tokens`` and ``GET /v1/models``
for an Anthropic client, on the relay's one request path (admit, route, candidates, attempts, body).

A request's candidates may speak either protocol (``api`` of ``[[upstreams]]``): to an ``anthropic`` upstream it
goes as the client sent it (its key as ``x-api-key``, ``anthropic-version`` and ``anthropic-beta`` passed on) and
the answer comes back event by event; to a ``chat`` upstream it is translated (proxy/protocol/messages/) and so is
the answer. So a request may fall back from one protocol to the other before its first byte. What it used is read
from either (``message_start``/``message_delta``, or the chat usage the translation asks for) into the request's
meter: a client key's tokens per minute and budget, the access log and the token metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx
from quart import Response, request

from ..errors import RelayError, UpstreamFailed, upstream_failure
from ..observability import model_from_body
from ..protocol import (
    JSON,
    InvalidRequest,
    MalformedAnswer,
    UsageMeter,
    chat_usage,
    check_content_type,
    dumps,
    load_json,
)
from ..protocol.messages import (
    PING,
    MessagesRequest,
    MessagesStream,
    MessagesUsageReader,
    anthropic_models,
    chat_to_message,
    count_tokens_answer,
    count_tokens_chat,
    estimate_tokens,
    message_usage,
    messages_error,
    messages_error_event,
    messages_to_chat,
    parse_messages_request,
)
from ..routing import AllKeysResting, Candidates, Key, Send, Upstream, Upstreams, free_key
from ..state import STATE, RequestState
from ..stream import NativeSSE, TranslatedSSE, reported
from ._charging import answered
from ._models import ANTHROPIC_VERSION, merge, model_lists, no_model_list
from ._passthrough import UPSTREAM_HEADER
from ._responses import keys_resting, read_all, relayed_headers, streaming
from ._traced import traced_send

if TYPE_CHECKING:
    from ._relay import Relay

ROUTE = "/v1/messages"
CHAT_ROUTE = "/chat/completions"  # a chat upstream's, below its base URL
ANTHROPIC_CLIENT = "anthropic-version"  # every Anthropic SDK request carries it
PASSED_ON = (b"anthropic-version", b"anthropic-beta")  # client headers a Messages upstream reads
MESSAGES_APIS = ("anthropic", "chat")  # the upstream protocols a Messages request goes to (native, translated)
NATIVE = "anthropic"
ALSO_RELAYED = frozenset({"request-id"})  # a Messages upstream's request id, for its support


def anthropic_headers() -> list[tuple[bytes, bytes]]:
    """The client's ``anthropic-version`` (the relay names one when it did not: the API requires it) and
    ``anthropic-beta``, for a Messages upstream."""
    headers = request.headers
    out = [(b"anthropic-version", headers.get("anthropic-version", "").encode("latin-1") or ANTHROPIC_VERSION)]
    beta = headers.get("anthropic-beta")
    if beta:
        out.append((b"anthropic-beta", beta.encode("latin-1")))
    return out


def translated_error(status: int, content: bytes, relayed: dict[str, str]) -> Response:
    """A chat upstream's error answer in the Messages shape (the status mapped as proxy/protocol/messages/_errors.py
    says; the upstream's message and code kept)."""
    error: Any = None
    try:
        error = json.loads(content).get("error")
    except (ValueError, AttributeError):
        pass
    if not isinstance(error, dict):
        error = {}
    code = error.get("code") or error.get("type")
    message = error.get("message")
    out_status, headers, body = messages_error(
        status,
        code if isinstance(code, str) else None,
        message if isinstance(message, str) and message else f"The upstream answered HTTP {status}.",
    )
    return Response(body, status=out_status, headers={**relayed, **headers})


def translation(message: MessagesRequest) -> tuple[bytes | None, InvalidRequest | None]:
    """The chat body for the request's chat candidates, translated once, before anything is sent; or why it cannot
    be (its chat candidates are then left out, even a first choice: only Messages upstreams may take it)."""
    try:
        return dumps(messages_to_chat(message)), None
    except InvalidRequest as exc:
        return None, exc


def _error_event(_relayed: int, status: int, code: str, message: str) -> bytes:
    """The last event of a native Messages stream that failed after it started."""
    return messages_error_event(status, code, message)


def _malformed() -> UpstreamFailed:
    return UpstreamFailed("The upstream's answer is not a chat completion.", "upstream_malformed")


class MessagesRoutes:
    """The views of the Messages routes around one :class:`proxy.relay.Relay` (its admission, candidates, attempts
    and bodies)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def read(self) -> bytes:
        check_content_type(request.mimetype)
        return await request.get_data(cache=False)

    # -- POST /v1/messages --------------------------------------------------------------------------------------

    async def messages(self) -> Response:
        state = request.scope[STATE]
        raw = await self.read()
        try:
            message = parse_messages_request(raw)
        except InvalidRequest:
            state.model = model_from_body(raw)  # the access log names what the refused body asked for
            raise
        state.model = message.model
        relay = self.relay
        await relay.reserve(state, ROUTE, message.data, len(raw))
        if state.meter is None:  # the usage, for the access log and metrics, whether or not a key counts tokens
            state.meter = UsageMeter()
        if state.span is not None:  # the request's model and sampling parameters, on its span and its attempts
            state.span.request(message.data)
        chat, untranslatable = translation(message)
        apis = MESSAGES_APIS if untranslatable is None else (NATIVE,)  # what cannot be translated goes native only
        try:
            candidates = await relay.choose(state, message.model, apis, untranslatable)
            response = await relay.until_answered(partial(self.exchange, state, candidates, message, raw, chat))
        except RelayError as exc:  # refused, or failed, before the answer started
            answered(state, exc.status)
            raise
        answered(state, response.status_code)
        return response

    async def exchange(self, state: RequestState, candidates: Candidates, message: MessagesRequest, raw: bytes,
                       chat: bytes | None) -> Response:  # fmt: skip
        extra = anthropic_headers()

        def send_for(upstream: Upstream) -> Send:  # each attempt under the request's trace (proxy/relay/_traced.py)
            path, body, headers = (ROUTE, raw, extra) if upstream.config.api == NATIVE else (CHAT_ROUTE, chat, None)
            send = partial(self._send, upstream, path, body, message.stream, headers)
            return traced_send(state, upstream, path, send)

        upstream, response, content = await self.relay.reach(state, candidates, send_for)
        native = upstream.config.api == NATIVE
        status = response.status_code
        relayed = relayed_headers(response, ALSO_RELAYED if native else frozenset())
        relayed[UPSTREAM_HEADER] = upstream.name
        meter = state.meter
        assert meter is not None
        if content is None and message.stream and status == 200:
            tap, pump = state.tap, self.relay.pump
            body = (NativeSSE(response, meter, _error_event, ping=PING, usage=MessagesUsageReader(), tap=tap, pump=pump)
                    if native else TranslatedSSE(response, MessagesStream(message), meter, ping=PING, tap=tap,
                                                 pump=pump))  # fmt: skip
            self.relay.track(state, body)
            return Response(body, status=200, headers=streaming(relayed), content_type="text/event-stream")
        if content is None:
            content = await read_all(response)
        if native:
            if status == 200:
                meter.usage = reported(message_usage(content))
            return Response(content, status=status, headers=relayed,
                            content_type=response.headers.get("content-type", JSON))  # fmt: skip
        if status != 200:
            return translated_error(status, content, relayed)
        try:
            answer = json.loads(content)
            reply = chat_to_message(answer, message)
        except (ValueError, MalformedAnswer):
            raise _malformed() from None
        meter.usage = reported(chat_usage(answer))
        return Response(dumps(reply), status=200, headers=relayed, content_type=JSON)

    @staticmethod
    async def _send(upstream: Upstream, path: str, body: bytes | None, stream: bool,
                    extra: list[tuple[bytes, bytes]] | None, key: Key | None,
                    trace: Mapping[str, str] | None) -> httpx.Response:  # fmt: skip
        return await upstream.send("POST", path, body, stream=stream, key=key, extra=extra, trace=trace)

    # -- POST /v1/messages/count_tokens -------------------------------------------------------------------------

    async def count_tokens(self) -> Response:
        """The upstream's own count: a Messages upstream's ``count_tokens``, a chat upstream's tokenizer route
        (Moonshot's); else the relay's estimate, which says so in a header."""
        state = request.scope[STATE]
        relay = self.relay
        raw = await self.read()
        chat = count_tokens_chat(raw)  # the checks, and the messages a tokenizer route counts
        model = chat["model"]
        state.model = model
        relay.refuse_if_draining()
        upstream = relay.route(state, model)
        try:
            key = await free_key(upstream.store, upstream.keys)
        except AllKeysResting as exc:
            if upstream.config.api == NATIVE:
                raise keys_resting(exc, model) from None
            return self._estimate(chat)  # the upstream asked to be left alone for a while: the relay counts
        if upstream.config.api == NATIVE:
            try:
                response = await upstream.send("POST", ROUTE + "/count_tokens", raw, key=key,
                                                extra=anthropic_headers())  # fmt: skip
            except httpx.TransportError as exc:
                raise upstream_failure(exc) from None
            content = await read_all(response)
            return Response(content, status=response.status_code, content_type=JSON,
                            headers=relayed_headers(response, ALSO_RELAYED))  # fmt: skip
        if upstream.config.api == "chat":
            counted = await self._tokenizer(upstream, key, chat)
            if counted is not None:
                status, headers, body = count_tokens_answer(counted, estimate=False)
                return Response(body, status=status, headers=headers)
        return self._estimate(chat)

    @staticmethod
    def _estimate(chat: dict[str, Any]) -> Response:
        status, headers, body = count_tokens_answer(estimate_tokens(chat), estimate=True)
        return Response(body, status=status, headers=headers)

    @staticmethod
    async def _tokenizer(upstream: Upstream, key: Key | None, chat: dict[str, Any]) -> int | None:
        """Moonshot's ``/tokenizers/estimate-token-count`` for these messages; None where the upstream has none."""
        body = dumps({"model": chat["model"], "messages": chat["messages"]})
        try:
            response = await upstream.send("POST", "/tokenizers/estimate-token-count", body, key=key)
            content = await read_all(response)
        except (httpx.TransportError, UpstreamFailed):
            return None
        if response.status_code != 200:
            return None
        try:
            total = load_json(content)["data"]["total_tokens"]
        except (InvalidRequest, KeyError, TypeError):
            return None
        return total if type(total) is int and total >= 0 else None


async def messages_models(upstreams: Upstreams | None, state: RequestState) -> Response:
    """``GET /v1/models`` for an Anthropic client: the models of every upstream a Messages request may go to, in
    Anthropic's list shape; none answered: the 502 in the Messages shape."""
    state.upstream = "all"
    serving = [u for u in upstreams.all if u.config.api in MESSAGES_APIS] if upstreams is not None else []
    lists = await model_lists(serving)
    if lists is None:
        failed = no_model_list()
        status, headers, body = messages_error(failed.status, failed.code, str(failed))
        return Response(body, status=status, headers=headers)
    return Response(anthropic_models(merge(lists)), content_type=JSON)
