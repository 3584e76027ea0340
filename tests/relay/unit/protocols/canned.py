"""A one-route HTTP server on an ephemeral port that answers whatever bytes a test hands it, so that the official
SDK clients read the translators' output over a real socket, with their own transport, SSE decoder and
accumulators, and the requests they send can be checked as they left the client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Canned:
    url: str
    status: int = 200
    content_type: str = "application/json"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, bytes]] = field(default_factory=list)  # (path, body) of each request received

    def answer(self, body: bytes, *, status: int = 200, content_type: str = "application/json", **headers: str) -> None:
        self.body, self.status, self.content_type, self.headers = body, status, content_type, headers


@contextmanager
def canned_server() -> Iterator[Canned]:
    canned = Canned(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self._answer(b"")

        def do_POST(self) -> None:  # noqa: N802
            self._answer(self.rfile.read(int(self.headers.get("content-length", 0))))

        def _answer(self, body: bytes) -> None:
            canned.requests.append((self.path, body))
            self.send_response(canned.status)
            self.send_header("content-type", canned.content_type)
            self.send_header("content-length", str(len(canned.body)))
            for name, value in canned.headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(canned.body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        canned.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield canned
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
