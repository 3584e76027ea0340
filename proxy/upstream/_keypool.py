"""An upstream's API keys, used in turn, sans I/O (the caller passes the clock).

Why a pool: a Moonshot account allows at most 1,000 concurrent requests and 10,000 RPM, so a relay
for more users spreads its requests over several accounts' keys. Round robin spreads them evenly;
a key that the upstream answered 429 *rests* (for its Retry-After, within bounds) while the others
serve. A pool of one key never rests: there is no other key to serve meanwhile, and the relay then
behaves as it did with one key (the retry logic decides).

Keys are held as ready-made header values and shown only by fingerprint (``repr`` hides the rest).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..auth import fingerprint
from ..protocol import parse_retry_after

DEFAULT_REST_S = 5.0  # a 429 without a readable Retry-After
MAX_REST_S = 300.0  # a longer Retry-After (a daily quota, say) is cut to this: the key is tried again then


@dataclass(slots=True, eq=False)
class Key:
    authorization: bytes = field(repr=False)  # b"Bearer sk-..."
    fingerprint: str  # safe to log
    rest_until: float = -math.inf


class AllKeysResting(Exception):
    """Every key of a pool is resting after a 429; ``wake_in_s`` until the first one may be used again."""

    def __init__(self, wake_in_s: float) -> None:
        super().__init__(f"every upstream key is rate limited for {wake_in_s:.1f} s more")
        self.wake_in_s = wake_in_s


def rest_seconds(retry_after: str | None) -> float:
    """How long a key rests after a 429 with this Retry-After header (or none)."""
    asked = parse_retry_after(retry_after)
    if asked is None:
        return DEFAULT_REST_S
    return min(asked, MAX_REST_S)


class KeyPool:
    __slots__ = ("keys", "_next")

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = [Key(f"Bearer {k}".encode(), fingerprint(k)) for k in dict.fromkeys(keys) if k]
        self._next = 0

    @classmethod
    def from_env(cls, names: Iterable[str], environ: Mapping[str, str]) -> KeyPool:
        """The keys in these environment variables, in order; unset or empty ones are skipped."""
        return cls(environ.get(name, "") for name in names)

    @property
    def rotating(self) -> bool:
        """Whether a rate-limited key can give way to another one."""
        return len(self.keys) > 1

    def pick(self, now: float) -> Key | None:
        """The next key not resting (round robin); None when the pool has no key at all.

        Raises AllKeysResting when every key rests.
        """
        keys = self.keys
        n = len(keys)
        if n <= 1:
            return keys[0] if keys else None
        start = self._next
        for i in range(n):
            key = keys[(start + i) % n]
            if key.rest_until <= now:
                self._next = (start + i + 1) % n
                return key
        raise AllKeysResting(self.wake_in(now))

    def rest(self, key: Key | None, retry_after: str | None, now: float) -> float:
        """Rest ``key`` after a 429; the seconds it rests (0 in a pool of one, which never rests)."""
        if key is None or not self.rotating:
            return 0.0
        seconds = rest_seconds(retry_after)
        key.rest_until = max(key.rest_until, now + seconds)
        return seconds

    def ready(self, now: float) -> bool:
        """Whether some key may be used now."""
        return not self.rotating or any(k.rest_until <= now for k in self.keys)

    def wake_in(self, now: float) -> float:
        """Seconds until the first resting key may be used again (0 when one may be used now)."""
        if not self.keys:
            return 0.0
        return max(0.0, min(k.rest_until for k in self.keys) - now)
