"""Statistics over session records: pure functions, no I/O, no numpy.

Definitions used throughout (the report's "Metric definitions" section repeats them):

- Percentiles use linear interpolation between closest ranks, numpy's default (``method="linear"``,
  Hyndman & Fan type 7): for sorted values ``x[0..n-1]`` the p-th percentile sits at rank
  ``h = (n - 1) * p / 100`` and is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
- Sessions are *completed* (the protocol says the answer ended: a finish_reason, [DONE], no error) or
  *failed*; a completed session is *verified* where the sim's stamps show no chunk was lost, *unverified*
  where the chunks carried none (a real provider's stream); see :mod:`loadtest.accounting`.
- Latency statistics (TTFC, E2E, gaps, relay delay), requests/s and goodput are over measured sessions that
  completed, verified or not. Connect time is over every measured session that opened a new
  connection. Warmup sessions are excluded from all of them, but still count in the open-sessions and
  chunks/s series (the server saw them).
- TTFC and E2E are measured from the *intended* start (open-loop schedule or slot-free time), so time a
  session spent waiting for the load generator counts: no coordinated omission.
- A target's measured window runs from the intended start of its first measured session to the end of its
  last one (vllm bench serve's ``benchmark_duration``); throughputs divide by it.
- Overhead is relay minus direct of the *same percentile* (a difference of percentiles, not a
  percentile of per-request differences: the two runs do not share requests).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
from typing import Any

from loadtest import tokens
from loadtest.quantiles import DEFAULT_PS, percentiles, pkey, quantile_sorted
from loadtest.record import ProcessUsage, RunData, SessionRecord

__all__ = [
    "DEFAULT_PS", "SLO_KEYS", "LATENCY_BLOCKS", "by_target", "chunk_times", "chunks_in_window",
    "chunks_per_second_series", "downsample", "goodput", "histogram", "open_sessions_series", "peak_open",
    "percentiles", "pkey", "quantile_sorted", "step_for", "summarize", "target_summary", "window_s",
]

SLO_KEYS = ("ttfc_ms", "e2e_ms", "gap_ms")
LATENCY_BLOCKS = (
    "connect_ms", "ttfc_ms", "ttfc_sent_ms", "e2e_ms", "gap_ms", "relay_delay_ms", "first_chunk_delay_ms",
)  # fmt: skip
OVERHEAD_KEYS = (("ttfc_p50", "ttfc_ms", "p50"), ("ttfc_p99", "ttfc_ms", "p99"),
                 ("e2e_p50", "e2e_ms", "p50"), ("e2e_p99", "e2e_ms", "p99"))
# Series are plotted and stored in result.json; 2,000 points is more than a 1,000 px wide plot can show.
MAX_SERIES_POINTS = 2000
HISTOGRAM_BINS = 60


# --- open sessions ---------------------------------------------------------------------------------


def _events(records: Iterable[SessionRecord]) -> list[tuple[int, int]]:
    """(time, +1/-1) for every session's start and end, ends first on ties: a session is open on [start, end)."""
    ev: list[tuple[int, int]] = []
    for r in records:
        end = max(r.end_ns, r.start_ns)
        if end == r.start_ns:
            continue  # never open for any positive time
        ev.append((r.start_ns, 1))
        ev.append((end, -1))
    ev.sort()
    return ev


def peak_open(records: Iterable[SessionRecord]) -> int:
    """The most sessions open at one instant, exactly (sweep over start/end events)."""
    n = peak = 0
    for _, d in _events(records):
        n += d
        peak = max(peak, n)
    return peak


def open_sessions_series(
    records: Iterable[SessionRecord], t0_ns: int, step_s: float, t_end_ns: int | None = None
) -> list[tuple[float, int]]:
    """Open sessions per ``step_s`` bucket: ``(t_s, most sessions open at any instant in [t_s, t_s + step_s))``.

    ``t_s`` is relative to ``t0_ns``; buckets start at the one holding the first event (negative when a
    session started before ``t0_ns``) and run to ``t_end_ns`` or the last event. Taking the bucket maximum
    rather than a sample means the series' peak equals :func:`peak_open`.
    """
    if step_s <= 0:
        raise ValueError("step_s must be positive")
    ev = _events(records)
    if not ev:
        return []
    step_ns = step_s * 1e9
    first = math.floor((ev[0][0] - t0_ns) / step_ns)
    last_t = ev[-1][0] if t_end_ns is None else max(ev[-1][0], t_end_ns)
    last = max(first, math.ceil((last_t - t0_ns) / step_ns) - 1)
    out: list[tuple[float, int]] = []
    n = 0
    i = 0
    for b in range(first, last + 1):
        bucket_start = t0_ns + b * step_ns
        bucket_end = t0_ns + (b + 1) * step_ns
        while i < len(ev) and ev[i][0] <= bucket_start:  # a session ending exactly here is not open here
            n += ev[i][1]
            i += 1
        top = n
        while i < len(ev) and ev[i][0] < bucket_end:
            n += ev[i][1]
            top = max(top, n)
            i += 1
        out.append((round(b * step_s, 9), top))
    return out


# --- chunks ----------------------------------------------------------------------------------------


def chunk_times(record: SessionRecord) -> list[int]:
    """Receive time (ns) of each data event: ``first_chunk_ns`` plus the cumulative gaps."""
    first = record.first_chunk_ns
    if first is None:
        return []
    return [first, *(first + round(c * 1e6) for c in accumulate(record.gaps_ms))]


def chunks_per_second_series(
    records: Iterable[SessionRecord], t0_ns: int, step_s: float = 1.0, t_end_ns: int | None = None
) -> list[tuple[float, float]]:
    """Chunks received per second in each ``step_s`` bucket: ``(t_s, chunks / step_s)``, t_s relative to t0."""
    if step_s <= 0:
        raise ValueError("step_s must be positive")
    step_ns = step_s * 1e9
    counts: Counter[float] = Counter()
    # Bucket from offsets in floats, without building ns lists: the work is per chunk, millions in a long run.
    for r in records:
        if r.first_chunk_ns is None:
            continue
        off = r.first_chunk_ns - t0_ns
        counts[off // step_ns] += 1
        counts.update((off + c * 1e6) // step_ns for c in accumulate(r.gaps_ms))
    if not counts:
        return []
    first = int(min(counts))
    last = int(max(counts))
    if t_end_ns is not None:
        last = max(last, math.ceil((t_end_ns - t0_ns) / step_ns) - 1)
    return [(round(b * step_s, 9), counts.get(b, 0) / step_s) for b in range(first, last + 1)]


def chunks_in_window(records: Iterable[SessionRecord], t0_ns: int, t_end_ns: int) -> int:
    """Chunks received in [t0_ns, t_end_ns] — the window process CPU is measured over."""
    n = 0
    for r in records:
        first = r.first_chunk_ns
        if first is None:
            continue
        if first >= t0_ns and first + sum(r.gaps_ms) * 1e6 <= t_end_ns and len(r.gaps_ms) + 1 >= r.chunks:
            n += r.chunks  # the whole stream is inside the window: no need to place each chunk
            continue
        times = chunk_times(r)
        if len(times) < r.chunks:  # gaps not recorded: count by the first chunk
            if r.first_chunk_ns is not None and t0_ns <= r.first_chunk_ns <= t_end_ns:
                n += r.chunks
            continue
        n += sum(1 for t in times[: r.chunks] if t0_ns <= t <= t_end_ns)
    return n


def step_for(span_s: float, min_step_s: float, max_points: int = MAX_SERIES_POINTS) -> float:
    """The smallest 1-2-5 step >= ``min_step_s`` that covers ``span_s`` in at most ``max_points`` buckets."""
    need = max(min_step_s, span_s / max_points)
    k = math.floor(math.log10(need))
    for base in (1, 2, 5, 10):
        s = base * 10.0**k
        if s >= need * (1 - 1e-12):
            return float(f"{s:.12g}")
    return 10.0 ** (k + 1)  # pragma: no cover - loop above always returns


def downsample(series: Sequence[Sequence[float]], max_points: int = MAX_SERIES_POINTS) -> list[list[float]]:
    """At most ``max_points`` points, keeping each group's maximum value (peaks survive) at its first time."""
    if len(series) <= max_points:
        return [list(p) for p in series]
    k = math.ceil(len(series) / max_points)
    return [[series[i][0], max(p[1] for p in series[i : i + k])] for i in range(0, len(series), k)]


# --- goodput ---------------------------------------------------------------------------------------


def _meets(r: SessionRecord, slo: Mapping[str, float]) -> bool:
    if not r.completed:
        return False
    if "ttfc_ms" in slo:
        t = r.ttfc_ms
        if t is None or t > slo["ttfc_ms"]:
            return False
    if "e2e_ms" in slo and r.e2e_ms > slo["e2e_ms"]:
        return False
    if "gap_ms" in slo and r.gaps_ms and quantile_sorted(sorted(r.gaps_ms), 99) > slo["gap_ms"]:
        return False
    return True


def goodput(records: Sequence[SessionRecord], slo: Mapping[str, float]) -> dict[str, Any]:
    """Sessions that completed (verified or not) AND met every SLO: ``{slo, sessions, fraction, per_s}``.

    SLO keys: ``ttfc_ms`` (from intended start), ``e2e_ms``, ``gap_ms`` (the session's own p99 gap).
    ``fraction`` is over all given sessions (failed ones count against it); ``per_s`` divides by the
    records' measured window. Warmup records are ignored.
    """
    unknown = set(slo) - set(SLO_KEYS)
    if unknown:
        raise ValueError(f"unknown SLO keys {sorted(unknown)}; known: {', '.join(SLO_KEYS)}")
    rs = [r for r in records if not r.warmup]
    good = sum(1 for r in rs if _meets(r, slo))
    window = window_s(rs)
    return {
        "slo": dict(slo),
        "sessions": good,
        "fraction": good / len(rs) if rs else None,
        "per_s": good / window if window else None,
    }


# --- summary ---------------------------------------------------------------------------------------


def window_s(records: Sequence[SessionRecord]) -> float:
    """From the intended start of the first session to the end of the last one, in seconds."""
    if not records:
        return 0.0
    start = min(min(r.intended_ns, r.start_ns) for r in records)
    end = max(r.end_ns for r in records)
    return max(0, end - start) / 1e9


def by_target(records: Iterable[SessionRecord]) -> dict[str, list[SessionRecord]]:
    out: dict[str, list[SessionRecord]] = {}
    for r in records:
        out.setdefault(r.target, []).append(r)
    return out


def _rate(n: float, seconds: float) -> float | None:
    return n / seconds if seconds > 0 else None


def target_summary(records: Sequence[SessionRecord], slo: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Counts, throughput and latency percentiles of one target's records (warmup included in peak only).

    ``sessions`` = ``completed`` + ``failed``, ``completed`` = ``verified`` + ``unverified``; ``resent``
    counts requests that went on a fresh connection because their kept-alive one was found closed before
    they were written.
    """
    measured = [r for r in records if not r.warmup]
    done = [r for r in measured if r.completed]
    unverified = sum(1 for r in done if r.unverified)
    window = window_s(measured)
    chunks = sum(r.chunks for r in measured)
    completion = sum(r.completion_tokens or 0 for r in measured)
    out: dict[str, Any] = {
        "sessions": len(measured),
        "completed": len(done),
        "verified": len(done) - unverified,
        "unverified": unverified,
        "failed": len(measured) - len(done),
        "resent": sum(r.resent for r in measured),
        "warmup_sessions": len(records) - len(measured),
        "errors_by_kind": dict(sorted(Counter(r.error_kind for r in measured if not r.ok).items())),
        "peak_concurrency": peak_open(records),
        "duration_s": window,
        "requests_per_s": _rate(len(done), window),
        "chunks_per_s": _rate(chunks, window),
        "tokens_per_s": _rate(completion, window),
        "chunks": chunks,
        "response_bytes": sum(r.bytes for r in measured),
        "new_connections": sum(1 for r in measured if r.connected_ns is not None),
        "connect_ms": percentiles(r.connect_ms for r in measured if r.connect_ms is not None),
        "ttfc_ms": percentiles(r.ttfc_ms for r in done if r.ttfc_ms is not None),
        "ttfc_sent_ms": percentiles(r.ttfc_sent_ms for r in done if r.ttfc_sent_ms is not None),
        "e2e_ms": percentiles(r.e2e_ms for r in done),
        "gap_ms": percentiles(g for r in done for g in r.gaps_ms),
    }
    if any(r.relay_delay_ms for r in done):
        out["relay_delay_ms"] = percentiles(d for r in done for d in r.relay_delay_ms)
        # TTFC overhead measured at the source: each session's first chunk, receive time - the sim's send stamp.
        out["first_chunk_delay_ms"] = percentiles(r.relay_delay_ms[0] for r in done if r.relay_delay_ms)
    out["tokens"] = {
        "prompt": sum(r.prompt_tokens or 0 for r in measured),
        "completion": completion,
    }
    out["per_token"] = tokens.token_summary(done, window)
    if slo:
        out["goodput"] = goodput(measured, slo)
    return out


def _cpu(processes: Iterable[ProcessUsage], pred) -> tuple[float, int]:
    ps = [p for p in processes if pred(p.role)]
    return math.fsum(p.cpu_s for p in ps), len(ps)


def summarize(run: RunData) -> dict[str, Any]:
    """The ``summary`` block of result.json (see :mod:`loadtest.report` for the layout)."""
    targets = by_target(run.records)
    primary = "relay" if "relay" in targets or not targets else next(iter(targets))
    summary: dict[str, Any] = {"target": primary}
    summary.update(target_summary(targets.get(primary, []), run.slo))
    summary["run_duration_s"] = max(0, run.t_end_ns - run.t0_ns) / 1e9
    summary["connect_retries"] = run.connect_retries

    if primary == "relay" and "direct" in targets:
        direct = target_summary(targets["direct"], run.slo)
        summary["direct"] = direct
        overhead: dict[str, float | None] = {}
        for key, block, p in OVERHEAD_KEYS:
            a, b = summary[block][p], direct[block][p]
            overhead[key] = a - b if a is not None and b is not None else None
        summary["overhead_ms"] = overhead

    # Process CPU is measured over [t0, t_end]; divide by the chunks received in that same window.
    run_s = summary["run_duration_s"]
    relay_cpu, n_relay = _cpu(run.processes, lambda role: role == "relay")
    if n_relay:
        n = chunks_in_window(targets.get("relay", []), run.t0_ns, run.t_end_ns)
        summary["relay_cpu_s"] = relay_cpu
        summary["relay_cpu_us_per_chunk"] = relay_cpu / n * 1e6 if n else None
    lt_cpu, n_lt = _cpu(run.processes, lambda role: role.startswith("loadtest"))
    if n_lt:
        n = chunks_in_window(run.records, run.t0_ns, run.t_end_ns)
        summary["loadtest_cpu_s"] = lt_cpu
        summary["loadtest_cpu_us_per_chunk"] = lt_cpu / n * 1e6 if n else None
        summary["loadtest_cpu_utilization"] = lt_cpu / (run_s * n_lt) if run_s > 0 else None
        # The client's share of the whole machine: what it took from the servers it measures on a shared host.
        cores = run.cores
        summary["loadtest_cpu_share"] = lt_cpu / (run_s * cores) if run_s > 0 and cores else None
        summary["loadtest_processes"] = n_lt
        summary["cores"] = cores
    if run.loop_lag_ms:
        # How late the load generator's own event loop woke: every timing it took can be late by as much.
        summary["loadtest_loop_lag_ms"] = percentiles(run.loop_lag_ms)
    relays = [p for p in run.processes if p.role == "relay"]
    # Streams the relay held: the sim's count where it was sampled (sessions still waiting in the relay's
    # listen backlog cost it nothing), else the load generator's own peak.
    summary["upstream_peak_open"] = run.upstream_peak_open
    peak = run.upstream_peak_open or summary["peak_concurrency"]
    if relays and all(p.idle_rss_bytes is not None for p in relays) and primary == "relay" and peak:
        grown = sum(p.peak_rss_bytes for p in relays) - sum(p.idle_rss_bytes or 0 for p in relays)
        summary["relay_mem_per_stream_bytes"] = grown / peak
    return summary


def histogram(values_by_key: Mapping[str, Sequence[float]], bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """One set of bucket edges shared by every key (so targets overlay), and each key's counts.

    Edges are logarithmic when all values are positive and span more than a factor of 20 (latency tails),
    linear otherwise. ``counts[i]`` holds values in ``[edges[i], edges[i+1])``, the last bucket closed.
    """
    allv = [v for vs in values_by_key.values() for v in vs]
    if not allv:
        return {"edges": [], "scale": "linear", "counts": {k: [] for k in values_by_key}}
    lo, hi = min(allv), max(allv)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    log = lo > 0 and hi / lo > 20
    if log:
        a, b = math.log10(lo), math.log10(hi)
        edges = [10 ** (a + (b - a) * i / bins) for i in range(bins + 1)]
    else:
        edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    edges[0], edges[-1] = lo, hi
    counts: dict[str, list[int]] = {}
    for k, vs in values_by_key.items():
        c = [0] * bins
        for v in vs:
            c[min(max(bisect.bisect_right(edges, v) - 1, 0), bins - 1)] += 1
        counts[k] = c
    return {"edges": edges, "scale": "log" if log else "linear", "counts": counts}
