"""Minimal servers that answer a streaming chat request with one SSE event: the frameworks' own floor.

``python -m bench.floor_servers KIND PORT`` serves ``POST /v1/chat/completions`` on 127.0.0.1:PORT
(any body, read to its end) with ``200 text/event-stream``, one ``data:`` event and ``data: [DONE]``,
chunked, keep-alive, as the simulated upstream does. KIND:

- ``h11``: trio + h11, one task per connection (what the simulator is built on);
- ``hypercorn``: a bare ASGI app under hypercorn's trio worker;
- ``quart-trio``: a QuartTrio app with the one route, under hypercorn's trio worker.

No relaying, no validation, no logging: whatever these cost per request, a relay built on them
costs at least as much (bench/floor.py).
"""

from __future__ import annotations

import sys
from functools import partial

import h11
import trio

EVENT = (
    b'data: {"id":"chatcmpl-floor","object":"chat.completion.chunk","created":0,"model":"moonshot-v1-8k",'
    b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'
)
DONE = b"data: [DONE]\n\n"
HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def _h11_connection(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                conn.receive_data(data)
                continue
            if type(event) is h11.EndOfMessage:
                out = conn.send(h11.Response(status_code=200, headers=HEADERS))
                out += conn.send(h11.Data(data=EVENT)) + conn.send(h11.Data(data=DONE))
                out += conn.send(h11.EndOfMessage())
                try:
                    await stream.send_all(out)
                except trio.BrokenResourceError:
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
            elif type(event) is h11.ConnectionClosed or event is h11.PAUSED:
                return


async def serve_h11(port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; reports the bound port (``port`` 0 picks one)."""
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1", backlog=4096)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(_h11_connection, listeners)


async def asgi_app(scope: dict, receive, send) -> None:  # noqa: ANN001 - the ASGI signature
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": EVENT, "more_body": True})
    await send({"type": "http.response.body", "body": DONE, "more_body": False})


def quart_app():  # noqa: ANN201 - Quart is imported only for this kind
    from quart import Response, request
    from quart_trio import QuartTrio

    app = QuartTrio("floor")
    app.config["RESPONSE_TIMEOUT"] = None

    @app.post("/v1/chat/completions")
    async def chat() -> Response:
        await request.get_data()

        async def body():  # noqa: ANN202
            yield EVENT
            yield DONE

        return Response(body(), content_type="text/event-stream", headers={"cache-control": "no-cache"})

    return app


async def serve_hypercorn(app: object, port: int) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.backlog = 4096
    config.accesslog = None
    await serve(app, config)  # type: ignore[arg-type]


def main(argv: list[str]) -> None:
    kind, port = argv[0], int(argv[1])
    if kind == "h11":
        trio.run(serve_h11, port)
    elif kind == "hypercorn":
        trio.run(partial(serve_hypercorn, asgi_app, port))
    elif kind == "quart-trio":
        trio.run(partial(serve_hypercorn, quart_app(), port))
    else:
        raise SystemExit(f"unknown kind {kind!r}: h11, hypercorn or quart-trio")


if __name__ == "__main__":
    main(sys.argv[1:])
