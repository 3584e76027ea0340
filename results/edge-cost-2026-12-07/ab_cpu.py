"""A/B CPU per non-streaming request: targets alternating, each round a fresh sim + target, closed loop 50 x PER."""
import os, sys, time, statistics
from pathlib import Path
import trio
sys.path.insert(0, os.getcwd())
from bench.openloop import closed_loop, request_bytes
from bench.peers import API_KEY, Launch, peer
from bench.procs import serve
from bench.requests import BODY, SIM_FLAGS, _hostport

OUT = Path(sys.argv[1]); TARGETS = sys.argv[2].split(","); ROUNDS = int(sys.argv[3])
CONN, PER = 50, int(os.environ.get("PER", "100"))

async def one(target, k):
    d = OUT / f"{target}-{k}"
    async with serve("sim", Launch(argv=[sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", *SIM_FLAGS],
                                   url_pattern=rb"listening on (http://\S+)"), d / "sim.log") as sim:
        p = peer(target); p.ensure()
        launch = p.launch(sim.url, d, 1, CONN)
        async with serve(target, launch, d / "relay.log") as srv:
            host, port, path = _hostport(srv.url)
            data = request_bytes(host, port, path, BODY, API_KEY)
            await closed_loop(host, port, data, 4, 25)
            srv.tree.mark()
            out = await closed_loop(host, port, data, CONN, PER)
            srv.tree.sample()
            return srv.tree.cpu_s() / out.ok * 1e6, out.sent - out.ok

async def main():
    res = {t: [] for t in TARGETS}
    for k in range(ROUNDS):
        for t in (TARGETS if k % 2 == 0 else TARGETS[::-1]):
            us, failed = await one(t, k)
            res[t].append(us)
            print(f"round {k+1} {t}: {us:.0f} us/request failed {failed}", flush=True)
    for t, v in res.items():
        print(f"{t}: median {statistics.median(v):.0f} us/request  all {[round(x) for x in v]}")
    print("load", os.getloadavg())
trio.run(main)
