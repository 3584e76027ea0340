import json
import logging
from functools import partial

import pytest
import trio

from proxy.config import Settings
from proxy.edge import fast_paths_allowed, serve
from proxy.observability import LOGGER

# The tests are grouped by program (relay/unit, relay/functional, loadtest, bench, wire, project, support). Every test
# under relay/functional starts a relay and checks its behaviour over real sockets: CI runs that folder a second time
# with every serving fast path off (MOONRELAY_FAST_PATHS=off, `pytest -m functional`), so the plain hypercorn +
# quart-trio ASGI path is proved correct too. The marker follows the folder: a new functional test cannot be left out.
FUNCTIONAL = ("relay", "functional")


def pytest_configure(config):
    config.addinivalue_line("markers", "functional: a relay behaviour test, run again with the fast paths off in CI")
    config.addinivalue_line("markers", "fast_paths(why): needs a serving fast path; skipped when they are off")


def _under(path, folder: tuple[str, ...]) -> bool:
    parts = path.parts
    return any(parts[i : i + len(folder)] == folder for i in range(len(parts)))


def pytest_collection_modifyitems(config, items):
    fast = fast_paths_allowed("auto")
    for item in items:
        if _under(item.path, FUNCTIONAL):
            item.add_marker(pytest.mark.functional)
        needs = item.get_closest_marker("fast_paths")
        if needs is not None and not fast:
            item.add_marker(pytest.mark.skip(reason=f"fast paths off (MOONRELAY_FAST_PATHS=off): {needs.args[0]}"))


async def start_relay(nursery, upstream_url: str, **overrides) -> str:
    """Start the relay in-process on an ephemeral port; return its root URL."""
    settings = Settings(bind="127.0.0.1:0", upstream=upstream_url, **overrides)
    return await nursery.start(partial(serve, settings))


async def start_sim(nursery, **config):
    from loadtest.sim import SimConfig, serve_sim

    config.setdefault("ttft", 0.02)
    config.setdefault("interval", 0.005)
    config.setdefault("chunks", 5)
    return await nursery.start(partial(serve_sim, SimConfig(port=0, **config)))


def raw_chat_request(host: str, payload: bytes) -> bytes:
    """A whole ``POST /v1/chat/completions`` with a JSON ``payload``, as a raw socket client sends it."""
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode()
    return head + payload


async def open_stream_and_leave(root: str, body: dict) -> bytes:
    """Raw socket client: read until the first SSE event arrives, then close; return what it read."""
    host, port = root.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(raw_chat_request(host, json.dumps(body).encode()))
        seen = b""
        while b"data: " not in seen:
            seen += await stream.receive_some(65536)
    return seen


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


async def wait_lines(lines: list, n: int) -> list:
    """The line is written when the call returns, a moment after the client has its last byte."""
    with trio.fail_after(5):
        while len(lines) < n:  # noqa: ASYNC110 - polling a logging handler, which cannot await
            await trio.sleep(0.005)
    return lines


@pytest.fixture
def access_lines():
    handler = Lines()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def redis_server(tmp_path_factory):
    """A real redis-server of its own (tests/support/redisserver.py), stopped after the test; fails, not skips, without
    redis-server."""
    from tests.support.redisserver import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
