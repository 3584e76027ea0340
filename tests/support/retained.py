"""What a stretch of load left alive in this process: live objects by type and allocated bytes by line.

``Retained.take()`` collects the garbage first, so what it counts is what something still refers to; two takes
around a load, ``grown`` says what the load kept. Objects are counted by ``gc.get_objects`` (containers: a dict, a
tuple, an instance); bytes by tracemalloc (strings and bytes too), by the line that allocated them.

``start()`` freezes what is alive then (``gc.freeze``: out of the collector's generations), so each census walks and
counts only the objects made since, not the whole test process's hundreds of thousands: what a load keeps is among
those. ``stop()`` hands them back to the collector.
"""

from __future__ import annotations

import collections
import gc
import tracemalloc
from dataclasses import dataclass

TOP = 8  # rows of each table in a report


@dataclass
class Census:
    objects: collections.Counter[str]  # live gc-tracked objects by type
    bytes: dict[str, int]  # allocated bytes by allocating line (a snapshot's thousands of traces are not kept)


@dataclass
class Growth:
    objects: int  # live objects more than before
    bytes: int  # allocated bytes more than before
    by_type: list[tuple[str, int]]  # the types that grew most
    by_line: list[tuple[str, int]]  # the allocating lines that grew most

    def report(self) -> str:
        types = ", ".join(f"{name} {n:+d}" for name, n in self.by_type)
        lines = "\n".join(f"  {size:+,d} B  {where}" for where, size in self.by_line)
        return f"{self.objects:+d} objects, {self.bytes:+,d} B; types: {types}\n{lines}"


class Retained:
    """Censuses of this process; tracemalloc runs from ``start()`` to ``stop()``."""

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        tracemalloc.start(1)

    def stop(self) -> None:
        tracemalloc.stop()
        gc.unfreeze()

    def take(self) -> Census:
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__),
                                                              tracemalloc.Filter(False, __file__)])  # fmt: skip
        by_line = {str(stat.traceback[0]): stat.size for stat in snapshot.statistics("lineno")}
        del snapshot
        counts: collections.Counter[str] = collections.Counter()
        for obj in gc.get_objects():
            kind = type(obj)
            counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
        return Census(counts, by_line)


def grown(before: Census, after: Census) -> Growth:
    """What ``after`` holds that ``before`` did not."""
    by_type = collections.Counter(after.objects)
    by_type.subtract(before.objects)
    by_line = collections.Counter(after.bytes)
    by_line.subtract(before.bytes)
    return Growth(
        objects=sum(by_type.values()),
        bytes=sum(by_line.values()),
        by_type=[(name, n) for name, n in by_type.most_common(TOP) if n > 0],
        by_line=[(where, n) for where, n in by_line.most_common(TOP) if n > 0],
    )
