"""Client keys: who may use the relay.

Keys are held only as SHA-256 digests and compared with ``hmac.compare_digest`` against every
configured digest (no early exit), so neither the comparison time nor a memory dump gives a key
away. Logs show a key's fingerprint (the first 8 hex digits of its digest), never the key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from .config import Settings


def fingerprint(key: str) -> str:
    """A short, non-reversible name for ``key`` that is safe to log."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def parse_keys(text: str) -> list[str]:
    """Keys from a keys file: one per line; blank lines and lines starting with ``#`` are skipped."""
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(line)
    return keys


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class ClientKeys:
    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(hashlib.sha256(k.encode()).digest() for k in keys)

    def __len__(self) -> int:
        return len(self._digests)

    def allows(self, token: str | None) -> bool:
        if token is None:
            return False
        digest = hashlib.sha256(token.encode()).digest()
        ok = False
        for known in self._digests:  # all of them, whatever matched first
            ok |= hmac.compare_digest(known, digest)
        return ok


def load_client_keys(settings: Settings) -> ClientKeys | None:
    """The configured client keys, or None when the relay is open.

    A keys file that is given but holds no key is an error: a typo must not open the relay. So is
    ``metrics_auth = "on"`` without keys: it would leave ``/metrics`` open while saying it is not.
    """
    if settings.metrics_auth not in ("on", "off"):
        raise ValueError(f"metrics_auth: expected on or off, got {settings.metrics_auth!r}")
    keys: list[str] = []
    if settings.api_keys:
        keys += [k.strip() for k in settings.api_keys.split(",") if k.strip()]
    if settings.api_keys_file:
        with open(settings.api_keys_file, encoding="utf-8") as f:
            from_file = parse_keys(f.read())
        if not from_file:
            raise ValueError(f"api_keys_file {settings.api_keys_file!r} holds no key")
        keys += from_file
    if not keys and settings.metrics_auth == "on":
        raise ValueError("metrics_auth on needs client keys (api_keys or api_keys_file)")
    return ClientKeys(keys) if keys else None
