"""``python -m bench.run``: every scenario x every target, each on a fresh sim, one report.

For each repeat, scenario and target (``direct`` first, so the others' TTFC overhead has its floor from
the same repeat): start the sim, start the target pointed at it, wait until it answers, warm it up
with a few requests (LiteLLM imports lazily on its first call), open the measured window (idle RSS,
CPU baseline), run ``python -m loadtest --url`` while sampling the target's and the sim's process trees,
then stop everything. Results: ``<out>/<scenario>-<target>.json`` (medians + every repeat),
``<out>/README.md``, plots, and the raw runs under ``<out>/runs/``, each with its sessions in the
compact ``loadtest/requests.jsonl.gz`` that ``python -m bench.recompute`` recomputes every figure from.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio

from bench import archive, metrics, plots, readme, recompute
from bench.peers import API_KEY, DEFAULT_TARGETS, PEERS, TARGETS, Launch, PeerUnavailable
from bench.pinning import Pinning, pinned, plan
from bench.procs import StartError, Tree, sample_forever, serve
from bench.scenarios import SCENARIOS, Scenario, parse
from loadtest.gauge import OpenStreams

LOADTEST_SLACK_S = 300.0  # loadtest start-up, plots, and the sessions' own 120 s timeout
SETTLE_S = 1.0  # after warm-up, before idle RSS: let the warm-up's buffers be freed
WARMUP_REQUESTS = 4  # reaches both workers of a 2-worker proxy, most of the time
# Ask the sim for a short stream during warm-up (sim_* body fields; a peer that drops them just waits longer).
WARMUP_BODY = {"model": "moonshot-v1-8k", "stream": True, "messages": [{"role": "user", "content": "warm-up"}],
               "sim_ttft": 0, "sim_chunks": 1, "sim_interval": 0}
# The warm-up in the scenario's protocol (loadtest --api): the route it loads, and a body of its shape.
WARMUP = {
    "chat": ("/chat/completions", WARMUP_BODY),
    "messages": ("/messages", {**WARMUP_BODY, "max_tokens": 16}),
    "responses": ("/responses", {**{k: v for k, v in WARMUP_BODY.items() if k != "messages"}, "input": "warm-up"}),
}
KEEP_FROM_WORKDIR = (".conf", ".yaml", ".log")
LOG_LIMIT_BYTES = 1_000_000


def machine_facts() -> dict[str, Any]:
    cpu_model = ""
    try:
        cpu_model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                          if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cores (logical)": os.cpu_count(),
        "cpu": cpu_model,
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "fd limit (soft, hard)": resource.getrlimit(resource.RLIMIT_NOFILE),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load average at start (1, 5, 15 min)": tuple(round(x, 2) for x in os.getloadavg()),
        "date (UTC)": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
    }


def raise_fd_limit() -> None:
    """Children inherit the soft limit: 10,000 streams need it at the hard limit (20,000 here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _warm_up(url: str, api: str = "chat") -> None:
    route, body = WARMUP[api]

    async def one(client: httpx.AsyncClient) -> None:
        try:
            async with client.stream("POST", url + route, json=body,
                                     headers={"Authorization": f"Bearer {API_KEY}"}) as r:
                async for _ in r.aiter_bytes():
                    pass
        except httpx.HTTPError:
            pass  # the measured run will show the failure

    async with httpx.AsyncClient(timeout=60.0) as client, trio.open_nursery() as nursery:
        for _ in range(WARMUP_REQUESTS):
            nursery.start_soon(one, client)


def _sim_launch(sc: Scenario, cores: tuple[int, ...] | None = None) -> Launch:
    return Launch(argv=pinned([sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", *sc.sim_flags()], cores),
                  url_pattern=rb"listening on (http://\S+)")


async def one_run(sc: Scenario, target: str, rundir: Path, pinning: Pinning | None = None) -> dict[str, Any]:
    """One measured run; returns the record written to ``rundir/run.json``. With ``pinning``, the target runs
    on its core and the sim and load generator on the others."""
    await trio.Path(rundir).mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"scenario": sc.name, "target": target,
                              "load_average_before": os.getloadavg()}
    rig = pinning.rig if pinning else None
    if pinning:
        record["pinning"] = dataclasses.asdict(pinning)
    with tempfile.TemporaryDirectory(prefix=f"bench-{target}-") as tmp:
        workdir = Path(tmp)
        try:
            async with AsyncExitStack() as stack:
                sim = await stack.enter_async_context(serve("sim", _sim_launch(sc, rig), rundir / "sim.log"))
                trees: list[Tree] = [sim.tree]
                url, proxy_tree = sim.url, None
                if target != "direct":
                    launch = PEERS[target].launch(sim.url, workdir, sc.proxy_workers, sc.streams)
                    if pinning:
                        launch = dataclasses.replace(launch, argv=pinned(launch.argv, pinning.proxy))
                    record["target_command"] = shlex.join(launch.argv)
                    server = await stack.enter_async_context(serve(target, launch, rundir / f"{target}.log"))
                    url, proxy_tree = server.url, server.tree
                    trees.append(proxy_tree)
                await _warm_up(url, sc.api)
                await trio.sleep(SETTLE_S)
                for t in trees:
                    t.mark()
                argv = pinned([sys.executable, "-m", "loadtest", "--url", url, *sc.loadtest_flags(), "--quiet",
                               "--api-key", API_KEY, "--out", str(rundir / "loadtest")], rig)
                record["loadtest_command"] = shlex.join(argv)
                limit = sc.session_s() + (sc.duration_s or 0) + (sc.ramp_up_s or 0) + LOADTEST_SLACK_S
                upstream_open = OpenStreams(sim.url)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sample_forever, trees)
                    nursery.start_soon(upstream_open.sample_forever)
                    with (rundir / "loadtest.log").open("wb") as log, trio.move_on_after(limit) as deadline:
                        done = await trio.run_process(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
                    nursery.cancel_scope.cancel()
                if deadline.cancelled_caught:
                    raise StartError(f"loadtest ran past {limit:.0f} s and was killed")
                for t in trees:
                    t.sample()
                record["sim_usage"] = sim.tree.usage()
                record["proxy_usage"] = proxy_tree.usage() if proxy_tree else None
                record["loadtest_exit"] = done.returncode
                record["upstream_peak_open"] = upstream_open.peak
        except Exception as exc:  # noqa: BLE001 - one failed target must not end the whole benchmark
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            _keep_configs(workdir, rundir)
    return _finish(record, rundir)


def trim_log(path: Path, limit: int = LOG_LIMIT_BYTES, head: int = 200, tail: int = 2_000) -> None:
    """Keep a server log's first ``head`` and last ``tail`` lines when it outgrows ``limit``: a 10,000-stream
    run writes megabytes of access lines (or a peer's tracebacks) that the committed results need not hold."""
    if path.stat().st_size <= limit:
        return
    lines = path.read_bytes().splitlines(keepends=True)
    if len(lines) <= head + tail:
        return
    cut = f"[bench: {len(lines) - head - tail:,} lines cut of {len(lines):,}]\n".encode()
    path.write_bytes(b"".join(lines[:head]) + cut + b"".join(lines[-tail:]))


def _keep_configs(workdir: Path, rundir: Path) -> None:
    """The rendered nginx.conf / litellm.yaml and nginx's error.log outlive the temp dir, for the report."""
    for f in workdir.iterdir():
        if f.is_file() and f.suffix in KEEP_FROM_WORKDIR and f.stat().st_size:
            shutil.copy(f, rundir / f.name)


def _finish(record: dict[str, Any], rundir: Path) -> dict[str, Any]:
    for log in rundir.glob("*.log"):
        trim_log(log)
    result_path = rundir / "loadtest" / "result.json"
    sessions = rundir / "loadtest" / recompute.JSONL_NAME
    if sessions.exists():
        recompute.write_compact(sessions, sessions.with_name(recompute.GZ_NAME))
    if "error" not in record:
        if result_path.exists():
            record["summary"] = json.loads(result_path.read_text())["summary"]
            record["figures"] = metrics.figures(
                record["summary"], record["proxy_usage"], record["sim_usage"], record.get("upstream_peak_open")
            )
        else:
            record["error"] = f"loadtest exit {record.get('loadtest_exit')}, no result.json; see {rundir}/loadtest.log"
    (rundir / "run.json").write_text(json.dumps(record, indent=2))
    return record


def ttfc_samples(rundir: Path) -> list[float]:
    """TTFC of every measured session that ended without error (the load generator's TTFC population)."""
    return [r.ttfc_ms for r in recompute.load_records(rundir / "loadtest")
            if r.ok and not r.warmup and r.ttfc_ms is not None]


def write_report(out: Path, command: str, facts: dict[str, Any], versions: dict[str, str],
                 unavailable: dict[str, str], *, scale: float) -> None:
    """README.md and the CPU bars from every ``<scenario>-<target>.json`` in ``out``, so that running one
    scenario again (say ``hold``, separately, because it is long) updates its table and keeps the others."""
    meta_path = out / "bench.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    versions = {**meta.get("versions", {}), **versions}
    unavailable = {k: v for k, v in {**meta.get("unavailable", {}), **unavailable}.items() if k not in versions}
    old = meta.get("commands") or ([meta["command"]] if "command" in meta else [])
    commands = list(dict.fromkeys([*old, *([] if "--report" in command else [command])]))
    meta_path.write_text(json.dumps({"commands": commands, "machine": facts, "versions": versions,
                                     "unavailable": unavailable}, indent=2, default=str))
    by_scenario = recompute.scenario_docs(out)
    order = [n for n in SCENARIOS if n in by_scenario]
    report, cpu, repeats = [], {}, {}
    machine = archive.machine_label(facts)
    for name in order:
        docs = by_scenario[name]
        medians = {t: d["median"] for t, d in docs.items() if d.get("median")}
        errors = {t: next((r["error"] for r in d["repeats"] if "error" in r), "") for t, d in docs.items()
                  if any("error" in r for r in d["repeats"])}
        first = next(iter(docs.values()))
        report.append({"scenario": first["scenario"], "medians": medians, "errors": errors,
                       "repeats": max(len(d["repeats"]) for d in docs.values()), "command": first["command"],
                       "versions": {t: d.get("version") for t, d in docs.items() if t != "direct"}})
        cpu[name] = {t: m["cpu_us_per_chunk"] for t, m in medians.items() if m.get("cpu_us_per_chunk")}
        repeats[name] = report[-1]["repeats"]
        samples = {t: [x for r in docs[t]["repeats"] for x in ttfc_samples(out / "runs" / name / t / f"r{r['repeat']}")]
                   for t in TARGETS if t in docs}
        plots.ttfc_cdf(f"{name}: time to first chunk, ms, every session of {repeats[name]} repeat(s)\n{machine}",
                       samples, out / f"{name}-ttfc.png")
    plots.cpu_bars(cpu, list(TARGETS), out / "cpu-per-chunk.png", machine=machine, repeats=repeats)
    notes = [
        ("The proxy runs pinned, apart from the load generator and the sim (" + facts["cpu pinning"] + ")"
         if "cpu pinning" in facts else "The load generator and the sim run on the same cores as the proxy")
        + ", and other work on the machine adds noise: each run's `load_average_before` is in its "
        "`runs/<scenario>/<target>/r<k>/run.json`.",
        "Every session of every run is in `runs/<scenario>/<target>/r<k>/loadtest/requests.jsonl.gz`; "
        f"`python -m bench.recompute {out}` recomputes every figure above from those files and the runs' records.",
        "`-tuned` rows: the same peer with its documented connection caps raised to the scenario's stream count "
        "and the same listen backlog as moonrelay and nginx (settings and sources in bench/README.md). "
        "moonrelay and nginx both write one JSON access-log line per request to a file; LiteLLM and "
        "openai-forward write none, in both their rows.",
        "Memory per upstream stream divides a proxy's RSS growth by the streams it held open at the sim; memory "
        "per client session divides it by the client sessions open at the peak, some of which a capped peer "
        "holds waiting for an upstream connection and an overloaded one has not accepted yet.",
        "`direct` shows what the load generator and sim alone reach: where its TTFC is already far above the "
        "sim's TTFT, the machine itself is saturated and the overheads measure queueing, not relay cost.",
    ]
    if scale != 1:
        notes.append(f"--scale {scale:g}: stream counts scaled, timing unchanged")
    text = readme.render(commands=commands, facts=facts, versions=versions, unavailable=unavailable,
                         scenarios=report, targets=list(TARGETS), notes=notes)
    (out / "README.md").write_text(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default="relay-cost,relay-cost-100,ceiling,hold",
                   help=f"comma-separated, from: {', '.join(SCENARIOS)}")
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS), help=f"comma-separated, from: {', '.join(TARGETS)}")
    p.add_argument("--repeat", type=int, default=3, help="runs per scenario and target; figures are medians")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every scenario's stream count (0.1: smoke)")
    p.add_argument("--out", type=Path, help="default: results/bench-<UTC date>[-scale<K>]")
    p.add_argument("--pin-proxy-core", type=int, metavar="N",
                   help="run each proxy on core N and the sim and load generator on the other cores (taskset)")
    p.add_argument("--report", action="store_true", help="only re-render README.md and plots from --out's JSON")
    return p.parse_args(argv)


async def run_all(args: argparse.Namespace, scenarios: list[Scenario], targets: list[str],
                  unavailable: dict[str, str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``runs[scenario][target]`` = records of every repeat, in order."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {sc.name: {t: [] for t in targets} for sc in scenarios}
    for rep in range(args.repeat):
        for sc in scenarios:
            this_rep: dict[str, dict[str, Any]] = {}
            for target in targets:
                if target in unavailable:
                    continue
                rundir = args.out / "runs" / sc.name / target / f"r{rep + 1}"
                print(f"[bench] {sc.name} / {target} / repeat {rep + 1}: {rundir}", flush=True)
                record = await one_run(sc, target, rundir, args.pinning)
                record["repeat"] = rep + 1
                record["rundir"] = str(rundir)
                runs[sc.name][target].append(record)
                if "figures" in record:
                    this_rep[target] = record["figures"]
                    f = record["figures"]
                    print(f"[bench]   completed {f['completed']} unverified {f.get('unverified')} failed {f['failed']} "
                          f"TTFC p99 {f['ttfc_p99_ms']} ms, CPU µs/chunk {f['cpu_us_per_chunk']}", flush=True)
                else:
                    print(f"[bench]   error: {record.get('error', '')[:300]}", flush=True)
            metrics.add_overheads(this_rep)
    return runs


def write_scenario_docs(out: Path, scenarios: list[Scenario], runs: dict[str, dict[str, list[dict[str, Any]]]],
                        versions: dict[str, str], command: str, facts: dict[str, Any]) -> None:
    """``<out>/<scenario>-<target>.json``: every repeat's record (figures with overheads) and the medians."""
    for sc in scenarios:
        for t, recs in runs[sc.name].items():
            ok = [r["figures"] for r in recs if "figures" in r]
            if recs:
                (out / f"{sc.name}-{t}.json").write_text(json.dumps({
                    "scenario": dataclasses.asdict(sc), "target": t, "version": versions.get(t),
                    "median": metrics.median(ok) if ok else None, "repeats": recs, "command": command,
                    "machine": facts,
                }, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = parse(args.scenarios, args.scale)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown target(s) {unknown}; known: {', '.join(TARGETS)}")
    targets.sort(key=lambda t: t != "direct")  # direct first: the floor of every repeat
    # A scaled (smoke) run must not merge into the full-size tables of the same day.
    suffix = "" if args.scale == 1 else f"-scale{args.scale:g}"
    args.out = args.out or Path("results") / f"bench-{dt.datetime.now(dt.UTC):%Y-%m-%d}{suffix}"
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    raise_fd_limit()
    facts = machine_facts()
    args.pinning = plan(args.pin_proxy_core, os.sched_getaffinity(0))
    if args.pinning:
        facts["cpu pinning"] = args.pinning.describe()
    if args.report:
        stored = args.out / "bench.json"
        if stored.exists():  # a redraw keeps the facts of the machine the runs ran on
            recorded = json.loads(stored.read_text()).get("machine") or {}
            facts = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()} or facts
        write_report(args.out, command, facts, {}, {}, scale=args.scale)
        _update_summary(args.out)
        return 0

    versions: dict[str, str] = {"direct": "the sim itself (python -m loadtest.sim)"}
    unavailable: dict[str, str] = {}
    for t in targets:
        if t == "direct":
            continue
        print(f"[bench] ensuring {t} ...", flush=True)
        try:
            versions[t] = PEERS[t].ensure()
        except PeerUnavailable as exc:
            unavailable[t] = str(exc)
            print(f"[bench] {t} unavailable: {exc}", flush=True)

    runs = trio.run(run_all, args, scenarios, targets, unavailable)
    write_scenario_docs(args.out, scenarios, runs, versions, command, facts)
    write_report(args.out, command, facts, versions, unavailable, scale=args.scale)
    print(f"[bench] wrote {args.out}/README.md", flush=True)
    _update_summary(args.out)
    return 0


def _update_summary(out: Path) -> None:
    """A run written into the repository's results/ changes where moonrelay stands: write the summary again."""
    from bench import summary

    if out.resolve().is_relative_to(summary.RESULTS):
        summary.write()


if __name__ == "__main__":
    raise SystemExit(main())
