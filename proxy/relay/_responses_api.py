"""``POST /v1/responses``: OpenAI Responses clients, served by any upstream of the model.

An upstream that speaks Responses (``api = "responses"``) gets the client's request as it came (the relay's default
model filled in when it names none) and its answer is relayed event by event (:class:`proxy.stream.NativeSSE`). A
chat-completions upstream gets the request translated (:func:`proxy.protocol.responses.responses_to_chat`) and its
answer translated back (:class:`proxy.protocol.responses.ResponsesStream`, :func:`chat_to_response`). The two may be
mixed among a model's deployments and fallbacks: a request that fails before the first byte on a native upstream
may go to a chat one, translated, and the other way round.

The relay keeps no responses. A request that needs a response store (``previous_response_id``, ``store: true``)
goes only to native upstreams, which keep their own; with none among its candidates it is refused (400
``store_required``), as is anything else the translation cannot carry (400, naming the field).
"""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING, Any

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
from ..routing import Candidates, Upstream
from ..state import STATE, RequestState
from ..stream import NativeSSE, TranslatedSSE
from ._charging import answered
from ._passthrough import UPSTREAM_HEADER
from ._responses import read_whole, relayed_headers

if TYPE_CHECKING:
    from ._relay import Relay

ROUTE = "/v1/responses"
NATIVE_PATH = "/responses"  # below a Responses upstream's base URL (https://api.openai.com/v1)
CHAT_PATH = "/chat/completions"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def speaks_responses(upstream: Upstream) -> bool:
    """Whether ``upstream`` serves ``/responses`` itself (``api = "responses"``), else chat completions."""
    return upstream.config.api == "responses"


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

    def takes(self, upstream: Upstream) -> RelayError | None:
        api = upstream.config.api
        if api == "responses" or (api == "chat" and self.chat is not None):
            return None
        if api == "chat":
            return self.untranslatable
        return InvalidRequest(f"The upstream for {self.request.model!r} speaks {api}, which a Responses request "
                              "is not translated to; use a model served by a chat or Responses upstream.",
                              "unsupported_upstream_api")  # fmt: skip

    def prepare(self, upstream: Upstream) -> tuple[str, bytes]:
        if speaks_responses(upstream):
            return NATIVE_PATH, self.native
        assert self.chat is not None
        return CHAT_PATH, self.chat


async def responses(relay: Relay) -> Response:
    """The view: read and check the request, hold a client key's reserve, choose, exchange, answer."""
    state: RequestState = request.scope[STATE]
    check_content_type(request.mimetype)
    raw = await request.get_data(cache=False)
    try:
        call = ResponsesCall(parse_responses_request(raw), raw, relay.settings.default_model)
    except InvalidRequest:
        state.model = model_from_body(raw)  # the access log names what the refused body asked for
        raise
    state.model = call.request.model
    await relay.reserve(state, ROUTE, call.request.data, len(raw))
    try:
        candidates = await relay.choose(state, call.request.model, call.takes)  # type: ignore[arg-type]
        response = await relay.until_answered(partial(_exchange, relay, state, call, candidates))
    except RelayError as exc:  # refused, or failed, before the answer started
        answered(state, exc.status)
        raise
    answered(state, response.status_code)
    return response


async def _exchange(relay: Relay, state: RequestState, call: ResponsesCall, candidates: Candidates) -> Response:
    stream = call.request.stream
    upstream, response, content = await relay.send(state, candidates, "POST", call.prepare, stream)
    native = speaks_responses(upstream)
    headers = relayed_headers(response)
    headers[UPSTREAM_HEADER] = upstream.name
    status = response.status_code
    meter = state.meter
    if meter is None:  # read the usage for the access log and the metrics, whoever the client is
        meter = state.meter = UsageMeter()
    if content is None and stream and status == 200:
        return _streamed(relay, state, call, response, native, meter, headers)
    if content is None:
        content = await read_whole(response)
    content_type = response.headers.get("content-type", JSON)
    meter.document(content)  # its top-level usage: a Response's, a chat answer's
    if status == 200 and not native:
        content, content_type = _translated(call.request, content), JSON
    return Response(content, status=status, headers=headers, content_type=content_type)


def _streamed(relay: Relay, state: RequestState, call: ResponsesCall, response: httpx.Response, native: bool,
              meter: UsageMeter, headers: dict[str, str]) -> Response:  # fmt: skip
    kwargs: dict[str, Any] = {"tap": state.tap, "pump": relay.pump}
    if native:
        body: NativeSSE | TranslatedSSE = NativeSSE(response, meter, responses_error_event, **kwargs)
        content_type = response.headers.get("content-type", "text/event-stream")
    else:
        body = TranslatedSSE(response, ResponsesStream(call.request), meter, **kwargs)
        content_type = "text/event-stream; charset=utf-8"
    if relay.heartbeats is not None:
        relay.heartbeats.watch(body)
    relay.streams.track_body(state, body)
    return Response(body, status=200, headers={**headers, **SSE_HEADERS}, content_type=content_type)


def _translated(checked: ResponsesRequest, content: bytes) -> bytes:
    """A chat upstream's whole answer as a Response; 502 when it is not one."""
    try:
        chat = json.loads(content)
    except ValueError:
        raise MalformedAnswer("The upstream's answer is not JSON.") from None
    return dumps(chat_to_response(chat, checked))
