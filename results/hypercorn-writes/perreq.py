"""A/B: relay CPU per request (and per chunk), alternating variants. usage: perreq.py ROUNDS N C CHUNKS INTERVAL DIR..."""
import os, re, subprocess, sys, time, psutil, json, statistics
PY = "/work/main/.venv/bin/python"
rounds, n, c, chunks, interval = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
dirs = sys.argv[6:]
res = {d: [] for d in dirs}
def start(argv, cwd, pat, env=None):
    p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    while True:
        line = p.stdout.readline()
        if not line: raise SystemExit(f"{argv} died")
        m = re.search(pat, line)
        if m:
            import threading
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, m.group(1).decode()
for r in range(rounds):
    for d in dirs:
        sim, simurl = start([PY, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0.01", "--chunks", str(chunks), "--interval", str(interval)], d, rb"(http://\S+)")
        relay, url = start([PY, "-m", "proxy", "--bind", "127.0.0.1:0", "--upstream", simurl.rstrip("/") + ("" if simurl.rstrip("/").endswith("/v1") else "/v1"), "--workers", "1"], d, rb"listening on (http://\S+)", {"MOONSHOT_API_KEY": "k"})
        lt = lambda k, out: subprocess.run([PY, "-m", "loadtest", "--url", url.rstrip("/") + ("" if url.rstrip("/").endswith("/v1") else "/v1"), "-c", str(c), "--requests", str(k), "--quiet", "--no-save-requests", "--out", out], cwd="/work/main", capture_output=True, text=True)
        lt(2 * c, "/tmp/ab/warm")
        procs = [psutil.Process(relay.pid)] + psutil.Process(relay.pid).children(recursive=True)
        t0 = sum(sum(p.cpu_times()[:2]) for p in procs)
        out = f"/tmp/ab/run-{os.path.basename(d)}-{r}"
        cp = lt(n, out)
        t1 = sum(sum(p.cpu_times()[:2]) for p in procs)
        s = json.load(open(f"{out}/summary.json")) if os.path.exists(f"{out}/summary.json") else {}
        us = (t1 - t0) / n * 1e6
        res[d].append(us)
        print(f"{os.path.basename(d)} r{r}: {us:.0f} us/request ({us/chunks:.0f}/chunk) rc={cp.returncode}", flush=True)
        relay.terminate(); sim.terminate(); relay.wait(); sim.wait()
for d in dirs:
    print(os.path.basename(d), "median", f"{statistics.median(res[d]):.0f}", [round(x) for x in res[d]])
