"""``python -m bench.capacity``: how many token-rate streams one proxy core holds (issue 16, item 1).

Each step is one bench run of the ``token-rate`` shape at a stream count, for ``direct`` and for the target
(pinned to one core; the sim and load generator on the others), judged against direct at the same count:
a step passes with 0 failed or unverified sessions, every session completed, and added inter-chunk delay
(the per-chunk delay after the sim's send stamp, target p99 - direct p99) <= ``--max-added-ms``. The counts
double from ``--start`` until a step fails, then bisect between the last pass and the first failure. A step
where the rig (sim + load generator) uses >= 90 % of its cores ends the search: beyond it the rig, not the
proxy, would be measured, and the report says so.

The decision (``next_count``), the verdict (``judge``) and the report (``render``) are pure; ``main`` is the
shell that runs the steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from bench.pinning import plan
from bench.scenarios import SCENARIOS

PASS, FAIL, RIG = "pass", "fail", "rig-saturated"
RIG_SATURATED = 0.90  # share of the rig's cores at which the rig, not the proxy, is the limit


@dataclass(frozen=True)
class Verdict:
    outcome: str  # PASS, FAIL or RIG
    reason: str


def next_count(outcomes: dict[int, str], start: int, maximum: int, resolution: float = 0.1) -> int | None:
    """The stream count to run next, or None when the search is over.

    Doubling from ``start`` while steps pass (capped at ``maximum``), then bisection between the largest
    passing count and the smallest failing count above it, until they are within ``resolution`` of the pass
    (at least 1 stream apart). A rig-saturated step ends the search. Noise may make a count fail below one
    that passed; the search trusts the largest pass."""
    if not outcomes:
        return start
    if RIG in outcomes.values():
        return None
    passed = [n for n, o in outcomes.items() if o == PASS]
    lo = max(passed, default=0)
    above = [n for n, o in outcomes.items() if o == FAIL and n > lo]
    if not above:
        if lo >= maximum:
            return None
        return min(lo * 2, maximum)
    hi = min(above)
    if hi - lo <= max(1, math.ceil(lo * resolution)):
        return None
    return (lo + hi) // 2


def capacity(outcomes: dict[int, str]) -> int:
    """The largest passing count (0: none passed)."""
    return max((n for n, o in outcomes.items() if o == PASS), default=0)


def rig_share(record: dict[str, Any], rig_cores: int) -> float | None:
    """Share of the rig's cores the sim and load generator used over the run (1.0: every rig core busy)."""
    summary = record.get("summary") or {}
    duration = summary.get("run_duration_s") or summary.get("duration_s")
    sim_cpu = (record.get("sim_usage") or {}).get("cpu_s")
    lt_cpu = summary.get("loadtest_cpu_s")  # every load generator process
    if not duration or sim_cpu is None or lt_cpu is None:
        return None
    return (sim_cpu + lt_cpu) / duration / rig_cores


def added(target: dict[str, Any], direct: dict[str, Any]) -> dict[str, float | None]:
    """Target minus direct (ms), p50 and p99: TTFC as the client sees it (blurred by the 1-3 s TTFT draw at
    small counts), TTFC at the source (first chunk's delay after the sim's send stamp) and inter-chunk delay."""
    out: dict[str, float | None] = {}
    for name, key in (("ttfc", "ttfc"), ("first_chunk", "first_chunk_delay"), ("delay", "relay_delay")):
        for p in ("p50", "p99"):
            a, b = target.get(f"{key}_{p}_ms"), direct.get(f"{key}_{p}_ms")
            out[f"added_{name}_{p}_ms"] = a - b if a is not None and b is not None else None
    return out


def judge(streams: int, target: dict[str, Any], direct: dict[str, Any], rig: float | None,
          max_added_ms: float = 10.0) -> Verdict:
    """One step's verdict from the target's and direct's figures at the same count and the rig's CPU share
    (the larger of the two runs')."""
    if rig is not None and rig >= RIG_SATURATED:
        return Verdict(RIG, f"rig used {rig:.0%} of its cores")
    if target.get("failed") or target.get("unverified"):
        return Verdict(FAIL, f"{target.get('failed')} failed, {target.get('unverified')} unverified")
    if (target.get("completed") or 0) < streams:
        return Verdict(FAIL, f"{target.get('completed')} of {streams} completed")
    delay = added(target, direct)["added_delay_p99_ms"]
    if delay is None:
        return Verdict(FAIL, "no inter-chunk delay measured")
    if delay > max_added_ms:
        return Verdict(FAIL, f"added inter-chunk delay p99 {delay:.1f} ms > {max_added_ms:g} ms")
    return Verdict(PASS, f"added inter-chunk delay p99 {delay:.1f} ms")


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"


def render(target: str, steps: list[dict[str, Any]], *, command: str, pinning: str, max_added_ms: float) -> str:
    """README.md of one search: the answer, its figures, and every step."""
    outcomes = {s["streams"]: s["outcome"] for s in steps}
    best = capacity(outcomes)
    rig_hit = next((s for s in steps if s["outcome"] == RIG), None)
    lines = [f"# token-rate capacity: {target}", "", f"`{command}`", "", f"Pinning: {pinning}", "",
             f"Pass: 0 failed or unverified sessions, all completed, added inter-chunk delay p99 <= "
             f"{max_added_ms:g} ms over direct at the same count.", ""]
    if best:
        lines.append(f"**{best:,} streams per proxy core** (largest passing count).")
    else:
        lines.append("**No count passed.**")
    if rig_hit:
        lines.append(f"The rig saturated first at {rig_hit['streams']:,} streams ({rig_hit['reason']}): the "
                     "proxy core may hold more than this search could show.")
    at = next((s for s in steps if s["streams"] == best and s["outcome"] == PASS), None)
    if at:
        f = at["target"]
        lines += ["", "| at the answer | value |", "|---|---|",
                  f"| CPU per chunk (µs) | {_ms(f.get('cpu_us_per_chunk'))} |",
                  f"| proxy core (%) | {_ms(f.get('proxy_core_pct'))} |",
                  f"| added TTFC p50 / p99 (ms), client view | {_ms(at['added_ttfc_p50_ms'])} / "
                  f"{_ms(at['added_ttfc_p99_ms'])} |",
                  f"| added TTFC p50 / p99 (ms), at the source (first-chunk delay) | "
                  f"{_ms(at['added_first_chunk_p50_ms'])} / {_ms(at['added_first_chunk_p99_ms'])} |",
                  f"| added inter-chunk delay p50 / p99 (ms) | {_ms(at['added_delay_p50_ms'])} / "
                  f"{_ms(at['added_delay_p99_ms'])} |",
                  f"| RSS per stream (KB) | {_ms(f.get('mem_per_stream_kb'))} |"]
    lines += ["", "| streams | outcome | why | CPU/chunk µs | added delay p50 / p99 ms | added TTFC p99 ms "
              "| rig cores used |", "|---:|---|---|---:|---|---:|---:|"]
    for s in steps:
        f = s.get("target") or {}
        rig = "—" if s.get("rig_share") is None else f"{s['rig_share']:.0%}"
        lines.append(f"| {s['streams']:,} | {s['outcome']} | {s['reason']} | {_ms(f.get('cpu_us_per_chunk'))} | "
                     f"{_ms(s.get('added_delay_p50_ms'))} / {_ms(s.get('added_delay_p99_ms'))} | "
                     f"{_ms(s.get('added_ttfc_p99_ms'))} | {rig} |")
    return "\n".join(lines) + "\n"


async def _step(target: str, streams: int, out: Path, pin, max_added_ms: float) -> dict[str, Any]:
    from bench.run import one_run  # the I/O shell; the pure parts above import nothing that starts processes

    sc = SCENARIOS["token-rate"].with_streams(streams)
    records = {t: await one_run(sc, t, out / "runs" / f"c{streams}" / t, pin) for t in ("direct", target)}
    step: dict[str, Any] = {"streams": streams, "records": {t: r.get("rundir") or str(out) for t, r in records.items()}}
    errors = [f"{t}: {r['error']}" for t, r in records.items() if "error" in r]
    if errors:
        step.update(outcome=FAIL, reason="; ".join(errors)[:300], target=None)
        return step
    shares = [rig_share(r, len(pin.rig)) for r in records.values()]
    rig = max((s for s in shares if s is not None), default=None)
    f_target, f_direct = records[target]["figures"], records["direct"]["figures"]
    verdict = judge(streams, f_target, f_direct, rig, max_added_ms)
    step.update(outcome=verdict.outcome, reason=verdict.reason, rig_share=rig, target=f_target, direct=f_direct,
                **added(f_target, f_direct))
    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="moonrelay")
    p.add_argument("--start", type=int, default=50)
    p.add_argument("--max", type=int, default=2000)
    p.add_argument("--resolution", type=float, default=0.1, help="stop when fail - pass <= this share of pass")
    p.add_argument("--max-added-ms", type=float, default=10.0)
    p.add_argument("--pin-proxy-core", type=int, default=0)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    from bench.peers import PEERS
    from bench.run import raise_fd_limit

    pin = plan(args.pin_proxy_core, os.sched_getaffinity(0))
    assert pin is not None
    out = args.out or Path("results") / f"capacity-{args.target}"
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "bench.capacity", *(sys.argv[1:] if argv is None else argv)])
    raise_fd_limit()
    if args.target != "direct":
        PEERS[args.target].ensure()
    steps: list[dict[str, Any]] = []
    outcomes: dict[int, str] = {}
    while (n := next_count(outcomes, args.start, args.max, args.resolution)) is not None:
        print(f"[capacity] {args.target} at {n} streams ...", flush=True)
        step = trio.run(_step, args.target, n, out, pin, args.max_added_ms)
        print(f"[capacity]   {step['outcome']}: {step['reason']}", flush=True)
        steps.append(step)
        outcomes[n] = step["outcome"]
        (out / "capacity.json").write_text(json.dumps(
            {"command": command, "pinning": asdict(pin), "streams_per_core": capacity(outcomes), "steps": steps},
            indent=2, default=str))
    text = render(args.target, steps, command=command, pinning=pin.describe(), max_added_ms=args.max_added_ms)
    (out / "README.md").write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
