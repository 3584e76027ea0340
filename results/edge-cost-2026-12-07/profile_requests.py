"""Profile one relay worker under a closed loop of non-streaming requests: py-spy raw stacks + CPU per request."""
import os, subprocess, sys, time
from pathlib import Path
import trio
sys.path.insert(0, os.getcwd())
from bench.openloop import closed_loop, request_bytes
from bench.peers import API_KEY, Launch, peer
from bench.procs import serve
from bench.requests import BODY, SIM_FLAGS, _hostport

OUT = Path(sys.argv[1]); SPY = len(sys.argv) > 2 and sys.argv[2] == "spy"
CONN, PER = 50, int(os.environ.get("PER", "100"))

async def main():
    OUT.mkdir(parents=True, exist_ok=True)
    async with serve("sim", Launch(argv=[sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", *SIM_FLAGS],
                                   url_pattern=rb"listening on (http://\S+)"), OUT / "sim.log") as sim:
        launch = peer("moonrelay").launch(sim.url, OUT, 1, CONN)
        async with serve("moonrelay", launch, OUT / "relay.log") as srv:
            host, port, path = _hostport(srv.url)
            data = request_bytes(host, port, path, BODY, API_KEY)
            await closed_loop(host, port, data, 4, 25)
            spy = None
            srv.tree.mark()
            t = time.perf_counter()
            if SPY:
                spy = subprocess.Popen(["/work/tools/bin/py-spy", "record", "--subprocesses", "-r", "1000", "--format", "raw",
                                        "-o", str(OUT / "spy.txt"), "--pid", str(srv.process.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                await trio.sleep(1.0)
            out = await closed_loop(host, port, data, CONN, PER)
            srv.tree.sample()
            if spy:
                spy.send_signal(2); spy.wait()
            print(f"ok {out.ok} failed {out.sent-out.ok} cpu_us/req {srv.tree.cpu_s()/out.ok*1e6:.1f} rps {out.ok/out.wall_s:.0f}")
trio.run(main)
