"""The admin API (off by default): client keys created, listed, changed, disabled and deleted while the relay runs,
kept in the shared store (the ``--state`` Redis, else ``admin_keys_file``) and followed by every worker and
instance. It has its own key, in the environment variable ``admin_key_env`` names."""

from __future__ import annotations

import os

from ..auth import KeySource
from ..config import Settings
from ..limits import Store, defaults
from ._api import PREFIX, AdminAPI, Route
from ._managed import POLL_S, ManagedKeys
from ._records import KeyRecord, decode, parse_change
from ._stores import FileKeys, KeyStore, KeyStoreUnavailable, RedisKeys

MIN_ADMIN_KEY = 20  # characters: an admin key is a secret, not a password someone types

__all__ = [
    "POLL_S",
    "PREFIX",
    "AdminAPI",
    "FileKeys",
    "KeyRecord",
    "KeyStore",
    "KeyStoreUnavailable",
    "ManagedKeys",
    "RedisKeys",
    "Route",
    "admin_api",
    "admin_key",
    "check_admin",
    "decode",
    "parse_change",
]


def admin_key(settings: Settings) -> str | None:
    """The admin key, or None when the admin API is off; a ValueError when it is on but cannot work: its
    environment variable unset or too short, or no store (``--state`` or ``admin_keys_file``) to keep keys in."""
    if not settings.admin_key_env:
        return None
    key = os.environ.get(settings.admin_key_env, "")
    if len(key) < MIN_ADMIN_KEY:
        raise ValueError(f"admin_key_env: the environment variable {settings.admin_key_env} must hold the admin key "
                         f"(at least {MIN_ADMIN_KEY} characters)")  # fmt: skip
    if not settings.state and not settings.admin_keys_file:
        raise ValueError("admin_key_env: the admin API keeps client keys in --state or admin_keys_file; give one")
    return key


def check_admin(settings: Settings) -> None:
    """At start-up: the admin settings the relay cannot use, as a ValueError naming the setting."""
    admin_key(settings)


def admin_api(settings: Settings, keys: KeySource, usage: Store) -> AdminAPI | None:
    """This worker's admin API, or None when it is off. Serve ``api.managed.run`` in a nursery before serving
    (it reads the keys once first) and :meth:`AdminAPI.install` it on the app; ``keys`` must be
    ``KeySource(settings, managed=True)``."""
    key = admin_key(settings)
    if key is None:
        return None
    if settings.state:
        store: KeyStore = RedisKeys(settings.state, prefix=settings.state_prefix,
                                    timeout_s=max(1.0, settings.state_timeout_s))  # fmt: skip
    else:
        store = FileKeys(settings.admin_keys_file)  # type: ignore[arg-type]
    base = defaults(settings.key_rpm, settings.key_tpm, settings.key_concurrent, settings.key_budget)
    return AdminAPI(key, ManagedKeys(store, keys, base), keys, usage)
