"""Garbage-collector settings for a process that holds thousands of open streams.

Why: CPython starts a full (oldest-generation) collection each time the long-lived heap has grown by a
quarter, and a full collection walks every tracked object. A relay ramping up to N streams grows its heap
by a few hundred tracked objects per stream, so the ramp itself triggers a series of ever larger full
collections, each a stall of the whole worker that delays every stream's next chunk.

What: freeze everything alive at start-up (modules, the app: objects that a full collection would otherwise
walk forever) and collect the young generations less often. Cyclic garbage is rare here: almost all of it
dies in the youngest generation. So the oldest generation's threshold can rise until full collections become
rare (after ~``YOUNG * MIDDLE * OLD`` net allocations); the heap still falls back to its idle size after a
load.

Its cost: more live memory per open stream at high stream counts. ``--gc-tuning off`` restores CPython's defaults where
memory matters more than CPU.
"""

from __future__ import annotations

import gc

YOUNG = 20_000  # net tracked allocations between youngest-generation collections (CPython: 700)
MIDDLE = 20  # youngest collections per middle one (CPython: 10)
OLD = 100  # middle collections before a full one is considered (CPython: 10)


def tune_gc() -> tuple[int, int, int]:
    """Freeze the start-up heap and raise the thresholds; returns the previous thresholds.

    Call once per process before serving, and before forking workers (a frozen heap is also not
    copied-on-write by the children's collections).
    """
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
    return previous
