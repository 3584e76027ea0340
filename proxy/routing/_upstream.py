"""The upstream APIs as the relay calls them: httpx Requests handed straight to an httpx transport.

Not through ``httpx.AsyncClient.send``: per request the client merges headers, builds a cookie
jar and runs ``http.cookiejar`` over every response, a visible share of a relayed request's CPU;
the relay needs neither. Requests, responses, exceptions and the
transport interface stay httpx's own.

One :class:`Upstream` per configured upstream (its base URL, key pool, transport and concurrency
cap); :class:`Upstreams` holds them all with the router that picks one for a model.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterable, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Self

import httpx

from ..config import Settings
from ..limits import LocalStore, Store
from ..transport import H11Transport, Timeouts
from ..upstreamconfig import UpstreamConfig, single_upstream
from ._balance import SmoothWeighted
from ._breaker import Circuit
from ._health import Health
from ._keypool import Key, KeyPool
from ._router import Router

log = logging.getLogger("moonrelay")
UNCAPPED = "uncapped"  # the lease of an upstream without max_concurrent: nothing to count


def build_transport(settings: Settings, config: UpstreamConfig | None = None) -> httpx.AsyncBaseTransport:
    config = config or single_upstream(settings)
    ssl_context = None
    if config.base_url.startswith("https"):
        ssl_context = ssl.create_default_context(cafile=config.ca_file)
    if settings.transport == "httpcore":
        limits = httpx.Limits(max_connections=config.max_connections or None, max_keepalive_connections=None)
        return httpx.AsyncHTTPTransport(verify=ssl_context or True, limits=limits, trust_env=False)
    if settings.transport != "h11":
        raise ValueError(f"unknown transport {settings.transport!r}: use h11 or httpcore")
    return H11Transport(
        max_connections=config.max_connections,
        timeouts=Timeouts(
            connect_s=config.connect_timeout_s,
            first_byte_s=config.first_byte_timeout_s,
            idle_s=config.idle_timeout_s,
            pool_s=settings.pool_timeout_s,
            total_s=config.total_timeout_s,
        ),
        ssl_context=ssl_context,
    )


class _ClosedOnExit:
    """``async with`` it, and ``aclose`` runs on the way out."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Upstream(_ClosedOnExit):
    """One upstream: base URL, keys, transport, and its ``max_concurrent`` cap (per worker, or shared with
    ``--state``); closed with ``async with``."""

    def __init__(
        self,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        config: UpstreamConfig | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        config = config or single_upstream(settings)
        self.config = config
        self.name = config.name
        self.base = config.base_url.rstrip("/")
        self.transport = transport or build_transport(settings, config)
        self.keys = KeyPool.from_env(config.key_envs, environ)
        self.active = 0  # requests in flight to this upstream (this worker)
        # Where max_concurrent and its keys' rests are counted: this worker's memory, or (--state) the store every
        # worker and instance share. Upstreams hands its own store to each upstream it holds.
        self.store: Store = LocalStore()
        self.slots = f"slots:upstream:{self.name}"
        # A byte pass-through must not be handed gzip it would have to decode to relay.
        self._headers = [(b"accept-encoding", b"identity")]
        self._urls: dict[str, httpx.URL] = {}  # parsed once per path, not per request
        self._timeouts = {
            "connect": config.connect_timeout_s,
            "read": config.idle_timeout_s,
            "write": config.idle_timeout_s,
            "pool": settings.pool_timeout_s,
        }

    async def take(self) -> str | None:
        """A lease on one of the upstream's ``max_concurrent`` slots (counted in the store: per worker, or across
        every worker and instance with ``--state``), or None when all are taken. Give it back with
        :meth:`give_back`; without a cap the store is not asked."""
        cap = self.config.max_concurrent
        if not cap:
            self.active += 1
            return UNCAPPED
        token = await self.store.acquire(self.slots, cap)
        if token is not None:
            self.active += 1
        return token

    async def give_back(self, token: str) -> None:
        """Return a lease :meth:`take` gave (at most the store's deadline; a failed return lapses within
        ``--state-lease-s``)."""
        self.active -= 1
        if token is not UNCAPPED:
            await self.store.release(self.slots, token)

    async def send(
        self, method: str, path: str, body: bytes | None = None, *, stream: bool = False, key: Key | None = None,
        extra: list[tuple[bytes, bytes]] | None = None, trace: Mapping[str, str] | None = None,
    ) -> httpx.Response:  # fmt: skip
        """Send and return once the response headers are in; the caller reads and closes the body. ``extra``: more
        request headers (an Anthropic client's ``anthropic-version``); ``trace``: the W3C trace context headers to
        send (proxy/relay/_traced.py)."""
        headers = list(self._headers)
        if key is not None:
            headers.append(self._credential(key))
        if extra:
            headers += extra
        if trace:
            headers.extend((name.encode(), value.encode()) for name, value in trace.items())
        if body is not None:
            headers.append((b"content-type", b"application/json"))
        headers.append((b"accept", b"text/event-stream" if stream else b"application/json"))
        url = self._urls.get(path)
        if url is None:
            url = httpx.URL(self.base + path)
            if len(self._urls) < 64:
                self._urls[path] = url
        transport = self.transport
        if type(transport) is H11Transport:  # ours: the pieces as they are, no httpx.Request to build
            return await transport.send_bytes(method, url, headers, body, self._timeouts)
        return await self._send(httpx.Request(method, url, headers=headers, content=body))

    async def forward(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        content: bytes | AsyncIterable[bytes],
        key: Key | None,
        trace: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """A pass-through request: ``target`` (path and query below the base URL) with the client's own
        headers (already filtered) and body, streamed when ``content`` is an async iterable; ``trace`` as for
        :meth:`send`."""
        headers = [*headers, *self._headers]
        if key is not None:
            headers.append(self._credential(key))
        if trace:
            headers.extend((name.encode(), value.encode()) for name, value in trace.items())
        return await self._send(httpx.Request(method, httpx.URL(self.base + target), headers=headers, content=content))

    def _credential(self, key: Key) -> tuple[bytes, bytes]:
        """The key as this upstream's protocol expects it: ``x-api-key`` for Anthropic's, else a bearer token."""
        if self.config.api == "anthropic":
            return b"x-api-key", key.authorization.removeprefix(b"Bearer ")
        return b"authorization", key.authorization

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """The response, without ``response.request``: the request holds its body (a whole conversation),
        which would stay alive as long as the streamed response, a cost per open stream that grows with the
        prompt; nothing here reads it (``raise_for_status`` would)."""
        request.extensions["timeout"] = self._timeouts
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self.transport.aclose()


class Upstreams(_ClosedOnExit):
    """Every upstream the relay serves, by name and in config order, and the router between them."""

    def __init__(
        self,
        settings: Settings,
        upstreams: Sequence[Upstream] | None = None,
        *,
        store: Store | None = None,
        on_circuit: Callable[[str, Circuit, bool], None] | None = None,
    ) -> None:
        """``on_circuit(deployment, circuit, opened)``: a circuit this worker saw change (the metrics' hook)."""
        # Where upstream health and shared caps are counted (proxy.limits): this worker's memory unless given.
        self.store: Store = store if store is not None else LocalStore()
        if upstreams is None:
            upstreams = [Upstream(settings, config=c) for c in settings.routes]
        self.all = list(upstreams)
        for u in self.all:
            u.store = self.store
        self.by_name = {u.name: u for u in self.all}
        self.router = Router(u.config for u in self.all)
        # Breakers and 429 rests of deployments, in the store.
        keys = {u.name: u.keys.names for u in self.all if u.keys.rotating}
        self.health = Health(self.store, [u.config for u in self.all], keys, on_circuit)
        self._balancers: dict[tuple[str, ...], SmoothWeighted] = {}  # this worker's place in each weighted round
        self.default = self.by_name.get(self.router.default) if self.router.default else None
        for u in self.all:  # fingerprints only: a key never reaches a log line
            shown = ", ".join(k.fingerprint for k in u.keys.keys) or "none"
            log.info("upstream %s: %s, %d key(s) (sha256 %s)", u.name, u.base, len(u.keys.keys), shown)

    def successor(self, settings: Settings) -> Upstreams:
        """The upstreams ``settings`` configure (a reload), counted in this one's store: an upstream whose table did
        not change is this one's, kept whole (its connections, its key pool's turn); the others are new. Nothing is
        closed or started here (proxy.edge's reload does that)."""
        mine = {u.name: u for u in self.all}
        upstreams = []
        for config in settings.routes:
            u = mine.get(config.name)
            if u is None or u.config != config or u._timeouts["pool"] != settings.pool_timeout_s:
                u = Upstream(settings, config=config)
            upstreams.append(u)
        return Upstreams(settings, upstreams, store=self.store)

    def route(self, model: str) -> Upstream | None:
        """The upstream that serves ``model`` (None: no pattern matches and there is no default)."""
        name = self.router.route(model)
        return self.by_name[name] if name is not None else None

    def deployments(self, model: str) -> tuple[Upstream, ...]:
        """Every upstream that serves ``model``: its deployments (one, unless tables share its exact name)."""
        return tuple(self.by_name[name] for name in self.router.deployments(model))

    def balancer(self, deployments: Sequence[Upstream]) -> SmoothWeighted:
        """The weighted round robin over these deployments (one per set of deployments, kept by this worker)."""
        key = tuple(d.name for d in deployments)
        found = self._balancers.get(key)
        if found is None:
            found = self._balancers[key] = SmoothWeighted([d.config.weight for d in deployments])
        return found

    def h11_transports(self) -> Iterator[H11Transport]:
        """Our transports, whose timeout watchdogs run beside the server."""
        for u in self.all:
            if isinstance(u.transport, H11Transport):
                yield u.transport

    async def aclose(self) -> None:
        for u in self.all:
            await u.aclose()
