"""``python -m bench.requests``: what one relay worker costs per non-streaming request, and what rate it holds.

Per repeat, for each target (``direct`` first), on a fresh sim answering at once (no TTFT) and the target with one
worker:

1. **CPU per request**, closed loop: ``--connections`` kept-alive connections x ``--per-connection`` requests, the
   target's process-tree CPU seconds (psutil) divided by the requests answered.
2. **Added latency at a fixed rate**, open loop (:mod:`bench.openloop`): requests due every ``1 / rate`` s for
   ``--duration`` s, each one's latency counted from its due time; the target's p50 / p99 minus direct's at the same
   rate in the same repeat.
3. **The highest rate it holds** with added p99 <= 1 ms and <= 10 ms: the rates in ``--rates`` from the lowest up,
   until a step breaks 10 ms, fails requests or falls behind its offered rate; direct's p99 at each rate from the
   same repeat.
4. **A witness**, an independent load tool from Debian's packages (``hey``): its closed loop at the same
   connection count gives CPU per request again, and its rate-limited run at ``--rate`` gives its own p50 / p99.
   Where the two tools disagree, the table shows both.

The target runs on one core and the sim and load clients on the other (``taskset``) unless ``--no-pin``. Results:
``<out>/result.json`` (every figure of every repeat), ``<out>/README.md`` (medians, command, versions, machine).
The decisions (:func:`percentile`, :func:`holds`, :func:`highest_rate`) and the report are pure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from bench.openloop import Outcome, closed_loop, open_loop, request_bytes
from bench.peers import API_KEY, Launch, PeerUnavailable, peer
from bench.pinning import pinned, plan
from bench.procs import serve
from bench.run import machine_facts, raise_fd_limit, trim_log

BODY = json.dumps({"model": "moonshot-v1-8k", "stream": False,
                   "messages": [{"role": "user", "content": "Tell me about the far side of the moon."}]}).encode()
SIM_FLAGS = ["--ttft", "0", "--chunks", "5", "--interval", "0", "--workers", "1"]
TARGETS = ("direct", "moonrelay", "nginx", "litellm", "openai-forward")
THRESHOLDS_MS = (1.0, 10.0)
KEPT_UP = 0.98  # a step whose answered requests fall below this share of the offered ones fell behind
HEY_TIMEOUT_S = 120


def percentile(values: list[int] | list[float], q: float) -> float:
    """The ``q`` (0..100) percentile by the nearest-rank method; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class Step:
    """One open-loop step as the report keeps it: latencies in ms from the due time."""

    rate: float
    sent: int
    ok: int
    failed: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    client_cpu_share: float  # the load client's own CPU over the step's wall time (1.0: a full core)

    @classmethod
    def of(cls, rate: float, out: Outcome) -> Step:
        ms = [x / 1e6 for x in out.latencies_ns]
        return cls(rate, out.sent, out.ok, out.sent - out.ok, round(percentile(ms, 50), 3),
                   round(percentile(ms, 99), 3), round(percentile(ms, 99.9), 3),
                   round(out.client_cpu_s / out.wall_s, 3) if out.wall_s else 0.0)


def holds(step: Step, direct: Step | None, threshold_ms: float) -> bool:
    """A step holds its rate: every request answered 200, and p99 at most ``threshold_ms`` over direct's."""
    if step.failed or step.ok < KEPT_UP * step.sent:
        return False
    floor = direct.p99_ms if direct is not None else 0.0
    return step.p99_ms - floor <= threshold_ms


def highest_rate(steps: list[Step], direct: dict[float, Step], threshold_ms: float) -> float | None:
    """The highest rate of an unbroken run of holding steps from the lowest rate; None when the lowest breaks."""
    best = None
    for step in sorted(steps, key=lambda s: s.rate):
        if not holds(step, direct.get(step.rate), threshold_ms):
            break
        best = step.rate
    return best


# -- the witness: hey ---------------------------------------------------------------------------------------------

def hey_argv(url: str, *, connections: int, requests: int | None = None, rate_per_connection: float | None = None,
             duration_s: float | None = None) -> list[str]:  # fmt: skip
    argv = ["hey", "-c", str(connections), "-m", "POST", "-T", "application/json", "-d", BODY.decode(),
            "-H", f"Authorization: Bearer {API_KEY}"]
    if requests is not None:
        argv += ["-n", str(requests)]
    if rate_per_connection is not None:
        argv += ["-q", f"{rate_per_connection:g}"]
    if duration_s is not None:
        argv += ["-z", f"{duration_s:g}s"]
    return [*argv, url]


def parse_hey(text: str) -> dict[str, Any]:
    """hey's summary: requests/s, its latency percentiles (ms) and status counts."""
    out: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["requests_per_s"] = float(m.group(1))
    for q, secs in re.findall(r"\s(\d+)%+ in ([\d.]+) secs", text):
        out[f"p{q}_ms"] = round(float(secs) * 1000, 3)
    out["statuses"] = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    return out


# -- the shell -----------------------------------------------------------------------------------------------------

def _hostport(url: str) -> tuple[str, int, str]:
    u = urlsplit(url)
    return u.hostname or "127.0.0.1", u.port or 80, u.path.rstrip("/") + "/chat/completions"


async def _warm(host: str, port: int, data: bytes) -> None:
    await closed_loop(host, port, data, 4, 25)


async def measure_target(target: str, args: argparse.Namespace, rundir: Path, direct_steps: dict[float, Step] | None,
                         pin: Any) -> dict[str, Any]:  # fmt: skip
    """One repeat of one target: CPU per request, the fixed-rate step, the rate steps, the witness."""
    rig = pin.rig if pin else None
    record: dict[str, Any] = {"target": target, "load_average_before": os.getloadavg()}
    await trio.Path(rundir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"requests-{target}-") as tmp:
        try:
            async with AsyncExitStack() as stack:
                sim_launch = Launch(argv=pinned([sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0",
                                                 *SIM_FLAGS], rig), url_pattern=rb"listening on (http://\S+)")
                sim = await stack.enter_async_context(serve("sim", sim_launch, rundir / "sim.log"))
                url, tree = sim.url, sim.tree
                if target != "direct":
                    launch = peer(target).launch(sim.url, Path(tmp), 1, args.connections)
                    if pin:
                        launch = Launch(argv=pinned(launch.argv, pin.proxy), url=launch.url,
                                        url_pattern=launch.url_pattern, env=launch.env, cwd=launch.cwd)
                    record["target_command"] = shlex.join(launch.argv)
                    server = await stack.enter_async_context(serve(target, launch, rundir / f"{target}.log"))
                    url, tree = server.url, server.tree
                host, port, path = _hostport(url)
                data = request_bytes(host, port, path, BODY, API_KEY)
                await _warm(host, port, data)
                # 1. CPU per request, closed loop.
                tree.mark()
                sim.tree.mark()
                closed = await closed_loop(host, port, data, args.connections, args.per_connection)
                tree.sample()
                sim.tree.sample()
                record["closed"] = {
                    "requests": closed.ok, "failed": closed.sent - closed.ok,
                    "cpu_us_per_request": round(tree.cpu_s() / closed.ok * 1e6, 1) if closed.ok else None,
                    "sim_cpu_us_per_request": round(sim.tree.cpu_s() / closed.ok * 1e6, 1) if closed.ok else None,
                    "requests_per_s": round(closed.ok / closed.wall_s, 1),
                    "p50_ms": round(percentile(closed.latencies_ns, 50) / 1e6, 3),
                    "p99_ms": round(percentile(closed.latencies_ns, 99) / 1e6, 3),
                }
                # 2. and 3. open loop: the fixed rate, then the steps up.
                rates = sorted(set(args.rates) | {args.rate})
                steps: list[Step] = []
                for rate in rates:
                    out = await open_loop(host, port, data, rate, args.duration)
                    step = Step.of(rate, out)
                    steps.append(step)
                    if target != "direct" and not holds(step, (direct_steps or {}).get(rate), THRESHOLDS_MS[-1]) \
                            and rate >= args.rate:  # fmt: skip
                        break  # past the knee: the higher steps would only queue
                record["steps"] = [asdict(s) for s in steps]
                # 4. the witness.
                if shutil.which("hey"):
                    tree.mark()
                    n = args.connections * args.per_connection
                    argv = pinned(hey_argv(url + "/chat/completions", connections=args.connections, requests=n), rig)
                    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
                    tree.sample()
                    closed_hey = parse_hey(done.stdout.decode())
                    ok = closed_hey.get("statuses", {}).get(200, 0)
                    closed_hey["cpu_us_per_request"] = round(tree.cpu_s() / ok * 1e6, 1) if ok else None
                    per_conn = args.rate / args.connections
                    argv2 = pinned(hey_argv(url + "/chat/completions", connections=args.connections,
                                            rate_per_connection=per_conn, duration_s=args.duration), rig)
                    done2 = await trio.run_process(argv2, capture_stdout=True, capture_stderr=True, check=False)
                    record["witness"] = {"tool": "hey", "closed": closed_hey, "closed_command": shlex.join(argv),
                                         "rate": parse_hey(done2.stdout.decode()), "rate_command": shlex.join(argv2)}
        except Exception as exc:  # noqa: BLE001 - one failed target must not end the whole benchmark
            record["error"] = f"{type(exc).__name__}: {exc}"
    await trio.Path(rundir / "run.json").write_text(json.dumps(record, indent=2))
    await trio.to_thread.run_sync(_trim_logs, rundir)
    return record


def _trim_logs(rundir: Path) -> None:
    """A target's access log has a line per request, megabytes per repeat: cut as bench.run cuts its logs."""
    for log in rundir.glob("*.log"):
        trim_log(log)


def summarise(repeats: list[dict[str, Any]], direct: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    """Medians over repeats of one target; added latency against direct's run of the same repeat."""
    def med(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None and v == v]
        return round(statistics.median(kept), 3) if kept else None

    added50, added99, best = [], [], {t: [] for t in THRESHOLDS_MS}
    for rec, base in zip(repeats, direct, strict=False):
        steps = [Step(**s) for s in rec.get("steps", [])]
        base_steps = {s["rate"]: Step(**s) for s in base.get("steps", [])}
        at = next((s for s in steps if s.rate == rate), None)
        if at is not None and rate in base_steps:
            added50.append(at.p50_ms - base_steps[rate].p50_ms)
            added99.append(at.p99_ms - base_steps[rate].p99_ms)
        for t in THRESHOLDS_MS:
            best[t].append(highest_rate(steps, base_steps, t) if rec is not base else None)
    return {
        "cpu_us_per_request": med([r.get("closed", {}).get("cpu_us_per_request") for r in repeats]),
        "sim_cpu_us_per_request": med([r.get("closed", {}).get("sim_cpu_us_per_request") for r in repeats]),
        "closed_requests_per_s": med([r.get("closed", {}).get("requests_per_s") for r in repeats]),
        "added_latency_p50_ms": med(added50), "added_latency_p99_ms": med(added99),
        **{f"max_rate_p99_le_{t:g}ms": med(best[t]) for t in THRESHOLDS_MS},
        "witness_cpu_us_per_request": med([r.get("witness", {}).get("closed", {}).get("cpu_us_per_request")
                                           for r in repeats]),
        "witness_p50_ms": med([r.get("witness", {}).get("rate", {}).get("p50_ms") for r in repeats]),
        "witness_p99_ms": med([r.get("witness", {}).get("rate", {}).get("p99_ms") for r in repeats]),
        "errors": [r["error"] for r in repeats if "error" in r],
    }


def _fmt(v: float | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:,.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def render(doc: dict[str, Any]) -> str:
    """README.md of a run folder, from its result.json."""
    rate = doc["rate"]
    medians = doc["medians"]
    nginx_cpu = (medians.get("nginx") or {}).get("cpu_us_per_request")
    lines = [
        "# requests: one relay worker per non-streaming request", "",
        "```", doc["command"], "```", "",
        f"Medians over {doc['repeat']} repeat(s). One worker per target, pinned apart from the sim and the load "
        "clients where the machine allows; the sim answers at once. CPU per request: the target's process-tree CPU "
        f"over a closed loop of {doc['connections']} kept-alive connections x {doc['per_connection']} requests. "
        f"Added latency: open loop at {rate:g} requests/s for {doc['duration_s']:g} s, each request timed from its "
        "due time, the target's percentile minus direct's at the same rate in the same repeat. Highest rate: the "
        f"steps {', '.join(f'{r:g}' for r in doc['rates'])} requests/s from the lowest up, the last one with every "
        "request answered and added p99 within the bound. Witness: `hey` (Debian), its closed loop at the same "
        f"connection count (CPU per request) and its rate-limited run at {rate:g} requests/s (its own percentiles, "
        "not added).", "",
        f"| target | CPU µs/request (× nginx) | sim µs/request | added p50 / p99 at {rate:g}/s (ms) | highest rate, "
        "added p99 ≤ 1 ms / ≤ 10 ms | witness CPU µs/request | witness p50 / p99 at rate (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for target, m in medians.items():
        cpu = m.get("cpu_us_per_request")
        ratio = f" ({cpu / nginx_cpu:.1f}×)" if cpu and nginx_cpu else ""
        added = "–" if target == "direct" else \
            f"{_fmt(m.get('added_latency_p50_ms'))} / {_fmt(m.get('added_latency_p99_ms'))}"  # fmt: skip
        best = "–" if target == "direct" else \
            f"{_fmt(m.get('max_rate_p99_le_1ms'))} / {_fmt(m.get('max_rate_p99_le_10ms'))}"  # fmt: skip
        lines.append(f"| {target} | {_fmt(cpu)}{ratio} | {_fmt(m.get('sim_cpu_us_per_request'))} | {added} | {best} "
                     f"| {_fmt(m.get('witness_cpu_us_per_request'))} | {_fmt(m.get('witness_p50_ms'))} / "
                     f"{_fmt(m.get('witness_p99_ms'))} |")
        for err in m.get("errors", []):
            lines.append(f"|  | error: {err.splitlines()[0][:200]} | | | | | |")
    lines += ["", "## Machine", "", *[f"- {k}: {v}" for k, v in doc["machine"].items()], "",
              "## Targets", "", *[f"- **{t}**: {v}" for t, v in doc["versions"].items()], "",
              "Every step of every repeat (sent, answered, p50 / p99 / p99.9 from the due time, the client's own CPU "
              "share) is in `result.json`; the targets' and the sim's logs under `runs/`.", ""]
    return "\n".join(lines)


def write_scenario_docs(doc: dict[str, Any]) -> None:
    """``requests-<target>.json`` per target, the shape bench.run writes (bench/archive.py reads runs from them):
    the summary and the trend pick this scenario up like any other."""
    shape = {"name": "requests", "connections": doc["connections"], "per_connection": doc["per_connection"],
             "rate": doc["rate"], "rates": doc["rates"], "duration_s": doc["duration_s"]}
    out = Path(doc["out"])
    for target, median in doc["medians"].items():
        repeats = [{"repeat": k + 1, **r} for k, r in enumerate(doc["runs"][target])]
        (out / f"requests-{target}.json").write_text(json.dumps(
            {"scenario": shape, "target": target, "version": doc["versions"].get(target), "median": median,
             "repeats": repeats, "command": doc["command"], "machine": doc["machine"]}, indent=2, default=str))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.requests", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated; direct always runs first")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--per-connection", type=int, default=100)
    p.add_argument("--rate", type=float, default=500.0, help="the fixed rate of the added-latency figure")
    p.add_argument("--rates", default="250,500,750,1000,1500,2000,3000", help="the open-loop steps, requests/s")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per open-loop step")
    p.add_argument("--no-pin", action="store_true", help="leave every process on every core")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    return args


async def run(args: argparse.Namespace, targets: list[str]) -> dict[str, list[dict[str, Any]]]:
    pin = None if args.no_pin else plan(0, sorted(os.sched_getaffinity(0)))
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    for k in range(args.repeat):
        direct_steps: dict[float, Step] = {}
        for target in targets:
            rec = await measure_target(target, args, args.out / "runs" / target / f"r{k + 1}",
                                       direct_steps if target != "direct" else None, pin)
            if target == "direct":
                direct_steps = {s["rate"]: Step(**s) for s in rec.get("steps", [])}
            runs[target].append(rec)
            print(f"repeat {k + 1}/{args.repeat} {target}: "
                  f"{rec.get('closed', {}).get('cpu_us_per_request')} µs/request"
                  f"{' ERROR ' + rec['error'] if 'error' in rec else ''}", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    targets = ["direct", *[t for t in args.targets.split(",") if t and t != "direct"]]
    versions: dict[str, str] = {"direct": "the sim itself (python -m loadtest.sim)"}
    for t in targets[1:]:
        try:
            versions[t] = peer(t).ensure()
        except (PeerUnavailable, KeyError) as exc:
            print(f"{t}: cannot run: {exc}", file=sys.stderr)
            targets.remove(t)
    if shutil.which("hey"):
        versions["witness"] = "hey (Debian package " + subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "hey"], capture_output=True, text=True).stdout + ")"
    args.out.mkdir(parents=True, exist_ok=True)
    facts = machine_facts()
    runs = trio.run(run, args, targets)
    doc = {"command": "python -m bench.requests " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "rate": args.rate, "rates": args.rates, "duration_s": args.duration, "repeat": args.repeat,
           "connections": args.connections, "per_connection": args.per_connection, "machine": facts,
           "versions": versions, "out": str(args.out),
           "medians": {t: summarise(runs[t], runs["direct"], args.rate) for t in targets}, "runs": runs}
    (args.out / "result.json").write_text(json.dumps(doc, indent=2, default=str))
    write_scenario_docs(doc)
    (args.out / "README.md").write_text(render(doc))
    print(args.out / "README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
