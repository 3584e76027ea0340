"""The serving layer: the one place that knows hypercorn, quart, quart-trio and h11 internals, behind a few names."""

from .versions import FAST_PATHS_ENV, TESTED, fast_paths_allowed, untested_frameworks

__all__ = ["FAST_PATHS_ENV", "TESTED", "fast_paths_allowed", "untested_frameworks"]
