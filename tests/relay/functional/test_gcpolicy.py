"""The relay's GC policy (proxy/gcpolicy.py): start-up heap frozen, thresholds raised, and ``--gc-tuning off``."""

import gc
import weakref

import pytest
import trio
import trio.testing

from proxy import gcpolicy
from proxy.__main__ import build_parser
from proxy.config import load
from proxy.edge import _server as server
from proxy.edge import _tcpserver as keepalive
from proxy.stream import Heartbeats
from tests.conftest import start_relay, start_sim


@pytest.fixture
def restore_gc():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_the_heap_and_raises_thresholds():
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    assert gcpolicy.tune_gc() == (700, 10, 10)
    assert gc.get_freeze_count() > 1000  # the imported modules and everything alive now
    assert gc.get_threshold() == (gcpolicy.YOUNG, gcpolicy.MIDDLE, gcpolicy.OLD)
    young, _, old = gc.get_threshold()
    assert young > 700 and old > 10  # fewer collections than CPython's (700, 10, 10)


@pytest.mark.parametrize(("argv", "tuned"), [([], True), (["--gc-tuning", "off"], False)])
def test_run_tunes_gc_unless_off(monkeypatch, argv, tuned):
    calls = []
    monkeypatch.setattr(server, "tune_gc", lambda: calls.append(1))
    monkeypatch.setattr(server.trio, "run", lambda *a, **k: None)  # serve nothing
    flags = vars(build_parser().parse_args(["--bind", "127.0.0.1:0", *argv]))
    flags.pop("config", None)
    settings = load(flags, {})
    assert server.run(settings) == 0
    assert bool(calls) is tuned


def test_heartbeats_keep_no_ended_body_alive():
    """An ended stream's body (response, headers, decoder) is freed at once, not when its heap entry comes up."""
    class Body:
        pass

    live: set = set()
    beats = Heartbeats(15.0, live)
    body = Body()
    live.add(body)
    gone = weakref.ref(body)

    async def watch(b: Body) -> None:
        beats.watch(b)

    trio.run(watch, body)
    live.discard(body)
    gc.disable()  # refcounting alone must free it
    try:
        del body
        assert gone() is None
    finally:
        gc.enable()


@pytest.mark.fast_paths("the cycle is broken by our connection class")
async def test_closed_connection_is_freed_without_the_gc(nursery, monkeypatch):
    """A finished client connection's objects (hypercorn's server and protocol, h11 state, socket stream) go
    by refcounting: no cycle is left for the collector (proxy.edge._tcpserver.TCPServer.run)."""
    servers: list[weakref.ref] = []
    init = keepalive.TCPServer.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        servers.append(weakref.ref(self))

    monkeypatch.setattr(keepalive.TCPServer, "__init__", recording_init)
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    host, port = root.removeprefix("http://").split(":")
    gc.disable()
    try:
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            seen = b""
            with trio.fail_after(5):
                while data := await stream.receive_some(65536):
                    seen += data
        assert seen.startswith(b"HTTP/1.1 200")
        await trio.testing.wait_all_tasks_blocked()  # the connection's task has ended
        assert len(servers) == 1
        assert servers[0]() is None
    finally:
        gc.enable()


async def test_memory_is_reclaimed_once_after_each_burst(autojump_clock):
    """A full collection and a trim once the requests in flight have stayed at a quarter of a burst's peak or fewer
    for a while; none for a load that never was a burst, none while it has not stayed low, none again until the next
    burst."""
    load = [0]
    reclaim = gcpolicy.Reclaim(lambda: load[0])
    async with trio.open_nursery() as nursery:
        await nursery.start(reclaim.run)

        async def hold(n: int, seconds: float = reclaim.quiet_s + 3 * reclaim.check_s) -> None:
            load[0] = n
            await trio.sleep(seconds)

        for n in (10, 200, 10, 0):  # never a burst
            await hold(n)
        assert reclaim.runs == 0
        await hold(gcpolicy.BURST * 4)
        await hold(gcpolicy.BURST * 2)  # falling, not yet fallen
        for _ in range(3):  # fallen, but not for long enough
            await hold(gcpolicy.BURST // 2, reclaim.quiet_s / 2)
            await hold(gcpolicy.BURST * 2, 3 * reclaim.check_s)
        assert reclaim.runs == 0
        await hold(gcpolicy.BURST // 2)  # under a quarter of the peak, long enough
        assert reclaim.runs == 1
        await hold(0)
        await hold(gcpolicy.BURST - 1)
        await hold(0)
        assert reclaim.runs == 1
        await hold(gcpolicy.BURST)
        await hold(10)
        assert reclaim.runs == 2
        nursery.cancel_scope.cancel()
