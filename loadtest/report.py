"""result.json, requests.jsonl, report.md, report.html and plots: what a run leaves behind.

``build_result`` turns a :class:`RunData` into the result.json document; ``render_markdown``
(:mod:`loadtest.reportmd`) and the plots read only that document, so ``loadtest report DIR/result.json``
re-renders everything from disk.

result.json (schema_version 1)::

    schema_version  1
    command         argv list;  command_line: the same, shell-quoted
    started_at      ISO-8601 UTC
    config          the load profile, as given
    slo             {ttfc_ms, e2e_ms, gap_ms} or null
    machine         {cpus, fd_limit_soft, fd_limit_hard, python, platform, hostname}
    versions        {moonrelay, trio, httpx, hypercorn, quart, quart_trio, h11}  (null when not installed)
    processes       [{role, pid, cpu_s, peak_rss_bytes, idle_rss_bytes}]
    summary         see loadtest.stats.summarize / target_summary
    series          {open_sessions: [[t_s, n]], open_sessions_step_s,
                     chunks_per_s: [[t_s, chunks_per_s]], chunks_per_s_step_s}   (<= 2,000 points each)
    histograms      {ttfc_ms: {edges, scale, counts: {target: [...]}}, e2e_ms: {...}}
    warnings        [str]
    interrupted     bool
    shards          (loadtest merge only) the shards merged and their clocks: see loadtest.merge
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import socket
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from loadtest import stats
from loadtest.record import RunData, SessionRecord
from loadtest.reportmd import PLOT_FILES, fmt_num, render_markdown

__all__ = [
    "SCHEMA_VERSION", "PLOT_FILES", "build_result", "derived_warnings", "fmt_num", "load_result", "machine_info",
    "package_versions", "record_json", "render_markdown", "write_outputs", "write_report",
]

SCHEMA_VERSION = 1
VERSION_PACKAGES = ("moonrelay", "trio", "httpx", "hypercorn", "quart", "quart_trio", "h11")
# Above this share of its CPU the load generator's own scheduling delays start to show up as latency.
SATURATION_UTILIZATION = 0.8
# Above this event-loop lateness (p99) the load generator's timings are visibly late (loadtest.looplag).
LOOP_LAG_WARN_MS = 25.0

# --- result.json -----------------------------------------------------------------------------------


def machine_info(fd_limit: tuple[int, int]) -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "fd_limit_soft": fd_limit[0],
        "fd_limit_hard": fd_limit[1],
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
    }


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            try:
                out[name] = metadata.version(name.replace("_", "-"))
            except metadata.PackageNotFoundError:
                out[name] = None
    return out


def derived_warnings(run: RunData, summary: dict[str, Any]) -> list[str]:
    """Warnings the numbers themselves justify, added after the engine's own."""
    out: list[str] = []
    util = summary.get("loadtest_cpu_utilization")
    if util is not None and util >= SATURATION_UTILIZATION:
        out.append(f"load generator near saturation: {util:.0%} CPU per loadtest process; "
                   "latencies include its own scheduling delay — add workers or lower the load")
    lag = (summary.get("loadtest_loop_lag_ms") or {}).get("p99")
    if lag is not None and lag > LOOP_LAG_WARN_MS:
        out.append(f"load generator event-loop lag p99 {lag:,.0f} ms: its timings can be late by that much — add "
                   "workers or lower the load")
    if run.interrupted:
        out.append("run interrupted before its planned end: totals cover a partial run")
    if summary["sessions"] and summary["failed"]:
        out.append(f"{summary['failed']} of {summary['sessions']} sessions failed (see errors by kind)")
    for name, s in (("", summary), (" (direct)", summary.get("direct") or {})):
        if s.get("unverified"):
            out.append(f"completeness unverified{name}: {s['unverified']} of {s['completed']} completed sessions "
                       "carried no sim stamps (the target removed them, or is not the sim): the protocol says they "
                       "ended, but a lost chunk would go unseen")
    n = summary.get("resent")
    if n:
        out.append(f"{n} request{'s' if n != 1 else ''} re-sent on a fresh connection (the kept-alive one was "
                   "found closed before the request was written)")
    if run.connect_retries:
        out.append(f"{run.connect_retries} connect retries")
    return [w for w in out if w not in run.warnings]


def build_result(
    run: RunData, *, machine: dict[str, Any] | None = None, versions: dict[str, str | None] | None = None
) -> dict[str, Any]:
    """The result.json document for ``run``; ``machine``/``versions`` override the detected ones (tests)."""
    summary = stats.summarize(run)
    span_s = max(summary["run_duration_s"], 0.0)
    records = run.records
    if records:
        first = min(min(r.start_ns, r.intended_ns) for r in records)
        last = max(r.end_ns for r in records)
        span_s = max(span_s, (max(last, run.t_end_ns) - min(first, run.t0_ns)) / 1e9)
    open_step = stats.step_for(span_s, 0.1)
    chunk_step = stats.step_for(span_s, 1.0)
    open_series = stats.open_sessions_series(records, run.t0_ns, open_step, run.t_end_ns)
    chunk_series = stats.chunks_per_second_series(records, run.t0_ns, chunk_step, run.t_end_ns)

    targets = stats.by_target(records)
    done = {t: [r for r in rs if r.ok and not r.warmup] for t, rs in targets.items()}
    histograms = {
        "ttfc_ms": stats.histogram({t: [r.ttfc_ms for r in rs if r.ttfc_ms is not None] for t, rs in done.items()}),
        "e2e_ms": stats.histogram({t: [r.e2e_ms for r in rs] for t, rs in done.items()}),
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "command": list(run.command),
        "command_line": shlex.join(run.command),
        "started_at": datetime.fromtimestamp(run.started_unix, UTC).isoformat(timespec="seconds"),
        "config": run.config,
        "slo": dict(run.slo) if run.slo else None,
        "machine": machine if machine is not None else machine_info(run.fd_limit),
        "versions": versions if versions is not None else package_versions(),
        "processes": [asdict(p) for p in run.processes],
        "summary": summary,
        "series": {
            "open_sessions": stats.downsample(open_series),
            "open_sessions_step_s": open_step,
            "chunks_per_s": stats.downsample(chunk_series),
            "chunks_per_s_step_s": chunk_step,
        },
        "histograms": histograms,
        "warnings": list(run.warnings) + derived_warnings(run, summary),
        "interrupted": run.interrupted,
    }


# --- files -----------------------------------------------------------------------------------------


_RECORD_FIELDS = tuple(SessionRecord.__dataclass_fields__)


def record_json(r: SessionRecord) -> dict[str, Any]:
    """``r.to_json()`` without ``dataclasses.asdict``'s deep copy of every gap and delay.

    The copy made writing 20,000 sessions of 100 chunks take 5.7 s; reading the attributes takes about 0.5 s.
    """
    d = {name: getattr(r, name) for name in _RECORD_FIELDS}
    d["connect_ms"] = r.connect_ms
    d["ttfc_ms"] = r.ttfc_ms
    d["ttfc_sent_ms"] = r.ttfc_sent_ms
    d["e2e_ms"] = r.e2e_ms
    return d


def load_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_report(out_dir: str | os.PathLike[str], result: dict[str, Any]) -> list[Path]:
    """report.md, the plots and report.html (the same, self-contained) from ``result`` alone (what ``loadtest
    report DIR/result.json`` does)."""
    from loadtest import plots  # matplotlib is slow to import; only pay it when drawing
    from loadtest.reporthtml import render_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    text = render_markdown(result)
    md.write_text(text, encoding="utf-8")
    drawn = plots.write_plots(result, out)
    page = out / "report.html"
    title = f"moonrelay load test — {result.get('started_at', '')}"
    page.write_text(render_html(text, title=title, folder=out), encoding="utf-8")
    return [md, page, *drawn]


def write_outputs(out_dir: str | os.PathLike[str], run: RunData, *, save_requests: bool = True,
                  machine: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """result.json, requests.jsonl (unless ``save_requests`` is False), report.md and plots; returns the result.

    ``machine`` overrides the detected machine facts, ``extra`` adds top-level blocks (a merge's ``shards``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = build_result(run, machine=machine) | (extra or {})
    (out / "result.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    if save_requests:
        with open(out / "requests.jsonl", "w", encoding="utf-8") as f:
            for r in run.records:
                f.write(json.dumps(record_json(r), separators=(",", ":")) + "\n")
    write_report(out, result)
    return result
