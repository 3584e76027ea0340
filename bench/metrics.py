"""Figures from one run, overheads against direct, medians over repeats. Pure: dicts in, dicts out.

One run's figures come from the load generator's ``summary`` and the process-tree usage that
:mod:`bench.procs` sampled. Definitions (issue 5):

- CPU per chunk = proxy CPU seconds (all its processes) / chunks the client received;
- memory per upstream stream = (peak tree RSS - idle tree RSS) / peak streams open at the upstream (the sim's
  ``open`` gauge, sampled with the RSS: the streams the proxy relays);
- memory per client session = the same growth / peak client sessions open (the load generator's own peak).
  Both, because they differ where a proxy holds more client requests than it opens upstream streams: a peer
  that caps its upstream connections holds the other client requests waiting inside it (divided by the
  upstream streams, their memory looks like the streams'), and sessions still waiting in a proxy's listen
  backlog cost it nothing (divided by the client sessions, the proxy looks cheaper than it is);
- TTFC overhead = the target's TTFC percentile - direct's, from the same repeat (the same machine noise);
- first-chunk delay = each session's first chunk, client receive time - the sim's send stamp (CLOCK_MONOTONIC):
  the TTFC overhead measured at the source, which queueing in the sim or load generator does not blur;
- relayed chunks per CPU-second = chunks / proxy CPU seconds (the ceiling figure).
"""

from __future__ import annotations

import statistics
from typing import Any

MIB = 1024 * 1024


def _pct(summary: dict[str, Any], key: str, p: str) -> float | None:
    block = summary.get(key) or {}
    return block.get(p)


def figures(
    summary: dict[str, Any], proxy: dict[str, Any] | None, sim: dict[str, Any], upstream_open: int | None = None
) -> dict[str, Any]:
    """The flat figures of one run; proxy figures are None for ``direct`` (there is no proxy).

    ``upstream_open``: the peak of streams open at the sim (None in records made before it was sampled:
    the load generator's peak stands in)."""
    chunks = summary.get("chunks") or 0
    duration = summary.get("run_duration_s") or summary.get("duration_s") or 0
    peak_open = summary.get("peak_concurrency") or 0
    f: dict[str, Any] = {
        "completed": summary.get("completed"),
        "unverified": summary.get("unverified"),
        "failed": summary.get("failed"),
        "resent": summary.get("resent"),
        "peak_open_streams": peak_open,
        "upstream_peak_open": upstream_open,
        "chunks": chunks,
        "chunks_per_s": summary.get("chunks_per_s"),
        "ttfc_p50_ms": _pct(summary, "ttfc_ms", "p50"),
        "ttfc_p99_ms": _pct(summary, "ttfc_ms", "p99"),
        "e2e_p50_ms": _pct(summary, "e2e_ms", "p50"),
        "e2e_p99_ms": _pct(summary, "e2e_ms", "p99"),
        "relay_delay_p50_ms": _pct(summary, "relay_delay_ms", "p50"),
        "relay_delay_p99_ms": _pct(summary, "relay_delay_ms", "p99"),
        "first_chunk_delay_p50_ms": _pct(summary, "first_chunk_delay_ms", "p50"),
        "first_chunk_delay_p99_ms": _pct(summary, "first_chunk_delay_ms", "p99"),
        "sim_cpu_s": sim.get("cpu_s"),
        "loadtest_cpu_utilization": summary.get("loadtest_cpu_utilization"),
        "proxy_cpu_s": None, "proxy_core_pct": None, "cpu_us_per_chunk": None, "chunks_per_cpu_s": None,
        "idle_rss_mib": None, "peak_rss_mib": None, "mem_per_stream_kb": None, "mem_per_session_kb": None,
    }
    if proxy is not None:
        cpu = proxy["cpu_s"]
        f["proxy_cpu_s"] = cpu
        f["proxy_core_pct"] = 100 * cpu / duration if duration else None
        f["cpu_us_per_chunk"] = 1e6 * cpu / chunks if chunks else None
        f["chunks_per_cpu_s"] = chunks / cpu if cpu > 0 else None
        f["idle_rss_mib"] = proxy["idle_rss_bytes"] / MIB
        f["peak_rss_mib"] = proxy["peak_rss_bytes"] / MIB
        grown = proxy["peak_rss_bytes"] - proxy["idle_rss_bytes"]
        held = upstream_open or peak_open
        f["mem_per_stream_kb"] = grown / held / 1024 if held else None
        f["mem_per_session_kb"] = grown / peak_open / 1024 if peak_open else None
    return f


def add_overheads(by_target: dict[str, dict[str, Any]]) -> None:
    """Fill TTFC overhead vs ``direct`` in place, for the runs of one repeat of one scenario."""
    direct = by_target.get("direct")
    for f in by_target.values():
        for p in ("p50", "p99"):
            mine, base = f.get(f"ttfc_{p}_ms"), direct.get(f"ttfc_{p}_ms") if direct else None
            f[f"ttfc_overhead_{p}_ms"] = mine - base if mine is not None and base is not None else None


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric figure over repeats (None where no repeat has it)."""
    keys = {k for r in runs for k in r}
    out: dict[str, Any] = {}
    for k in sorted(keys):
        values = [r[k] for r in runs if isinstance(r.get(k), int | float)]
        out[k] = statistics.median(values) if values else None
    return out
