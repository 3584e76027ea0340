"""A/B: relay CPU per chunk with the observability layer (A: access log to a file, metrics on) and without it
(B: ``install_observability`` patched out), against one sim, alternating runs.

    .venv/bin/python results/observability-cost/ab.py CONCURRENCY REQUESTS ROUNDS

CPU = the relay process's user+system seconds during the load / (requests x 21 chunks); it includes request setup.
"""

import os
import statistics
import subprocess
import sys

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable
CHUNKS = 20
RUN = "import sys; from proxy.__main__ import main; sys.exit(main(sys.argv[1:]))"
PATCHED = "import proxy.app as a; a.install_observability = lambda *x, **k: None; " + RUN


def start(args: list[str], marker: str, err) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    for line in proc.stdout:
        if marker in line:
            return proc, line.split(marker, 1)[1].split()[0]
    raise SystemExit(f"{args[:3]} did not start")


def main() -> None:
    concurrency, requests, rounds = (int(x) for x in sys.argv[1:4])
    sim_args = [PY, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0.2"]
    sim, sim_url = start(sim_args + ["--chunks", str(CHUNKS), "--interval", "0.1"], "sim listening on ", None)
    results: dict[str, list[float]] = {"A": [], "B": []}
    try:
        for _ in range(rounds):
            for variant in ("A", "B"):
                with open(f"/tmp/moonrelay-obs-relay-{variant}.err", "w") as err:
                    code = PATCHED if variant == "B" else RUN
                    relay_args = [PY, "-c", code, "--bind", "127.0.0.1:0", "--upstream", sim_url, "--heartbeat-s", "0"]
                    relay, root = start(relay_args, "moonrelay listening on ", err)
                    proc = psutil.Process(relay.pid)
                    before = proc.cpu_times()
                    load = [PY, "-m", "loadtest", "--url", root + "/v1", "-c", str(concurrency)]
                    load += ["--requests", str(requests), "--quiet", "--no-save-requests"]
                    load += ["--out", f"/tmp/moonrelay-obs-lt-{variant}"]
                    subprocess.run(load, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
                    after = proc.cpu_times()
                    relay.terminate()
                    relay.wait()
                cpu = (after.user + after.system) - (before.user + before.system)
                per_chunk_us = cpu / (requests * (CHUNKS + 1)) * 1e6
                results[variant].append(per_chunk_us)
                print(variant, f"{per_chunk_us:.1f} us/chunk", flush=True)
    finally:
        sim.terminate()
        sim.wait()
    for variant, values in results.items():
        print(variant, "median", f"{statistics.median(values):.1f}", [round(x, 1) for x in values])
    print("A/B", f"{statistics.median(results['A']) / statistics.median(results['B']):.3f}")


if __name__ == "__main__":
    main()
