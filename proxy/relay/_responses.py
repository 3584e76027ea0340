"""What the relay passes back around upstream answers: the upstream headers worth relaying, and the refusal for
a pool whose every key is resting."""

from __future__ import annotations

import math

import httpx

from ..errors import Refused
from ..routing import AllKeysResting, the_model

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
