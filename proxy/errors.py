"""Every error the relay answers a request with, as one tree. Raised where the decision is made, rendered once, at
the edge, in the client protocol's own shape (OpenAI's ``{"error": {message, type, code}}``, the seed's NDJSON
line, Anthropic Messages, OpenAI Responses).

    RelayError                 status, type, code, message, retry_after, headers
    ├── InvalidRequest         400 invalid_request_error: what the client sent (404, 405, 413, 415 by ``status``)
    ├── Refused                the relay or its upstreams cannot take the request now; Retry-After
    │                          429 rate_limit_error, 503 server_error (client-key limits, --max-streams, an upstream's
    │                          max_concurrent, every candidate open or resting, every key resting, draining)
    └── UpstreamFailed         upstream_error: talking to the upstream failed before the answer started
                               502 (connect, read, protocol, a malformed answer), 503 (pool busy), 504 (timeouts)

A failure after an answer started is told in-band (the stream's final error event), from the same error.
A client sees what failed and where, never a traceback, an internal address or a key.
"""

from __future__ import annotations

import httpx


class RelayError(Exception):
    """An error the relay answers with instead of relaying: nothing went upstream, or nothing usable came back."""

    status = 500
    type = "server_error"

    def __init__(self, message: str, code: str, status: int | None = None, *, retry_after: int | None = None,
                 type_: str | None = None, headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.code = code
        if status is not None:
            self.status = status
        if type_ is not None:
            self.type = type_
        self.retry_after = retry_after
        self.headers = headers or {}

    @property
    def message(self) -> str:
        return str(self)

    def body(self) -> dict:
        """The OpenAI-shaped body (chat completions, the seed's NDJSON line, pass-through)."""
        return {"error": {"message": str(self), "type": self.type, "code": self.code}}

    def response_headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return self.headers
        return {"retry-after": str(self.retry_after), **self.headers}


class InvalidRequest(RelayError):
    """A request the relay refuses for what it is (400 unless ``status`` says otherwise); nothing went upstream."""

    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, code: str = "invalid_request", status: int = 400) -> None:
        super().__init__(message, code, status)


class Refused(RelayError):
    """A request the relay cannot take now (429, or 503); nothing went upstream. ``retry_after`` in seconds."""

    status = 429

    def __init__(self, message: str, code: str, status: int = 429, *, retry_after: int = 1,
                 type_: str | None = None, headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message, code, status, retry_after=retry_after, headers=headers,
                         type_=type_ or ("rate_limit_error" if status == 429 else "server_error"))  # fmt: skip


class UpstreamFailed(RelayError):
    """Talking to the upstream failed before its answer started (the transport's error, mapped here once)."""

    status = 502
    type = "upstream_error"

    def __init__(self, message: str, code: str, status: int = 502) -> None:
        super().__init__(message, code, status)


def upstream_failure(exc: httpx.TransportError) -> UpstreamFailed:
    """The relay's error for a failure to talk to the upstream.

        httpx.TransportError
        ├── ConnectError, ReadError, WriteError, RemoteProtocolError  → 502 upstream_unavailable / upstream_error
        ├── ConnectTimeout, ReadTimeout, WriteTimeout                 → 504 upstream_connect_timeout / upstream_timeout
        └── PoolTimeout                                               → 503 upstream_busy
    """
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamFailed("Timed out connecting to the upstream API.", "upstream_connect_timeout", 504)
    if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
        return UpstreamFailed(f"The upstream API did not answer in time: {exc}.", "upstream_timeout", 504)
    if isinstance(exc, httpx.PoolTimeout):
        return UpstreamFailed("All upstream connections are busy; retry later.", "upstream_busy", 503)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamFailed("Could not connect to the upstream API.", "upstream_unavailable")
    return UpstreamFailed(f"The upstream API failed: {exc}.", "upstream_error")


def shutting_down() -> Refused:
    return Refused("The relay is shutting down; retry the request.", "shutting_down", 503)
