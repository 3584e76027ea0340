"""The framework versions the serving layer was tested with, and the gate that keeps its fast paths to them.

The fast paths (direct writes, the inline request call, the connection's own read loop and keep-alive timer) reach
into hypercorn, quart, quart-trio and h11 internals that any release may change without notice. They are taken only
on the versions in :data:`TESTED`, which are also the pins in pyproject.toml (tests/relay/unit/test_versions.py
keeps the two equal). On any other version the relay serves through the plain ASGI path, slower but correct, and
says so in one warning line per process.

The setting (environment variable ``MOONRELAY_FAST_PATHS``):

- ``auto`` (the default): take the fast paths on the tested versions only;
- ``off``: never take them (the functional tests run once this way in CI);
- ``force``: take them whatever is installed, to try a new framework release before pinning it.

Upgrading a framework: change its pin here and in pyproject.toml, run ``./dev lock``, then the contract tests.
"""

from __future__ import annotations

import logging
from importlib import metadata

from packaging.specifiers import SpecifierSet

FAST_PATHS_ENV = "MOONRELAY_FAST_PATHS"
SETTINGS = ("auto", "off", "force")

# Distribution name -> the version specifier it was tested with: exact where the fast paths use internals, capped
# at the tested minor where only the public API is used (trio, httpx).
TESTED: dict[str, str] = {
    "hypercorn": "==0.18.0",
    "quart": "==0.22.0",
    "quart-trio": "==0.12.0",
    "h11": "==0.16.0",
    "httpx": ">=0.29.0,<0.30",
    "trio": ">=0.35.0,<0.36",
}

log = logging.getLogger("moonrelay")
_warned = False  # the untested-versions warning is logged once per process


def untested_frameworks() -> list[str]:
    """``"NAME INSTALLED (tested SPEC)"`` for each framework installed outside its tested spec, in TESTED's order."""
    untested = []
    for name, spec in TESTED.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            untested.append(f"{name} not installed (tested {spec})")
            continue
        # Only releases are pinned, so a prerelease is never the tested version, even inside a tested minor.
        if not SpecifierSet(spec).contains(installed, prereleases=False):
            untested.append(f"{name} {installed} (tested {spec})")
    return untested


def mode_allows(setting: str) -> bool:
    """Whether the serving layer may take its fast paths under ``setting`` (see the module docstring).

    Reads installed metadata: call it once at start-up, not per request. ``auto`` on an untested version returns
    False and logs one warning line, the first time in this process.
    """
    global _warned
    mode = setting.strip().lower() or "auto"
    if mode not in SETTINGS:
        raise ValueError(f"{FAST_PATHS_ENV}={setting!r}: expected one of {', '.join(SETTINGS)}")
    if mode == "off":
        return False
    if mode == "force":
        return True
    untested = untested_frameworks()
    if not untested:
        return True
    if not _warned:
        _warned = True
        log.warning(
            "moonrelay: fast paths off, untested framework versions: %s; serving on the plain ASGI path"
            " (%s=force takes them anyway)",
            "; ".join(untested),
            FAST_PATHS_ENV,
        )
    return False
