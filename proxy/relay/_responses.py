"""What the relay passes back around upstream answers: the upstream headers worth relaying, a body read whole, the
refusal for a pool whose every key is resting and for a model no upstream serves in the client's protocol."""

from __future__ import annotations

import math

import httpx

from ..errors import InvalidRequest, Refused, upstream_failure
from ..routing import AllKeysResting, Upstream, the_model
from ..transport import read_body

# Response headers worth passing back from the upstream (rate limits matter to callers).
RELAYED = ("retry-after", "x-request-id", "x-sim-chunks")


def relayed_headers(response: httpx.Response, also: frozenset[str] = frozenset()) -> dict[str, str]:
    out = {}
    for name, value in response.headers.items():
        if name in RELAYED or name.startswith("x-ratelimit-") or name in also:
            out[name] = value
    return out


def keys_resting(exc: AllKeysResting, model: str | None) -> Refused:
    """429 without calling the upstream: it rate limited every key of the pool, and none has rested enough."""
    wait = max(1, math.ceil(exc.wake_in_s))
    return Refused(f"Every API key for {the_model(model)} is rate limited; retry in {wait} s.",
                   "upstream_rate_limited", retry_after=wait)  # fmt: skip


def streaming(relayed: dict[str, str]) -> dict[str, str]:
    """The headers of a streamed answer: no caching, and nginx in front of the relay told not to buffer either."""
    relayed["cache-control"] = "no-cache"
    relayed["x-accel-buffering"] = "no"
    return relayed


async def read_all(response: httpx.Response) -> bytes:
    """An answer's whole body, the response closed; a failure while reading is the relay's error."""
    try:
        return await read_body(response)
    except httpx.TransportError as exc:
        raise upstream_failure(exc) from None
    finally:
        await response.aclose()


def other_protocol(model: str, upstream: Upstream) -> InvalidRequest:
    """400 for a request whose model only upstreams of another protocol serve, which this route cannot reach."""
    return InvalidRequest(f"{the_model(model).capitalize()} is served over the {upstream.config.api!r} API, which "
                          "this route does not translate to.", "unsupported_protocol")  # fmt: skip
