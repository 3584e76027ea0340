"""The Quart responses the relay builds itself around upstream answers: OpenAI-shaped errors (JSON, or
one NDJSON line on the seed's route) and the upstream headers worth passing back."""

from __future__ import annotations

import json
import math

import httpx
from quart import Response

from ..protocol import JSON, error_body, map_transport_error
from ..routing import AllKeysResting, the_model

# Response headers worth passing back from the upstream (rate limits matter to callers).
RELAYED = ("retry-after", "x-request-id", "x-sim-chunks")


def relayed_headers(response: httpx.Response, also: frozenset[str] = frozenset()) -> dict[str, str]:
    out = {}
    for name, value in response.headers.items():
        if name in RELAYED or name.startswith("x-ratelimit-") or name in also:
            out[name] = value
    return out


def json_error(status: int, body: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, content_type=JSON, headers=headers)


def ndjson_error(status: int, body: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body) + "\n", status=status, content_type="application/x-ndjson", headers=headers)


def error_response(status: int, body: dict, headers: dict[str, str] | None = None, *, ndjson: bool) -> Response:
    return ndjson_error(status, body, headers) if ndjson else json_error(status, body, headers)


def upstream_error(exc: httpx.TransportError, *, ndjson: bool) -> Response:
    status, err = map_transport_error(exc)
    return error_response(status, err, ndjson=ndjson)


def keys_resting(exc: AllKeysResting, model: str | None, *, ndjson: bool) -> Response:
    """429 without calling the upstream: it rate limited every key of the pool, and none has rested enough."""
    wait = max(1, math.ceil(exc.wake_in_s))
    body = error_body(
        f"Every API key for {the_model(model)} is rate limited; retry in {wait} s.",
        "rate_limit_error",
        "upstream_rate_limited",
    )
    return error_response(429, body, {"retry-after": str(wait)}, ndjson=ndjson)
