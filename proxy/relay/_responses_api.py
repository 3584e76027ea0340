"""``POST /v1/responses``: OpenAI Responses clients, served by any upstream of the model.

An upstream that speaks Responses (``api = "responses"``) gets the client's request as it came (the relay's default
model filled in when it names none) and its answer is relayed event by event (:class:`proxy.stream.NativeSSE`). A
chat-completions upstream gets the request translated (:func:`proxy.protocol.responses.responses_to_chat`) and its
answer translated back (:class:`proxy.protocol.responses.ResponsesStream`, :func:`chat_to_response`). The two may be
mixed among a model's deployments and fallbacks: a request that fails before the first byte on a native upstream
may go to a chat one, translated, and the other way round.

The relay keeps no responses. A request that needs a response store (``previous_response_id``, ``store: true``)
goes only to native upstreams, which keep their own, and so does anything else the translation cannot carry (its
chat candidates left out, even a first choice); with no native one among its candidates it is refused (400
``store_required``, or naming the field).
"""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING

import httpx
from quart import Response, request

from ..errors import RelayError
from ..observability import model_from_body
from ..protocol import JSON, InvalidRequest, MalformedAnswer, UsageMeter, check_content_type, dumps
from ..protocol.responses import (
    ResponsesRequest,
    ResponsesStream,
    chat_to_response,
    parse_responses_request,
    responses_error_event,
    responses_to_chat,
)
from ..routing import Candidates, Send, Upstream
from ..state import STATE, RequestState
from ..stream import NativeSSE, TranslatedSSE
from ._charging import answered
from ._passthrough import UPSTREAM_HEADER
from ._responses import read_all, relayed_headers, streaming
from ._traced import traced_send

if TYPE_CHECKING:
    from ._relay import Relay

ROUTE = "/v1/responses"
NATIVE = "responses"
RESPONSES_APIS = (NATIVE, "chat")  # the upstream protocols a Responses request goes to (native, translated)
NATIVE_PATH = "/responses"  # below a Responses upstream's base URL (https://api.openai.com/v1)
CHAT_PATH = "/chat/completions"


class ResponsesCall:
    """One checked request, prepared for either kind of upstream: as it came, and translated (or the reason it
    cannot be)."""

    __slots__ = ("request", "native", "chat", "untranslatable")

    def __init__(self, checked: ResponsesRequest, raw: bytes, default_model: str) -> None:
        if checked.model is None:
            data = {**checked.data, "model": default_model}
            checked = ResponsesRequest(default_model, checked.stream, checked.store, checked.previous_response_id,
                                       data)  # fmt: skip
            raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        self.request = checked
        self.native = raw
        self.chat: bytes | None = None
        self.untranslatable: InvalidRequest | None = None
        try:
            self.chat = dumps(responses_to_chat(checked))
        except InvalidRequest as exc:  # StoreRequired among them
            self.untranslatable = exc

    @property
    def apis(self) -> tuple[str, ...]:
        """The upstream protocols this request may go to: what cannot be translated goes native only."""
        return RESPONSES_APIS if self.untranslatable is None else (NATIVE,)

    def send_for(self, state: RequestState, upstream: Upstream) -> Send:
        """One attempt at ``upstream`` with a key, under the request's trace (proxy/relay/_traced.py): the request as
        it came, or translated onto chat."""
        path, body = (NATIVE_PATH, self.native) if upstream.config.api == NATIVE else (CHAT_PATH, self.chat)
        stream = self.request.stream
        return traced_send(state, upstream, path, lambda key, trace: upstream.send("POST", path, body, stream=stream,
                                                                                   key=key, trace=trace))


class ResponsesRoute:
    """The view of ``POST /v1/responses`` around one :class:`proxy.relay.Relay` (its admission, candidates,
    attempts and bodies)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def responses(self) -> Response:
        """Read and check the request, hold a client key's reserve, choose, exchange, answer."""
        state: RequestState = request.scope[STATE]
        relay = self.relay
        check_content_type(request.mimetype)
        raw = await request.get_data(cache=False)
        try:
            call = ResponsesCall(parse_responses_request(raw), raw, relay.settings.default_model)
        except InvalidRequest:
            state.model = model_from_body(raw)  # the access log names what the refused body asked for
            raise
        model = call.request.model
        assert model is not None
        state.model = model
        await relay.reserve(state, ROUTE, call.request.data, len(raw))
        if state.meter is None:  # the usage, for the access log and metrics, whether or not a key counts tokens
            state.meter = UsageMeter()
        if state.span is not None:  # the request's model and sampling parameters, on its span and its attempts
            state.span.request(call.request.data)
        try:
            candidates = await relay.choose(state, model, call.apis, call.untranslatable)
            response = await relay.until_answered(partial(self.exchange, state, call, candidates))
        except RelayError as exc:  # refused, or failed, before the answer started
            answered(state, exc.status)
            raise
        answered(state, response.status_code)
        return response

    async def exchange(self, state: RequestState, call: ResponsesCall, candidates: Candidates) -> Response:
        relay = self.relay
        upstream, response, content = await relay.reach(state, candidates, partial(call.send_for, state))
        native = upstream.config.api == NATIVE
        headers = relayed_headers(response)
        headers[UPSTREAM_HEADER] = upstream.name
        status = response.status_code
        meter = state.meter
        assert meter is not None
        if content is None and call.request.stream and status == 200:
            return self._streamed(state, call, response, native, meter, headers)
        if content is None:
            content = await read_all(response)
        content_type = response.headers.get("content-type", JSON)
        meter.document(content)  # its top-level usage: a Response's, a chat answer's
        if status == 200 and not native:
            content, content_type = _translated(call.request, content), JSON
        return Response(content, status=status, headers=headers, content_type=content_type)

    def _streamed(self, state: RequestState, call: ResponsesCall, response: httpx.Response, native: bool,
                  meter: UsageMeter, headers: dict[str, str]) -> Response:  # fmt: skip
        tap, pump = state.tap, self.relay.pump
        if native:
            body: NativeSSE | TranslatedSSE = NativeSSE(response, meter, responses_error_event, tap=tap, pump=pump)
            content_type = response.headers.get("content-type", "text/event-stream")
        else:
            body = TranslatedSSE(response, ResponsesStream(call.request), meter, tap=tap, pump=pump)
            content_type = "text/event-stream; charset=utf-8"
        self.relay.track(state, body)
        return Response(body, status=200, headers=streaming(headers), content_type=content_type)


def _translated(checked: ResponsesRequest, content: bytes) -> bytes:
    """A chat upstream's whole answer as a Response; 502 when it is not one."""
    try:
        chat = json.loads(content)
    except ValueError:
        raise MalformedAnswer("The upstream's answer is not JSON.") from None
    return dumps(chat_to_response(chat, checked))
