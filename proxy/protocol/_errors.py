"""Errors at the relay's boundary, mapped once into OpenAI-shaped bodies.

    httpx.TransportError
    ├── ConnectError, ReadError, WriteError, RemoteProtocolError  → 502 upstream_unavailable / upstream_error
    ├── ConnectTimeout, ReadTimeout, WriteTimeout                 → 504 upstream_connect_timeout / upstream_timeout
    └── PoolTimeout                                               → 503 upstream_busy

Refusals made by the relay itself (not the upstream) use the same shape:

    400 invalid_request_error/*        bad JSON, wrong types, invalid UTF-8
    401 invalid_request_error/invalid_api_key   client keys configured, none or a wrong one given
    413 invalid_request_error/request_too_large
    415 invalid_request_error/unsupported_media_type
    429 rate_limit_error/relay_overloaded        --max-streams reached (Retry-After: 1)
    503 server_error/shutting_down               draining after SIGTERM (a stream gets it as its last event)

A client sees what failed and where, never a traceback, an internal address or a key.
"""

from __future__ import annotations

import json

import httpx

JSON = "application/json"


def error_body(message: str, type_: str, code: str | None) -> dict:
    return {"error": {"message": message, "type": type_, "code": code}}


def map_transport_error(exc: httpx.TransportError) -> tuple[int, dict]:
    """(status, body) for a failure to talk to the upstream."""
    if isinstance(exc, httpx.ConnectTimeout):
        return 504, error_body(
            "Timed out connecting to the upstream API.", "upstream_error", "upstream_connect_timeout"
        )
    if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
        return 504, error_body(f"The upstream API did not answer in time: {exc}.", "upstream_error", "upstream_timeout")
    if isinstance(exc, httpx.PoolTimeout):
        return 503, error_body("All upstream connections are busy; retry later.", "upstream_error", "upstream_busy")
    if isinstance(exc, httpx.ConnectError):
        return 502, error_body("Could not connect to the upstream API.", "upstream_error", "upstream_unavailable")
    return 502, error_body(f"The upstream API failed: {exc}.", "upstream_error", "upstream_error")


def sse_error_event(exc: httpx.TransportError) -> bytes:
    """The final event of a stream that failed after it started."""
    _, body = map_transport_error(exc)
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


MALFORMED = error_body(
    "The upstream sent an event that is not valid JSON; the stream was stopped.", "upstream_error", "upstream_malformed"
)
MALFORMED_SSE = b"data: " + json.dumps(MALFORMED, separators=(",", ":")).encode() + b"\n\n"
MALFORMED_NDJSON = json.dumps(MALFORMED, separators=(",", ":")).encode() + b"\n"

SHUTTING_DOWN = error_body("The relay is shutting down; retry the request.", "server_error", "shutting_down")
SHUTDOWN_SSE = b"data: " + json.dumps(SHUTTING_DOWN, separators=(",", ":")).encode() + b"\n\n"
SHUTDOWN_NDJSON = json.dumps(SHUTTING_DOWN, separators=(",", ":")).encode() + b"\n"
