"""The upstream API as the relay calls it: httpx Requests handed straight to an httpx transport.

Not through ``httpx.AsyncClient.send``: per request the client merges headers, builds a cookie
jar and runs ``http.cookiejar`` over every response. In a py-spy profile of the relay (100
clients, no keep-alive, one-chunk answers) ``build_request`` and ``extract_cookies`` took 217 of
2,204 busy samples (~10 %); the relay needs neither. Requests, responses, exceptions and the
transport interface stay httpx's own.
"""

from __future__ import annotations

import ssl
from types import TracebackType

import httpx

from .config import Settings
from .transport import H11Transport, Timeouts


def build_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    ssl_context = None
    if settings.upstream.startswith("https"):
        ssl_context = ssl.create_default_context(cafile=settings.upstream_ca_file)
    if settings.transport == "httpcore":
        limits = httpx.Limits(max_connections=settings.max_connections or None, max_keepalive_connections=None)
        return httpx.AsyncHTTPTransport(verify=ssl_context or True, limits=limits, trust_env=False)
    if settings.transport != "h11":
        raise ValueError(f"unknown transport {settings.transport!r}: use h11 or httpcore")
    return H11Transport(
        max_connections=settings.max_connections,
        timeouts=Timeouts(
            connect_s=settings.connect_timeout_s,
            first_byte_s=settings.first_byte_timeout_s,
            idle_s=settings.idle_timeout_s,
            pool_s=settings.pool_timeout_s,
            total_s=settings.total_timeout_s,
        ),
        ssl_context=ssl_context,
    )


class Upstream:
    """One upstream base URL, its key and its transport; closed with ``async with``."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base = settings.upstream.rstrip("/")
        self.transport = transport or build_transport(settings)
        # A byte pass-through must not be handed gzip it would have to decode to relay.
        headers = [(b"accept-encoding", b"identity")]
        key = settings.upstream_key
        if key:
            headers.append((b"authorization", f"Bearer {key}".encode()))
        self._headers = headers
        self._urls: dict[str, httpx.URL] = {}  # parsed once: URL parsing was ~4 % of a relayed request's CPU
        self._timeouts = {
            "connect": settings.connect_timeout_s,
            "read": settings.idle_timeout_s,
            "write": settings.idle_timeout_s,
            "pool": settings.pool_timeout_s,
        }

    async def send(self, method: str, path: str, body: bytes | None = None, *, stream: bool = False) -> httpx.Response:
        """Send and return once the response headers are in; the caller reads and closes the body."""
        headers = list(self._headers)
        if body is not None:
            headers.append((b"content-type", b"application/json"))
        headers.append((b"accept", b"text/event-stream" if stream else b"application/json"))
        url = self._urls.get(path)
        if url is None:
            url = httpx.URL(self.base + path)
            if len(self._urls) < 64:
                self._urls[path] = url
        request = httpx.Request(method, url, headers=headers, content=body, extensions={"timeout": self._timeouts})
        response = await self.transport.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
