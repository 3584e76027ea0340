"""The cyclic garbage collector's pauses kept out of what the load generator measures.

A load run keeps every open session's objects alive (record, connection, parser, task frames): by CPython's
default thresholds (700, 10, 10) the older generations are traversed again and again while sessions run, and a
full pass over thousands of live sessions stops the event loop for tens of milliseconds, during which no first
chunk can be read or stamped (results/PERF-LOG.md, "load generator: first chunks read late"). While sessions run,
:func:`quiet_collector` keeps young collections as they are (short: at most a few hundred new objects each) and
makes the older ones rare; reference counting frees nearly everything a session drops, and cycles that reach
the older generations wait for the end of the run, or for a thousand young collections. The thresholds are
restored afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LOAD_THRESHOLDS", "quiet_collector"]

LOAD_THRESHOLDS = (700, 1000, 1000)  # gen0 as CPython's default; gen1 and gen2 after 1,000 of the younger


@contextmanager
def quiet_collector() -> Iterator[None]:
    """Collector thresholds for a running load (:data:`LOAD_THRESHOLDS`), the previous ones restored after."""
    before = gc.get_threshold()
    gc.set_threshold(*LOAD_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
