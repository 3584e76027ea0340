"""The one switch for every fast path (stand-in: the lead points it at ``versions.py`` when merging).

``fast_paths_allowed("off")``, or ``MOONRELAY_FAST_PATHS=off`` in the environment, turns every fast path
of this package off: the relay then runs on plain hypercorn + quart-trio ASGI.
"""

from __future__ import annotations

import os

ENV = "MOONRELAY_FAST_PATHS"


def fast_paths_allowed(setting: str) -> bool:
    """True unless the setting or the environment says ``off``."""
    return setting != "off" and os.environ.get(ENV, "on") != "off"
