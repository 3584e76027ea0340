"""result.json, requests.jsonl, report.md and plots: what a run leaves behind.

``build_result`` turns a :class:`RunData` into the result.json document; ``render_markdown`` and the plots
read only that document, so ``loadtest report DIR/result.json`` re-renders everything from disk.

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

SCHEMA_VERSION = 1
VERSION_PACKAGES = ("moonrelay", "trio", "httpx", "hypercorn", "quart", "quart_trio", "h11")
PLOT_FILES = ("ttfc_distribution.png", "open_sessions.png", "chunks_per_s.png")
# Above this share of its CPU the load generator's own scheduling delays start to show up as latency.
SATURATION_UTILIZATION = 0.8

DEFINITIONS = (
    ("Completed", "HTTP 200, no error event, and every data chunk carries the simulated upstream's stamp "
     "with seq 0, 1, 2, … in order (no gap, duplicate or reorder), as many as it announced, then [DONE] "
     "(SSE) or the end of the body (NDJSON). A non-streaming body: one JSON object."),
    ("Completeness unverified", "the stream ended cleanly with at least one data chunk, but no chunk carried "
     "the sim's stamp: the target removed them (or is not the sim), so a lost chunk would go unseen. Counted "
     "apart from completed and failed; latency includes them, goodput does not. A stream with no data chunk "
     "([DONE] alone) is failed (`empty_stream`)."),
    ("Re-sent", "requests that went on a fresh connection because the kept-alive one was found closed before "
     "any byte of them was written (so the target cannot have seen them). A connection that fails after the "
     "request was written is that session's failure: it is never sent again."),
    ("TTFC", "time to first chunk, from the session's *intended* start (open-loop schedule or slot-free "
     "time) to the first data event: time spent queued in the load generator or server counts "
     "(coordinated-omission aware)."),
    ("TTFC from sent", "from the request being fully written to the first data event: server-side latency "
     "only, hides client queueing."),
    ("E2E", "from the intended start to the end of the response."),
    ("Gap", "time between consecutive data events of one stream (inter-chunk latency), pooled over streams."),
    ("Relay delay", "receive time minus the simulated upstream's send stamp for the same chunk, both "
     "CLOCK_MONOTONIC on one host: what the relay and the network add per chunk."),
    ("Overhead", "relay minus direct of the same percentile: a difference of percentiles, not a percentile "
     "of per-request differences."),
    ("Latency statistics", "over non-warmup sessions that ended without a detected error (completed and "
     "unverified); connect time over non-warmup sessions that opened a new connection. Percentiles "
     "interpolate linearly between closest ranks (numpy's default)."),
    ("Duration / throughput", "from the intended start of the first measured session to the end of the last; "
     "requests/s counts sessions that ended without a detected error (completed and unverified), tokens/s "
     "completion tokens."),
    ("Goodput", "sessions that completed (verified) AND met every SLO (TTFC, E2E, the session's own p99 gap), "
     "as a fraction of all measured sessions and per second."),
    ("CPU per chunk", "process CPU seconds over the run divided by the chunks received in the same window."),
)


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
    if run.interrupted:
        out.append("run interrupted before its planned end: totals cover a partial run")
    if summary["sessions"] and summary["failed"]:
        out.append(f"{summary['failed']} of {summary['sessions']} sessions failed (see errors by kind)")
    for name, s in (("", summary), (" (direct)", summary.get("direct") or {})):
        if s.get("unverified"):
            out.append(f"completeness unverified{name}: {s['unverified']} of {s['sessions']} sessions ended "
                       "without the sim's stamps (the target removed them, or is not the sim), so a lost chunk "
                       "would go unseen; "
                       "they are not counted as completed")
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


# --- report.md -------------------------------------------------------------------------------------


def fmt_num(v: Any, digits: int | None = None) -> str:
    """A number for people: thousands separators, fewer decimals the larger it is; "—" for None."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if not isinstance(v, float):
        return str(v)
    if digits is None:
        a = abs(v)
        digits = 0 if a >= 1000 else 1 if a >= 100 else 2 if a >= 1 else 3
    return f"{v:,.{digits}f}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.1%}"


def _bytes(v: float | None) -> str:
    if v is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024 or unit == "GiB":
            return f"{v:,.1f} {unit}" if unit != "B" else f"{v:,.0f} B"
        v /= 1024
    return "—"  # pragma: no cover


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = "|".join("---" if i == 0 else "---:" for i in range(len(header)))
    out = ["| " + " | ".join(header) + " |", f"|{align}|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _p(block: dict[str, Any] | None, key: str) -> Any:
    return None if not block else block.get(key)


def _headline_rows(s: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(label, value, kind) for one target's summary; kind picks the formatting."""
    rows: list[tuple[str, Any, str]] = [
        ("Sessions", s.get("sessions"), "n"),
        ("Completed", s.get("completed"), "n"),
        ("Completeness unverified (no sim stamps)", s.get("unverified"), "n"),
        ("Failed", s.get("failed"), "n"),
        ("Re-sent (connection found closed before writing)", s.get("resent"), "n"),
        ("Peak concurrency", s.get("peak_concurrency"), "n"),
    ]
    if s.get("upstream_peak_open") is not None:  # embedded mode: what the relay itself held at once
        rows.append(("Peak streams open at the upstream (held by the relay)", s["upstream_peak_open"], "n"))
    for label, block in (("TTFC", "ttfc_ms"), ("TTFC from sent", "ttfc_sent_ms"), ("E2E", "e2e_ms"),
                         ("Gap", "gap_ms"), ("Relay delay", "relay_delay_ms"),
                         ("First chunk delay", "first_chunk_delay_ms")):
        keys = ("p50", "p90", "p99", "max") if block == "ttfc_ms" else ("p50", "p99")
        for k in keys:
            rows.append((f"{label} {k} (ms)", _p(s.get(block), k), "ms"))
    rows += [
        ("Duration (s)", s.get("duration_s"), "f"),
        ("Requests/s", s.get("requests_per_s"), "f"),
        ("Chunks/s", s.get("chunks_per_s"), "f"),
        ("Completion tokens/s", s.get("tokens_per_s"), "f"),
    ]
    g = s.get("goodput")
    if g:
        rows.append(("Goodput (fraction)", g.get("fraction"), "%"))
        rows.append(("Goodput (sessions/s)", g.get("per_s"), "f"))
    return rows


def _fmt(v: Any, kind: str) -> str:
    return _pct(v) if kind == "%" else fmt_num(v)


def render_markdown(result: dict[str, Any]) -> str:
    """report.md from a result.json document (freshly built or loaded from disk)."""
    s = result["summary"]
    direct = s.get("direct")
    overhead = s.get("overhead_ms") or {}
    lines: list[str] = [f"# moonrelay load test — {result.get('started_at', '')}", ""]

    if result.get("interrupted"):
        lines += ["> **Interrupted**: the run stopped before its planned end.", ""]
    warnings = result.get("warnings") or []
    if warnings:
        lines += ["> [!WARNING]"] + [f"> ⚠ {w}  " for w in warnings] + [""]

    lines += ["## Reproduce", "", "```sh", result.get("command_line") or shlex.join(result.get("command", [])),
              "```", ""]

    cfg = result.get("config") or {}
    lines += ["## Load profile", ""]
    lines += _table(["Option", "Value"], [[f"`{k}`", f"`{json.dumps(v)}`"] for k, v in cfg.items()]) if cfg else [
        "(no configuration recorded)"]
    if result.get("slo"):
        slo = ", ".join(f"{k} ≤ {fmt_num(v)}" for k, v in result["slo"].items())
        lines += ["", f"SLO: {slo}"]
    lines.append("")

    lines += ["## Headline", ""]
    target = s.get("target", "relay")
    ov_map = {"TTFC p50 (ms)": "ttfc_p50", "TTFC p99 (ms)": "ttfc_p99", "E2E p50 (ms)": "e2e_p50",
              "E2E p99 (ms)": "e2e_p99"}
    rows = []
    if direct:
        d_rows = {label: v for label, v, _ in _headline_rows(direct)}
        for label, v, kind in _headline_rows(s):
            ov = overhead.get(ov_map[label]) if label in ov_map else None
            rows.append([label, _fmt(v, kind), _fmt(d_rows.get(label), kind), fmt_num(ov) if label in ov_map else ""])
        lines += _table(["Metric", target, "direct", "overhead (ms)"], rows)
    else:
        rows = [[label, _fmt(v, kind)] for label, v, kind in _headline_rows(s)]
        lines += _table(["Metric", target], rows)
    lines.append("")

    lines += ["## Latency distribution (ms)", ""]
    cols = ["count", "min", "p50", "p90", "p95", "p99", "p99.9", "max", "mean"]
    lat_rows = []
    for name, summ in ((target, s), ("direct", direct)):
        if not summ:
            continue
        for block in stats.LATENCY_BLOCKS:
            b = summ.get(block)
            if b:
                lat_rows.append([f"{name} {block.removesuffix('_ms')}"] + [fmt_num(b.get(c)) for c in cols])
    lines += _table(["Metric"] + cols, lat_rows) + [""]

    lines += ["## Errors by kind", ""]
    err_rows = []
    for name, summ in ((target, s), ("direct", direct)):
        for kind, n in ((summ or {}).get("errors_by_kind") or {}).items():
            err_rows.append([name, f"`{kind}`", fmt_num(n)])
    lines += (_table(["Target", "Kind", "Sessions"], err_rows) if err_rows else ["None."]) + [""]

    lines += ["## Processes", ""]
    procs = result.get("processes") or []
    if procs:
        lines += _table(["Role", "PID", "CPU (s)", "Peak RSS", "Idle RSS"],
                        [[p["role"], str(p["pid"]), fmt_num(p["cpu_s"]), _bytes(p["peak_rss_bytes"]),
                          _bytes(p.get("idle_rss_bytes"))] for p in procs])
        workers = [[p["role"], str(w["pid"]), fmt_num(w["cpu_s"]), fmt_num(w["peak_fds"])]
                   for p in procs for w in (p.get("per_process") or []) if len(p.get("per_process") or []) > 1]
        if workers:
            lines += ["", "Per process of each tree (worker balance: peak open fds ≈ 2 per relayed stream):", ""]
            lines += _table(["Role", "PID", "CPU (s)", "Peak open fds"], workers)
    else:
        lines.append("(no process usage recorded)")
    lines.append("")
    facts = [
        ("Relay CPU per chunk", s.get("relay_cpu_us_per_chunk"), "µs"),
        ("Relay memory per open stream", s.get("relay_mem_per_stream_bytes"), "bytes"),
        ("Load generator CPU per chunk", s.get("loadtest_cpu_us_per_chunk"), "µs"),
        ("Load generator CPU utilisation", s.get("loadtest_cpu_utilization"), "%"),
    ]
    for label, v, unit in facts:
        if v is None:
            continue
        text = _pct(v) if unit == "%" else _bytes(v) if unit == "bytes" else f"{fmt_num(v)} {unit}"
        lines.append(f"- {label}: {text}")
    lines.append("")

    m = result.get("machine") or {}
    vers = result.get("versions") or {}
    lines += ["## Environment", "",
              f"- Machine: {m.get('hostname')} — {m.get('cpus')} CPUs, {m.get('platform')}, {m.get('python')}",
              f"- Open-file limit: soft {m.get('fd_limit_soft')}, hard {m.get('fd_limit_hard')}",
              "- Versions: " + ", ".join(f"{k} {v or '—'}" for k, v in vers.items()), ""]

    lines += ["## Plots", ""]
    lines += [f"![{f.removesuffix('.png')}]({f})" for f in PLOT_FILES] + [""]

    lines += ["## Metric definitions", ""]
    lines += [f"- **{name}**: {text}" for name, text in DEFINITIONS] + [""]
    return "\n".join(lines)


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
    """report.md and the plots from ``result`` alone (what ``loadtest report DIR/result.json`` does)."""
    from loadtest import plots  # matplotlib costs ~0.3 s to import; only pay it when drawing

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    md.write_text(render_markdown(result), encoding="utf-8")
    return [md, *plots.write_plots(result, out)]


def write_outputs(out_dir: str | os.PathLike[str], run: RunData, *, save_requests: bool = True) -> dict[str, Any]:
    """result.json, requests.jsonl (unless ``save_requests`` is False), report.md and plots; returns the result."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = build_result(run)
    (out / "result.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    if save_requests:
        with open(out / "requests.jsonl", "w", encoding="utf-8") as f:
            for r in run.records:
                f.write(json.dumps(record_json(r), separators=(",", ":")) + "\n")
    write_report(out, result)
    return result
