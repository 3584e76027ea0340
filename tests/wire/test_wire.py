"""The shared wire toolkit (wire/) with bytes and sockets: chunk framing, the chunked decoder, listening
sockets and addresses, the fd limit, stop signals, forked workers on one port. Both the relay and the load
generator depend on these."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import h11
import pytest
import trio
import trio.testing

import wire
from wire import ChunkedDecoder, ChunkedError, chunk_frame, exit_status, listen_socket, split_bind, url_host


def _h11_chunk(data: bytes) -> bytes:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.next_event()
    conn.send(h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
    return conn.send(h11.Data(data=data))


@pytest.mark.parametrize("data", [b"x", b"data: {}\n\n", b"\r\n" * 300, bytes(range(256)) * 70])
def test_chunk_frame_is_h11s_bytes(data):
    assert chunk_frame(data) == _h11_chunk(data)


def test_the_relays_inline_framing_is_chunk_frame():
    """proxy/edge/_direct.py frames inline (no call per chunk): the expression must stay wire's."""
    source = (Path(wire.__file__).parents[1] / "proxy" / "edge" / "_direct.py").read_text()
    assert source.count('b"%x\\r\\n%b\\r\\n" % (len(data), data)') == 2


def test_decoder_reads_what_chunk_frame_writes_split_anywhere():
    pieces = [b"a", b"data: 1\n\n", b"z" * 5000]
    body = b"".join(chunk_frame(p) for p in pieces) + b"0\r\nx-t: 1\r\n\r\n"
    for step in (1, 2, 3, 7, 4096, len(body)):
        dec = ChunkedDecoder()
        got = b"".join(dec.feed(body[i : i + step]) for i in range(0, len(body), step))
        assert got == b"".join(pieces) and dec.done and dec.leftover == b""


def test_bytes_after_the_end_are_leftover_never_body():
    dec = ChunkedDecoder()
    assert dec.feed(b"2\r\nok\r\n0\r\n\r\nHTTP/1.1") == b"ok"
    assert dec.done and dec.leftover == b"HTTP/1.1"
    assert dec.feed(b" 200") == b"" and dec.leftover == b"HTTP/1.1 200"


@pytest.mark.parametrize(
    "line, n", [(b"1f", 31), (b"1F", 31), (b"a;ext=1", 10), (b"a \t; e", 10), (b"0" * 15 + b"a", 10)]
)
def test_chunk_size_accepts_hex_and_extensions(line, n):
    assert ChunkedDecoder().feed(line + b"\r\n" + b"x" * n + b"\r\n") == b"x" * n


@pytest.mark.parametrize(
    "wire_bytes",
    [
        b"0x1f\r\n",
        b"1_0\r\n",
        b" 3\r\n",
        b"+3\r\n",
        b"-1\r\n",
        b"\r\n",
        b"1f \r\n",
        b"0" * 16 + b"3\r\n",
        b"3\r\nabcXY",
        b"1" * 5000,
    ],
)
def test_invalid_coding_raises(wire_bytes):
    with pytest.raises(ChunkedError):
        ChunkedDecoder().feed(wire_bytes)


@pytest.mark.parametrize(
    "bind, expected",
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:0", ("::1", 0)), (":9", ("127.0.0.1", 9)), ("9", ("127.0.0.1", 9))],
)
def test_split_bind(bind, expected):
    assert split_bind(bind) == expected


@pytest.mark.parametrize("bind", ["host", "host:", "host:x1"])
def test_split_bind_refuses_a_missing_port(bind):
    with pytest.raises(ValueError):
        split_bind(bind)


@pytest.mark.parametrize(
    "bind, says",
    [("localhost", "expected HOST:PORT"), ("127.0.0.1:", "expected HOST:PORT"), ("127.0.0.1:99999", "0-65535")],
)
def test_split_bind_says_what_to_fix(bind, says):
    with pytest.raises(ValueError, match=says) as exc:
        split_bind(bind)
    assert "\n" not in str(exc.value) and "127.0.0.1:8117" in str(exc.value)  # an example of the right form


def test_listen_socket_errors_are_one_line_that_says_what_to_fix():
    taken = listen_socket("127.0.0.1", 0, 16)
    try:
        port = taken.getsockname()[1]
        cases = [(("127.0.0.1", port), "in use"), (("no-such-host.invalid", 8117), "unknown host"),
                 (("127.0.0.1", 70000), "0-65535")]
        for (host, number), says in cases:
            with pytest.raises(wire.BindError, match=says) as exc:
                listen_socket(host, number, 16)
            assert isinstance(exc.value, OSError) and "\n" not in str(exc.value), exc.value
            assert str(exc.value).startswith(f"cannot listen on {host}:{number}: "), exc.value
    finally:
        taken.close()


def test_url_host_brackets_ipv6():
    assert (url_host("::1"), url_host("127.0.0.1")) == ("[::1]", "127.0.0.1")


def test_listen_socket_listens_and_shares_its_port():
    first = listen_socket("127.0.0.1", 0, 16, reuse_port=True)
    port = first.getsockname()[1]
    second = listen_socket("127.0.0.1", port, 16, reuse_port=True)
    try:
        assert not first.getblocking() and first.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        assert first.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        for s in (first, second):
            s.close()


def test_listen_socket_without_reuse_port_refuses_a_taken_port_and_closes_its_socket():
    taken = listen_socket("127.0.0.1", 0, 16)
    try:
        with pytest.raises(OSError):
            listen_socket("127.0.0.1", taken.getsockname()[1], 16)
    finally:
        taken.close()


def test_raise_nofile_limit_returns_the_limit_in_force():
    assert wire.raise_nofile_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)


async def test_wait_for_stop_signal_returns_the_signal():
    async with trio.open_nursery() as nursery:
        got = []

        async def waiter() -> None:
            got.append(await wire.wait_for_stop_signal())

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        os.kill(os.getpid(), signal.SIGTERM)
    assert got == [signal.SIGTERM]


# A supervisor of two workers in a process of its own (forking pytest, threads and all, is not safe). Each
# child prints its pid; a serving child answers every connection with its index. argv: mode, grace_s, port.
_SUPERVISOR = r"""
import os, signal, sys, time
import trio
import wire

def child(sock, index, ready, mode):
    # One write (the children share the pipe): index, pid, and whether its signals are its own (no handler or
    # wakeup fd of the parent's).
    own = all(signal.getsignal(s) is signal.SIG_DFL for s in wire.STOP_SIGNALS) and signal.set_wakeup_fd(-1) == -1
    os.write(1, b"child %d %d %s\n" % (index, os.getpid(), b"own-signals" if own else b"parent-signals"))
    if mode == "fail" and index == 1:
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ready("stubborn")
        time.sleep(60)
    trio.run(serve, sock, index, ready)

async def serve(sock, index, ready):
    async def answer(stream):
        async with stream:
            await stream.send_all(b"%d" % index)

    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    with trio.open_signal_receiver(*wire.STOP_SIGNALS, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, answer, [listener])
            ready("http://127.0.0.1:%d" % sock.getsockname()[1])
            async for signum in signals:
                if signum == signal.SIGHUP:  # forwarded by the supervisor: a reload, not a stop
                    os.write(1, b"hup %d\n" % index)
                    continue
                break
            nursery.cancel_scope.cancel()

try:
    status = wire.run_workers(
        2, child, (sys.argv[1],), host="127.0.0.1", port=int(sys.argv[3]), backlog=16, grace_s=float(sys.argv[2]),
        on_ready=lambda url: print("ready", url, flush=True),
        on_exit=lambda index, status: print("exit", index, status, flush=True),
        forwarded=(signal.SIGHUP,),
    )
except wire.BindError as exc:
    print("bind-error", exc, flush=True)
    sys.exit(2)
print("status", status, flush=True)
sys.exit(status)
"""


class Supervisor:
    """The supervisor script as a process: its stdout read line by line."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc, self.lines, self._buf = proc, [], b""

    async def line(self, prefix: str) -> list[str]:
        """The words of the next line that starts with ``prefix`` (AssertionError if stdout ends first)."""
        while True:
            while b"\n" in self._buf:
                raw, self._buf = self._buf.split(b"\n", 1)
                self.lines.append(raw.decode())
                if self.lines[-1].startswith(prefix):
                    return self.lines[-1].split()
            data = await self.proc.stdout.receive_some(4096)
            assert data, f"no {prefix!r} line in {self.lines}"
            self._buf += data

    async def rest(self) -> list[str]:
        """Every line until stdout ends."""
        while data := await self.proc.stdout.receive_some(4096):
            self._buf += data
        self.lines += self._buf.decode().splitlines()
        self._buf = b""
        return self.lines

    def child_pids(self) -> list[int]:
        """The children's pids by worker index (their start lines may come in any order)."""
        found = dict(line.split()[1:3] for line in self.lines if line.startswith("child "))
        return [int(found[index]) for index in sorted(found, key=int)]


async def _supervisor(nursery, mode: str, grace_s: float, port: int = 0) -> Supervisor:
    argv = [sys.executable, "-c", _SUPERVISOR, mode, str(grace_s), str(port)]
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, cwd=Path(wire.__file__).parents[1])

    async def reap() -> None:  # at the test's end: stopped as a user would, so that it stops its children
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                if proc.returncode is None:
                    proc.terminate()
                    with trio.move_on_after(10):
                        await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                await proc.stdout.aclose()

    nursery.start_soon(reap)
    return Supervisor(proc)


def _gone(pid: int) -> bool:
    """No such process, or only its exit status waits for a reaper (an orphan's may be a subreaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def _answer(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        return await stream.receive_some(16)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_two_workers_serve_one_port_and_a_stop_signal_stops_both_within_the_grace(nursery, signum):
    sup = await _supervisor(nursery, "serve", grace_s=5.0)
    with trio.fail_after(20):
        port = int((await sup.line("ready "))[1].rsplit(":", 1)[1])
        seen = set()
        while seen != {b"0", b"1"}:  # a fresh connection each: the kernel spreads connections by hash
            seen.add(await _answer(port))
            assert len(seen) <= 2
    t0 = trio.current_time()
    sup.proc.send_signal(signum)
    with trio.fail_after(5):
        assert await sup.proc.wait() == 0
    assert trio.current_time() - t0 < 4.0  # the children stopped on the forwarded signal, not the kill
    lines = await sup.rest()
    assert lines[-1] == "status 0" and not [x for x in lines if x.startswith("exit ")]
    pids = sup.child_pids()
    assert len(pids) == 2 and all(_gone(pid) for pid in pids), lines
    assert all(x.endswith(" own-signals") for x in lines if x.startswith("child "))
    with pytest.raises(OSError):
        await _answer(port)


async def test_the_supervisor_forwards_sighup_to_every_worker_and_keeps_serving(nursery):
    sup = await _supervisor(nursery, "serve", grace_s=5.0)
    with trio.fail_after(20):
        port = int((await sup.line("ready "))[1].rsplit(":", 1)[1])
        sup.proc.send_signal(signal.SIGHUP)
        got = {(await sup.line("hup "))[1], (await sup.line("hup "))[1]}
    assert got == {"0", "1"} and sup.proc.returncode is None
    assert await _answer(port) in (b"0", b"1")
    sup.proc.send_signal(signal.SIGTERM)
    with trio.fail_after(5):
        assert await sup.proc.wait() == 0


@pytest.mark.parametrize("reuse_port", [True, False])
async def test_workers_never_join_a_port_another_program_listens_on(nursery, reuse_port):
    """SO_REUSEPORT lets any socket of the same user join a listening group: a second relay's workers would take
    half of the first one's connections. The supervisor fails before it forks, and the first keeps the port."""
    other = listen_socket("127.0.0.1", 0, 16, reuse_port=reuse_port)  # another relay's worker, or any program
    try:
        port = other.getsockname()[1]
        sup = await _supervisor(nursery, "serve", grace_s=5.0, port=port)
        with trio.fail_after(20):
            assert await sup.proc.wait() == 2
        lines = await sup.rest()
        assert len(lines) == 1 and lines[0].startswith(f"bind-error cannot listen on 127.0.0.1:{port}: "), lines
        assert "in use" in lines[0]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            conn, _ = other.accept()  # the connection went to the one listener there
            conn.close()
    finally:
        other.close()


async def test_children_that_ignore_the_stop_signal_are_killed_after_the_grace(nursery):
    sup = await _supervisor(nursery, "stubborn", grace_s=0.5)
    with trio.fail_after(20):
        await sup.line("ready ")
    t0 = trio.current_time()
    sup.proc.send_signal(signal.SIGTERM)
    with trio.fail_after(5):
        assert await sup.proc.wait() == 128 + signal.SIGKILL
    assert trio.current_time() - t0 >= 0.5
    assert (await sup.rest())[-1] == "status 137"
    assert all(_gone(pid) for pid in sup.child_pids())


async def test_a_child_that_fails_to_start_fails_the_call_with_its_status(nursery):
    sup = await _supervisor(nursery, "fail", grace_s=5.0)
    with trio.fail_after(20):
        assert await sup.proc.wait() == 3
    lines = await sup.rest()
    own = [x for x in lines if not x.startswith("child ")]  # the children's start lines may come in any order
    assert own[-2:] == ["exit 1 3", "status 3"] and not [x for x in lines if x.startswith("ready")]
    pids = sup.child_pids()
    # Worker 0 was stopped, not left serving (under load it may be stopped before it printed its line).
    assert 1 <= len(pids) <= 2 and all(_gone(pid) for pid in pids)


async def test_a_worker_that_dies_while_serving_stops_the_other_with_its_status(nursery):
    sup = await _supervisor(nursery, "serve", grace_s=5.0)
    with trio.fail_after(20):
        await sup.line("ready ")
    pids = sup.child_pids()
    os.kill(pids[1], signal.SIGKILL)
    with trio.fail_after(5):
        assert await sup.proc.wait() == 137
    assert (await sup.rest())[-2:] == ["exit 1 137", "status 137"]
    assert all(_gone(pid) for pid in pids)


async def test_workers_stop_when_the_supervisor_is_killed(nursery):
    sup = await _supervisor(nursery, "serve", grace_s=5.0)
    with trio.fail_after(20):
        port = int((await sup.line("ready "))[1].rsplit(":", 1)[1])
    sup.proc.kill()  # no forwarding: the kernel's parent-death signal
    with trio.fail_after(5):
        # noqa below: no event tells this test that an orphan exited
        while not all(_gone(pid) for pid in sup.child_pids()):  # noqa: ASYNC110
            await trio.sleep(0.05)
    with pytest.raises(OSError):
        await _answer(port)


def test_exit_status_writes_a_signal_as_a_shell_does():
    assert (exit_status(0), exit_status(3), exit_status(-signal.SIGKILL)) == (0, 3, 137)


def test_wire_imports_neither_side_nor_a_framework():
    """Neutral ground: the relay's code, the load generator's and framework internals stay out of wire/."""
    import ast

    found = []
    for path in Path(wire.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            found += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] in {"proxy", "loadtest", "hypercorn", "quart", "quart_trio", "h11", "httpx"}
            ]
    assert found == []
