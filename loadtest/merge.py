"""``loadtest merge DIR...``: the shards of one run (:mod:`loadtest.shards`) joined into one result, exactly.

Exact because nothing is merged from summaries: every shard keeps its session records (requests.jsonl), and
the merged result is built from all of them by the same code as a single run's (:func:`loadtest.report.
build_result`), so counts, errors by kind, percentiles, histograms and per-second series are what one machine
would have reported had it recorded every session.

Timelines: each shard's times are on its own machine's monotonic clock. Every shard's records are moved so
that its start (``t0``, the agreed start as it knew it) falls on the first shard's, which puts them on one
timeline as well as the start was agreed: to within the measured half round trip with ``--coordinator``, to
within the machines' clock disagreement (not measured) with ``--start-at``. The ``shards`` block of the
merged result.json, and the report's "Shards" section, give each shard's host, clock offset and uncertainty
(coordinator), how late it learned its start, and its sessions; a warning names anything above
:data:`CLOCK_WARN_MS`, a missing shard, and load options that differ between shards. A relay delay
(receive time minus the sim's send stamp) is only meaningful from a shard on the sim's own host.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.record import RunData, SessionRecord
from loadtest.shards import ShardClock, load_shard

__all__ = ["CLOCK_WARN_MS", "Merged", "main", "merge", "write_merged"]

CLOCK_WARN_MS = 10.0
# Options that may differ between shards: where each sent its load, and what its embedded servers were.
_PER_SHARD = frozenset({"shard", "url", "baseline_url", "relay_workers", "sim_workers"})
_TIME_FIELDS = ("intended_ns", "start_ns", "connected_ns", "sent_ns", "headers_ns", "first_chunk_ns", "end_ns")


@dataclass
class Merged:
    run: RunData
    block: dict[str, Any]  # result.json's "shards"
    machine: dict[str, Any]


def _shift(rec: SessionRecord, delta: int) -> SessionRecord:
    if not delta:
        return rec
    return replace(rec, **{f: getattr(rec, f) + delta for f in _TIME_FIELDS if getattr(rec, f) is not None})


def _ms(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e6


def merge(shards: list[tuple[ShardClock, RunData, dict[str, Any]]], sources: list[str] | None = None) -> Merged:
    """One run from its shards' ``(clock, run, machine)``; ValueError if they are not shards of one run."""
    if not shards:
        raise ValueError("nothing to merge")
    sources = sources or [""] * len(shards)
    counts = {c.shards for c, _, _ in shards}
    if len(counts) != 1:
        raise ValueError(f"these are shards of different splits: N = {sorted(counts)}")
    n = counts.pop()
    seen: dict[int, str] = {}
    for (clock, _, _), src in zip(shards, sources, strict=True):
        if clock.shard in seen:
            raise ValueError(f"shard {clock.shard}/{n} given twice: {seen[clock.shard]} and {src}")
        seen[clock.shard] = src
    order = sorted(range(len(shards)), key=lambda k: shards[k][0].shard)
    shards = [shards[k] for k in order]
    sources = [sources[k] for k in order]
    ref_clock, ref_run, ref_machine = shards[0]

    warnings: list[str] = []
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        warnings.append(f"shard(s) {', '.join(f'{i}/{n}' for i in missing)} missing: the merged run holds "
                        f"{len(shards)} of {n} shards' load")
    base = {k: v for k, v in ref_run.config.items() if k not in _PER_SHARD}
    for clock, run, _ in shards[1:]:
        other = {k: v for k, v in run.config.items() if k not in _PER_SHARD}
        differ = sorted(k for k in base.keys() | other.keys() if base.get(k) != other.get(k))
        if differ:
            warnings.append(f"shard {clock.shard}/{n} ran other load options than shard {ref_clock.shard}: "
                            f"{', '.join(differ)}; the shards do not add up to one run")
    methods = {c.method for c, _, _ in shards}
    starts = {c.start_unix_ns for c, _, _ in shards}
    if len(methods) > 1 or len(starts) > 1:
        warnings.append("the shards did not agree on one start (methods "
                        f"{', '.join(sorted(methods))}): their timelines are aligned by their own starts")

    records: list[SessionRecord] = []
    t_end = ref_run.t0_ns
    rows = []
    for (clock, run, machine), src in zip(shards, sources, strict=True):
        delta = ref_run.t0_ns - run.t0_ns
        records.extend(_shift(r, delta) for r in run.records)
        t_end = max(t_end, run.t_end_ns + delta)
        rows.append({
            "shard": clock.shard, "source": src, "host": clock.host or machine.get("hostname"),
            "method": clock.method, "offset_ms": _ms(clock.offset_ns), "uncertainty_ms": _ms(clock.uncertainty_ns),
            "late_ms": _ms(clock.late_ns),
            "started_at": datetime.fromtimestamp(clock.wall_at_t0_ns / 1e9, UTC).isoformat(timespec="milliseconds"),
            "sessions": sum(1 for r in run.records if not r.warmup),
            "failed": sum(1 for r in run.records if not r.warmup and r.error_kind is not None),
        })
        late = _ms(clock.late_ns) or 0.0
        if late > CLOCK_WARN_MS:
            warnings.append(f"shard {clock.shard}/{n} learned its start {late:,.0f} ms after it: its first sessions "
                            "started late, and their latency (from the intended start) includes it")
        unc = _ms(clock.uncertainty_ns)
        if unc is not None and unc > CLOCK_WARN_MS:
            warnings.append(f"shard {clock.shard}/{n}'s clock offset is known to ±{unc:,.1f} ms only: "
                            "the shards' timelines are aligned no better")
        warnings.extend(f"shard {clock.shard}/{n}: {w}" for w in run.warnings)

    offsets = [r["offset_ms"] for r in rows if r["offset_ms"] is not None]
    spread = max(offsets) - min(offsets) if len(offsets) == len(rows) and offsets else None
    if "start-at" in methods:
        note = ("--start-at: each shard started by its own wall clock; the machines' clock offsets were not "
                "measured (use --coordinator to measure them)")
    elif methods == {"coordinator"}:
        note = (f"--coordinator: started by the coordinator's clock; machines' clocks disagreed by up to "
                f"{spread:,.3f} ms, the start is aligned to within "
                f"±{max(r['uncertainty_ms'] or 0 for r in rows):,.3f} ms")
    else:
        note = "no agreed start: each shard started when launched; timelines aligned by their own starts"
    block = {"shards": n, "merged": len(shards), "missing": missing, "method": "/".join(sorted(methods)),
             "start_unix": None if ref_clock.start_unix_ns is None else ref_clock.start_unix_ns / 1e9,
             "offset_spread_ms": spread, "note": note, "per_shard": rows}

    hosts: dict[str, int] = {}
    for clock, run, machine in shards:
        hosts.setdefault(clock.host or str(machine.get("hostname")), run.cores or machine.get("cpus") or 0)
    processes = [p for _, run, _ in shards for p in run.processes]
    peaks = [run.upstream_peak_open for _, run, _ in shards]
    config = dict(ref_run.config) | {"shard": None, "shards": n}
    merged = RunData(
        command=["loadtest", "merge", *sources], config=config,
        started_unix=ref_run.started_unix, t0_ns=ref_run.t0_ns, t_end_ns=t_end, records=records,
        processes=processes, warnings=warnings, interrupted=any(run.interrupted for _, run, _ in shards),
        slo=ref_run.slo, fd_limit=ref_run.fd_limit,
        connect_retries=sum(run.connect_retries for _, run, _ in shards),
        upstream_peak_open=sum(peaks) if all(p is not None for p in peaks) else None,  # type: ignore[misc]
        cores=sum(hosts.values()) or None,
    )
    machine = dict(ref_machine) | {"hostname": ", ".join(hosts), "cpus": sum(hosts.values()) or None}
    return Merged(merged, block, machine)


def write_merged(out_dir: str | Path, merged: Merged) -> dict[str, Any]:
    from loadtest import report

    return report.write_outputs(out_dir, merged.run, machine=merged.machine, extra={"shards": merged.block})


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="loadtest merge", description="merge the result directories of --shard runs "
                                "into one result (result.json, requests.jsonl, report.md, plots)")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="a shard's --out directory (holds shard.json)")
    p.add_argument("--out", help="where the merged result goes (default results/<UTC timestamp>-merged/)")
    args = p.parse_args(argv)
    try:
        loaded = [load_shard(d) for d in args.dirs]
        merged = merge(loaded, [str(d) for d in args.dirs])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"loadtest merge: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or f"results/{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-merged")
    result = write_merged(out, merged)
    for w in result.get("warnings", []):
        print(f"WARNING: {w}", file=sys.stderr)
    s = result["summary"]
    print(f"{s['completed']:,} completed, {s.get('unverified', 0):,} unverified, {s['failed']:,} failed of "
          f"{s['sessions']:,} sessions from {merged.block['merged']} of {merged.block['shards']} shards; "
          f"{merged.block['note']}")
    print(f"wrote {out}/result.json and report.md")
    return 1 if s["failed"] or merged.block["missing"] else 0
