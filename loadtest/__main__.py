"""``loadtest`` / ``python -m loadtest``: measure streaming chat sessions through the relay.

``loadtest --concurrency N [options]`` runs a load (the default command); ``loadtest --sweep concurrency|rate
--sweep-slo ...`` finds the largest load that meets the objectives (:mod:`loadtest.sweeprun`); ``loadtest report
DIR/result.json`` (or ``DIR/sweep.json``) re-renders a report; ``loadtest compare A.json B.json`` prints two runs
side by side.
Exit status: 0 when the failed share of the measured sessions is at most ``--max-failed-ratio`` (default 0:
every session completed), 1 when more failed or none was measured, 130 when interrupted, 2 for usage errors.
A sweep exits 0 when some load met every objective in all its runs, else 1.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from loadtest import shards
from loadtest.apirequest import MESSAGES_MAX_TOKENS, check_messages
from loadtest.embedded import SimProfile
from loadtest.probe import RouteMissing, check_route
from loadtest.protocols import APIS
from loadtest.record import RunData
from loadtest.runner import LoadConfig, Runner, run_with_signals
from loadtest.workload import Distribution, Prompt, Workload, load_dataset, parse_distribution
from wire import ArgumentParser

DEFAULT_PROFILE = SimProfile()
_DESCRIPTION = (
    "Measure concurrent streaming chat completions (time to first chunk, gaps, end-to-end, relay delay).\n\n"
    "Without --url this is the embedded default: it starts the simulated Moonshot upstream and the relay\n"
    "as child processes (sized for N and the fd limit), runs the load through the relay, stops both, and\n"
    "writes DIR/result.json, DIR/requests.jsonl, DIR/report.md and PNG plots.\n\n"
    "The embedded sim's default profile models a slow LLM, not a ping: first token after "
    f"{DEFAULT_PROFILE.ttft_s:g} s ± {DEFAULT_PROFILE.ttft_jitter_s:g} s,\n"
    f"then {DEFAULT_PROFILE.chunks} chunks {DEFAULT_PROFILE.interval_s:g} s apart "
    f"(about {DEFAULT_PROFILE.session_s:.0f} s per session), "
    "with a ramp-up of N/200 s (at most 50 s)\nfrom 1,000 sessions on, so that all N sessions are open "
    "at the same time."
)
_EPILOG = """\
subcommands:
  loadtest report DIR/result.json     re-render report.md, report.html and the plots from a result
  loadtest report DIR/sweep.json      the same for a sweep
  loadtest compare A.json B.json      print two results side by side
  loadtest merge DIR...               merge the results of --shard runs into one
  loadtest coordinate --bind HOST:PORT --shards N   the shards' barrier and clock reference

examples:
  loadtest --concurrency 10000                          # embedded sim + relay, 10,000 streams
  loadtest --concurrency 1000 --baseline                # also measure the sim directly: relay overhead
  loadtest --url http://127.0.0.1:8117/v1 -c 200 --duration 30 --slo ttfc=500ms,e2e=10s
  loadtest --url http://127.0.0.1:8117/v1 --rate 50 --max-concurrency 2000 --requests 5000
  loadtest --sweep concurrency --steps 50..1600 --step-duration 15s --sweep-slo ttft_p99=2s,itl_p99=500ms,errors=1%
"""


def _positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {s}")
    return v


def _ratio(s: str) -> float:
    v = float(s.strip().removesuffix("%")) / (100 if s.strip().endswith("%") else 1)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (or 0% and 100%): {s}")
    return v


def _seconds(s: str) -> float:
    v = parse_duration(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {s}")
    return v


def parse_duration(s: str) -> float:
    """``"500ms"``, ``"10s"``, ``"2m"``, or a bare number of seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*(ms|s|m|min)?\s*", s, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {s!r} (e.g. 500ms, 10s, 2m)")
    value = float(m.group(1))
    unit = (m.group(2) or "s").lower()
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0}[unit]


_SLO_KEYS = {"ttfc": "ttfc_ms", "e2e": "e2e_ms", "gap": "gap_ms"}


def parse_slo(s: str) -> dict[str, float]:
    """``"ttfc=500ms,e2e=10s"`` -> ``{"ttfc_ms": 500.0, "e2e_ms": 10000.0}`` (bare numbers are ms)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in s.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().lower().removesuffix("_ms")
        if not sep or key not in _SLO_KEYS:
            raise argparse.ArgumentTypeError(f"bad SLO {part!r}: use ttfc=500ms,e2e=10s,gap=1s")
        value = value.strip()
        ms = float(value) if re.fullmatch(r"[0-9.]+", value) else parse_duration(value) * 1000
        out[_SLO_KEYS[key]] = ms
    if not out:
        raise argparse.ArgumentTypeError("empty SLO")
    return out


def _bind(s: str) -> tuple[str, int]:
    from wire import split_bind

    try:
        return split_bind(s)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _distribution(s: str) -> Distribution:
    try:
        return parse_distribution(s)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def workload_from_args(args: argparse.Namespace) -> Workload:
    """The workload the flags describe (the dataset read once: ``main`` keeps it in ``args.workload``)."""
    if getattr(args, "workload", None) is not None:
        return args.workload
    output = args.output_tokens
    if output is None and args.max_tokens is not None:
        output = Distribution("fixed", args.max_tokens)
    if args.input_tokens is not None:
        return Workload(input_tokens=args.input_tokens, output_tokens=output, seed=args.seed)
    if args.prompts:
        return Workload(prompts=load_dataset(args.prompts), output_tokens=output, seed=args.seed, source=args.prompts)
    return Workload(prompts=[Prompt([{"role": "user", "content": args.prompt}])], output_tokens=output,
                    seed=args.seed)


def check_url(url: str) -> str | None:
    """What is wrong with a target's base URL (``http[s]://HOST[:PORT]/...``), or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected http://HOST:PORT/v1 or https://..."
    try:
        parts.port  # noqa: B018 - urllib checks the port when it is read
    except ValueError:
        return "the port must be a number from 1 to 65535"
    return None


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="loadtest", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t = p.add_argument_group("target")
    t.add_argument("--url", help="base URL of an existing server, ending in /v1 (the relay or the sim); "
                   "without it: the embedded sim + relay")
    t.add_argument("--api", choices=APIS, default="chat",
                   help="the protocol: chat completions (default), Anthropic Messages (POST URL/messages) or OpenAI "
                   "Responses (POST URL/responses); docs/loadtest.md, 'Protocols'")
    t.add_argument("--api-key",
                   help="the key sent to the target: Authorization: Bearer (x-api-key with --api messages)")
    t.add_argument("--model", default="moonshot-v1-8k")
    t.add_argument("--prompt", default="Tell me about the far side of the moon.", help="the user message")
    t.add_argument("--max-tokens", type=_positive_int, help="sent as max_tokens (= --output-tokens N); Responses: "
                   "max_output_tokens")
    t.add_argument("--tool-call", action="store_true",
                   help="every request offers one function tool and demands a call of it (in the protocol's words)")
    w = p.add_argument_group("workload (docs/loadtest.md, 'Workloads'; the same --seed sends the same requests)")
    w.add_argument("--prompts", metavar="FILE", help="a dataset: ShareGPT conversations (a JSON array or JSON "
                   "lines) or JSON lines of {\"prompt\"}, {\"messages\"} or strings; taken in seeded order")
    w.add_argument("--input-tokens", metavar="DIST", type=_distribution,
                   help="synthetic prompts of this many tokens: N, uniform:LO,HI, normal:MEAN,SD, lognormal:MEAN,SD "
                   "[,min=A][,max=B]")
    w.add_argument("--output-tokens", metavar="DIST", type=_distribution,
                   help="max_tokens per request, from this distribution (the sim answers with exactly that many)")
    w.add_argument("--seed", type=int, default=0)
    t.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                   help="streaming (SSE) or one JSON response")
    t.add_argument("--ndjson", action="store_true",
                   help="the seed's NDJSON stream at /chat/completions on the server root")
    t.add_argument("--baseline", action="store_true",
                   help="first run the same load against the sim directly; report relay overhead")
    t.add_argument("--baseline-url", help="the sim's /v1 URL for --baseline with --url")

    s = p.add_argument_group("load shape")
    s.add_argument("-c", "--concurrency", type=_positive_int, default=100,
                   help="closed loop: sessions open at once; each finished one is replaced (default 100)")
    s.add_argument("--requests", type=_positive_int, help="total sessions (default: each slot once)")
    s.add_argument("--duration", type=_seconds, help="start new sessions for this long (e.g. 60s)")
    s.add_argument("--ramp-up", type=_seconds,
                   help="spread the slots' first starts over this long (default N/200 s, at most 50 s, "
                   "from N >= 1000; else 0)")
    s.add_argument("--rate", type=float, help="open loop: Poisson arrivals per second (latency counted "
                   "from the intended start)")
    s.add_argument("--max-concurrency", type=_positive_int,
                   help="open loop: cap on open sessions (default --concurrency)")
    s.add_argument("--warmup", type=_seconds, default=0.0, help="sessions started this early are not measured")
    s.add_argument("--no-keepalive", action="store_true", help="a new connection for every session")
    s.add_argument("--timeout", type=_seconds, default=120.0, help="per-session overall timeout (default 120 s)")
    s.add_argument("--workers", type=_positive_int, default=1, help="load generator processes")

    e = p.add_argument_group("embedded servers (without --url; with --url, given sim flags become per-request "
                             "sim_* overrides)")
    e.add_argument("--relay-workers", type=_positive_int, help="default: from N and the fd limit (>= 2 from 5,000)")
    e.add_argument("--sim-workers", type=_positive_int, help="default: one per 10,000 streams")
    e.add_argument("--ttft", type=_seconds, help=f"sim time to first token (default {DEFAULT_PROFILE.ttft_s:g} s)")
    e.add_argument("--ttft-jitter", type=_seconds, help=f"± (default {DEFAULT_PROFILE.ttft_jitter_s:g} s)")
    e.add_argument("--chunks", type=_positive_int, help=f"content chunks (default {DEFAULT_PROFILE.chunks})")
    e.add_argument("--interval", type=_seconds,
                   help=f"seconds between chunks (default {DEFAULT_PROFILE.interval_s:g})")

    w = p.add_argument_group("sweep: the largest load that meets the objectives (docs/loadtest.md, 'Finding the knee')")
    w.add_argument("--sweep", choices=("concurrency", "rate"),
                   help="climb closed-loop concurrency steps or open-loop rate steps, refine around the first that "
                   "breaks an objective, repeat it; needs --sweep-slo")
    w.add_argument("--steps", help="the loads to climb: 10,20,40 or FIRST..LAST[xFACTOR] (default doubling: "
                   f"{DEFAULT_STEPS['concurrency']} concurrent, {DEFAULT_STEPS['rate']} per second)")
    w.add_argument("--step-duration", type=_seconds, default=20.0,
                   help="how long each step starts sessions (default 20 s); --warmup and --ramp-up apply per step")
    w.add_argument("--sweep-slo", metavar="OBJECTIVES",
                   help="what every step must meet: FIGURE_pN=DURATION (ttft, ttfc, itl, tpot, gap, e2e; p50, p90, "
                   "p95, p99, p99.9), errors=RATIO, goodput=RATIO or goodput=N/s; e.g. "
                   "ttft_p99=2s,itl_p99=200ms,errors=1%%,goodput=95%%")
    w.add_argument("--repeats", type=_positive_int, default=3, help="runs of the answer and of the first failing "
                   "load, for their spread (default 3)")
    w.add_argument("--refine", type=int, default=4, help="bisection steps between pass and fail (default 4)")
    w.add_argument("--max-runs", type=_positive_int, default=30, help="runs in all, at most (default 30)")
    w.add_argument("--resolution", type=float, default=0.1,
                   help="rate sweeps: stop refining when fail/pass is within this (default 0.1)")
    w.add_argument("--no-probe", action="store_true", help="no raw probe beside each step")

    o = p.add_argument_group("output")
    o.add_argument("--out", help="output directory (default results/<UTC timestamp>-c<N>/)")
    o.add_argument("--slo", type=parse_slo, help="goodput SLO, e.g. ttfc=500ms,e2e=10s[,gap=1s]")
    o.add_argument("--max-failed-ratio", type=_ratio, default=0.0, metavar="R",
                   help="exit 1 when more than this share of the measured sessions failed (default 0: any; "
                   "e.g. 0.01 or 1%%)")
    o.add_argument("--no-save-requests", action="store_true", help="skip requests.jsonl")
    o.add_argument("--quiet", action="store_true", help="no live progress")
    o.add_argument("--metrics-bind", metavar="HOST:PORT", type=_bind,
                   help="serve the live progress as Prometheus metrics at http://HOST:PORT/metrics during the run "
                   "(port 0: any free port, printed)")
    shards.add_arguments(p)
    return p


DEFAULT_STEPS = {"concurrency": "10..5120", "rate": "1..512"}
SWEEP_MAX_OPEN = 10_000  # a rate sweep's cap on open sessions unless --max-concurrency says otherwise


def _ramp_default(n: int) -> float:
    # 200 new sessions/s: what relay + sim + load generator set up on 2 cores without queueing while
    # thousands of streams flow (a faster ramp at 10,000 queued the sessions and TTFC measured the queue).
    return min(50.0, n / 200) if n >= 1000 else 0.0


def config_from_args(args: argparse.Namespace, url: str) -> LoadConfig:
    workload = workload_from_args(args)
    extra: dict[str, Any] = {}
    # Messages requires max_tokens: where the workload sets no length, the embedded sim's profile length (the sim
    # answers with exactly max_tokens tokens), else --chunks, else MESSAGES_MAX_TOKENS.
    messages_max_tokens = _profile(args).chunks if not args.url else (args.chunks or MESSAGES_MAX_TOKENS)
    if args.url:  # the sim honours per-request overrides; the relay passes unknown fields on
        for flag, key in (("ttft", "sim_ttft"), ("chunks", "sim_chunks"), ("interval", "sim_interval")):
            if getattr(args, flag) is not None:
                extra[key] = getattr(args, flag)
    return LoadConfig(
        url=url, concurrency=args.concurrency, requests=args.requests, duration_s=args.duration,
        rate=args.rate, max_concurrency=args.max_concurrency,
        ramp_up_s=args.ramp_up if args.ramp_up is not None else _ramp_default(args.concurrency),
        warmup_s=args.warmup, keepalive=not args.no_keepalive, timeout_s=args.timeout, stream=args.stream,
        ndjson=args.ndjson, model=args.model, workload=workload, max_tokens=args.max_tokens, seed=args.seed,
        api_key=args.api_key, extra_body=extra, baseline_url=args.baseline_url if args.baseline else None,
        api=args.api, tool_call=args.tool_call, messages_max_tokens=messages_max_tokens,
        **({"shard": args.shard[0], "shards": args.shard[1]} if getattr(args, "shard", None) else {}),
    )


# The embedded sim's gap between tokens when the workload sets output lengths: 20 tokens/s per stream, a hosted
# model's pace, instead of the default profile's 12 s between its 6 chunks (256 tokens would take 51 minutes).
SHAPED_INTERVAL_S = 0.05


def step_config(args: argparse.Namespace, url: str, mode: str, load: float) -> LoadConfig:
    """One sweep step: the run's own configuration at ``load`` for ``--step-duration``."""
    cfg = config_from_args(args, url)
    cfg.requests, cfg.duration_s = None, args.step_duration
    if mode == "concurrency":
        n = int(load)
        cfg.concurrency, cfg.rate = n, None
        cfg.ramp_up_s = args.ramp_up if args.ramp_up is not None else min(_ramp_default(n), args.step_duration / 2)
    else:
        cfg.rate = load
        cfg.max_concurrency = args.max_concurrency or SWEEP_MAX_OPEN
        cfg.ramp_up_s = 0.0
    return cfg


def _profile(args: argparse.Namespace) -> SimProfile:
    d = DEFAULT_PROFILE
    interval = d.interval_s
    if args.output_tokens is not None or args.max_tokens is not None or (
        args.prompts and any(p.output_tokens is not None for p in workload_from_args(args).prompts or [])
    ):
        interval = SHAPED_INTERVAL_S
    return SimProfile(
        ttft_s=d.ttft_s if args.ttft is None else args.ttft,
        ttft_jitter_s=d.ttft_jitter_s if args.ttft_jitter is None else args.ttft_jitter,
        chunks=d.chunks if args.chunks is None else args.chunks,
        interval_s=interval if args.interval is None else args.interval,
    )


def _say(msg: str, *, style: str = "") -> None:
    if sys.stderr.isatty():
        from rich.console import Console

        Console(stderr=True).print(msg, style=style, markup=False, highlight=False)
    else:
        print(msg, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "report":
        return _report(argv[1:])
    if argv and argv[0] == "compare":
        return _compare(argv[1:])
    if argv and argv[0] == "merge":
        from loadtest.merge import main as merge_main

        return merge_main(argv[1:])
    if argv and argv[0] == "coordinate":
        return shards.coordinate_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    if args.rate and args.requests is None and args.duration is None:
        parser.error("--rate needs --requests or --duration")
    if args.requests is not None and args.duration is not None:
        parser.error("--requests and --duration exclude each other")
    for flag, url in (("--url", args.url), ("--baseline-url", args.baseline_url)):
        problem = url and check_url(url)
        if problem:
            parser.error(f"{flag} {url!r}: {problem}")
    if args.baseline and args.url and not args.baseline_url:
        parser.error("--baseline with --url needs --baseline-url (the sim's /v1 URL)")
    if args.input_tokens is not None and args.prompts:
        parser.error("--input-tokens (synthetic prompts) and --prompts (a dataset) exclude each other")
    if args.output_tokens is not None and args.max_tokens is not None:
        parser.error("--output-tokens and --max-tokens exclude each other")
    if args.ndjson and args.api != "chat":
        parser.error("--ndjson is the seed's chat stream: not with --api " + args.api)
    try:
        args.workload = workload_from_args(args)
        for k, prompt in enumerate(args.workload.prompts or []):
            try:
                check_messages(args.api, prompt.messages)
            except ValueError as exc:
                raise ValueError(f"{args.workload.source}, prompt {k + 1}: {exc}") from None
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    shards.check_arguments(parser, args)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.sweep:
        return _sweep_main(parser, args, argv, Path(args.out or f"results/{stamp}-sweep-{args.sweep}"))
    shard = f"-shard{args.shard[0]}of{args.shard[1]}" if args.shard else ""
    out_dir = Path(args.out or f"results/{stamp}-c{args.concurrency}{shard}")
    run, failed = _trio_run(_run_any, args, argv, out_dir)
    if failed:
        return failed
    if run is None:
        _say("loadtest: interrupted before the run started", style="bold red")
        return 130
    try:
        return _finish(args, run, out_dir)
    except KeyboardInterrupt:
        _say(f"loadtest: interrupted while writing {out_dir}; it may be incomplete", style="bold red")
        return 130


async def _run_any(args: argparse.Namespace, argv: list[str], out_dir: Path) -> RunData | None:
    from loadtest import progress

    show = progress.enabled(args.quiet)
    command = ["loadtest", *argv]
    if args.url:
        cfg = config_from_args(args, args.url)
        await check_route(cfg, args.url)
        runner = Runner(cfg, workers=args.workers, command=command, slo=args.slo, start=args.shard_start)
        async with trio.open_nursery() as nursery:
            await _start_metrics(nursery, args, runner)
            if args.shard_start:
                await args.shard_start.serve(nursery)
            result = await run_with_signals(runner, show_progress=show)
            nursery.cancel_scope.cancel()
        return result
    return await _run_embedded(args, command, out_dir, show)


async def _start_metrics(nursery: trio.Nursery, args: argparse.Namespace, runner: Runner) -> None:
    """``--metrics-bind``: the live metrics endpoint in ``nursery``, for as long as it runs."""
    if args.metrics_bind is None:
        return
    from functools import partial

    from loadtest.livemetrics import serve_metrics

    host, port = args.metrics_bind
    labels = args.shard_start.labels if args.shard_start else None
    url = await nursery.start(partial(serve_metrics, runner.live, host, port, const_labels=labels))
    _say(f"loadtest: metrics on {url}")


async def _run_embedded(args: argparse.Namespace, command: list[str], out_dir: Path, show: bool) -> RunData | None:
    from loadtest.embedded import servers
    from wire import STOP_SIGNALS, raise_nofile_limit

    fd_soft, _ = raise_nofile_limit()
    profile = _profile(args)
    result: RunData | None = None
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            runner: Runner | None = None
            stopped = trio.CancelScope()

            async def on_signal() -> None:
                async for _ in signals:
                    if runner is not None:
                        runner.interrupt()
                    else:
                        stopped.cancel()  # still starting the servers: give up

            nursery.start_soon(on_signal)
            with stopped:
                share = math.ceil(args.concurrency / (args.shard or (0, 1))[1])  # a shard's servers carry its share
                async with servers(share, log_dir=out_dir, profile=profile,
                                   relay_workers=args.relay_workers, sim_workers=args.sim_workers,
                                   fd_soft=fd_soft) as srv:
                    cfg = config_from_args(args, srv.relay_url)
                    await check_route(cfg, srv.relay_url, embedded=True)
                    if args.baseline:
                        cfg.baseline_url = srv.sim_url
                    runner = Runner(cfg, workers=args.workers, command=command, slo=args.slo,
                                    start=args.shard_start)
                    await _start_metrics(nursery, args, runner)
                    if args.shard_start:
                        await args.shard_start.serve(nursery)
                    srv.mark_start()
                    if show:
                        from loadtest.progress import show as show_progress

                        nursery.start_soon(show_progress, runner.live)
                    result = await runner.run()
                    result.processes.extend(srv.usage())
                    result.upstream_peak_open = srv.upstream_open.peak
                    result.config.update(
                        embedded=True, relay_workers=srv.relay_workers, sim_workers=srv.sim_workers,
                        sim_profile={"ttft_s": profile.ttft_s, "ttft_jitter_s": profile.ttft_jitter_s,
                                     "chunks": profile.chunks, "interval_s": profile.interval_s},
                    )
            nursery.cancel_scope.cancel()
    return result


def _finish(args: argparse.Namespace, run: RunData, out_dir: Path) -> int:
    from loadtest import report

    for w in run.warnings:
        _say(f"WARNING: {w}", style="bold red")
    if run.connect_retries:
        _say("  (connect retries mean a full listen backlog: SYNs dropped or refused; raise the server's "
             "--backlog, add server workers or lengthen --ramp-up)", style="red")
    result = report.write_outputs(out_dir, run, save_requests=not args.no_save_requests)
    if args.shard_start:
        shards.write_shard(out_dir, run, args.shard_start.clock, result["machine"])
    s = result["summary"]
    for w in result.get("warnings", []):
        if w not in run.warnings:
            _say(f"WARNING: {w}", style="bold red")
    ttfc = s.get("ttfc_ms") or {}

    def ms(v: float | None) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.0f} ms"

    line = f"{s.get('completed', 0):,} completed"
    if s.get("unverified"):
        line += f" ({s['unverified']:,} unverified: no sim stamps)"
    line += ", "
    line += f"{s.get('failed', 0):,} failed, "
    if s.get("resent"):
        line += f"{s['resent']:,} re-sent, "
    line += (f"peak concurrency {s.get('peak_concurrency', 0):,}, "
             f"TTFC p50 {ms(ttfc.get('p50'))} p99 {ms(ttfc.get('p99'))}")
    tpot = ((s.get("per_token") or {}).get("tpot_ms") or {}).get("p50")
    if tpot is not None:
        line += f", TPOT p50 {tpot:,.1f} ms"
    if s.get("overhead_ms"):
        oh = s["overhead_ms"]
        line += f", relay overhead TTFC p50 {ms(oh.get('ttfc_p50'))} p99 {ms(oh.get('ttfc_p99'))}"
    print(line)
    print(f"wrote {out_dir}/result.json, report.md and report.html")
    if run.interrupted:
        return 130
    return exit_status(s, args.max_failed_ratio)


def exit_status(summary: dict[str, Any], max_failed_ratio: float) -> int:
    """1 when no session was measured or more than ``max_failed_ratio`` of them failed, else 0."""
    sessions, failed = summary.get("sessions") or 0, summary.get("failed") or 0
    if not sessions:
        _say("loadtest: no session was measured", style="bold red")
        return 1
    if failed > max_failed_ratio * sessions:
        _say(f"loadtest: {failed:,} of {sessions:,} sessions failed ({failed / sessions:.1%}), more than "
             f"--max-failed-ratio {max_failed_ratio:g}", style="bold red")
        return 1
    return 0


def _trio_run(fn: Any, *args: Any) -> tuple[Any, int]:
    """``trio.run(fn, *args)`` and 0; a start-up failure (the embedded servers, a bad URL) said in one line, and 1."""
    try:
        return trio.run(fn, *args), 0
    except Exception as exc:  # a shard's missed start too
        from loadtest.coordinator import CoordinatorError
        from loadtest.embedded import EmbeddedError

        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # type: ignore[assignment]
        if isinstance(exc, EmbeddedError | ValueError | OSError | shards.StartMissed | CoordinatorError | RouteMissing):
            _say(f"loadtest: {exc}", style="bold red")
            return None, 1
        raise


def _sweep_main(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str], out_dir: Path) -> int:
    from loadtest.sweep import parse_objectives, parse_steps
    from loadtest.sweeprun import SweepPlan

    if not args.sweep_slo:
        parser.error("--sweep needs --sweep-slo (e.g. ttft_p99=2s,errors=1%%)")
    if args.requests is not None or args.duration is not None or args.rate is not None:
        parser.error("--sweep sets each step's load and length: use --steps and --step-duration, not "
                     "--requests, --duration or --rate")
    if args.baseline:
        parser.error("--baseline is not available with --sweep")
    try:
        objectives = parse_objectives(args.sweep_slo)
        steps = parse_steps(args.steps or DEFAULT_STEPS[args.sweep], integer=args.sweep == "concurrency")
    except ValueError as exc:
        parser.error(str(exc))
    if args.step_duration <= 0:
        parser.error("--step-duration must be positive")
    plan = SweepPlan(mode=args.sweep, steps=steps, objectives=objectives, step_s=args.step_duration,
                     repeats=args.repeats, refine=args.refine, max_runs=args.max_runs, resolution=args.resolution,
                     probe=not args.no_probe)
    doc, failed = _trio_run(_run_sweep, args, argv, out_dir, plan)
    if failed:
        return failed
    if doc is None:
        _say("loadtest: interrupted before the sweep started", style="bold red")
        return 130
    from loadtest.sweepreport import write_sweep

    write_sweep(out_dir, doc)
    for w in doc["warnings"]:
        _say(f"WARNING: {w}", style="bold red")
    out = doc["outcome"]
    unit = " concurrent" if plan.mode == "concurrency" else "/s"
    if out["knee"]:
        k = out["knee"]
        print(f"largest load that met every objective: {k['load']:g}{unit} ({k['passed']} of {k['runs']} runs); "
              f"stopped: {out['stop']}")
    else:
        print(f"no load met every objective in all its runs; stopped: {out['stop']}")
    print(f"wrote {out_dir}/sweep.json, sweep.md and sweep.html")
    if doc["interrupted"]:
        return 130
    return 0 if out["knee"] else 1


async def _run_sweep(args: argparse.Namespace, argv: list[str], out_dir: Path, plan: Any) -> dict[str, Any] | None:
    from loadtest import progress
    from loadtest.sweeprun import Sweep
    from wire import STOP_SIGNALS

    def say(line: str) -> None:
        print(line, flush=True)

    sweep = Sweep(plan, lambda url, load: step_config(args, url, plan.mode, load), out_dir=out_dir,
                  command=["loadtest", *argv], workers=args.workers, slo=args.slo,
                  show_progress=progress.enabled(args.quiet), say=say)
    doc: dict[str, Any] | None = None
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            starting = trio.CancelScope()
            running = False

            async def on_signal() -> None:
                async for _ in signals:
                    sweep.interrupt()  # the sweep stops and still reports what it ran
                    if not running:
                        starting.cancel()  # still starting the embedded servers: give up

            nursery.start_soon(on_signal)
            if args.url:
                await check_route(config_from_args(args, args.url), args.url)
                doc = await sweep.run(args.url, extra={"target": {"url": args.url}})
            else:
                from loadtest.embedded import servers
                from wire import raise_nofile_limit

                fd_soft, _ = raise_nofile_limit()
                profile = _profile(args)
                top = max(plan.steps)
                n = int(top) if plan.mode == "concurrency" else (
                    args.max_concurrency or min(SWEEP_MAX_OPEN, math.ceil(top * (profile.session_s + 1) * 2)))
                with starting:
                    async with servers(n, log_dir=out_dir, profile=profile, relay_workers=args.relay_workers,
                                       sim_workers=args.sim_workers, fd_soft=fd_soft) as srv:
                        await check_route(config_from_args(args, srv.relay_url), srv.relay_url, embedded=True)
                        running = True
                        target = {"embedded": True, "relay_workers": srv.relay_workers, "sim_workers": srv.sim_workers,
                                  "sim_profile": {"ttft_s": profile.ttft_s, "ttft_jitter_s": profile.ttft_jitter_s,
                                                  "chunks": profile.chunks, "interval_s": profile.interval_s}}
                        doc = await sweep.run(srv.relay_url, srv, extra={"target": target})
            nursery.cancel_scope.cancel()
    return doc


def _report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="loadtest report", description="re-render report.md, report.html and plots "
                                "(or sweep.md, sweep.html and the curves)")
    p.add_argument("result", help="DIR/result.json or DIR/sweep.json")
    args = p.parse_args(argv)
    from loadtest import report

    result = report.load_result(args.result)
    if result.get("schema", "").startswith("loadtest-sweep/"):
        from loadtest.sweepreport import render_markdown as render_sweep
        from loadtest.sweepreport import write_sweep

        paths = write_sweep(Path(args.result).parent, result)
        print(render_sweep(result))
        print("wrote " + ", ".join(str(x) for x in paths), file=sys.stderr)
        return 0
    paths = report.write_report(Path(args.result).parent, result)
    print(report.render_markdown(result))
    print("wrote " + ", ".join(str(x) for x in paths), file=sys.stderr)
    return 0


def _compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="loadtest compare", description="two results side by side")
    p.add_argument("a", help="A.json")
    p.add_argument("b", help="B.json")
    args = p.parse_args(argv)
    from loadtest import compare, report

    print(compare.compare(report.load_result(args.a), report.load_result(args.b), labels=(args.a, args.b)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
