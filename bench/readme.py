"""The Markdown report: per scenario, targets side by side, with the ratio to nginx from the same run.

Pure: takes the medians and the run's facts, returns text.
"""

from __future__ import annotations

from typing import Any

# (key, label, format, show the ratio to nginx)
ROWS: list[tuple[str, str, str, bool]] = [
    ("completed", "completed", "{:.0f}", False),
    ("unverified", "ended cleanly, completeness unverified (no sim stamps)", "{:.0f}", False),
    ("failed", "failed", "{:.0f}", False),
    ("resent", "requests re-sent on a fresh connection", "{:.0f}", False),
    ("peak_open_streams", "peak open sessions (load generator)", "{:.0f}", False),
    ("upstream_peak_open", "peak streams open at the upstream (held by the proxy)", "{:.0f}", False),
    ("chunks_per_s", "chunks/s received", "{:,.0f}", False),
    ("cpu_us_per_chunk", "proxy CPU µs / chunk", "{:.1f}", True),
    ("proxy_cpu_s", "proxy CPU s", "{:.2f}", True),
    ("proxy_core_pct", "proxy CPU % of one core", "{:.0f} %", False),
    ("chunks_per_cpu_s", "chunks / proxy CPU-s", "{:,.0f}", True),
    ("ttfc_p50_ms", "TTFC p50 ms", "{:.1f}", False),
    ("ttfc_p99_ms", "TTFC p99 ms", "{:.1f}", False),
    ("ttfc_overhead_p50_ms", "TTFC overhead p50 ms (vs direct)", "{:+.1f}", False),
    ("ttfc_overhead_p99_ms", "TTFC overhead p99 ms (vs direct)", "{:+.1f}", False),
    ("relay_delay_p50_ms", "delay after sim send p50 ms", "{:.1f}", False),
    ("relay_delay_p99_ms", "delay after sim send p99 ms", "{:.1f}", False),
    ("first_chunk_delay_p50_ms", "first chunk: delay after sim send p50 ms", "{:.1f}", False),
    ("first_chunk_delay_p99_ms", "first chunk: delay after sim send p99 ms", "{:.1f}", False),
    ("e2e_p50_ms", "E2E p50 ms", "{:,.0f}", False),
    ("e2e_p99_ms", "E2E p99 ms", "{:,.0f}", False),
    ("idle_rss_mib", "idle RSS MiB (all processes)", "{:.1f}", True),
    ("peak_rss_mib", "peak RSS MiB (all processes)", "{:.1f}", True),
    ("mem_per_stream_kb", "memory per upstream stream KB: (peak − idle RSS) / peak streams open at the upstream",
     "{:.1f}", True),
    ("mem_per_session_kb", "memory per client session KB: (peak − idle RSS) / peak open client sessions",
     "{:.1f}", True),
    ("sim_cpu_s", "sim CPU s", "{:.2f}", False),
]


def describe(sc: dict[str, Any]) -> str:
    """A scenario's load shape in words, from the scenario as a run stored it."""
    if "connections" in sc:  # bench.requests: non-streaming requests, closed loop then open-loop steps
        return (
            f"{sc['connections']} kept-alive connections × {sc['per_connection']} non-streaming requests (CPU per "
            f"request); open loop at {sc['rate']:g} requests/s and steps of "
            f"{', '.join(f'{r:g}' for r in sc['rates'])} requests/s, {sc['duration_s']:g} s each; one worker per proxy"
        )
    return (
        f"{sc['streams']:,} streams; sim TTFT {sc['ttft_s']:g} s ± {sc['ttft_jitter_s']:g}, {sc['chunks']} chunks "
        f"{sc['interval_s']:g} s apart"
        + (f"; closed loop for {sc['duration_s']:g} s" if sc.get("duration_s") else "; each slot once")
        + (f", ramp-up {sc['ramp_up_s']:g} s" if sc.get("ramp_up_s") else "")
        + f"; {sc['proxy_workers']} worker processes per proxy"
    )


def _cell(value: Any, fmt: str, nginx: Any, ratio: bool) -> str:
    if value is None:
        return "—"
    text = fmt.format(value)
    if ratio and isinstance(nginx, int | float) and nginx > 0:
        text += f" ({value / nginx:.2f}×)"
    return text


def table(medians: dict[str, dict[str, Any]], targets: list[str]) -> str:
    """One scenario: rows are figures, columns are targets; ``(N×)`` is the ratio to nginx."""
    shown = [t for t in targets if t in medians]
    lines = ["| figure | " + " | ".join(shown) + " |", "|---|" + "---:|" * len(shown)]
    nginx = medians.get("nginx", {})
    for key, label, fmt, ratio in ROWS:
        cells = [_cell(medians[t].get(key), fmt, nginx.get(key), ratio) for t in shown]
        if all(c == "—" for c in cells):
            continue
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(*, commands: list[str], facts: dict[str, Any], versions: dict[str, str], unavailable: dict[str, str],
           scenarios: list[dict[str, Any]], targets: list[str], notes: list[str]) -> str:
    """``scenarios``: [{"scenario": Scenario as dict, "medians": {target: figures}, "errors": {target: str},
    "repeats": int, "command": str}]."""
    out = [
        "# moonrelay side-by-side benchmark",
        "",
        "```",
        *commands,
        "```",
        "",
        "Figures are medians over repeats; `(N×)` is the ratio to nginx's median in the same run. "
        "CPU and RSS are psutil sums over each proxy's whole process tree (master + workers); "
        "TTFC overhead is the target's TTFC percentile minus direct's in the same repeat; "
        "'delay after sim send' is client receive time minus the sim's per-chunk send stamp (CLOCK_MONOTONIC).",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in facts.items()],
        "",
        "## Targets",
        "",
        *[f"- **{t}**: {versions[t]}" for t in targets if t in versions],
        *[f"- **{t}**: could not run: {why.splitlines()[0] if why else ''}" for t, why in unavailable.items()],
        "",
    ]
    for s in scenarios:
        sc = s["scenario"]
        out += [
            f"## {sc['name']}",
            "",
            f"{describe(sc)}. Goal: {sc['goal']}.",
            "",
            f"Medians over {s['repeats']} repeat(s), from `{s['command']}`. Versions: "
            + ", ".join(f"{t} {v}" for t, v in s.get("versions", {}).items() if v) + ".",
            "",
            table(s["medians"], targets),
            "",
            f"![TTFC]({sc['name']}-ttfc.png)",
            "",
        ]
        for t, err in s.get("errors", {}).items():
            out.append(f"- {t} failed in this scenario: `{err.splitlines()[0] if err else ''}`")
        if s.get("errors"):
            out.append("")
    out += ["## CPU per relayed chunk", "", "![CPU per chunk](cpu-per-chunk.png)", ""]
    if unavailable:
        out += ["## Peers that could not run", ""]
        for t, why in unavailable.items():
            out += [f"### {t}", "", "```", why, "```", ""]
    if notes:
        out += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(out)
