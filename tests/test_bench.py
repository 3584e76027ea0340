"""bench/ pieces that need no peer: log trimming, the target lists, scenario flags, figures."""

import json

import pytest
import trio

from bench.floor import drive, request_bytes, response_complete
from bench.floor_servers import serve_h11
from bench.metrics import MIB, figures
from bench.peers import DEFAULT_TARGETS, PEERS, TARGETS
from bench.run import trim_log
from bench.scenarios import SCENARIOS


def test_trim_log_keeps_head_and_tail(tmp_path):
    log = tmp_path / "moonrelay.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(10_000)))
    trim_log(log, limit=1_000, head=3, tail=2)
    assert log.read_bytes() == b"line 0\nline 1\nline 2\n[bench: 9,995 lines cut of 10,000]\nline 9998\nline 9999\n"


def test_trim_log_leaves_small_logs(tmp_path):
    log = tmp_path / "sim.log"
    log.write_bytes(b"sim listening on http://127.0.0.1:1\n")
    trim_log(log, limit=1_000)
    assert log.read_bytes() == b"sim listening on http://127.0.0.1:1\n"


def test_quiet_moonrelay_runs_only_on_request():
    assert "moonrelay-quiet" in TARGETS and "moonrelay-quiet" not in DEFAULT_TARGETS
    quiet = PEERS["moonrelay-quiet"].launch("http://127.0.0.1:1/v1", None, 2)
    loud = PEERS["moonrelay"].launch("http://127.0.0.1:1/v1", None, 2)
    assert quiet.argv == loud.argv
    assert quiet.env["MOONRELAY_ACCESS_LOG"] == "off" and quiet.env["MOONRELAY_METRICS"] == "off"
    assert "MOONRELAY_ACCESS_LOG" not in loud.env


def test_hold_scenario_flags():
    hold = SCENARIOS["hold"]
    assert hold.loadtest_flags() == ["-c", "10000", "--duration", "60", "--ramp-up", "10"]
    assert hold.scaled(0.1).streams == 1_000


def test_memory_per_stream_divides_by_the_streams_the_proxy_holds():
    summary = {"chunks": 100, "peak_concurrency": 10_000, "duration_s": 10}
    proxy = {"cpu_s": 1.0, "idle_rss_bytes": 100 * MIB, "peak_rss_bytes": 100 * MIB + 4_000 * 40 * 1024}
    held = figures(summary, proxy, {"cpu_s": 1.0}, upstream_open=4_000)
    assert held["mem_per_stream_kb"] == 40.0 and held["upstream_peak_open"] == 4_000
    # Records made before the sim was sampled fall back to the load generator's peak.
    assert figures(summary, proxy, {"cpu_s": 1.0})["mem_per_stream_kb"] == 16.0


def test_floor_request_and_response_framing():
    request = request_bytes("127.0.0.1:1")
    head, body = request.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and json.loads(body)["stream"] is True
    assert f"content-length: {len(body)}".encode() in head
    assert not response_complete(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
    assert response_complete(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


async def test_floor_client_drives_the_h11_floor_server(nursery):
    port = await nursery.start(serve_h11, 0)
    await drive(port, 50, keep_alive=True)
    await drive(port, 10, keep_alive=False)
    refusing = await nursery.start(serve_h11_refusing)
    with pytest.raises(ExceptionGroup) as failed:  # a server that refuses is an error, not a figure
        await drive(refusing, 1, keep_alive=True)
    assert failed.group_contains(RuntimeError, match="not a 200")


async def serve_h11_refusing(task_status=trio.TASK_STATUS_IGNORED) -> None:
    async def refuse(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)
            await stream.send_all(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(refuse, listeners)
