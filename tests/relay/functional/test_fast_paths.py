"""The serving fast paths (proxy/edge/), proved both ways: on the installed (pinned) framework versions every
one is really taken, and with the switch off (``fast_paths="off"``) none is, while the relay answers the same."""

import httpx
import trio

from proxy.edge import FALLBACKS, TAKEN, current_writer, fast_paths_allowed
from proxy.edge.versions import FAST_PATHS_ENV as ENV
from tests.conftest import start_relay, start_sim

CHAT = {"model": "moonshot-v1-8k", "stream": True, "messages": [{"role": "user", "content": "hi"}],
        "sim_deterministic": True}  # fmt: skip
EVERY_FAST_PATH = set(TAKEN.__slots__)


async def _traffic(root: str) -> tuple[list[bytes], bytes]:
    """Two streamed chats on one keep-alive connection, then a 413 sent while the upload is still coming."""
    async with httpx.AsyncClient(timeout=10) as client:
        bodies = []
        for _ in range(2):
            response = await client.post(root + "/v1/chat/completions", json=CHAT)
            assert response.status_code == 200
            bodies.append(response.content)
    host, port = root.removeprefix("http://").split(":")
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {1 << 20}\r\n\r\n"
    ).encode()
    received = b""
    stream = await trio.open_tcp_stream(host, int(port))
    with trio.fail_after(10):
        async with stream:
            await stream.send_all(head + b"x" * 1000)
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(65536)
    assert received.startswith(b"HTTP/1.1 413"), received[:200]
    await _idle_connection_is_closed(host, int(port))
    return bodies, received.split(b"\r\n\r\n", 1)[0].lower()


async def _idle_connection_is_closed(host: str, port: int) -> None:
    """A keep-alive connection left idle after a response is closed by the server (``keep_alive_s``)."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(f"GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
        received = b""
        with trio.fail_after(10):
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break  # the server closed it
                received += data
    assert received.startswith(b"HTTP/1.1 200"), received[:200]


async def _run(nursery, **overrides) -> tuple[dict[str, int], dict[str, int], list[bytes], bytes]:
    sim = await start_sim(nursery, chunks=6)
    TAKEN.reset()
    FALLBACKS.clear()
    root = await start_relay(nursery, sim.url, max_body_bytes=2000, keep_alive_s=0.3, **overrides)
    bodies, head_413 = await _traffic(root)
    return TAKEN.snapshot(), dict(FALLBACKS), bodies, head_413


async def test_every_fast_path_is_taken_on_the_installed_versions(nursery, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert fast_paths_allowed("auto")
    taken, fallbacks, bodies, head_413 = await _run(nursery)
    not_taken = sorted(name for name, count in taken.items() if not count)
    assert not not_taken, f"fast paths not taken: {not_taken} (fallbacks: {fallbacks})"
    # None fell back for a reason that says a framework changed under us (the 413's large body is expected).
    assert not [reason for reason in fallbacks if reason.startswith("direct_writer")], fallbacks
    assert fallbacks.get("inline_call: connection does not watch EOF", 0) == 0, fallbacks
    assert b"\r\nconnection: close" in head_413
    assert bodies[0] == bodies[1] and bodies[0].endswith(b"data: [DONE]\n\n")


async def test_switched_off_no_fast_path_is_taken_and_the_relay_answers_the_same(nursery, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    on = await _run(nursery)
    taken, _, bodies, head_413 = await _run(nursery, fast_paths="off")
    assert taken == dict.fromkeys(EVERY_FAST_PATH, 0)
    assert bodies == on[2]
    assert b"\r\nconnection: close" in head_413  # said on the plain path too


async def test_the_environment_switches_every_fast_path_off(nursery, monkeypatch):
    monkeypatch.setenv(ENV, "off")
    assert not fast_paths_allowed("auto")
    taken, _, _, _ = await _run(nursery)
    assert taken == dict.fromkeys(EVERY_FAST_PATH, 0)


def test_a_fallback_is_counted_with_its_reason():
    """``current_writer`` returning None used to lose speed silently; now the reason is counted."""
    FALLBACKS.clear()
    assert current_writer("GET") is None  # no connection of ours in this task
    assert current_writer("HEAD") is None
    assert FALLBACKS == {"direct_writer: not our connection": 1, "direct_writer: HEAD": 1}


async def test_a_light_context_only_on_a_static_route_and_quart_answers_the_same(nursery, monkeypatch):
    """A request whose path is exactly a static route's, for a method it allows, runs under the light request
    context; any other (a path with a converter, a method the static rule does not allow) under Quart's own, and
    every answer is the one the plain path gives."""
    from quart.routing import QuartMap

    monkeypatch.delenv(ENV, raising=False)
    binds = []  # URL adapters bound to a request: Quart's context binds one and matches the path through it
    bind = QuartMap.bind_to_request

    def counting_bind(self, *args, **kwargs):
        binds.append(1)
        return bind(self, *args, **kwargs)

    monkeypatch.setattr(QuartMap, "bind_to_request", counting_bind)
    sim = await start_sim(nursery)
    calls = [("POST", "/v1/chat/completions", {**CHAT, "stream": False}), ("GET", "/v1/models", None),
             ("GET", "/healthz", None), ("PUT", "/v1/chat/completions", {}), ("GET", "/v1/no/such/thing", None),
             ("DELETE", "/v1/models", None)]  # fmt: skip
    answers = {}
    for mode in ("auto", "off"):
        root = await start_relay(nursery, sim.url, fast_paths=mode)
        TAKEN.reset()
        FALLBACKS.clear()
        binds.clear()
        async with httpx.AsyncClient(timeout=10) as client:
            answers[mode] = [(r.status_code, r.json().get("error", {}).get("type") if r.status_code >= 400 else None)
                             for r in [await client.request(m, root + p, json=b) for m, p, b in calls]]  # fmt: skip
        if mode == "auto":
            assert TAKEN.light_context == 3, (TAKEN.snapshot(), FALLBACKS)
            assert FALLBACKS["light_context: not a static route"] == 3, FALLBACKS
            assert len(binds) == 3  # only the requests under Quart's own context
        else:
            assert len(binds) == len(calls)
    assert answers["auto"] == answers["off"]
    assert answers["auto"][0] == (200, None)
