"""report.md, rendered from a result.json document alone (fresh, or loaded from disk by ``loadtest report``).

:func:`fmt_num` is the one number format of the load generator's tables (report.md and ``loadtest compare``).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from loadtest import stats

__all__ = ["PLOT_FILES", "DEFINITIONS", "fmt_num", "render_markdown", "shards_markdown"]

PROTOCOLS = {"messages": "Anthropic Messages", "responses": "OpenAI Responses"}  # chat needs no note
PLOT_FILES = ("ttfc_distribution.png", "open_sessions.png", "chunks_per_s.png")

DEFINITIONS = (
    ("Completed", "the protocol says the answer ended: HTTP 200, no error event, at least one data chunk, a chunk "
     "with a finish_reason, then [DONE] (SSE) or the end of the body (NDJSON). A non-streaming body: one JSON "
     "object. This is what a real provider's stream can show; goodput counts these."),
    ("Verified", "completed, and every data chunk carries the simulated upstream's stamp with seq 0, 1, 2, … in "
     "order (no gap, duplicate or reorder), as many as it announced. The one chunk that may be absent is the "
     "usage-only chunk after the finish chunk when the client did not ask for usage: a relay that asked for it "
     "on the client's behalf (to count tokens) cuts it out."),
    ("Unverified", "completed, but no chunk carried the sim's stamp: the target removed them (or is not the sim), "
     "so a lost chunk would go unseen. Stamps on only some chunks fail the stream (`unstamped`)."),
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
    ("Latency statistics", "over non-warmup sessions that completed (verified or not); connect time over "
     "non-warmup sessions that opened a new connection. Percentiles "
     "interpolate linearly between closest ranks (numpy's default)."),
    ("Duration / throughput", "from the intended start of the first measured session to the end of the last; "
     "requests/s counts completed sessions, tokens/s "
     "completion tokens."),
    ("Goodput", "sessions that completed (verified or not) AND met every SLO (TTFC, E2E, the session's own p99 gap), "
     "as a fraction of all measured sessions and per second."),
    ("Output tokens", "per completed session, the upstream's `usage.completion_tokens` when the stream carried "
     "usage, else one per data chunk that carried output (content, reasoning or tool calls); the report says "
     "how many sessions came from each."),
    ("TTFT", "time to first token: from the intended start to the first chunk that carried output (a role-only "
     "first chunk with empty content is not a token; TTFC counts it)."),
    ("TPOT", "time per output token, per session: from the first to the last chunk with output, divided by the "
     "tokens after the first such chunk (tokens spread evenly over the chunks with output); with one token per "
     "chunk, (last − first) / (tokens − 1)."),
    ("ITL per token", "inter-token latency: each gap between two chunks with output shared by the tokens the later "
     "one carried, pooled over every token (token-weighted percentiles, inverted CDF); its mean equals TPOT."),
    ("Tokens/s per stream", "a session's output tokens over its end-to-end time; \"all streams\" divides every "
     "completed session's output tokens by the measured window."),
    ("CPU per chunk", "process CPU seconds over the run divided by the chunks received in the same window."),
)


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
        ("… verified (sim stamps: no chunk lost)", s.get("verified"), "n"),
        ("… unverified (no sim stamps)", s.get("unverified"), "n"),
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


def token_source_note(pt: dict[str, Any]) -> str:
    """Where a target's output token counts came from, in words (sessions without usage are counted too)."""
    by = pt.get("sessions_by_source") or {}
    usage, chunks = by.get("usage", 0), by.get("chunks", 0)
    if not usage and not chunks:
        return "no completed session carried output"
    parts = []
    if usage:
        parts.append(f"{fmt_num(usage)} session(s) from the upstream's usage")
    if chunks:
        parts.append(f"{fmt_num(chunks)} session(s) returned no usage: counted from their chunks, one token per "
                     "chunk with output")
    return "output tokens: " + "; ".join(parts)


PER_TOKEN_ROWS = (
    ("Output tokens", ("output_tokens",)),
    ("Output tokens/s (all streams)", ("output_tokens_per_s",)),
    ("Output tokens per session p50", ("tokens_per_session", "p50")),
    ("TTFT p50 (ms)", ("ttft_ms", "p50")), ("TTFT p99 (ms)", ("ttft_ms", "p99")),
    ("TPOT p50 (ms)", ("tpot_ms", "p50")), ("TPOT p99 (ms)", ("tpot_ms", "p99")),
    ("ITL per token p50 (ms)", ("itl_ms", "p50")), ("ITL per token p99 (ms)", ("itl_ms", "p99")),
    ("Tokens/s per stream p50", ("stream_tokens_per_s", "p50")),
    ("Tokens/s per stream, slowest", ("stream_tokens_per_s", "min")),
)


def per_token_section(target: str, s: dict[str, Any], direct: dict[str, Any] | None) -> list[str]:
    """The "Per token" section: TTFT, TPOT, ITL per token and tokens/s, with where the token counts came from."""
    pt = s.get("per_token")
    if not pt:
        return []
    cols = [(target, pt)] + ([("direct", direct["per_token"])] if direct and direct.get("per_token") else [])

    def get(block: dict[str, Any], path: tuple[str, ...]) -> Any:
        for k in path:
            block = block.get(k) if isinstance(block, dict) else None
        return block

    rows = [[label] + [fmt_num(get(b, path)) for _, b in cols] for label, path in PER_TOKEN_ROWS]
    out = ["## Per token", ""] + _table(["Metric"] + [name for name, _ in cols], rows) + [""]
    out += [f"- {name}: {token_source_note(b)}." for name, b in cols] + [""]
    return out


def _fmt(v: Any, kind: str) -> str:
    return _pct(v) if kind == "%" else fmt_num(v)


def reproduce_line(result: dict[str, Any]) -> str:
    """The command that ran, as a clone runs it: ``./dev loadtest ...`` (./dev builds the virtualenv first)."""
    line = result.get("command_line") or shlex.join(result.get("command", []))
    return f"./dev {line}" if line.split(" ", 1)[0] == "loadtest" else line


def shards_markdown(block: dict[str, Any]) -> list[str]:
    """The report's "Shards" section from result.json's ``shards`` block."""
    lines = ["## Shards", "", f"{block['merged']} of {block['shards']} shards merged. {block['note']}.", ""]
    header = ["Shard", "Host", "Started (UTC)", "Clock offset (ms)", "± (ms)", "Late (ms)", "Sessions", "Failed"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for r in block["per_shard"]:
        cells = [f"{r['shard']}/{block['shards']}", str(r["host"]), r["started_at"], fmt_num(r["offset_ms"]),
                 fmt_num(r["uncertainty_ms"]), fmt_num(r["late_ms"]), fmt_num(r["sessions"]), fmt_num(r["failed"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


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

    lines += ["## Reproduce", "", "```sh", reproduce_line(result), "```", ""]

    cfg = result.get("config") or {}
    lines += ["## Load profile", ""]
    lines += _table(["Option", "Value"], [[f"`{k}`", f"`{json.dumps(v)}`"] for k, v in cfg.items()]) if cfg else [
        "(no configuration recorded)"]
    if result.get("slo"):
        slo = ", ".join(f"{k} ≤ {fmt_num(v)}" for k, v in result["slo"].items())
        lines += ["", f"SLO: {slo}"]
    if cfg.get("api") in PROTOCOLS:
        lines += ["", f"Protocol: `--api {cfg['api']}`, {PROTOCOLS[cfg['api']]}: a chunk is an event that carries "
                  "output (text, reasoning, tool-call arguments), TTFC the first of them and the gaps between them; "
                  "the opening and closing events are checked for completeness, not timed."]
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

    lines += per_token_section(target, s, direct)

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
        ("Load generator CPU utilisation (per load process)", s.get("loadtest_cpu_utilization"), "%"),
        ("Load generator event-loop lag p99", (s.get("loadtest_loop_lag_ms") or {}).get("p99"), "ms"),
    ]
    if s.get("loadtest_cpu_share") is not None:
        facts.append((f"Load generator CPU share ({s['loadtest_processes']} process(es), CPU s / wall s / "
                      f"{s['cores']} cores)", s["loadtest_cpu_share"], "%"))
    for label, v, unit in facts:
        if v is None:
            continue
        text = _pct(v) if unit == "%" else _bytes(v) if unit == "bytes" else f"{fmt_num(v)} {unit}"
        lines.append(f"- {label}: {text}")
    lines.append("")

    if result.get("shards"):  # a merged run (loadtest merge)
        lines += shards_markdown(result["shards"])

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
