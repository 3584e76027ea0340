"""Client keys: who may use the relay, and with which limits (:class:`proxy.limits.ClientKey`).

Keys are held only as SHA-256 digests and compared with ``hmac.compare_digest`` against every
configured digest (no early exit), so neither the comparison time nor a memory dump gives a key
away. Logs show a key's name or fingerprint (the first 8 hex digits of its digest), never the key.

:class:`KeySource` holds the keys in force; a reload (SIGHUP) reads the file again: one that does not parse, or
that changed while it was read (a writer still at work: files are to be replaced by a rename), is refused with a
log line and the keys in force stay.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Iterable
from typing import IO

from .config import Settings
from .limits import ClientKey, KeysFileError, defaults, parse_keys_file, with_defaults


def fingerprint(key: str) -> str:
    """A short, non-reversible name for ``key`` that is safe to log."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def parse_keys(text: str) -> list[str]:
    """The keys of a keys file (their limits are :func:`proxy.limits.parse_keys_file`'s)."""
    return [key for key, _ in parse_keys_file(text)]


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class ClientKeys:
    """The configured keys: plain keys (the default limits) or ``(key, ClientKey)`` pairs."""

    __slots__ = ("_digests", "_limits")

    def __init__(self, keys: Iterable[str | tuple[str, ClientKey]]) -> None:
        pairs = [(k, with_defaults(k, ClientKey())) if isinstance(k, str) else k for k in keys]
        self._digests = tuple(hashlib.sha256(k.encode()).digest() for k, _ in pairs)
        self._limits = tuple(limits for _, limits in pairs)

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def limited(self) -> int:
        """How many keys have a limit."""
        return sum(1 for limits in self._limits if limits.limited)

    def identify(self, token: str | None) -> ClientKey | None:
        """The key ``token`` is, with its limits; None when it is none of them."""
        if token is None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for known, limits in zip(self._digests, self._limits, strict=True):  # all of them, whatever matched first
            if hmac.compare_digest(known, digest):
                found = limits
        return found

    def allows(self, token: str | None) -> bool:
        return self.identify(token) is not None


def load_client_keys(settings: Settings) -> ClientKeys | None:
    """The configured client keys, or None when the relay is open.

    A keys file that is given but holds no key is an error: a typo must not open the relay. So is one that does
    not parse (:class:`proxy.limits.KeysFileError`), and ``metrics_auth = "on"`` without keys: it would leave
    ``/metrics`` open while saying it is not.
    """
    if settings.metrics_auth not in ("on", "off"):
        raise ValueError(f"metrics_auth: expected on or off, got {settings.metrics_auth!r}")
    base = defaults(settings.key_rpm, settings.key_tpm, settings.key_concurrent, settings.key_budget)
    keys: list[tuple[str, ClientKey]] = []
    if settings.api_keys:
        keys += [(k.strip(), with_defaults(k.strip(), base)) for k in settings.api_keys.split(",") if k.strip()]
    if settings.api_keys_file:
        from_file = parse_keys_file(read_keys_file(settings.api_keys_file), base, settings.api_keys_file)
        if not from_file:
            raise KeysFileError(f"api_keys_file {settings.api_keys_file!r} holds no key")
        keys += from_file
    if not keys and settings.metrics_auth == "on":
        raise ValueError("metrics_auth on needs client keys (api_keys or api_keys_file)")
    return ClientKeys(keys) if keys else None


def _read(f: IO[str]) -> str:
    return f.read()


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def read_keys_file(path: str) -> str:
    """The keys file's text, read whole: a KeysFileError if it cannot be read, or if it is a regular file that
    changed while it was read (another inode, size or modification time after than before), since a writer
    still at work leaves half a line. A pipe (``--api-keys-file <(...)``) is read as it comes."""
    try:
        before = os.stat(path)
        with open(path, encoding="utf-8") as f:
            text = _read(f)
            during = os.fstat(f.fileno())
        after = os.stat(path)
    except OSError as exc:
        raise KeysFileError(f"api_keys_file {path!r}: {exc.strerror or exc}") from exc
    if stat.S_ISREG(before.st_mode) and not _identity(before) == _identity(during) == _identity(after):
        raise KeysFileError(f"api_keys_file {path!r} changed while it was read: write the new file beside it, "
                            "then rename it over the old one (docs/reference.md)")  # fmt: skip
    return text


class KeySource:
    """The client keys in force (``current``: None when the relay is open); a config reload (proxy.edge) swaps
    ``settings`` and ``current`` whole."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current = load_client_keys(settings)
