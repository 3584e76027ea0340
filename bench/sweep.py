"""``python -m bench.sweep``: ``loadtest --sweep`` of several relays in turn, in front of one simulated upstream.

One sim (``python -m loadtest.sim`` with ``--sim-flags``) serves every target; each target is started as the
bench starts it (:mod:`bench.peers`: moonrelay, nginx, ...) with ``--workers`` processes, swept with
``python -m loadtest --url TARGET --sweep ...`` (everything after ``--`` is passed to it), then stopped.
Results: ``OUT/<target>/`` holds the sweep's own files (sweep.json, sweep.md, sweep.html, curves, steps/),
``OUT/<target>/target.json`` the target's version and command line, and ``OUT/sim.log``. Take the machine-wide
measurement lock around it (``flock /tmp/moonrelay-measure.lock``).

    python -m bench.sweep --targets moonrelay,nginx --out results/sweep-DATE \\
        --sim-flags "--ttft 0.2 --ttft-jitter 0.1 --chunks 50 --interval 0.02" \\
        -- --sweep concurrency --steps 50..1600 --step-duration 10s --sweep-slo ttft_p99=1s,itl_p99=100ms,errors=0%
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import trio

from bench.peers import API_KEY, PEERS, Launch, PeerUnavailable
from bench.procs import serve


async def _sweep(args: argparse.Namespace, loadtest_args: list[str]) -> int:
    out = Path(args.out)
    await trio.Path(out).mkdir(parents=True, exist_ok=True)
    sim_argv = [sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", *shlex.split(args.sim_flags)]
    sim_launch = Launch(argv=sim_argv, url_pattern=rb"listening on (http://\S+)", env={"MOONSHOT_API_KEY": API_KEY})
    worst = 0
    async with serve("sim", sim_launch, out / "sim.log") as sim:
        for name in args.targets.split(","):
            peer = PEERS[name]
            try:
                version = peer.ensure()
            except PeerUnavailable as exc:
                print(f"[bench.sweep] {name}: unavailable: {exc}", flush=True)
                worst = max(worst, 1)
                continue
            workdir = out / name
            await trio.Path(workdir / "server").mkdir(parents=True, exist_ok=True)
            launch = peer.launch(sim.url, workdir / "server", args.workers, args.streams)
            async with serve(name, launch, workdir / "server.log") as target:
                command = [sys.executable, "-m", "loadtest", "--url", target.url, *loadtest_args, "--out", str(workdir),
                           "--quiet"]
                await trio.Path(workdir / "target.json").write_text(json.dumps({
                    "target": name, "version": version, "workers": args.workers,
                    "target_command": shlex.join(launch.argv), "sim_command": shlex.join(sim_argv),
                    "loadtest_command": shlex.join(command),
                }, indent=2) + "\n")
                print(f"[bench.sweep] {name} {version}: {shlex.join(command)}", flush=True)
                done = await trio.run_process(command, check=False, stdout=None, stderr=None)
                worst = max(worst, done.returncode)
    return worst


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    own, loadtest_args = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="moonrelay,nginx", help="comma-separated bench targets (default %(default)s)")
    p.add_argument("--out", required=True)
    p.add_argument("--sim-flags", default="", help="flags of python -m loadtest.sim")
    p.add_argument("--workers", type=int, default=1, help="worker processes of each target (default 1)")
    p.add_argument("--streams", type=int, default=2000, help="the most streams a target is sized for (default 2000)")
    args = p.parse_args(own)
    args.out = str(Path(args.out).resolve())  # nginx resolves its paths against its own prefix
    if not loadtest_args:
        p.error("give the loadtest --sweep arguments after --")
    unknown = [t for t in args.targets.split(",") if t not in PEERS]
    if unknown:
        p.error(f"unknown targets {unknown}; known: {', '.join(PEERS)}")
    return trio.run(_sweep, args, loadtest_args)


if __name__ == "__main__":
    sys.exit(main())
