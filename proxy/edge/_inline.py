"""quart-trio's HTTP call, leaner: the request handled in the calling task, and no body task when the
body is small and already in.

quart-trio runs each request as two tasks in a nursery of its own, one receiving the body (and the
client's disconnect), one handling the request, while the calling task (hypercorn's) waits in the
nursery. Here:

- the calling task handles the request itself (inside that nursery when there is one, so a disconnect
  still cancels it and an error still ends both);
- a body of at most ``INLINE_BODY_MAX`` bytes (a chat request; no body at all) is received in this
  task before the handler runs. Then nothing is left to receive but the disconnect, and nothing
  needs a task for it: the connection's read loop (:class:`._connection.TCPServer`, which sees the
  client's EOF first) cancels the request directly. A larger or streamed body (an upload passed
  through), or a connection that cannot watch (TLS), takes quart-trio's way;
- the ``Request`` is dropped once the handler returned its response, before the body streams.

Why: each task held under an open stream is a Task, a Context, a cancel status and its coroutine frames, memory
per open stream. Plugged in through Quart's own
extension point, ``app.asgi_http_class``.
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart.utils import encode_headers
from quart.wrappers import Request, Response
from quart.wrappers.response import DataBody
from quart_trio.asgi import TrioASGIHTTPConnection

from ._direct import CONNECTION, current_writer
from ._taken import FALLBACKS, TAKEN

INLINE_BODY_MAX = 64 * 1024
INLINE_WAIT_S = 1.0  # a client slower than this sends the rest to quart-trio's body task


class InlineHTTPConnection(TrioASGIHTTPConnection):
    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self._create_request_from_scope(send)
        server = CONNECTION.get()
        if server is not None and getattr(server, "watches_eof", False) and _small(request):
            complete = await _receive_body(request, receive)
            if complete is None:
                return  # the client left before its request was in
            if complete:
                TAKEN.inline_call += 1
                # The request, cancelled by the connection's read loop if the client leaves. All in this
                # frame: each frame here is held under the open stream.
                with trio.CancelScope() as scope:
                    server.eof_scope = scope
                    try:
                        response = await self.app.handle_request(request)
                        del request  # its headers and body are not needed while the response streams
                        timeout = self._timeout(response)
                        if timeout is None:  # the relay's setting: no cancel scope held under every stream
                            await self._send_response(send, response)
                        else:
                            with trio.move_on_after(timeout):
                                await self._send_response(send, response)
                    finally:
                        server.eof_scope = None
                return
            FALLBACKS["inline_call: slow body"] += 1
        elif server is None or not getattr(server, "watches_eof", False):
            FALLBACKS["inline_call: connection does not watch EOF"] += 1
        else:
            FALLBACKS["inline_call: large or streamed body"] += 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.handle_messages, nursery, request, receive)
            await self.handle_request(nursery, request, send)

    async def _send_response(self, send: ASGISendCallable, response: Any) -> None:
        """Quart's send of a response; a relay body (:meth:`proxy.stream.SSEBody.relay`) is handed a writer for the
        client's socket instead of being iterated, where the connection allows direct writes (:mod:`._direct`)."""
        whole = getattr(response, "response", None)
        if type(whole) is DataBody:
            await self._send_whole(send, response, whole)
            return
        body = getattr(whole, "iter", None)
        relay = getattr(body, "relay", None)
        if relay is None or not self.app.config.get("MOONRELAY_DIRECT_WRITES"):
            await super()._send_response(send, response)
            return
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": encode_headers(response.headers)})  # fmt: skip
        writer = current_writer(self.scope["method"])
        async with response.response:  # its end closes the body, whatever happened: the upstream request ends
            if writer is None:
                async for data in response.response:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            else:
                await relay(writer)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_whole(self, send: ASGISendCallable, response: Any, body: DataBody) -> None:
        """A response whose body is all in memory (not streamed): one body message, and the head held on the
        connection until the body's write carries it (:class:`._tcpserver.TCPServer`): one ``send`` for the
        whole response instead of head, body and end apart."""
        server = CONNECTION.get()
        if server is not None and getattr(server, "pending", None) == b"" and hasattr(server, "hold_head"):
            server.hold_head = True
            TAKEN.whole_response += 1
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": encode_headers(response.headers)})  # fmt: skip
        await send({"type": "http.response.body", "body": body.data[body.begin : body.end], "more_body": False})

    def _timeout(self, response: Any) -> float | None:
        """quart-trio's response timeout rule (the relay sets ``RESPONSE_TIMEOUT`` to None)."""
        if isinstance(response, Response) and response.timeout != Ellipsis:
            return response.timeout  # type: ignore[return-value]
        return self.app.config["RESPONSE_TIMEOUT"]


def _small(request: Request) -> bool:
    if request.headers.get("transfer-encoding") is not None:
        return False
    length = request.content_length
    return length is None or length <= INLINE_BODY_MAX


async def _receive_body(request: Request, receive: ASGIReceiveCallable) -> bool | None:
    """Read the body's messages into ``request``: True once complete, False if it is slow, None if the client left."""
    with trio.move_on_after(INLINE_WAIT_S):
        while True:
            message = await receive()
            if message["type"] == "http.request":
                request.body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    request.body.set_complete()
                    return True
            elif message["type"] == "http.disconnect":
                return None
    return False
