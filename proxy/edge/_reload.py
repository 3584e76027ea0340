"""Reloading a running worker's config: SIGHUP (the supervisor passes it to every worker), or :func:`reload`.

A reload reads the settings' sources again (the config file anew, the start's flags and environment), checks
everything it would build (the ``[[upstreams]]`` tables, the keys file, each upstream's TLS files), and only then
swaps it in, with no checkpoint between the swaps, so a request sees the old config or the new one, never half of
each: the upstreams and their router, breakers, weights and fallbacks; the client keys and their limits;
``max_streams``, retries, the default model. A config that fails a check changes nothing and says why in one log
line. Settings that only a restart can change (the socket, the workers, the serving paths, the store,
observability: everything outside :data:`proxy.config.LIVE_SETTINGS`) keep their values; the line names them.

A request in flight holds the upstream objects it was routed to (its candidates, its connection): it ends on them,
retries and fallbacks included. An upstream the new config drops or changes is retired: its idle connections
closed at once, the rest as their responses end, then its timeout watchdog stops. An upstream whose table did not
change is kept whole (its pooled connections, its key pool's turn).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import trio
from quart import Quart

from ..auth import KeySource, load_client_keys
from ..config import Settings, Sources, reloaded
from ..relay import Relay, Streams
from ..routing import Upstream, Upstreams, configured_models
from ..transport import H11Transport
from ._lifecycle import Observer, default_upstream

log = logging.getLogger("moonrelay")
RELOADER = "moonrelay.reloader"  # the app extension that holds the worker's Reloader


@dataclass(frozen=True, slots=True)
class Reload:
    """What a reload did: the config generation in force after it, whether the new config was applied, the log
    line that said so."""

    generation: int
    applied: bool
    message: str


class Reloader:
    """One worker's config in force (``settings``, ``generation``, counted from 1 at start) and its reload."""

    def __init__(self, settings: Settings, sources: Sources | None, nursery: trio.Nursery, *, keys: KeySource,
                 streams: Streams) -> None:  # fmt: skip
        self.settings = settings
        self.sources = sources  # None: a relay started from a Settings object; a reload keeps it, reads the keys again
        self.generation = 1
        self._nursery = nursery
        self._keys = keys
        self._streams = streams
        self._relay: Relay | None = None
        self._observer: Observer | None = None
        self._lock = trio.Lock()  # one reload at a time (a signal and an admin call)
        self._watchdogs: dict[H11Transport, trio.CancelScope] = {}
        self._count: Any = None  # Metrics.config_reload, when metrics are on

    async def watch(self, upstreams: Upstreams) -> None:
        """Start the timeout watchdog of each of ``upstreams``' transports that has none running."""
        for transport in upstreams.h11_transports():
            if transport not in self._watchdogs:
                await self._nursery.start(self._watchdog, transport)

    async def _watchdog(self, transport: H11Transport, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            self._watchdogs[transport] = scope
            try:
                await transport.run_watchdog(task_status=task_status)
            finally:
                self._watchdogs.pop(transport, None)

    def attach(self, app: Quart) -> None:
        """Serve ``app`` (``create_app``'s): its relay and observer are what a reload swaps into."""
        self._relay, self._observer = app.extensions["moonrelay"]
        app.extensions[RELOADER] = self
        if self._observer is not None and self._observer.metrics is not None:
            self._count = self._observer.metrics.config_reload
            self._count(self.generation, None)

    async def reload(self, cause: str = "reload", settings: Settings | None = None) -> Reload:
        """Read the config again (or take ``settings``: already loaded and validated) and apply it whole, or keep
        the one in force; one log line either way, starting with ``cause``."""
        async with self._lock:
            try:
                new = settings if settings is not None else self.sources.load() if self.sources else self.settings
                merged, waiting = reloaded(self.settings, new)
                keys = load_client_keys(merged)  # the keys file read and checked
                old: Upstreams = self._relay.upstreams  # type: ignore[union-attr,assignment]
                upstreams = old.successor(merged)  # TLS files read: an https upstream's ca_file
            except (OSError, ValueError) as exc:  # ConfigError, KeysFileError, StateURLError are ValueErrors
                return self._done(False, f"{cause}: config not reloaded, generation {self.generation} stays: {exc}")
            await self.watch(upstreams)
            self._swap(merged, keys, upstreams)
            kept = {id(u) for u in upstreams.all}
            for u in old.all:
                if id(u) not in kept:
                    self._nursery.start_soon(self._retire, u, self.generation - 1)
            fresh = [u.name for u in upstreams.all if u not in old.all]
            names = ", ".join(u.name + (" (new)" if u.name in fresh else "") for u in upstreams.all)
            key_line = (f"client keys reloaded: {len(keys)} configured, {keys.limited} with limits" if keys
                        else "no client keys")  # fmt: skip
            restart = f"; {', '.join(waiting)} unchanged until a restart" if waiting else ""
            return self._done(True, f"{cause}: config reloaded, generation {self.generation}: upstreams {names}; "
                                    f"{key_line}{restart}")  # fmt: skip

    def _swap(self, settings: Settings, keys: Any, upstreams: Upstreams) -> None:
        """Everything a request reads of the config, in one synchronous step (no checkpoint: no request runs
        between two of these lines)."""
        relay, observer = self._relay, self._observer
        assert relay is not None and relay.upstreams is not None
        upstreams.health.changed = relay.upstreams.health.changed  # the metrics' circuit gauge
        relay.settings = settings
        relay.upstreams = upstreams
        self._keys.settings, self._keys.current = settings, keys
        self._streams.limit = settings.max_streams
        if observer is not None:
            observer.settings = settings  # the access log's default model
            observer.upstream = default_upstream(settings)
            if observer.metrics is not None:
                observer.metrics.models = configured_models(settings)
        self.settings = settings
        self.generation += 1

    def _done(self, applied: bool, message: str) -> Reload:
        (log.info if applied else log.error)("%s", message)
        if self._count is not None:
            self._count(self.generation, applied)
        return Reload(self.generation, applied, message)

    async def _retire(self, upstream: Upstream, generation: int) -> None:
        """An upstream the new config dropped or changed: closed once the requests that hold it have ended."""
        transport = upstream.transport
        try:
            if not isinstance(transport, H11Transport):
                await trio.sleep_forever()  # httpx's own pool cannot say when its last response ended: serving's end
            await transport.aclose()  # its idle connections now; the rest as their responses end
            await transport.drained()
            scope = self._watchdogs.get(transport)
            if scope is not None:
                scope.cancel()
            log.info("upstream %s of config generation %d closed: its last request ended", upstream.name,
                     generation)  # fmt: skip
        finally:
            with trio.CancelScope(shield=True):
                await upstream.aclose()

    async def aclose(self) -> None:
        """When serving ends: the upstreams a reload opened (the start's are closed by whoever opened them)."""
        relay = self._relay
        if relay is not None and relay.upstreams is not None and self.generation > 1:
            await relay.upstreams.aclose()


async def reload(app: Quart, settings: Settings | None = None, *, cause: str = "reload") -> Reload:
    """Reload the config of the worker that serves ``app`` (``proxy.edge.serve``'s; this process only: SIGHUP to
    the supervisor reaches every worker). ``settings``: apply these instead of reading the sources again.

    Returns what happened; a config that fails its checks leaves the one in force (``applied`` False, ``message``
    says why). Raises LookupError when ``app`` is not being served by ``serve``."""
    reloader: Reloader | None = app.extensions.get(RELOADER)
    if reloader is None:
        raise LookupError("this app is not served by proxy.edge.serve: nothing to reload")
    return await reloader.reload(cause, settings)
