"""Garbage-collector settings for a process that holds thousands of open streams.

Why: CPython starts a full (oldest-generation) collection each time the long-lived heap has grown by a
quarter, and a full collection walks every tracked object. A relay ramping up to N streams grows its heap
by ~200 tracked objects per stream, so the ramp itself triggers a series of ever larger full collections,
each a stall of the whole worker. Measured (one relay worker, 1,000 streams ramped over 5 s, sim TTFT 1 s,
20 chunks 0.5 s apart; ``gc.callbacks`` with ``time.thread_time``): 3 full collections after start-up,
of up to ~300,000 objects, the largest 297-334 ms of CPU, GC 14-15 % of the relay's CPU, and first
chunks delayed by up to 300-400 ms (p99 254-354 ms) behind those stalls.

What: freeze everything alive at start-up (modules, the app: ~100,000 objects that a full collection
would otherwise walk forever) and collect the young generations less often. Cyclic garbage is rare
here: of ~10,000 cyclic objects per 1,000 sessions, 99 % die in the youngest generation, fewer than 60
reach the oldest. So the oldest generation's threshold can rise until full collections become rare
(after ~``YOUNG * MIDDLE * OLD`` net allocations); the heap still falls back to its idle size after a load.
Same load, this policy: no full collection after start-up, GC 6 % of relay CPU, first-chunk delay p99 70 ms.
At 5,000 streams (hold-like): GC 42 % → 10 % of relay CPU, 1,323 → 847 µs per chunk.

Its cost: more live memory at high stream counts (peak tracked objects ~1.2 M vs ~1.1 M at 5,000 streams; the
bench's hold figure rose from 23.1 to 34.5 KB per open stream, results/PERF-LOG.md). ``--gc-tuning off``
restores CPython's defaults where memory matters more than CPU.
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
