"""When to try the upstream again, sans I/O.

Only before the client has seen a byte, only for failures that say "nothing happened, try later":
connect errors and 429/502/503, and 529 (Anthropic's "overloaded", its 503). A Retry-After longer than the
relay is willing to wait is relayed to the client instead of being waited out (the client can wait better than a
held connection can).
"""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 502, 503, 529})
BASE_BACKOFF_S = 0.25


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def retry_delay(attempt: int, retry_after: str | None, cap_s: float, rng: random.Random | None = None) -> float | None:
    """The wait before attempt ``attempt + 1`` (``attempt`` counts from 0), or None: do not retry.

    Retry-After is honoured as given when it fits under ``cap_s``; without it, exponential backoff
    from 0.25 s with jitter (half to full), so a burst of failed requests does not return in step.
    """
    asked = parse_retry_after(retry_after)
    if asked is not None:
        return asked if asked <= cap_s else None
    backoff = BASE_BACKOFF_S * (2**attempt)
    return min(cap_s, backoff * (0.5 + 0.5 * (rng or random).random()))
