"""``python -m bench.clientbias``: how much later the project's ``loadtest`` reads TTFC than a raw trio + h11
client on the same upstream.

One sim with a known TTFT (``--ttft``, 1 s, no jitter); for each repeat, ``python -m loadtest`` (no ramp-up:
all N due at once, like the raw client) and ``python -m bench.rawclient`` run N concurrent sessions against it,
one after the other, the order alternating between repeats (the same counts, the same sim); with ``--paired``,
at the same time, from one instant of the wall clock (each N sessions: the sim serves 2N), so that whatever else
runs on a shared machine meets both alike. Both count TTFC from the instant all N sessions were due.

Each process's TTFC p50/p99 over its sessions, their difference (loadtest - raw; goal ``--goal-ms``: <= 10 ms at
p50 and p99), the spread of the per-repeat differences and of the raw client's own p50 (the machine's noise),
each client's CPU share of the machine, and the phases each client owns (request written and headers read, from
the common start; the first-chunk read lag: its receive stamp minus the sim's send stamp of the first chunk) are
written to ``<out>/README.md`` and ``<out>/clientbias.json``; the load generator's runs stay under
``<out>/runs/``. The phases tell the client's own cost from the sim's: on a shared machine the sim's time to
answer moves TTFC by far more between repeats than either client adds.

``compare``, ``phase_row``, ``summarize`` and ``render`` are pure; ``main`` is the shell.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from loadtest.stats import percentiles

GOAL_MS = 10.0  # loadtest - raw, at p50 and at p99


PHASES = (("sent", "requests written"), ("headers", "response headers read"),
          ("read_lag", "first-chunk read lag (receive stamp - the sim's send stamp)"))


def loadtest_phases(loadtest_out: Path) -> dict[str, list[float]]:
    """Each measured session's phases (ms): request written and headers read from the common start, and the
    first-chunk read lag (when the load generator stamped its first chunk minus when the sim stamped sending
    it: what the load generator adds between the socket and its TTFC stamp)."""
    out: dict[str, list[float]] = {name: [] for name, _ in PHASES}
    with (loadtest_out / "requests.jsonl").open() as f:
        for line in f:
            r = json.loads(line)
            if r.get("error_kind") is not None or r.get("warmup"):
                continue
            out["sent"].append((r["sent_ns"] - r["intended_ns"]) / 1e6)
            if r.get("headers_ns") is not None:
                out["headers"].append((r["headers_ns"] - r["intended_ns"]) / 1e6)
            if r.get("relay_delay_ms"):
                out["read_lag"].append(r["relay_delay_ms"][0])
    return out


def raw_phases(raw_doc: dict[str, Any]) -> dict[str, list[float]]:
    """The same phases (ms) from ``bench.rawclient``'s JSON."""
    keys = {"sent": "sent_ns", "headers": "headers_ns", "read_lag": "read_lag_ns"}
    return {name: [t / 1e6 for t in raw_doc.get(key, []) if t is not None] for name, key in keys.items()}


def phase_row(lt: dict[str, list[float]], raw: dict[str, list[float]]) -> dict[str, float | None]:
    """p50/p99 of each phase for both clients and loadtest minus raw."""
    out: dict[str, float | None] = {}
    for name, _ in PHASES:
        a, b = percentiles(lt.get(name, []), (50, 99)), percentiles(raw.get(name, []), (50, 99))
        for p in ("p50", "p99"):
            out[f"loadtest_{name}_{p}_ms"], out[f"raw_{name}_{p}_ms"] = a[p], b[p]
            out[f"diff_{name}_{p}_ms"] = a[p] - b[p] if a[p] is not None and b[p] is not None else None
    return out


def compare(loadtest_ms: list[float], raw_ms: list[float]) -> dict[str, Any]:
    """TTFC p50/p99 of both clients (ms) and loadtest minus raw."""
    a, b = percentiles(loadtest_ms, (50, 99)), percentiles(raw_ms, (50, 99))
    out: dict[str, Any] = {"loadtest_sessions": a["count"], "raw_sessions": b["count"]}
    for p in ("p50", "p99"):
        out[f"loadtest_{p}_ms"], out[f"raw_{p}_ms"] = a[p], b[p]
        out[f"diff_{p}_ms"] = a[p] - b[p] if a[p] is not None and b[p] is not None else None
    return out


def _f(v: float | None, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def _verdict(d: float | None, goal_ms: float) -> str:
    """loadtest - raw against the goal: one-sided, a load generator that reads earlier than the reference adds
    nothing of its own (said, since it may also mean the two measured different things)."""
    if d is None:
        return "not measured"
    if d > goal_ms:
        return f"missed by {d - goal_ms:.1f} ms"
    return f"met (loadtest {-d:.1f} ms earlier)" if d < -goal_ms else "met"


def _pair(row: dict[str, Any], key: str, spec: str = ".1f") -> str:
    return f"{_f(row.get(key.format(p='p50')), spec)} / {_f(row.get(key.format(p='p99')), spec)}"


def render(result: dict[str, Any]) -> str:
    """README.md: the pooled comparison, the goal met or missed, the phases, the noise, and every repeat."""
    pooled = result["pooled"]
    goal = result.get("goal_ms", GOAL_MS)
    n = result["concurrency"]
    how = (f"at the same time against the same sim ({n:,} sessions each, so the sim serves {2 * n:,}), started "
           "at one instant of the wall clock (loadtest as `--shard 0/1 --start-at`), so that whatever else runs "
           "on the machine meets both alike" if result.get("paired") else
           "one after the other against the same sim, the order alternating (odd repeats loadtest first), the "
           "same session count")
    lines = [f"# Load generator bias at {n:,} streams", "", f"`{result['command']}`", "",
             f"Sim: TTFT {result['ttft_s']:g} s, no jitter; {result['repeat']} repeat(s), loadtest and the raw "
             f"trio + h11 client (`bench/rawclient.py`) {how}; all sessions due at once; both count TTFC from that "
             "instant.", "",
             "| | loadtest | raw client | loadtest - raw |", "|---|---:|---:|---:|"]
    for p in ("p50", "p99"):
        lines.append(f"| TTFC {p} (ms, all repeats pooled) | {_f(pooled[f'loadtest_{p}_ms'])} | "
                     f"{_f(pooled[f'raw_{p}_ms'])} | {_f(pooled[f'diff_{p}_ms'])} |")
    for p in ("p50", "p99"):
        d = _f(result.get(f"median_diff_{p}_ms"))
        lines.append(f"| TTFC {p} difference, median of the repeats (ms) | | | {d} |")
    lines.append(f"| CPU share of the machine, {result.get('cores') or '?'} cores (median) | "
                 f"{_f(result['loadtest_cpu_share'], '.1%')} | {_f(result['raw_cpu_share'], '.1%')} | |")
    lines.append("")
    for p in ("p50", "p99"):
        lines.append(f"- Goal: {p} within {goal:g} ms (pooled): {_verdict(pooled[f'diff_{p}_ms'], goal)}; "
                     f"median of the repeats: {_verdict(result.get(f'median_diff_{p}_ms'), goal)}.")
    noise = result.get("noise") or {}
    if noise:
        lines.append(f"- Noise: the raw client's own TTFC p50 ranged {_f(noise.get('raw_p50_min_ms'))}–"
                     f"{_f(noise.get('raw_p50_max_ms'))} ms over the repeats; the p50 difference "
                     f"{_f(noise.get('diff_p50_min_ms'))} to {_f(noise.get('diff_p50_max_ms'))} ms.")
    lag = result.get("first_chunk_read_lag_ms") or {}
    if lag.get("p50") is not None:
        lines.append(f"- The load generator's first-chunk read lag (its receive stamp minus the sim's send stamp "
                     f"of the first chunk, all repeats): p50 {_f(lag['p50'], '.2f')} ms, p99 "
                     f"{_f(lag['p99'], '.2f')} ms.")
    phases, med = result.get("pooled_phases") or {}, result.get("median_phase_diffs") or {}
    if phases:
        lines += ["", "Where TTFC goes: the phases the client owns (ms; written and headers from the common start; "
                  "a TTFC is these plus the sim's time from reading the request to sending the first chunk).", "",
                  "| phase, p50 / p99 | loadtest (pooled) | raw client (pooled) | loadtest - raw (pooled) | "
                  "loadtest - raw (median of the repeats) |", "|---|---:|---:|---:|---:|"]
        for name, words in PHASES:
            lines.append(f"| {words} | {_pair(phases, f'loadtest_{name}_{{p}}_ms', '.2f')} | "
                         f"{_pair(phases, f'raw_{name}_{{p}}_ms', '.2f')} | "
                         f"{_pair(phases, f'diff_{name}_{{p}}_ms', '.2f')} | "
                         f"{_pair(med, f'diff_{name}_{{p}}_ms', '.2f')} |")
    lines += ["", "TTFC in ms; CPU as a share of the machine.", "",
              "| repeat | first | loadtest p50 / p99 | raw p50 / p99 | diff p50 / p99 | raw p50 from its own start "
              "| written p50 diff | read lag p50 / p99, loadtest | read lag p50 / p99, raw | loadtest CPU | raw CPU |",
              "|---:|---|---|---|---|---:|---:|---|---|---:|---:|"]
    for i, r in enumerate(result["repeats"], 1):
        lines.append(f"| {i} | {r.get('first', '?')} | {_f(r['loadtest_p50_ms'])} / {_f(r['loadtest_p99_ms'])} | "
                     f"{_f(r['raw_p50_ms'])} / {_f(r['raw_p99_ms'])} | {_f(r['diff_p50_ms'])} / "
                     f"{_f(r['diff_p99_ms'])} | {_f(r.get('raw_own_p50_ms'))} | {_f(r.get('diff_sent_p50_ms'))} | "
                     f"{_pair(r, 'loadtest_read_lag_{p}_ms', '.2f')} | {_pair(r, 'raw_read_lag_{p}_ms', '.2f')} | "
                     f"{_f(r['loadtest_cpu_share'], '.1%')} | {_f(r['raw_cpu_share'], '.1%')} |")
    for title, facts in (("Versions", result.get("versions")), ("Machine", result.get("machine"))):
        if facts:
            lines += ["", f"{title}: " + "; ".join(f"{k} {v}" for k, v in facts.items()) + "."]
    return "\n".join(lines) + "\n"


def summarize(repeats: list[dict[str, Any]], samples: dict[str, Any], **meta: Any) -> dict[str, Any]:
    """The whole result from each repeat's comparison and the pooled samples: ``samples["loadtest"]`` and
    ``samples["raw"]`` the TTFCs (ms), ``samples["phases"]`` (optional) each client's phases
    (``{"loadtest": loadtest_phases(...), "raw": raw_phases(...)}``, pooled over the repeats)."""
    def col(key: str) -> list[float]:
        return [r[key] for r in repeats if r.get(key) is not None]

    def med(key: str) -> float | None:
        xs = col(key)
        return statistics.median(xs) if xs else None

    noise: dict[str, float] = {}
    for key, name in (("raw_p50_ms", "raw_p50"), ("diff_p50_ms", "diff_p50")):
        if col(key):
            noise[f"{name}_min_ms"], noise[f"{name}_max_ms"] = min(col(key)), max(col(key))
    phases = samples.get("phases") or {}
    lag = percentiles((phases.get("loadtest") or {}).get("read_lag", []), (50, 99))
    pooled_phases = phase_row(phases["loadtest"], phases["raw"]) if phases else {}
    median_phase_diffs = {k: med(k) for k in pooled_phases if k.startswith("diff_")}
    return {"goal_ms": GOAL_MS, **meta, "repeat": len(repeats), "repeats": repeats,
            "pooled": compare(samples["loadtest"], samples["raw"]),
            "median_diff_p50_ms": med("diff_p50_ms"), "median_diff_p99_ms": med("diff_p99_ms"), "noise": noise,
            "first_chunk_read_lag_ms": {"p50": lag["p50"], "p99": lag["p99"]},
            "pooled_phases": pooled_phases, "median_phase_diffs": median_phase_diffs,
            "loadtest_cpu_share": med("loadtest_cpu_share"), "raw_cpu_share": med("raw_cpu_share")}


async def _measure(args: argparse.Namespace, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from bench.procs import serve
    from bench.run import _sim_launch, ttfc_samples
    from bench.scenarios import Scenario

    sc = Scenario("clientbias", streams=args.concurrency, ttft_s=args.ttft, ttft_jitter_s=0.0, chunks=args.chunks,
                  interval_s=0.1)
    repeats: list[dict[str, Any]] = []
    samples: dict[str, Any] = {"loadtest": [], "raw": [],
                               "phases": {"loadtest": {n: [] for n, _ in PHASES}, "raw": {n: [] for n, _ in PHASES}}}
    cores = os.cpu_count() or 1
    async with serve("sim", _sim_launch(sc), out / "sim.log") as sim:
        for rep in range(1, args.repeat + 1):
            rundir = out / "runs" / f"r{rep}"
            rundir.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-m", "loadtest", "--url", sim.url, "-c", str(args.concurrency), "--quiet",
                    "--ramp-up", "0", "--out", str(rundir / "loadtest")]
            if args.workers is not None:
                argv += ["--workers", str(args.workers)]
            raw_argv = [sys.executable, "-m", "bench.rawclient", "--url", sim.url, "-c", str(args.concurrency)]
            first = "both" if args.paired else "loadtest" if rep % 2 else "raw"
            raw_doc: dict[str, Any] = {}

            async def run_loadtest(argv: list[str] = argv, rundir: Path = rundir) -> None:
                with (rundir / "loadtest.log").open("wb") as log:
                    await trio.run_process(argv, stdout=log, stderr=subprocess.STDOUT)

            async def run_raw(raw_argv: list[str] = raw_argv) -> None:
                nonlocal raw_doc
                raw_doc = json.loads((await trio.run_process(raw_argv, capture_stdout=True)).stdout)

            if args.paired:
                # Both at the same instant of the wall clock, so that whatever else runs on the machine
                # meets both alike; loadtest's --shard 0/1 is the whole load with an agreed start.
                at = f"{time.time() + args.lead:.6f}"
                argv += ["--shard", "0/1", "--start-at", at]
                raw_argv += ["--start-at", at]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run_loadtest)
                    nursery.start_soon(run_raw)
            else:
                for client in ((run_loadtest, run_raw) if first == "loadtest" else (run_raw, run_loadtest)):
                    await client()
            lt_ms = ttfc_samples(rundir)
            summary = json.loads((rundir / "loadtest" / "result.json").read_text())["summary"]
            raw_ms = [t / 1e6 for t in raw_doc["ttfc_ns"] if t is not None]
            own_ms = [t / 1e6 for t in raw_doc["ttfc_own_ns"] if t is not None]
            (rundir / "rawclient.json").write_text(json.dumps(raw_doc))
            row = compare(lt_ms, raw_ms)
            row["first"] = first
            row["raw_own_p50_ms"] = percentiles(own_ms, (50,))["p50"]
            row["raw_failed"] = raw_doc["ttfc_ns"].count(None)
            row["loadtest_cpu_share"] = summary.get("loadtest_cpu_share")
            row["loadtest_processes"] = summary.get("loadtest_processes")
            row["raw_cpu_share"] = raw_doc["cpu_s"] / raw_doc["wall_s"] / cores if raw_doc["wall_s"] else None
            lt_ph, raw_ph = loadtest_phases(rundir / "loadtest"), raw_phases(raw_doc)
            row.update(phase_row(lt_ph, raw_ph))
            for name, _ in PHASES:
                samples["phases"]["loadtest"][name] += lt_ph[name]
                samples["phases"]["raw"][name] += raw_ph[name]
            print(f"[clientbias] repeat {rep}: TTFC p50 loadtest {row['loadtest_p50_ms']:.1f} raw "
                  f"{row['raw_p50_ms']:.1f} ms", flush=True)
            repeats.append(row)
            samples["loadtest"] += lt_ms
            samples["raw"] += raw_ms
    return repeats, samples


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.clientbias", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", "-c", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--ttft", type=float, default=1.0)
    p.add_argument("--chunks", type=int, default=5)
    p.add_argument("--workers", type=int, help="loadtest --workers (default: loadtest's own)")
    p.add_argument("--paired", action="store_true",
                   help="run both clients at once (each N sessions, one sim, one start) instead of in turn")
    p.add_argument("--lead", type=float, default=5.0,
                   help="with --paired: the common start this many seconds after launch (default 5)")
    p.add_argument("--goal-ms", type=float, default=GOAL_MS, help="loadtest - raw allowed at p50 and p99")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    from bench.run import machine_facts, raise_fd_limit
    from loadtest.report import package_versions

    out = args.out or Path("results") / f"clientbias-{dt.datetime.now(dt.UTC):%Y-%m-%d}-c{args.concurrency}"
    out.mkdir(parents=True, exist_ok=True)
    raise_fd_limit()
    command = shlex.join(["python", "-m", "bench.clientbias", *(sys.argv[1:] if argv is None else argv)])
    repeats, samples = trio.run(_measure, args, out)
    versions = {"python": platform.python_version(),
                **{k: v for k, v in package_versions().items() if k in ("trio", "h11")}}
    result = summarize(repeats, samples, command=command, concurrency=args.concurrency, ttft_s=args.ttft,
                       goal_ms=args.goal_ms, paired=args.paired,
                       cores=os.cpu_count(), versions=versions, machine=machine_facts())
    (out / "clientbias.json").write_text(json.dumps(result, indent=2))
    text = render(result)
    (out / "README.md").write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
