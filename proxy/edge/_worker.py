"""hypercorn's trio worker serving a Quart app on one listening socket, with or without the fast paths."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from quart import Quart, Request
from quart_trio.wrappers.request import TrioRequest

from ._context import light_contexts
from ._direct import ClientWrites
from ._inline import InlineHTTPConnection
from ._taken import TAKEN
from ._tcpserver import OpenConnections, install


def hypercorn_config(
    *, bind: str, backlog: int, keep_alive_s: float, graceful_timeout_s: float, client_write_timeout_s: float,
    fast_paths: bool,
) -> Config:  # fmt: skip
    """hypercorn's config for one relay worker; ``fast_paths`` picks our connection class (``_connection``)."""
    config = Config()
    config.bind = [bind]
    config.backlog = backlog
    config.keep_alive_timeout = keep_alive_s
    config.keep_alive_max_requests = 1_000_000  # closed-loop clients reuse one connection for many sessions
    config.graceful_timeout = graceful_timeout_s
    config.accesslog = None
    config.errorlog = "-"
    # Read by each of our connections (_tcpserver.TCPServer): the client write deadline, and the writes that
    # wait on it; and which connection class to build.
    config.client_writes = ClientWrites(client_write_timeout_s)  # type: ignore[attr-defined]
    config.fast_paths = fast_paths  # type: ignore[attr-defined]
    config.connections = OpenConnections()  # type: ignore[attr-defined]  # counted by each connection
    return config


def client_writes(config: Config) -> ClientWrites:
    """The worker's client write deadline (shutdown ends the writes waiting on it)."""
    return config.client_writes  # type: ignore[attr-defined,no-any-return]


def open_connections(config: Config) -> OpenConnections:
    """The worker's count of open client connections."""
    return config.connections  # type: ignore[attr-defined,no-any-return]


def prepare_app(app: Quart, *, fast_paths: bool) -> None:
    """Quart's side of the fast paths: each request handled inline in hypercorn's task (``_inline``), under a
    lighter request context where its path is a static route's (``_context``)."""
    if fast_paths:
        app.asgi_http_class = InlineHTTPConnection  # type: ignore[assignment]
        app.request_context = light_contexts(app)  # type: ignore[method-assign]


def request_class(limit_for: Callable[[str], int | None]) -> type[Request]:
    """quart-trio's request, with the body limit ``limit_for(path)`` where that is not None.

    Quart sizes a request's body limit when it makes the request, before any view runs.
    """

    class RelayRequest(TrioRequest):
        def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
            limit = limit_for(path)
            if limit is not None:
                kwargs["max_content_length"] = limit
            super().__init__(method, scheme, path, *args, **kwargs)

    return RelayRequest


async def serve_app(
    app: Quart,
    config: Config,
    sock: socket.socket,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``sock`` with hypercorn's trio worker until ``shutdown_trigger`` returns and it drained.

    With the fast paths, hypercorn calls the app's outer ASGI layer (``app.asgi_app``, which takes hypercorn's
    two extra arguments) itself: no ``ASGIWrapper`` and ``Quart.__call__`` frames held under every open stream.
    Without, it gets hypercorn's own wrapper around the Quart app, as any ASGI app would.
    """
    fast = getattr(config, "fast_paths", False)
    install()
    if fast:
        TAKEN.direct_app_call += 1
        asgi: Any = app.asgi_app
    else:
        asgi = ASGIWrapper(app)
    await worker_serve(asgi, config, sockets=Sockets([], [sock], []), shutdown_trigger=shutdown_trigger,
                       task_status=task_status)  # fmt: skip
