"""The one switch for every fast path: the ``fast_paths`` setting, the environment, and the version gate.

``off`` (the setting, or ``MOONRELAY_FAST_PATHS=off`` in the environment, which wins so that CI can run the
functional tests on the plain path without editing them) turns every fast path of this package off: the relay
then runs on plain hypercorn + quart-trio ASGI. ``force`` takes them on any framework version; ``auto`` (the
default) only on the tested ones (:mod:`proxy.edge.versions`, which warns once when it turns them off).
"""

from __future__ import annotations

import os

from . import versions


def fast_paths_mode(setting: str) -> str:
    """``off``, ``force`` or ``auto`` from the setting and the environment; ValueError for anything else."""
    modes = {m.strip().lower() or "auto" for m in (setting, os.environ.get(versions.FAST_PATHS_ENV, ""))}
    unknown = modes - set(versions.SETTINGS)
    if unknown:
        raise ValueError(f"fast_paths={unknown.pop()!r}: expected one of {', '.join(versions.SETTINGS)}")
    return "off" if "off" in modes else "force" if "force" in modes else "auto"


def fast_paths_allowed(setting: str) -> bool:
    """Whether the fast paths are taken (read once per app or worker, not per request)."""
    return versions.mode_allows(fast_paths_mode(setting))
