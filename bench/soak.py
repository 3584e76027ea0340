"""``python -m bench.soak``: hours of a relay's life compressed into minutes, and whether its memory stays flat.

One relay worker (``python -m proxy``, the defaults: access log on, GC policy on, fast paths on) in front of the
simulated upstream (``python -m loadtest.sim``: at once, five chunks), both children of this process. The load:

1. warm-up: ``bench.soakload``'s mix (streamed and not, NDJSON, new connections, clients that leave, the upstream
   answering 500 or breaking mid-stream, bodies that are not JSON) on ``--connections`` kept-alive loops;
2. idle: nothing; the relay's *warm level* is its RSS here;
3. soak: the same mix for ``--minutes``, and beside it two long runs of the project's load generator
   (``python -m loadtest --url``, streamed and not), so that its memory is watched over a long run too;
4. idle;
5. hold: ``--hold`` streams, each open ``--hold-s`` seconds, opened over ``--ramp-s`` (one worker has 20,000
   fds: 2 per stream, so they are spread to stay under ~9,000 at once), then idle for ``--settle-s`` (long enough for
   the relay's idle upstream connections to expire and its memory to be reclaimed after the burst:
   proxy/gcpolicy.py).

Every ``--sample-s`` seconds: RSS, open fds and threads of the relay, the sim and each load process (psutil), the
relay's ``/healthz`` counts (requests in flight, streams, open connections, tasks) and the requests it has answered
(``/metrics``). Writes ``<out>/soak.json`` (every sample), ``<out>/soak.png`` and ``<out>/README.md`` with the
verdict against the goals: RSS growth per request in the soak (least squares, extrapolated to 1,000,000
requests, labelled so) and idle to idle, RSS back within 5 % of the warm level after the held streams closed, and
the ``/healthz`` counts back at their idle values after each phase. ``--relay-from DIR``: run the relay of another
checkout (``git archive <commit> | tar -x -C DIR``), e.g. the code before a fix; ``--relay-env NAME=VALUE``: an
environment variable of the relay's (``PYTHONMALLOC=malloc``, say).

``loadtest --url`` and the figures here share nothing with the relay but the sockets; run it under the measure lock
(``flock /tmp/moonrelay-measure.lock python -m bench.soak ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio

from bench.census import git_commit
from bench.peers import Launch
from bench.procs import serve
from bench.run import machine_facts, raise_fd_limit

MB = 1024 * 1024
GOAL_PER_MILLION_MB = 5.0  # RSS growth over 1,000,000 requests after warm-up, at most
GOAL_RETURN = 0.05  # RSS after the held streams closed, within this of the warm level
REQUESTS = re.compile(rb"^moonrelay_requests_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ``ys`` over ``xs``; None with fewer than three points or no spread in ``xs``."""
    if len(xs) < 3:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def _rows(samples: Iterable[dict], phase: str) -> list[dict]:
    return [s for s in samples if s["phase"] == phase]


def _idle_rss(samples: list[dict], phase: str, role: str) -> float | None:
    """RSS at the end of an idle phase (the median of its last three samples): what the phase settled to."""
    values = [s["procs"][role]["rss"] for s in _rows(samples, phase) if role in s["procs"]][-3:]
    return statistics.median(values) if values else None


def verdict(samples: list[dict]) -> dict[str, Any]:
    """The figures and the goals, from the samples alone (pure)."""
    soak = _rows(samples, "soak")
    out: dict[str, Any] = {}
    served = [s["requests"] for s in soak]
    # While the load runs (the relay's count still moving): a load generator's report at its end is not its growth.
    running = [s for prev, s in zip(soak, soak[1:], strict=False) if s["requests"] > prev["requests"]]
    for role in sorted({r for s in running for r in s["procs"]}):
        pts = [(s["requests"], s["procs"][role]["rss"]) for s in running if role in s["procs"]]
        # The first fifth of the soak fills pools and caches for the load generators that joined in it.
        pts = pts[len(pts) // 5 :]
        slope = fit_slope([p[0] for p in pts], [p[1] for p in pts]) if pts else None
        out[role] = {"soak_slope_bytes_per_request": slope,
                     "soak_rss_first_mb": pts[0][1] / MB if pts else None,
                     "soak_rss_last_mb": pts[-1][1] / MB if pts else None}  # fmt: skip
    warm, after_soak, after_hold = (_idle_rss(samples, p, "relay") for p in ("idle warm", "idle after soak",
                                                                                "idle after hold"))  # fmt: skip
    requests = (served[-1] - served[0]) if served else 0
    relay = out.setdefault("relay", {})
    cpu = [s["procs"]["relay"].get("cpu_s") for s in soak if "relay" in s["procs"]]
    if requests and cpu and cpu[0] is not None and cpu[-1] is not None:
        relay["cpu_us_per_request"] = (cpu[-1] - cpu[0]) / requests * 1e6
    slope = relay.get("soak_slope_bytes_per_request")
    per_million = slope * 1e6 / MB if slope is not None else None
    relay |= {
        "requests_in_soak": requests,
        "warm_idle_rss_mb": warm / MB if warm else None,
        "idle_after_soak_rss_mb": after_soak / MB if after_soak else None,
        "idle_after_hold_rss_mb": after_hold / MB if after_hold else None,
        "soak_growth_per_million_mb_extrapolated": per_million,
        "idle_growth_bytes_per_request": (after_soak - warm) / requests if warm and after_soak and requests else None,
    }
    counts = {p: [s["counts"] for s in _rows(samples, p) if s.get("counts")] for p in
              ("idle warm", "idle after soak", "idle after hold")}  # fmt: skip
    lasts = {p: c[-1] for p, c in counts.items() if c}
    out["healthz_idle"] = lasts
    out["goals"] = {
        "growth over 1,000,000 requests <= 5 MB (extrapolated from the soak's slope)":
            per_million is not None and per_million <= GOAL_PER_MILLION_MB,
        "idle after the held streams within 5 % of the warm level":
            bool(warm and after_hold and abs(after_hold - warm) <= GOAL_RETURN * warm),
        "/healthz counts back at their idle values after every phase":
            len(lasts) == 3 and len({json.dumps(c, sort_keys=True) for c in lasts.values()}) == 1,
    }  # fmt: skip
    return out


def render(result: dict[str, Any]) -> str:
    """README.md: the command, the verdict, the figures per process."""
    v = result["verdict"]
    relay = v["relay"]

    def f(x: float | None, fmt: str = "{:,.1f}") -> str:
        return "–" if x is None else fmt.format(x)

    lines = [f"# Soak: {result['title']}", "", f"`{result['command']}`", "",
             f"moonrelay {result['git']}, relay from `{result['relay_from']}`; {result['machine']['date (UTC)']} UTC; "
             f"one relay worker; other work may have been running on this shared machine "
             f"(load average at start {result['machine']['load average at start (1, 5, 15 min)']}).", "",
             "![soak](soak.png)", "", "| goal | met |", "|---|---|"]  # fmt: skip
    lines += [f"| {goal} | {'yes' if met else '**no**'} |" for goal, met in v["goals"].items()]
    lines += ["", "| relay | value |", "|---|---:|",
              f"| requests answered in the soak | {relay['requests_in_soak']:,.0f} |",
              f"| RSS slope in the soak, bytes per request (least squares) | "
              f"{f(relay['soak_slope_bytes_per_request'], '{:,.1f}')} |",
              "| extrapolated to 1,000,000 requests (MB) | "
              f"{f(relay['soak_growth_per_million_mb_extrapolated'], '{:,.2f}')} |",
              f"| idle RSS: warm, after the soak, after the held streams (MB) | {f(relay['warm_idle_rss_mb'])}, "
              f"{f(relay['idle_after_soak_rss_mb'])}, {f(relay['idle_after_hold_rss_mb'])} |",
              f"| idle to idle across the soak, bytes per request | {f(relay['idle_growth_bytes_per_request'])} |",
              f"| relay CPU per request in the soak, µs | {f(relay.get('cpu_us_per_request'), '{:,.0f}')} |",
              "", "| process | RSS at the soak's fifth, MB | at its end, MB | slope, bytes per request |",
              "|---|---:|---:|---:|"]  # fmt: skip
    for role, row in v.items():
        if isinstance(row, dict) and "soak_slope_bytes_per_request" in row:
            lines.append(f"| {role} | {f(row['soak_rss_first_mb'])} | {f(row['soak_rss_last_mb'])} | "
                         f"{f(row['soak_slope_bytes_per_request'], '{:,.2f}')} |")  # fmt: skip
    lines += ["", "`/healthz` at the end of each idle phase: "
              + "; ".join(f"{p}: `{json.dumps(c)}`" for p, c in v["healthz_idle"].items()), "",
              "Load processes' own summaries:", "", "```", json.dumps(result["loads"], indent=1), "```",
              ""]  # fmt: skip
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    ts = [s["t_s"] for s in samples]
    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    roles = sorted({r for s in samples for r in s["procs"]})
    for role in roles:
        pts = [(s["t_s"], s["procs"][role]["rss"] / MB) for s in samples if role in s["procs"]]
        (top if role == "relay" else low).plot([p[0] for p in pts], [p[1] for p in pts], label=role)
    twin = top.twinx()
    twin.plot(ts, [s["requests"] / 1e3 for s in samples], color="C7", ls=":", label="requests answered (k)")
    twin.set_ylabel("requests answered, thousands")
    top.set_ylabel("relay RSS, MB")
    top.set_title(result["title"])
    for key, label in (("connections", "open connections"), ("streams", "streams"), ("tasks", "tasks")):
        mid.plot(ts, [s.get("counts", {}).get(key) for s in samples], label=f"/healthz {label}")
    mid.plot(ts, [s["procs"]["relay"]["fds"] if "relay" in s["procs"] else None for s in samples], label="relay fds",
             ls="--")  # fmt: skip
    mid.set_yscale("symlog")
    mid.set_ylabel("count")
    low.set_ylabel("RSS, MB")
    low.set_xlabel("seconds since start")
    start = None
    for s in samples + [{"phase": None, "t_s": ts[-1] if ts else 0}]:
        if start is None or s["phase"] != start[0]:
            if start is not None and start[0] and start[0].startswith("idle"):
                for ax in (top, mid, low):
                    ax.axvspan(start[1], s["t_s"], color="0.9", zorder=0)
            start = (s["phase"], s["t_s"])
    for ax in (top, mid, low):
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class Sampler:
    """The processes and the relay's counters, every ``interval_s``, into ``samples`` (with the current phase)."""

    def __init__(self, relay_root: str, interval_s: float) -> None:
        self.relay_root = relay_root
        self.interval_s = interval_s
        self.procs: dict[str, psutil.Process] = {}
        self.samples: list[dict] = []
        self.phase = "start"
        self.t0 = trio.current_time()

    def watch(self, role: str, pid: int) -> None:
        self.procs[role] = psutil.Process(pid)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(timeout=10.0) as client:
            task_status.started()
            while True:
                await self.sample(client)
                await trio.sleep(self.interval_s)

    async def sample(self, client: httpx.AsyncClient) -> None:
        procs = {}
        for role, proc in list(self.procs.items()):
            try:
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    procs[role] = {"rss": proc.memory_info().rss, "fds": proc.num_fds(), "threads": proc.num_threads(),
                                   "cpu_s": round(cpu.user + cpu.system, 3)}  # fmt: skip
            except psutil.Error:
                del self.procs[role]
        row: dict[str, Any] = {"t_s": round(trio.current_time() - self.t0, 2), "phase": self.phase, "procs": procs,
                               "requests": self.samples[-1]["requests"] if self.samples else 0}  # fmt: skip
        try:
            health = (await client.get(self.relay_root + "/healthz")).json()
            health.pop("status", None)
            row["counts"] = health
            metrics = (await client.get(self.relay_root + "/metrics")).content
            row["requests"] = int(sum(float(v) for v in REQUESTS.findall(metrics)))
        except (httpx.HTTPError, ValueError):
            pass
        self.samples.append(row)


async def _load(argv: list[str], role: str, sampler: Sampler, loads: dict[str, Any]) -> None:
    """Run one load process to its end, sampled while it runs; its summary (the JSON it prints) into ``loads``."""
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    sampler.watch(role, proc.pid)
    try:
        out = b""
        async for part in proc.stdout:  # type: ignore[union-attr]
            out += part
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    try:
        loads[role] = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        loads[role] = {"exit": proc.returncode}


async def _idle(sampler: Sampler, phase: str, seconds: float) -> None:
    sampler.phase = phase
    await trio.sleep(seconds)


async def _soak(args: argparse.Namespace, out: Path, logs: Path) -> dict[str, Any]:
    py = sys.executable
    sim_argv = [py, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0", "--ttft-jitter", "0", "--chunks",
                "5", "--interval", "0", "--interval-jitter", "0"]  # fmt: skip
    loads: dict[str, Any] = {}
    async with serve("sim", Launch(argv=sim_argv, url_pattern=rb"listening on (http://\S+)"), logs / "sim.log") as sim:
        relay_argv = [py, "-m", "proxy", "--bind", "127.0.0.1:0", "--workers", "1", "--upstream", sim.url,
                      "--access-log", args.access_log]  # fmt: skip
        env = {"MOONSHOT_API_KEY": "sk-soak", "PYTHONPATH": str(args.relay_from),
               **dict(kv.split("=", 1) for kv in args.relay_env)}
        launch = Launch(argv=relay_argv, url_pattern=rb"listening on (http://\S+)", env=env, cwd=args.relay_from)
        async with serve("relay", launch, logs / "relay.log") as relay, trio.open_nursery() as nursery:
            root = relay.url.removesuffix("/v1")
            sampler = Sampler(root, args.sample_s)
            sampler.watch("relay", relay.process.pid)
            sampler.watch("sim", sim.process.pid)
            await nursery.start(sampler.run)
            mix = [py, "-m", "bench.soakload", "--url", root, "--connections", str(args.connections)]
            sampler.phase = "warm-up"
            await _load([*mix, "--duration", str(args.warmup_s)], "soakload (warm-up)", sampler, loads)
            await _idle(sampler, "idle warm", args.idle_s)
            sampler.phase = "soak"
            soak_s = args.minutes * 60
            async with trio.open_nursery() as load:
                load.start_soon(_load, [*mix, "--duration", str(soak_s)], "soakload", sampler, loads)
                for name, flag in (("stream", "--stream"), ("chat", "--no-stream")):
                    lt = [py, "-m", "loadtest", "--url", relay.url, flag, "-c", str(args.loadtest_c), "--duration",
                          f"{soak_s}s", "--no-save-requests", "--quiet", "--out", str(logs / f"loadtest-{name}")]
                    load.start_soon(_load, lt, f"loadtest {name}", sampler, loads)  # fmt: skip
            await _idle(sampler, "idle after soak", args.idle_s)
            sampler.phase = "hold"
            hold = [py, "-m", "bench.soakload", "--url", root, "--hold", str(args.hold), "--hold-s",
                    str(args.hold_s), "--ramp-s", str(args.ramp_s)]  # fmt: skip
            await _load(hold, "soakload (hold)", sampler, loads)
            await _idle(sampler, "idle after hold", args.settle_s)
            nursery.cancel_scope.cancel()
    for name in ("stream", "chat"):  # the load generator's own report of its long run
        result = logs / f"loadtest-{name}" / "result.json"
        if result.exists():
            summary = json.loads(result.read_text()).get("summary", {})
            loads.setdefault(f"loadtest {name}", {})["summary"] = {
                k: summary.get(k) for k in ("sessions", "completed", "failed", "unverified")}
    return {"samples": sampler.samples, "loads": loads}


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="the soak phase (default 10)")
    p.add_argument("--connections", type=int, default=20, help="the mix's kept-alive loops (default 20)")
    p.add_argument("--loadtest-c", type=int, default=10, help="each load generator's sessions at once (default 10)")
    p.add_argument("--warmup-s", type=float, default=60.0)
    p.add_argument("--idle-s", type=float, default=10.0, help="the idle phases before the hold (default 10)")
    p.add_argument("--settle-s", type=float, default=60.0, help="the idle phase after the hold (default 60)")
    p.add_argument("--hold", type=int, default=10_000, help="streams held in the hold phase (default 10,000)")
    p.add_argument("--hold-s", type=float, default=20.0, help="how long each held stream is open (default 20)")
    p.add_argument("--ramp-s", type=float, default=25.0, help="the held streams open over this long (default 25)")
    p.add_argument("--sample-s", type=float, default=2.0)
    p.add_argument("--access-log", default="stderr", help="the relay's --access-log (default stderr, to a temp file)")
    p.add_argument("--relay-from", type=Path, default=Path.cwd(), help="the checkout whose relay runs (default .)")
    p.add_argument("--relay-env", action="append", default=[], metavar="NAME=VALUE", help="for the relay (repeatable)")
    p.add_argument("--title", default="moonrelay, one worker")
    p.add_argument("--out", type=Path, default=Path("results/soak"))
    p.add_argument("--render", action="store_true", help="only the verdict, plot and README again from <out>/soak.json")
    args = p.parse_args(list(argv) if argv is not None else None)
    if args.render:
        result = json.loads((args.out / "soak.json").read_text())
        return _write(result, args.out)
    args.relay_from = args.relay_from.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    raise_fd_limit()
    machine = machine_facts()
    with tempfile.TemporaryDirectory(prefix="moonrelay-soak-") as tmp:  # logs: the access log alone is ~GBs
        result = trio.run(_soak, args, args.out, Path(tmp))
    result |= {"command": "python -m bench.soak " + shlex.join(list(argv) if argv is not None else sys.argv[1:]),
               "git": git_commit(), "relay_from": str(args.relay_from), "machine": machine, "title": args.title,
               "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    return _write(result, args.out)


def _write(result: dict[str, Any], out: Path) -> int:
    result["verdict"] = verdict(result["samples"])
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "soak.png")
    (out / "README.md").write_text(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
