"""The relay's errors in Anthropic's shape, sans I/O: (status, code, message, retry-after) in, a response or a
stream event out.

The body is ``{"type": "error", "error": {"type": ..., "message": ...}}``; the type follows the status as the
Messages API reference lists them (https://docs.anthropic.com/en/api/errors):

    400 invalid_request_error (and any other 4xx)   413 request_too_large      500 api_error (and 502, any 5xx)
    401 authentication_error                         429 rate_limit_error       504 timeout_error
    402 billing_error                                503 → 529 overloaded_error
    403 permission_error
    404 not_found_error

Overload is said with 529 ``overloaded_error``: an upstream's or the relay's 503 becomes it, and so does a 429 whose
code says the service (not the account) is overloaded (Moonshot's ``engine_overloaded_error``, the relay's own
``relay_overloaded``), so that Anthropic clients back off as they do for Anthropic's own overload. A stream that
fails after it started ends with ``event: error`` carrying the same body; ``event: ping`` is the heartbeat.
"""

from __future__ import annotations

import math

from .. import JSON, dumps

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
OVERLOADED_CODES = frozenset({"engine_overloaded_error", "overloaded_error", "relay_overloaded"})
PING = b'event: ping\ndata: {"type":"ping"}\n\n'


def messages_status(status: int, code: str | None = None) -> tuple[int, str]:
    """The status and error type an Anthropic client gets for the relay's ``status`` and ``code``."""
    if status == 503 or code in OVERLOADED_CODES:
        return 529, "overloaded_error"
    kind = TYPES.get(status)
    if kind is None:
        kind = "api_error" if status >= 500 else "invalid_request_error"
    return status, kind


def messages_error_body(status: int, code: str | None, message: str, request_id: str | None = None) -> bytes:
    _, kind = messages_status(status, code)
    body: dict = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return dumps(body)


def messages_error(
    status: int, code: str | None, message: str, retry_after: float | None = None, request_id: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of an error response to a Messages client."""
    out_status, _ = messages_status(status, code)
    headers = {"content-type": JSON}
    if retry_after is not None:
        headers["retry-after"] = str(max(0, math.ceil(retry_after)))
    return out_status, headers, messages_error_body(status, code, message, request_id)


def messages_error_event(status: int, code: str | None, message: str) -> bytes:
    """The last event of a Messages stream that failed after it started."""
    return b"event: error\ndata: " + messages_error_body(status, code, message) + b"\n\n"
