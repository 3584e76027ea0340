"""``/v1/*`` pass-through: every other OpenAI/Moonshot endpoint (embeddings, files, token counts,
balance…) relayed to an upstream as it is, both bodies streamed.

Off by default (``--passthrough on``, or path globs such as ``/v1/embeddings,/v1/files*``): the
relay's key is an account key, and passing every path on lets every client of the relay upload,
read and delete that account's files.

Which upstream: the ``X-Moonrelay-Upstream: <name>`` header when given; else, for a JSON body
(read whole up to ``--max-body-bytes``, like a chat request), the one its ``model`` routes to (so
``/v1/embeddings`` with an OpenAI model goes where ``gpt-*`` goes); else the default upstream.

Which path: the request line's, normalised once (:mod:`proxy.protocol`); the allow-list is matched on
that, and that is what goes upstream. A path that resolves to one of the relay's own routes
(``/v1/chat/completions``, ``/v1/models``), in any letter case, never passes: chat must go through validation,
limits, usage injection and the SSE checks (and an upstream may match paths without regard to case).

What goes upstream: the method, the normalised path below ``/v1`` and the query, the client's
headers named in ``FORWARDED`` (an allow-list: the relay's key is an account key, so a client must
not pick the organisation or project it bills, nor anything else the relay does not know), the
upstream's key and ``Accept-Encoding: identity`` (as for chat); the body as it arrives, with its
``Content-Length`` when the client gave one, else chunked. What comes back: the status, the body
read by read, and ``Content-Type``, ``Content-Encoding`` (the bytes are relayed as they came),
``Content-Disposition``, ``Content-Length``, caching headers, ``Retry-After`` and ``X-RateLimit-*``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import quote

import httpx
from quart import Request, Response
from werkzeug.exceptions import RequestEntityTooLarge

from ..config import Settings
from ..errors import upstream_failure
from ..protocol import (
    EventMeter,
    InvalidRequest,
    JSONUsage,
    PathRefused,
    UsageMeter,
    UsageStripper,
    json_or_none,
    normalise,
)
from ..routing import AllKeysResting, Upstream, Upstreams, model_not_found, send_with_retries
from ..transport import IteratorReader, reader
from ._responses import keys_resting, relayed_headers

log = logging.getLogger("moonrelay")

UPSTREAM_HEADER = "x-moonrelay-upstream"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]  # HEAD and OPTIONS come with Quart (and the CORS layer)
# The relay's own /v1 routes: a pass-through path that resolves to one of them is refused, never relayed.
OWN_PATHS = frozenset({"/v1/chat/completions", "/v1/models"})
# The only client request headers that go upstream: what describes the body (its type, its encoding),
# what the client accepts, who it is, and what OpenAI-compatible endpoints read from SDKs (``OpenAI-Beta``
# for the Assistants/Realtime betas, ``Idempotency-Key``), plus conditionals for the ETag/Last-Modified
# passed back. Not ``OpenAI-Organization``/``OpenAI-Project`` (they choose who pays with the relay's key),
# not ``Authorization``/``Cookie`` (the client's own credentials), not hop-by-hop ones; ``Host`` and
# ``Content-Length`` httpx sets from the URL and body.
FORWARDED = frozenset(
    {b"content-type", b"content-encoding", b"accept", b"user-agent", b"openai-beta", b"idempotency-key",
     b"if-none-match", b"if-modified-since"}
)  # fmt: skip
# What ``--passthrough-headers`` may not add: the relay sets these itself, or they belong to one hop only.
_NEVER_FORWARDED = frozenset(
    {"authorization", "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
     "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade", "accept-encoding", "cookie",
     UPSTREAM_HEADER}
)  # fmt: skip
_PASSED_BACK = frozenset(
    {"content-type", "content-encoding", "content-disposition", "content-length", "cache-control", "etag",
     "last-modified", "location"}
)  # fmt: skip


def path_filter(spec: str) -> Any:
    """``--passthrough`` → a predicate on request paths (None when off)."""
    spec = spec.strip()
    if spec in ("", "off"):
        return None
    if spec in ("on", "*"):
        return lambda path: True
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    return lambda path: any(fnmatchcase(path, p) for p in patterns)


def body_limit(settings: Settings) -> Callable[[str], int | None]:
    """A request path's body limit where it is not ``--max-body-bytes``: pass-through paths are allowed
    ``--max-upload-bytes`` (the edge sizes each request's limit with it before any view runs)."""
    upload = max(settings.max_upload_bytes, settings.max_body_bytes)

    def limit_for(path: str) -> int | None:
        return upload if path.startswith("/v1/") and path.lower() not in OWN_PATHS else None

    return limit_for


class UploadTooLarge(Exception):
    pass


class UploadBody:
    """The client's body as it arrives, with the ``--max-upload-bytes`` limit counted over all of it
    (Quart's own limit counts only the bytes not taken yet)."""

    __slots__ = ("_parts", "_left")

    def __init__(self, request: Request, limit: int) -> None:
        self._parts = request.body.__aiter__()
        self._left = limit

    def __aiter__(self) -> UploadBody:
        return self

    async def __anext__(self) -> bytes:
        part = await self._parts.__anext__()
        self._left -= len(part)
        if self._left < 0:
            raise UploadTooLarge
        return part


class BrokenOff(Exception):
    """A pass-through response whose upstream failed after the status went out (logged where it happened)."""


def ending_broken_bodies(app: Any) -> Any:
    """The ASGI ``app``, with :class:`BrokenOff` ending the call quietly: the response is left unfinished,
    so hypercorn closes the connection without the body's last chunk (no traceback in the error log)."""

    async def asgi(scope: dict, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except* BrokenOff:
            pass

    return asgi


class PassthroughBody:
    """The upstream's response body, relayed read by read; ``aclose`` closes the upstream response.

    A failure after the status went out cannot be told in-band (the body may be anything): the
    relay logs it and breaks the response off (:class:`BrokenOff`), so the client sees a cut body,
    not a complete one. ``watch``: what reads the body's usage as it passes (:func:`usage_watch`).
    """

    __slots__ = ("_response", "_reader", "_upstream", "_watch")

    def __init__(self, response: httpx.Response, upstream: str, watch: Any = None) -> None:
        self._response = response
        self._reader = reader(response)
        self._upstream = upstream
        self._watch = watch

    def __aiter__(self) -> PassthroughBody:
        return self

    async def __anext__(self) -> bytes:
        while True:
            try:
                data = await self._reader.receive_chunk()
            except httpx.TransportError as exc:
                log.warning("pass-through response from upstream %s broke off: %s", self._upstream, exc)
                raise BrokenOff from exc
            watch = self._watch
            if not data:
                if watch is not None:  # the end: what it held (an event without its blank line)
                    self._watch = None
                    data = watch.end()
                    if data:
                        return data
                raise StopAsyncIteration
            if watch is not None:
                data = watch.feed(data)
                if getattr(watch, "malformed", False):  # not a stream the usage chunk can be cut from
                    log.warning("pass-through stream from upstream %s sent a malformed event", self._upstream)
                    raise BrokenOff
            if data:  # a stripped stream may hold a read's bytes until its event ends
                return data

    async def aclose(self) -> None:
        if isinstance(self._reader, IteratorReader):
            await self._reader.aclose()
        await self._response.aclose()


def header_names(spec: str) -> frozenset[bytes]:
    """``--passthrough-headers`` (comma-separated names) → every request header name pass-through forwards.

    Raises ValueError for a name the relay sets itself or that belongs to one hop (``_NEVER_FORWARDED``).
    """
    extra = {n.strip().lower() for n in spec.split(",") if n.strip()}
    refused = sorted(extra & _NEVER_FORWARDED)
    if refused:
        raise ValueError(f"passthrough_headers: {', '.join(refused)} cannot be forwarded")
    return FORWARDED | {n.encode("latin-1") for n in extra}


def forwarded_headers(raw: list[tuple[bytes, bytes]], names: frozenset[bytes] = FORWARDED) -> list[tuple[bytes, bytes]]:
    """The client's request headers that go upstream: those in ``names`` (lower case, as in ASGI) that
    ``Connection`` does not name as hop-by-hop."""
    named: set[bytes] = set()
    for name, value in raw:
        if name == b"connection":
            named.update(v.strip().lower() for v in value.split(b","))
    return [(n, v) for n, v in raw if n in names and n not in named]


def checked_path(request: Request, allowed: Any) -> str:
    """The request's normalised path (:mod:`proxy.protocol`) when it may pass: under ``/v1/``, not one of the
    relay's own routes in any letter case, and ``allowed`` by the ``--passthrough`` globs. Else an InvalidRequest:
    400 ``invalid_path``, 405 for another method on a route of the relay's own, 404 when no glob allows it."""
    raw = request.scope.get("raw_path") or quote(request.path).encode()
    try:
        path = normalise(raw)
    except PathRefused as exc:
        raise InvalidRequest(str(exc), "invalid_path") from None
    own = path.lower()
    if own in OWN_PATHS:
        if path == own == request.path:  # the route itself, with a method it does not take
            raise InvalidRequest(f"Method {request.method} is not allowed on {path}.", "method_not_allowed", 405)
        raise InvalidRequest(f"The relay serves {own} itself: send the request to exactly that path.", "invalid_path")
    if not allowed(path):
        raise InvalidRequest(f"No route for {request.path}.", "not_found", 404)
    return path


async def read_body(request: Request, settings: Settings) -> tuple[bytes | UploadBody, dict[str, Any] | None]:
    """The body to send (bytes, or parts as they arrive) and, for small JSON, the object it holds."""
    length = request.content_length
    if length == 0 or (length is None and "transfer-encoding" not in request.headers):
        return b"", None
    mimetype = request.mimetype
    if (mimetype == "application/json" or mimetype.endswith("+json")) and length and length <= settings.max_body_bytes:
        raw = await request.get_data(cache=False)
        data = json_or_none(raw)
        return raw, data if isinstance(data, dict) else None
    return UploadBody(request, settings.max_upload_bytes), None


def named_model(data: dict[str, Any] | None) -> str | None:
    """The ``model`` a JSON body names, if it names one."""
    model = data.get("model") if data is not None else None
    return model if isinstance(model, str) and model else None


def usage_watch(response: httpx.Response, meter: UsageMeter | None, strip: bool) -> Any:
    """What reads a pass-through answer's usage into ``meter`` as it is relayed: a JSON answer's top-level usage,
    a stream's events and usage (with ``strip``, the usage chunk the relay asked for cut out); None for anything
    else, or a body whose bytes are encoded."""
    if meter is None or response.headers.get("content-encoding", "identity") != "identity":
        return None
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        return UsageStripper(meter) if strip else EventMeter(meter)
    mimetype = content_type.partition(";")[0].strip()
    if mimetype == "application/json" or mimetype.endswith("+json"):
        return JSONUsage(meter)
    return None


def choose(upstreams: Upstreams, named: str | None, model: str | None) -> Upstream:
    """The upstream a pass-through request goes to (see the module docstring)."""
    if named is not None:
        upstream = upstreams.by_name.get(named)
        if upstream is None:
            shown = named if len(named) <= 64 else named[:64] + "…"
            log.info("pass-through named upstream %r: not configured (known: %s)", shown, ", ".join(upstreams.by_name))
            raise InvalidRequest(f"No upstream is named {shown!r}.", "unknown_upstream")
        return upstream
    if model is not None:
        upstream = upstreams.route(model)
        if upstream is None:
            raise model_not_found(model)
        return upstream
    if upstreams.default is None:
        msg = f"No default upstream is configured: name one in the {UPSTREAM_HEADER} header."
        raise InvalidRequest(msg, "no_default_upstream")
    return upstreams.default


async def relay(
    upstream: Upstream,
    request: Request,
    path: str,
    content: bytes | UploadBody,
    settings: Settings,
    names: frozenset[bytes] = FORWARDED,
    model: str | None = None,
    meter: UsageMeter | None = None,
    strip: bool = False,
) -> Response:
    """Send the request to ``path`` (normalised: :func:`checked_path`) upstream, with the client's headers in
    ``names``, and answer with what came back (retried only when ``content`` is bytes); ``model``: the one its
    body names, if any (for the errors). ``meter``: where the answer's usage goes (a client key that counts
    tokens); ``strip``: the relay asked for a stream's usage."""
    target = path.removeprefix("/v1")
    query = request.scope.get("query_string", b"")
    if query:
        target += "?" + query.decode("latin-1")
    headers = forwarded_headers(request.scope["headers"], names)
    if not isinstance(content, bytes) and request.content_length is not None:
        headers.append((b"content-length", b"%d" % request.content_length))
    try:
        response, read = await send_with_retries(
            upstream,
            lambda key: upstream.forward(request.method, target, headers, content, key),
            settings,
            replayable=isinstance(content, bytes),
        )
    except httpx.TransportError as exc:
        raise upstream_failure(exc) from None
    except AllKeysResting as exc:
        raise keys_resting(exc, model) from None
    except (UploadTooLarge, RequestEntityTooLarge):
        msg = f"Request body exceeds the limit of {settings.max_upload_bytes} bytes."
        raise InvalidRequest(msg, "request_too_large", 413) from None
    back = relayed_headers(response, also=_PASSED_BACK)
    content_type = back.pop("content-type", "application/octet-stream")
    if read is not None:  # a failed attempt that was read (and decoded) to decide on a retry
        back.pop("content-length", None)
        back.pop("content-encoding", None)
        return Response(read, status=response.status_code, headers=back, content_type=content_type)
    watch = usage_watch(response, meter, strip)
    if strip and watch is not None:
        back.pop("content-length", None)  # the usage chunk is cut: the body is shorter
    body = PassthroughBody(response, upstream.name, watch)
    return Response(body, status=response.status_code, headers=back, content_type=content_type)
