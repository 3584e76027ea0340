"""Instructions per non-streaming request (callgrind, user space) of one relay worker: robust to other jobs.
usage: cg.py OUT TREE[,TREE...] N  -- each TREE a checkout whose proxy/ runs (python -m proxy with cwd=TREE)."""
import os, re, subprocess, sys, time, glob
from pathlib import Path
import trio
sys.path.insert(0, os.getcwd())
from bench.openloop import closed_loop, request_bytes
from bench.peers import API_KEY
from bench.requests import BODY, SIM_FLAGS

OUT = Path(sys.argv[1]); TREES = sys.argv[2].split(","); N = int(sys.argv[3])
PY = os.path.abspath(".venv/bin/python")

def url_from(log, proc, timeout=120):
    t = time.time()
    while time.time() - t < timeout:
        m = re.search(rb"listening on (http://\S+)", log.read_bytes()) if log.exists() else None
        if m: return m.group(1).decode()
        if proc.poll() is not None: raise SystemExit(log.read_text()[-2000:])
        time.sleep(0.3)
    raise SystemExit("timeout")

def total(path):
    for line in open(path):
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])

async def measure(tree, k):
    d = OUT / f"{Path(tree).name}-{k}"; d.mkdir(parents=True, exist_ok=True)
    sim = subprocess.Popen([PY, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", *SIM_FLAGS], stdout=open(d/"sim.log","wb"), stderr=subprocess.STDOUT)
    try:
        sim_url = url_from(d/"sim.log", sim)
        env = {**os.environ, "MOONSHOT_API_KEY": API_KEY, "MOONRELAY_ACCESS_LOG": "stderr", "PYTHONUNBUFFERED": "1"}
        cg = d / "cg.out"
        relay = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}", PY, "-m", "proxy", "--bind", "127.0.0.1:0",
                                  "--upstream", sim_url, "--workers", "1"], cwd=tree, env=env, stdout=open(d/"relay.log","wb"), stderr=subprocess.STDOUT)
        try:
            url = url_from(d/"relay.log", relay, 300)
            host, port = url.removeprefix("http://").split(":"); port = int(port.split("/")[0])
            data = request_bytes(host, port, "/v1/chat/completions", BODY, API_KEY)
            await closed_loop(host, port, data, 4, 25)
            await closed_loop(host, port, data, 10, 10)
            subprocess.run(["callgrind_control", "-z", str(relay.pid)], capture_output=True)
            out = await closed_loop(host, port, data, 10, N // 10)
            subprocess.run(["callgrind_control", "-d", "measured", str(relay.pid)], capture_output=True)
            dumps = sorted(glob.glob(f"{cg}*measured*") or glob.glob(f"{cg}.*"), key=os.path.getmtime)
            return total(dumps[-1]) / out.ok, out.sent - out.ok
        finally:
            relay.terminate(); relay.wait()
    finally:
        sim.terminate(); sim.wait()

async def main():
    for k in range(int(os.environ.get("ROUNDS", "1"))):
        for tree in TREES:
            ins, failed = await measure(tree, k)
            print(f"{tree}: {ins:,.0f} instructions/request (failed {failed})", flush=True)
trio.run(main)
