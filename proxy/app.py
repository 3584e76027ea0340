"""The relay's routes on quart-trio: OpenAI-compatible /v1 and the seed's NDJSON /chat/completions."""

from __future__ import annotations

import json
from typing import Any

import httpx
from quart import Response, request
from quart_trio import QuartTrio

from .config import Settings
from .errors import JSON, bad_request, error_body, map_transport_error
from .relay import NDJSONBody, SSEBody
from .upstream import Upstream
from .validate import ChatRequest, InvalidRequest, check_chat_object, parse_chat_request

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


def create_app(settings: Settings, upstream: Upstream | None = None) -> QuartTrio:
    """The app; with no ``upstream`` it opens its own when serving starts and closes it when serving stops."""
    app = QuartTrio("moonrelay")
    # Quart would cut every response at 60 s; a long completion streams for minutes.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
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

    async def forward(method: str, path: str, body: bytes | None, stream: bool, ndjson: bool = False) -> Response:
        try:
            response = await state["upstream"].send(method, path, body, stream=stream)
        except httpx.TransportError as exc:
            status, err = map_transport_error(exc)
            if ndjson:
                return Response(json.dumps(err) + "\n", status=status, content_type="application/x-ndjson")
            return _json_error(status, err)
        relayed = _relayed_headers(response)
        if stream and response.status_code == 200:
            if ndjson:
                return Response(NDJSONBody(response), status=200, headers=relayed, content_type="application/x-ndjson")
            relayed["cache-control"] = "no-cache"
            relayed["x-accel-buffering"] = "no"  # tell nginx in front of us not to buffer either
            return Response(
                SSEBody(response),
                status=200,
                headers=relayed,
                content_type=response.headers.get("content-type", "text/event-stream"),
            )
        try:
            content = await response.aread()
        except httpx.TransportError as exc:
            status, err = map_transport_error(exc)
            return _json_error(status, err)
        finally:
            await response.aclose()
        content_type = response.headers.get("content-type", JSON)
        if ndjson:
            content = content.rstrip(b"\n") + b"\n"
            content_type = "application/x-ndjson"
        return Response(content, status=response.status_code, headers=relayed, content_type=content_type)

    async def read_chat() -> ChatRequest:
        raw = await request.get_data(cache=False)
        return parse_chat_request(raw, settings.default_model)

    @app.errorhandler(InvalidRequest)
    async def invalid(exc: InvalidRequest) -> Response:
        status, body = bad_request(str(exc), exc.code)
        return _json_error(status, body)

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
            chat = await read_chat()
        return await forward("POST", "/chat/completions", chat.body, chat.stream, ndjson=True)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', content_type=JSON)

    return app
