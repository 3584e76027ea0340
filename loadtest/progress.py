"""Live progress of a run: open sessions, completed, failed, TTFC p50/p99 so far.

:class:`LiveStats` is what sessions update (a few integer increments per session, nothing per chunk; a
session's chunk gaps go into a fixed-bucket histogram once, when it ends); the errors by kind and the
:class:`Buckets` of TTFC and gaps are what ``--metrics-bind`` serves (:mod:`loadtest.livemetrics`);
:func:`show` draws it with rich ``Live`` twice a second until cancelled on a terminal, and elsewhere (CI, a
pipe, ``| tee``) prints a plain line every :data:`PLAIN_EVERY_S` seconds, so a long run is never silent; rich
is imported for the terminal only. ``--quiet``: nothing.
"""

from __future__ import annotations

import bisect
import sys
from typing import Any, TextIO

import trio

from loadtest.record import SessionRecord

PLAIN_EVERY_S = 5.0  # a plain progress line this often when stdout is not a terminal

# TTFC percentiles "so far" from a bounded sample: beyond this many values every k-th is kept, which
# keeps the sort per refresh bounded at any run size.
_MAX_TTFC_SAMPLES = 20_000
# Upper bounds (ms) of the live histograms' buckets, fixed so that worker processes' counts add up exactly.
TTFC_BOUNDS_MS = (10, 25, 50, 100, 250, 500, 1000, 1500, 2000, 2500, 5000, 10_000, 30_000, 60_000)
GAP_BOUNDS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 15_000, 30_000)


class Buckets:
    """A histogram with fixed upper bounds (``value <= bound``, Prometheus' ``le``), the last bucket unbounded."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.sum += v

    def add(self, counts: list[int], total: float) -> None:
        """Add another histogram's counts (a worker's delta) and sum."""
        for i, n in enumerate(counts):
            self.counts[i] += n
        self.sum += total


class LiveStats:
    __slots__ = ("open", "completed", "unverified", "failed", "_ttfc", "_ttfc_seen", "phase", "planned",
                 "errors", "ttfc_hist", "gap_hist")

    def __init__(self) -> None:
        self.open = 0
        self.completed = 0  # verified: the sim's stamps show nothing was lost
        self.unverified = 0  # completed without the sim's stamps (counted apart, as the live metrics export them)
        self.failed = 0
        self._ttfc: list[float] = []  # kept sorted
        self._ttfc_seen = 0
        self.phase = ""
        self.planned: int | None = None
        self.errors: dict[str, int] = {}  # failed sessions by error kind
        self.ttfc_hist = Buckets(TTFC_BOUNDS_MS)
        self.gap_hist = Buckets(GAP_BOUNDS_MS)

    def started(self) -> None:
        self.open += 1

    def session_ended(self, rec: SessionRecord) -> None:
        """:meth:`finished` from a session's record, plus its error kind and chunk gaps."""
        if rec.error_kind is not None:
            self.errors[rec.error_kind] = self.errors.get(rec.error_kind, 0) + 1
        hist = self.gap_hist
        for g in rec.gaps_ms:
            hist.observe(g)
        self.finished(rec.error_kind is None, rec.ttfc_ms, rec.unverified)

    def finished(self, ok: bool, ttfc_ms: float | None, unverified: bool = False) -> None:
        self.open -= 1
        if not ok:
            self.failed += 1
        elif unverified:
            self.unverified += 1
        else:
            self.completed += 1
        if ttfc_ms is not None:
            self.add_ttfc(ttfc_ms)

    def add_ttfc(self, ttfc_ms: float) -> None:
        self.ttfc_hist.observe(ttfc_ms)
        self._ttfc_seen += 1
        if len(self._ttfc) < _MAX_TTFC_SAMPLES or self._ttfc_seen % (self._ttfc_seen // _MAX_TTFC_SAMPLES + 1) == 0:
            bisect.insort(self._ttfc, ttfc_ms)

    def ttfc(self, p: float) -> float | None:
        xs = self._ttfc
        if not xs:
            return None
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]

    def merge_delta(self, d: dict[str, Any]) -> None:
        """Apply a worker process's progress message (see :mod:`loadtest.workers`)."""
        self.open += d.get("open", 0)
        self.completed += d.get("completed", 0)
        self.unverified += d.get("unverified", 0)
        self.failed += d.get("failed", 0)
        for t in d.get("ttfc", ()):
            self.add_ttfc(t)
        for kind, n in d.get("errors", {}).items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        if "gaps" in d:
            self.gap_hist.add(d["gaps"], d.get("gap_sum", 0.0))

    def line(self) -> str:
        p50, p99 = self.ttfc(50), self.ttfc(99)
        ttfc = f"{p50:,.0f} / {p99:,.0f} ms" if p50 is not None and p99 is not None else "-"
        total = f"/{self.planned:,}" if self.planned else ""
        unverified = f" ({self.unverified:,} unverified)" if self.unverified else ""
        done = self.completed + self.unverified  # completed, as the report counts it
        return (f"{self.phase} open {self.open:,}  completed {done:,}{total}{unverified}  "
                f"failed {self.failed:,}  TTFC p50/p99 {ttfc}").strip()


def enabled(quiet: bool) -> bool:
    return not quiet


async def show(live_stats: LiveStats, *, refresh_s: float = 0.5, out: TextIO | None = None) -> None:
    """Show ``live_stats`` on ``out`` (stdout) until cancelled (run it in the nursery that owns the load): a live
    table on a terminal, else a plain line every :data:`PLAIN_EVERY_S` seconds."""
    out = out if out is not None else sys.stdout
    if not out.isatty():
        began = trio.current_time()
        while True:
            await trio.sleep(PLAIN_EVERY_S)
            print(f"loadtest {trio.current_time() - began:.0f}s: {live_stats.line()}", file=out, flush=True)
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    def render() -> Table:
        t = Table(title=f"loadtest {live_stats.phase}".strip(), show_header=True, header_style="bold")
        for col in ("open", "completed", "unverified", "failed", "TTFC p50", "TTFC p99"):
            t.add_column(col, justify="right")
        p50, p99 = live_stats.ttfc(50), live_stats.ttfc(99)
        planned = f" / {live_stats.planned:,}" if live_stats.planned else ""
        t.add_row(
            f"{live_stats.open:,}",
            f"{live_stats.completed:,}{planned}",
            f"[yellow]{live_stats.unverified:,}[/yellow]" if live_stats.unverified else "0",
            f"[red]{live_stats.failed:,}[/red]" if live_stats.failed else "0",
            "-" if p50 is None else f"{p50:,.0f} ms",
            "-" if p99 is None else f"{p99:,.0f} ms",
        )
        return t

    with Live(render(), console=Console(file=out), auto_refresh=False, transient=False) as live:
        try:
            while True:
                await trio.sleep(refresh_s)
                live.update(render(), refresh=True)
        finally:
            live.update(render(), refresh=True)
