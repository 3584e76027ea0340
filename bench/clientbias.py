"""``python -m bench.clientbias``: how much later the project's ``loadtest`` reads TTFC than a raw trio + h11
client on the same upstream (issue 16, item 4).

One sim with a known TTFT (``--ttft``, 1 s, no jitter); for each repeat, ``python -m loadtest`` and then
``python -m bench.rawclient`` run N concurrent sessions against it, one after the other (the same counts, the
same sim). Each process's TTFC p50/p99 over its sessions, their difference (loadtest - raw; goal: <= 5 ms at
p50 and p99), and each client's CPU share (of one core) are written to ``<out>/README.md`` and
``<out>/clientbias.json``; the load generator's runs stay under ``<out>/runs/``.

``compare`` and ``render`` are pure; ``main`` is the shell.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from loadtest.stats import percentiles

GOAL_MS = 5.0


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


def render(result: dict[str, Any]) -> str:
    """README.md: the pooled comparison, the goal met or missed, and every repeat."""
    pooled = result["pooled"]
    lines = [f"# Load generator bias at {result['concurrency']:,} streams", "", f"`{result['command']}`", "",
             f"Sim: TTFT {result['ttft_s']:g} s, no jitter; {result['repeat']} repeat(s), loadtest then the raw "
             "trio + h11 client (`bench/rawclient.py`) against the same sim, the same session count.", "",
             "| | loadtest | raw client | loadtest - raw |", "|---|---:|---:|---:|"]
    for p in ("p50", "p99"):
        lines.append(f"| TTFC {p} (ms, all repeats pooled) | {_f(pooled[f'loadtest_{p}_ms'])} | "
                     f"{_f(pooled[f'raw_{p}_ms'])} | {_f(pooled[f'diff_{p}_ms'])} |")
    lines.append(f"| CPU share of one core (median) | {_f(result['loadtest_cpu_share'], '.0%')} | "
                 f"{_f(result['raw_cpu_share'], '.0%')} | |")
    lines.append("")
    for p in ("p50", "p99"):
        d = pooled[f"diff_{p}_ms"]
        verdict = ("not measured" if d is None else "met" if abs(d) <= GOAL_MS
                   else f"missed by {abs(d) - GOAL_MS:.1f} ms")
        lines.append(f"- Goal: {p} within {GOAL_MS:g} ms: {verdict}.")
    lines += ["", "| repeat | loadtest p50 / p99 | raw p50 / p99 | diff p50 / p99 | loadtest CPU | raw CPU |",
              "|---:|---|---|---|---:|---:|"]
    for i, r in enumerate(result["repeats"], 1):
        lines.append(f"| {i} | {_f(r['loadtest_p50_ms'])} / {_f(r['loadtest_p99_ms'])} | {_f(r['raw_p50_ms'])} / "
                     f"{_f(r['raw_p99_ms'])} | {_f(r['diff_p50_ms'])} / {_f(r['diff_p99_ms'])} | "
                     f"{_f(r['loadtest_cpu_share'], '.0%')} | {_f(r['raw_cpu_share'], '.0%')} |")
    return "\n".join(lines) + "\n"


def summarize(repeats: list[dict[str, Any]], samples: dict[str, list[float]], **meta: Any) -> dict[str, Any]:
    """The whole result from each repeat's comparison and the pooled samples of both clients."""
    def med(key: str) -> float | None:
        xs = [r[key] for r in repeats if r.get(key) is not None]
        return statistics.median(xs) if xs else None

    return {**meta, "repeat": len(repeats), "repeats": repeats,
            "pooled": compare(samples["loadtest"], samples["raw"]),
            "loadtest_cpu_share": med("loadtest_cpu_share"), "raw_cpu_share": med("raw_cpu_share")}


async def _measure(args: argparse.Namespace, out: Path) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    from bench.procs import serve
    from bench.run import _sim_launch, ttfc_samples
    from bench.scenarios import Scenario

    sc = Scenario("clientbias", streams=args.concurrency, ttft_s=args.ttft, ttft_jitter_s=0.0, chunks=args.chunks,
                  interval_s=0.1)
    repeats: list[dict[str, Any]] = []
    samples: dict[str, list[float]] = {"loadtest": [], "raw": []}
    async with serve("sim", _sim_launch(sc), out / "sim.log") as sim:
        for rep in range(1, args.repeat + 1):
            rundir = out / "runs" / f"r{rep}"
            rundir.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-m", "loadtest", "--url", sim.url, "-c", str(args.concurrency), "--quiet",
                    "--out", str(rundir / "loadtest")]
            with (rundir / "loadtest.log").open("wb") as log:
                await trio.run_process(argv, stdout=log, stderr=subprocess.STDOUT)
            lt_ms = ttfc_samples(rundir)
            summary = json.loads((rundir / "loadtest" / "result.json").read_text())["summary"]
            raw = await trio.run_process([sys.executable, "-m", "bench.rawclient", "--url", sim.url,
                                          "-c", str(args.concurrency)], capture_stdout=True)
            raw_doc = json.loads(raw.stdout)
            raw_ms = [t / 1e6 for t in raw_doc["ttfc_ns"] if t is not None]
            (rundir / "rawclient.json").write_text(json.dumps(raw_doc))
            row = compare(lt_ms, raw_ms)
            row["raw_failed"] = raw_doc["ttfc_ns"].count(None)
            row["loadtest_cpu_share"] = summary.get("loadtest_cpu_utilization")
            row["raw_cpu_share"] = raw_doc["cpu_s"] / raw_doc["wall_s"] if raw_doc["wall_s"] else None
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
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    from bench.run import raise_fd_limit

    out = args.out or Path("results") / f"clientbias-{dt.datetime.now(dt.UTC):%Y-%m-%d}-c{args.concurrency}"
    out.mkdir(parents=True, exist_ok=True)
    raise_fd_limit()
    command = shlex.join(["python", "-m", "bench.clientbias", *(sys.argv[1:] if argv is None else argv)])
    repeats, samples = trio.run(_measure, args, out)
    result = summarize(repeats, samples, command=command, concurrency=args.concurrency, ttft_s=args.ttft)
    (out / "clientbias.json").write_text(json.dumps(result, indent=2))
    text = render(result)
    (out / "README.md").write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
