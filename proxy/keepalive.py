"""Keep-alive timeouts that work under quart-trio + hypercorn 0.18.

Measured here: once a connection has served one request, hypercorn's keep-alive timer never fires
under a QuartTrio app (a bare ASGI app under the same hypercorn closes an idle connection after
``keep_alive_timeout``), so idle client connections hold their fds until the client leaves. Two
causes, two small fixes:

1. hypercorn re-arms the timer from inside the app's last ``send``, and quart-trio has already
   cancelled that task (it saw ``http.disconnect``), so the new timer task dies at once:
   ``shield_last_send`` sends each response's last body message shielded. hypercorn already
   shields the socket write itself, so this adds no new way to block.
2. With a live timer, a connection the *client* closes would linger until the timer runs out
   (hypercorn does not stop it on EOF; in the 1,000-client test each closed connection then kept
   1 fd and 2 tasks): ``TCPServer`` stops the timer when the read side ends.

The same ``TCPServer`` also names itself in a context variable for the app's tasks, so a streamed
body can write its chunks straight to the socket (:mod:`proxy.direct`).
"""

from __future__ import annotations

from collections.abc import Callable

import hypercorn.trio.run
import trio
from hypercorn.trio.tcp_server import TCPServer as _HypercornTCPServer

from .direct import CONNECTION


def shield_last_send(app: Callable) -> Callable:
    async def wrapped(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_last_shielded(message: dict) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        await app(scope, receive, send_last_shielded)

    return wrapped


class TCPServer(_HypercornTCPServer):
    async def run(self) -> None:
        CONNECTION.set(self)  # this connection's task only; the app's tasks spawned from it inherit it
        await super().run()

    async def _read_data(self) -> None:
        try:
            await super()._read_data()
        finally:
            with trio.CancelScope(shield=True):
                await self.idle_task.stop()  # the peer is gone: no keep-alive to time


def install() -> None:
    """Make hypercorn's trio worker use the TCPServer above (hypercorn builds it by module name)."""
    hypercorn.trio.run.TCPServer = TCPServer  # type: ignore[misc]
