"""Errors' bodies and the final events of streams that fail after they started, in OpenAI's shape (the tree of
the relay's errors and the transport's mapping: :mod:`proxy.errors`)."""

from __future__ import annotations

import json

import httpx

from ..errors import upstream_failure

JSON = "application/json"


def error_body(message: str, type_: str, code: str | None) -> dict:
    return {"error": {"message": message, "type": type_, "code": code}}


def map_transport_error(exc: httpx.TransportError) -> tuple[int, dict]:
    """(status, body) for a failure to talk to the upstream (:func:`proxy.errors.upstream_failure`)."""
    failed = upstream_failure(exc)
    return failed.status, failed.body()


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
