"""An upstream's API keys, used in turn, sans I/O (the caller reads and writes the rests in the store).

Why a pool: a Moonshot account allows at most 1,000 concurrent requests and 10,000 RPM, so a relay
for more users spreads its requests over several accounts' keys. Round robin spreads them evenly;
a key that the upstream answered 429 *rests* (for its Retry-After, within bounds) while the others
serve. Rests live in the store (``proxy.limits``) under ``key:<fingerprint>``, so that with a shared store a
key rests for every worker and instance. A pool of one key never rests: there is no other key to serve
meanwhile, and the relay then behaves as it did with one key (the retry logic decides; a deployment of a model
with others rests instead, :mod:`proxy.routing._candidates`).

Keys are held as ready-made header values and shown only by fingerprint (``repr`` hides the rest).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..auth import fingerprint
from ..protocol import parse_retry_after

DEFAULT_REST_S = 5.0  # a 429 without a readable Retry-After
MAX_REST_S = 300.0  # a longer Retry-After (a daily quota, say) is cut to this: the key is tried again then


@dataclass(slots=True, eq=False)
class Key:
    authorization: bytes = field(repr=False)  # b"Bearer sk-..."
    fingerprint: str  # safe to log


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
    __slots__ = ("keys", "names", "_next")

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = [Key(f"Bearer {k}".encode(), fingerprint(k)) for k in dict.fromkeys(keys) if k]
        self.names = [rest_name(k) for k in self.keys]  # their rests in the store, in order
        self._next = 0

    @classmethod
    def from_env(cls, names: Iterable[str], environ: Mapping[str, str]) -> KeyPool:
        """The keys in these environment variables, in order; unset or empty ones are skipped."""
        return cls(environ.get(name, "") for name in names)

    @property
    def rotating(self) -> bool:
        """Whether a rate-limited key can give way to another one."""
        return len(self.keys) > 1

    def pick(self, rests: Sequence[float] | None = None) -> Key | None:
        """The next key not resting (round robin; ``rests``: each key's seconds of rest left, read from the
        store, or None in a pool that does not rotate); None when the pool has no key at all.

        Raises AllKeysResting when every key rests.
        """
        keys = self.keys
        n = len(keys)
        if n <= 1 or rests is None:
            return keys[0] if keys else None
        start = self._next
        for i in range(n):
            if rests[(start + i) % n] <= 0:
                self._next = (start + i + 1) % n
                return keys[(start + i) % n]
        raise AllKeysResting(min(rests))

    def rest_s(self, retry_after: str | None) -> float:
        """How long a key rests after a 429 (0 in a pool of one, which never rests)."""
        return rest_seconds(retry_after) if self.rotating else 0.0


def rest_name(key: Key) -> str:
    """A key's rest in the store: named by fingerprint, so a key shared by two upstreams rests for both."""
    return f"key:{key.fingerprint}"


def keys_wait(rests: Sequence[float]) -> float:
    """Seconds until the first key may be used again (0 when one may be used now, or there is none)."""
    return max(0.0, min(rests)) if rests else 0.0
