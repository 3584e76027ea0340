"""Serving the app with hypercorn's trio worker, in one process or several on one port.

Several workers (wire.run_workers) each serve their own SO_REUSEPORT socket, so the kernel spreads new
connections across them by hash; one shared listening socket lets whichever worker wakes first take a whole
storm of accepts, and a worker that holds too many streams runs out of fds (20,000 here).
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

from wire import (
    STOP_SIGNALS,
    Ready,
    listen_socket,
    raise_nofile_limit,
    run_workers,
    split_bind,
    url_host,
    wait_for_stop_signal,
)

from ..admin import admin_api
from ..auth import KeySource
from ..config import Settings, Sources
from ..gcpolicy import Reclaim, tune_gc
from ..limits import FailoverStore, LocalStore, RedisStore, StateURLError, Store, check_redis
from ..observability import prepare_multiprocess
from ..relay import Streams, cache_store
from ..routing import Upstreams, describe_upstreams
from ..stream import Heartbeats
from ..tracing import Tracing
from ..transport import Pump, pump_available
from ._app import create_app
from ._direct import ClientWrites
from ._gate import fast_paths_allowed
from ._reload import Reloader
from ._worker import client_writes, hypercorn_config, open_connections, serve_app

# Hypercorn's own graceful timeout cancels whatever is left without telling the app; ours ends the
# remaining streams with an error event first, so hypercorn's deadline is set this much later.
HYPERCORN_GRACE_MARGIN_S = 3.0
# After the grace period, how long the streams we interrupted get to send their final event.
FINAL_EVENT_S = 1.0


def worker_config(settings: Settings) -> Any:
    """hypercorn's config for one worker (proxy.edge), from the relay's settings."""
    return hypercorn_config(
        bind=settings.bind,
        backlog=settings.backlog,
        keep_alive_s=settings.keep_alive_s,
        graceful_timeout_s=settings.graceful_timeout_s + HYPERCORN_GRACE_MARGIN_S,
        client_write_timeout_s=settings.client_write_timeout_s,
        fast_paths=fast_paths_allowed(settings.fast_paths),
    )


def build_store(settings: Settings) -> Store:
    """Where limits and upstream health are counted: this worker's memory, or (``--state``) a Redis every worker
    and instance shares, with this worker's memory as the fallback while it does not answer. A ``--state`` URL the
    relay cannot use raises StateURLError (a ValueError: a configuration error)."""
    if not settings.state:
        return LocalStore()
    redis = RedisStore(settings.state, prefix=settings.state_prefix, timeout_s=settings.state_timeout_s,
                       lease_s=settings.state_lease_s)  # fmt: skip
    return FailoverStore(redis, probe_s=settings.state_probe_s)


def check_state(settings: Settings) -> None:
    """At start-up, before any worker: a ``--state`` URL that cannot work, or a Redis that refuses it (its password,
    its user, its database), stops the relay with a StateURLError; a Redis that does not answer yet does not (each
    worker counts locally until it does)."""
    if settings.state:
        for name in ("state_timeout_s", "state_lease_s", "state_probe_s"):
            if not getattr(settings, name) > 0:
                raise StateURLError(f"{name}: must be more than 0, got {getattr(settings, name)}")
        trio.run(check_redis, build_store(settings).redis.address)  # type: ignore[attr-defined]


async def drain(
    streams: Streams, grace_s: float, sock: socket.socket, done: Callable[[], None], writes: ClientWrites | None = None
) -> None:
    """After a shutdown signal: stop accepting, give in-flight requests ``grace_s``, then end the rest.

    Runs once hypercorn's trigger has returned; by then the cancel of hypercorn's accept loop has
    already aborted its wait on ``sock`` (trio aborts waits synchronously), so closing the socket
    here refuses new connections instead of leaving them in the backlog until we exit.

    ``done`` ends serving once no request is in flight: hypercorn 0.18 does not close idle
    keep-alive connections on shutdown (its idle task ends after the first response), so it would
    otherwise wait for them until its own graceful timeout.

    ``writes``: a stream whose client stopped reading cannot take its final event; its write would hold
    the worker until the client write deadline. Once the final events had their time, such writes end
    and their connections are aborted.
    """
    await trio.lowlevel.checkpoint()
    trio.lowlevel.notify_closing(sock)
    sock.close()
    with trio.move_on_after(grace_s):
        await streams.wait_idle()
    streams.stop_all()
    with trio.move_on_after(FINAL_EVENT_S):
        await streams.wait_idle()
    if writes is not None:
        writes.stop()
    done()


log = logging.getLogger("moonrelay")
# Reload the config (proxy/edge/_reload.py); forwarded by the supervisor to every worker. It never stops a relay:
# ignored from start-up (ignore_reload_signal) until serving listens for it, and again once serving ends.
RELOAD_SIGNAL = signal.SIGHUP


def ignore_reload_signal() -> None:
    """SIGHUP's default action ends the process: a relay ignores it while it has nothing to reload yet."""
    signal.signal(RELOAD_SIGNAL, signal.SIG_IGN)


async def reload_on_sighup(reloader: Reloader, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                           ) -> None:  # fmt: skip
    """Reload the config on each SIGHUP, for as long as serving lasts, with one log line each (:class:`Reloader`:
    a config that fails its checks keeps the one in force; requests in flight end on what they started with)."""
    with trio.open_signal_receiver(RELOAD_SIGNAL) as signals:
        task_status.started()
        async for _ in signals:
            await reloader.reload("SIGHUP")


async def serve(
    settings: Settings,
    *,
    sock: socket.socket | None = None,
    shutdown_trigger: Callable | None = None,
    sources: Sources | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the relay in this trio loop; report its base URL (``http://host:port``) once listening.

    ``sources``: where ``settings`` came from, read again by each reload (SIGHUP, :func:`proxy.edge.reload`);
    without them a reload keeps ``settings`` and reads the keys file again.

    With a ``shutdown_trigger``, serving ends when it returns: new connections are refused,
    in-flight chat requests get ``graceful_timeout_s`` to finish, the rest end with a
    ``shutting_down`` error (a final event for streams), then this returns.
    """
    if sock is None:
        host, port = split_bind(settings.bind)
        sock = listen_socket(host, port, settings.backlog)
    host, port = sock.getsockname()[:2]
    config = worker_config(settings)
    # The upstream lives exactly as long as serving: closed on shutdown *and* on cancellation
    # (hypercorn's lifespan shutdown does not run when its task is cancelled).
    streams = Streams(settings.max_streams)
    store = build_store(settings)  # where limits and upstream health are counted (proxy.limits)
    cache = cache_store(settings)  # the response cache's: this worker's memory, or the --state Redis
    # Made here, in the worker: the SDK's export thread does not survive a fork (proxy/tracing).
    tracing = Tracing.from_settings(settings)
    # The store runs in a nursery of its own that outlives serving: every request gives its slots back before it ends.
    async with Upstreams(settings, store=store) as upstreams, _exporting(tracing), trio.open_nursery() as store_nursery:
        run_store = getattr(store, "run", None)
        if run_store is not None:  # the shared store's lease renewals and its probe while Redis is down
            await store_nursery.start(run_store)
        if hasattr(cache, "run"):  # the cache's own connection to the --state Redis
            await store_nursery.start(cache.run)
        async with trio.open_nursery() as nursery:
            keys = KeySource(settings, managed=bool(settings.admin_key_env))
            reloader = Reloader(settings, sources, nursery, keys=keys, streams=streams)
            await reloader.watch(upstreams)  # the transports' timeout watchdogs run beside the server
            transports = list(upstreams.h11_transports())
            heartbeats = None
            if settings.heartbeat_s > 0 and transports:
                heartbeats = Heartbeats(settings.heartbeat_s, streams.bodies)
                await nursery.start(heartbeats.run)
            pump = None
            if settings.pump != "off" and settings.direct_writes != "off" and pump_available and transports:
                pump = Pump()  # streams parked in it are relayed from its task (proxy/transport/_pump.py)
                await nursery.start(pump.run)
            await nursery.start(Reclaim(lambda: streams.calls).run)  # after a burst: its memory back to the system
            admin = admin_api(settings, keys, store)  # the admin API, when on: its keys read before serving
            if admin is not None:
                await nursery.start(admin.managed.run)
            app = create_app(settings, upstreams, streams=streams, heartbeats=heartbeats, store=store, keys=keys,
                             pump=pump, tracing=tracing, cache=cache, admin=admin,
                             connections=open_connections(config))  # fmt: skip
            reloader.attach(app)
            if threading.current_thread() is threading.main_thread():  # (signals reach the main thread only)
                await nursery.start(reload_on_sighup, reloader)
            trigger = None
            if shutdown_trigger is not None:

                async def trigger() -> None:
                    await shutdown_trigger()
                    streams.draining = True
                    writes = client_writes(config)
                    nursery.start_soon(
                        drain, streams, settings.graceful_timeout_s, sock, nursery.cancel_scope.cancel, writes
                    )

            async def hypercorn(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                await serve_app(app, config, sock, shutdown_trigger=trigger, task_status=task_status)
                nursery.cancel_scope.cancel()  # served and drained: stop the watchdog and the heartbeats

            await nursery.start(hypercorn)
            task_status.started(f"http://{url_host(host)}:{port}")
        with trio.CancelScope(shield=True):
            await reloader.aclose()
        store_nursery.cancel_scope.cancel()


@asynccontextmanager
async def _exporting(tracing: Tracing | None) -> AsyncIterator[None]:
    """While serving: on the way out, however it ends, the spans still queued go to the collector (within
    ``Tracing.aclose``'s deadline)."""
    try:
        yield
    finally:
        if tracing is not None:
            with trio.CancelScope(shield=True):
                await tracing.aclose()


def _worker_main(sock: socket.socket, index: int, ready: Ready, settings: Settings, sources: Sources | None) -> None:
    """One forked worker (wire.run_workers): serve on ``sock`` until SIGINT/SIGTERM, then drain.

    The signal receiver stays open until serving ends, so a second stop signal (the terminal's SIGINT to the
    process group, then the parent's forwarded one) waits with the first instead of killing a draining worker.
    """

    async def main() -> None:
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:

            async def stop_signal() -> None:
                async for _ in signals:
                    return

            async with trio.open_nursery() as nursery:
                ready(await nursery.start(partial(serve, settings, sock=sock, shutdown_trigger=stop_signal,
                                                  sources=sources)))  # fmt: skip

    trio.run(main)


def check(settings: Settings) -> None:
    """What the relay checks of its settings before it binds: ValueError with what to fix (``proxy.__main__``
    prints it as one line)."""
    try:
        split_bind(settings.bind)
    except ValueError as exc:
        raise ValueError(f"bind: {exc}") from None
    build_store(settings)  # a --state URL that cannot work fails here, once, not in every worker


def run(settings: Settings, notes: tuple[str, ...] = (), sources: Sources | None = None) -> int:
    """Run the relay until SIGTERM/SIGINT; print ``notes`` (warnings of start-up) and the fd limit once the port is
    bound, then the bound address once every worker listens; SIGHUP reloads the config from ``sources`` (the
    settings' own, see :func:`serve`). Call :func:`check` first.

    :class:`wire.BindError` (the port in use, an unknown host) before anything serves; returns 0 after a stop
    signal, else the status of the worker that ended the run (wire.run_workers).
    """
    ignore_reload_signal()
    soft, hard = raise_nofile_limit()
    per_worker = (soft - 64) // 2

    def bound() -> None:  # after the bind, so that a bind error is the only line
        for note in notes:
            print(f"moonrelay: {note}", file=sys.stderr)
        print(
            f"moonrelay: fd limit {soft} (hard {hard}): each worker relays at most ~{per_worker} streams "
            f"(2 fds each); {settings.workers} worker(s) ~{per_worker * max(1, settings.workers)}",
            file=sys.stderr,
            flush=True,
        )

    host, port = split_bind(settings.bind)
    fast_paths_allowed(settings.fast_paths)  # the version gate's one warning line, here: the workers fork after it
    if settings.gc_tuning != "off":
        tune_gc()  # before the workers fork: they inherit the frozen heap and the thresholds
    if settings.workers <= 1:
        sock = listen_socket(host, port, settings.backlog)  # alone on its port: the kernel refuses a taken one
        bound()

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                url = await nursery.start(partial(serve, settings, sock=sock, shutdown_trigger=wait_for_stop_signal,
                                                  sources=sources))  # fmt: skip
                print(f"moonrelay listening on {url} (1 worker, {describe_upstreams(settings)})", flush=True)

        try:
            trio.run(main)
        finally:
            sock.close()  # serving closed it already, unless it never started
        return 0
    prepare_multiprocess(settings)  # metrics summed over workers: before the fork (proxy/observability/_metrics.py)

    def announce(url: str) -> None:
        print(f"moonrelay listening on {url} ({settings.workers} workers, {describe_upstreams(settings)})", flush=True)

    def worker_exited(index: int, status: int) -> None:
        print(f"moonrelay: worker {index} exited (status {status}); stopping the others", file=sys.stderr, flush=True)

    return run_workers(
        settings.workers,
        _worker_main,
        (settings, sources),
        host=host,
        port=port,
        backlog=settings.backlog,
        # Past hypercorn's own deadline and the final events' second, a worker is stuck: it is killed.
        grace_s=settings.graceful_timeout_s + HYPERCORN_GRACE_MARGIN_S + FINAL_EVENT_S + 1.0,
        on_bound=bound,
        on_ready=announce,
        on_exit=worker_exited,
        forwarded=(RELOAD_SIGNAL,),
    )
