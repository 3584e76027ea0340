"""The ``--state`` Redis connection, end to end with real ``python -m proxy`` processes: a password or an ACL user is
sent on every connection and never printed; a URL the relay cannot use stops it at start-up with one line (exit 2);
a Redis that answers garbage breaks the connection, never the relay (docs/reference.md, "Shared state on Redis").
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import trio

from tests.conftest import start_sim
from tests.support import ROOT
from tests.support.children import stop_child
from tests.support.redisserver import RedisServer
from tests.support.relays import start_relay_process, write_config

PASSWORD = "s3cret-Pw-7f1e"
KEY = "mr-state-redis-0123"
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def refused_at_start(*args: str) -> str:
    """``python -m proxy ARGS`` must stop before serving: exit 2, one line on stderr; that line."""
    done = subprocess.run([sys.executable, "-m", "proxy", "--bind", "127.0.0.1:0", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("moonrelay: "), done.stderr[-2000:]
    assert PASSWORD not in done.stdout + done.stderr
    return lines[0]


@pytest.fixture
def protected_redis(tmp_path_factory, request):
    """A redis-server that needs a password (``requirepass``) or an ACL user (the default user off); the URL's
    credentials part."""
    if request.param == "password":
        config, auth, userinfo = ["--requirepass", PASSWORD], [PASSWORD], f":{PASSWORD}"
    else:
        config = ["--user", "default", "off", "--user", "relay", "on", f">{PASSWORD}", "~*", "&*", "+@all"]
        auth, userinfo = ["relay", PASSWORD], f"relay:{PASSWORD}"
    server = RedisServer(tmp_path_factory.mktemp("redis"), config=config, auth=auth)
    server.start()
    try:
        yield server, userinfo
    finally:
        server.stop()


@pytest.mark.parametrize("protected_redis", ["password", "acl-user"], indirect=True)
async def test_a_protected_redis_counts_the_slots_and_the_password_is_never_shown(protected_redis, nursery, tmp_path):
    server, userinfo = protected_redis
    sim = await start_sim(nursery, ttft=5.0)
    log = tmp_path / "relay.err"
    url = f"redis://{userinfo}@127.0.0.1:{server.port}/0"
    proc, root = start_relay_process(["--config", write_config(tmp_path, sim.url, 1), "--state", url], log)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("POST", root + "/v1/chat/completions", json=CHAT) as held:
                assert held.status_code == 200
                assert server.command("ZCARD", "moonrelay:slots:upstream:sim") == b":1\r\n"  # counted in Redis
            shown = [(await client.get(root + path)).text for path in ("/readyz", "/metrics")]
    finally:
        stop_child(proc)
    assert PASSWORD not in log.read_text()
    assert all(PASSWORD not in page for page in shown)


@pytest.mark.parametrize("protected_redis", ["password", "acl-user"], indirect=True)
def test_credentials_redis_refuses_stop_the_relay_at_start(protected_redis) -> None:
    server, userinfo = protected_redis
    user = userinfo.partition(":")[0]
    wrong = refused_at_start("--state", f"redis://{user}:not-{PASSWORD}@127.0.0.1:{server.port}/0")
    assert "refused" in wrong and f"{user}:***@" in wrong, wrong
    missing = refused_at_start("--state", f"redis://127.0.0.1:{server.port}/0")
    assert "password" in missing, missing


def test_a_database_redis_does_not_have_stops_the_relay_at_start(redis_server) -> None:
    line = refused_at_start("--state", f"redis://127.0.0.1:{redis_server.port}/9999")
    assert "9999" in line and "out of range" in line, line


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"redis://:{PASSWORD}@127.0.0.1:6379/abc", "database"),
        (f"redis://:{PASSWORD}@127.0.0.1:6379/-1", "database"),
        (f"rediss://:{PASSWORD}@127.0.0.1:6379/0", "rediss"),
        (f"http://:{PASSWORD}@127.0.0.1:6379/0", "redis://"),
        (f"redis://:{PASSWORD}@127.0.0.1:6379/0?ssl_cert_reqs=none", "ssl_cert_reqs"),
    ],
)
def test_a_state_url_the_relay_cannot_use_stops_it_at_start(url, says) -> None:
    line = refused_at_start("--state", url)
    assert says in line, line


class GarbageRedis:
    """A server that answers any command with ``reply``, then ``filler`` until the client closes the connection
    (at most ``most`` bytes): a broken or hostile Redis. ``closed``: bytes of filler sent before the client closed."""

    def __init__(self, reply: bytes, filler: bytes = b"", most: int = 32 * 1024 * 1024) -> None:
        self.reply, self.filler, self.most = reply, filler, most
        self.port = 0
        self.closed: list[int] = []

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            sent = 0
            try:
                if not await stream.receive_some(65536):
                    return
                await stream.send_all(self.reply)
                while self.filler and sent < self.most:
                    await stream.send_all(self.filler)
                    sent += len(self.filler)
                while await stream.receive_some(65536):  # until the client closes
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            self.closed.append(sent)


@pytest.mark.parametrize(
    "garbage",
    [
        GarbageRedis(b"*1\r\n" * 5000 + b":1\r\n"),  # nested 5,000 deep
        GarbageRedis(b"$99999999999\r\n", filler=b"x" * 65536),  # a 100 GB string, then bytes and bytes
        GarbageRedis(b"*99999999999\r\n", filler=b":1\r\n" * 16384),  # an array as long
    ],
    ids=["nested", "huge-bulk", "huge-array"],
)
async def test_a_redis_that_answers_garbage_breaks_the_connection_not_the_relay(garbage, nursery, tmp_path) -> None:
    sim = await start_sim(nursery)
    await nursery.start(garbage.serve)
    log = tmp_path / "relay.err"
    args = ["--upstream", sim.url, "--state", f"redis://127.0.0.1:{garbage.port}/0", "--api-keys", KEY,
            "--key-concurrent", "1", "--state-probe-s", "0.1"]  # fmt: skip
    proc, root = await trio.to_thread.run_sync(start_relay_process, args, log)  # the garbage server answers meanwhile
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(3):  # counted in the worker: Redis is as good as down, and no worse
                began = trio.current_time()
                answer = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": False}, headers=AUTH)
                assert answer.status_code == 200
                assert trio.current_time() - began < 2.0  # not held up by a worker busy with the garbage
        assert proc.poll() is None
        assert garbage.closed and max(garbage.closed) < 4 * 1024 * 1024  # the relay hung up, it did not buffer
    finally:
        stop_child(proc)
    text = log.read_text()
    assert "Traceback" not in text and "unavailable" in text, text[-3000:]
