"""Fallbacks (issue 15, item 1): an upstream's ``fallbacks`` serve a request its own attempts failed before the
first byte (connect error, 429, 5xx, first-byte timeout), never one that already sent a byte. The config check first,
then the relay against simulated upstreams whose faults are set per key (``key_faults``): the primary's key fails,
the fallback (no key) answers."""

import json
import socket

import httpx
import pytest
import trio

from proxy.config import Settings
from proxy.routing import ConfigError, Upstream, Upstreams
from tests.conftest import start_relay, start_sim, wait_lines
from tests.relay.functional.test_metrics import samples, total
from tests.support import ROOT

CHAT = {"messages": [{"role": "user", "content": "Tell me about the moon"}]}
PRIMARY_KEY = "sk-primary"


def table(name: str, url: str = "", **extra) -> dict:
    return {"name": name, "base_url": url or f"http://{name}.test/v1", **extra}


# -- the config ---------------------------------------------------------------------------------------


def test_fallbacks_are_read_in_order():
    configs = Settings(upstreams=[table("a", default=True, fallbacks=["c", "b"]), table("b"), table("c")]).routes
    assert [c.fallbacks for c in configs] == [("c", "b"), (), ()]
    assert [c.retry_on_timeout for c in configs] == [False] * 3  # a timeout is not sent again unless asked


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ([table("a", fallbacks=["nope"]), table("b")], "'fallbacks' names no upstream: nope"),
        ([table("a", fallbacks=["a", "b"]), table("b")], "'fallbacks' lists the upstream itself"),
        ([table("a", fallbacks=["b", "b"]), table("b")], "'fallbacks' lists an upstream twice"),
        ([table("a", fallbacks="b"), table("b")], "'fallbacks' must be a list of upstream names"),
        ([table("a", fallbacks=[1]), table("b")], "'fallbacks' must be a list of upstream names"),
        ([table("a", retry_on_timeout="yes"), table("b")], "'retry_on_timeout' must be true or false"),
    ],
)
def test_bad_fallbacks_are_refused(tables, message):
    with pytest.raises(ConfigError, match=message):
        _ = Settings(upstreams=tables).routes


# -- against simulated upstreams ----------------------------------------------------------------------


def refused_url() -> str:
    """A base URL whose port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def relay_with_fallback(nursery, monkeypatch, primary_url: str, backup_sim, **primary_extra) -> str:
    monkeypatch.setenv("PRIMARY_KEY", PRIMARY_KEY)
    tables = [
        table("primary", primary_url, key_env="PRIMARY_KEY", default=True, fallbacks=["backup"], **primary_extra),
        table("backup", backup_sim.url),
    ]
    return await start_relay(nursery, "http://flat-upstream.invalid/v1", upstreams=tables, retries=0)


async def served_by_backup(client: httpx.AsyncClient, root: str, lines: list, reason: str, *, stream: bool) -> None:
    """One request that the backup answers, and what says so: header, access log, metrics."""
    with trio.fail_after(5):
        resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": stream})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-moonrelay-upstream"] == "backup"
    if stream:
        assert resp.text.endswith("data: [DONE]\n\n")
    else:
        assert resp.json()["object"] == "chat.completion"
    (line,) = await wait_lines(lines, 1)
    assert (line["upstream"], line["status"], line["completed"]) == ("backup", 200, True)
    found = samples((await client.get(root + "/metrics")).text)
    assert total(found, "moonrelay_fallbacks_total", **{"from": "primary", "to": "backup", "reason": reason}) == 1
    assert total(found, "moonrelay_requests_total", upstream="backup", status="200") == 1
    assert total(found, "moonrelay_requests_total", upstream="primary") == 0


async def test_a_refused_connection_falls_back(nursery, monkeypatch, access_lines):
    backup = await start_sim(nursery)
    root = await relay_with_fallback(nursery, monkeypatch, refused_url(), backup)
    async with httpx.AsyncClient(timeout=10) as client:
        await served_by_backup(client, root, access_lines, "connect_error", stream=True)
    assert backup.stats.snapshot()["started"] == 1


@pytest.mark.parametrize(("status", "stream"), [(502, False), (503, True), (429, True)])
async def test_an_answer_that_says_not_processed_falls_back(nursery, monkeypatch, access_lines, status, stream):
    primary = await start_sim(nursery, key_faults={PRIMARY_KEY: f"status:{status}"})
    backup = await start_sim(nursery)
    root = await relay_with_fallback(nursery, monkeypatch, primary.url, backup)
    async with httpx.AsyncClient(timeout=10) as client:
        await served_by_backup(client, root, access_lines, f"http_{status}", stream=stream)
    assert (primary.stats.snapshot()["started"], backup.stats.snapshot()["started"]) == (1, 1)


@pytest.mark.parametrize("status", [500, 504])
async def test_an_answer_that_may_follow_processing_is_relayed_not_sent_again(nursery, monkeypatch, status):
    primary = await start_sim(nursery, key_faults={PRIMARY_KEY: f"status:{status}"})
    backup = await start_sim(nursery)
    root = await relay_with_fallback(nursery, monkeypatch, primary.url, backup)
    async with httpx.AsyncClient(timeout=10) as client:
        with trio.fail_after(5):
            resp = await client.post(root + "/v1/chat/completions", json=CHAT)
        found = samples((await client.get(root + "/metrics")).text)
    assert resp.status_code == status and resp.headers["x-moonrelay-upstream"] == "primary"
    assert (primary.stats.snapshot()["started"], backup.stats.snapshot()["started"]) == (1, 0)
    assert total(found, "moonrelay_fallbacks_total") == 0


async def test_a_first_byte_timeout_is_answered_504_not_sent_again(nursery, monkeypatch, access_lines):
    primary = await start_sim(nursery, key_faults={PRIMARY_KEY: "stall"})
    backup = await start_sim(nursery)
    root = await relay_with_fallback(nursery, monkeypatch, primary.url, backup, first_byte_timeout_s=0.3)
    async with httpx.AsyncClient(timeout=10) as client:
        with trio.fail_after(5):
            resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
        found = samples((await client.get(root + "/metrics")).text)
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "upstream_timeout"
    (line,) = await wait_lines(access_lines, 1)
    assert (line["upstream"], line["status"]) == ("primary", 504)
    assert (primary.stats.snapshot()["started"], backup.stats.snapshot()["started"]) == (1, 0)
    assert total(found, "moonrelay_fallbacks_total") == 0


async def test_a_first_byte_timeout_falls_back_where_the_upstream_opts_in(nursery, monkeypatch, access_lines):
    primary = await start_sim(nursery, key_faults={PRIMARY_KEY: "stall"})
    backup = await start_sim(nursery)
    root = await relay_with_fallback(nursery, monkeypatch, primary.url, backup, first_byte_timeout_s=0.3,
                                     retry_on_timeout=True)  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        await served_by_backup(client, root, access_lines, "first_byte_timeout", stream=True)
    assert (primary.stats.snapshot()["started"], backup.stats.snapshot()["started"]) == (1, 1)


async def test_nothing_falls_back_after_the_first_byte(nursery, monkeypatch, access_lines):
    primary = await start_sim(nursery, key_faults={PRIMARY_KEY: "drop:2"})
    backup = await start_sim(nursery)
    root = await relay_with_fallback(nursery, monkeypatch, primary.url, backup)
    async with httpx.AsyncClient(timeout=10) as client:
        with trio.fail_after(5):
            resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
        found = samples((await client.get(root + "/metrics")).text)
    assert resp.status_code == 200 and resp.headers["x-moonrelay-upstream"] == "primary"
    events = [e.removeprefix("data: ") for e in resp.text.split("\n\n") if e]
    assert json.loads(events[0])["object"] == "chat.completion.chunk"
    assert json.loads(events[-1])["error"]["type"] == "upstream_error"  # the in-band error, as without fallbacks
    (line,) = await wait_lines(access_lines, 1)
    assert line["upstream"] == "primary"
    assert backup.stats.snapshot()["started"] == 0
    assert total(found, "moonrelay_fallbacks_total") == 0


async def test_an_upstream_without_fallbacks_relays_its_failure(nursery, monkeypatch):
    monkeypatch.setenv("PRIMARY_KEY", PRIMARY_KEY)
    primary = await start_sim(nursery, key_faults={PRIMARY_KEY: "status:500"})
    other = await start_sim(nursery)
    tables = [table("primary", primary.url, key_env="PRIMARY_KEY", default=True), table("other", other.url)]
    root = await start_relay(nursery, "http://flat-upstream.invalid/v1", upstreams=tables, retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/chat/completions", json=CHAT)
    assert resp.status_code == 500 and resp.headers["x-moonrelay-upstream"] == "primary"
    assert other.stats.snapshot()["started"] == 0


# -- the choice of the next fallback (no sockets) -----------------------------------------------------


async def test_a_full_fallback_is_skipped_and_the_slot_moves():
    from proxy.relay import Relay, Streams
    from proxy.state import RequestState

    settings = Settings(
        upstreams=[table("a", default=True, fallbacks=["b", "c"]), table("b", max_concurrent=1), table("c")]
    )
    upstreams = Upstreams(settings, [Upstream(settings, httpx.MockTransport(lambda r: None), config=c)
                                     for c in settings.routes])  # fmt: skip
    a, b, c = upstreams.all
    counted = []
    relay = Relay(settings, upstreams, Streams(), count_fallback=lambda *names: counted.append(names))
    state = RequestState()
    assert await b.take()  # b is full
    candidates = await relay.choose(state, "any-model")
    assert (state.upstream_slot, a.active) == (a, 1)  # the request holds a's slot
    assert await relay.move(state, candidates, a, "http_500") is c
    assert (state.upstream, state.upstream_slot, a.active, b.active, c.active) == ("c", c, 0, 1, 1)
    assert counted == [("a", "c", "http_500")]
    assert await relay.move(state, candidates, c, "http_500") is None
    assert (state.upstream_slot, c.active) == (c, 1)


def test_the_example_in_the_reference_loads(tmp_path):

    from proxy.config import load

    text = (ROOT / "docs" / "reference.md").read_text()
    example = text.split("**Fallbacks.**", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "fallbacks.toml"
    path.write_text(example)
    configs = load({}, {}, str(path)).routes
    assert [(c.name, c.fallbacks) for c in configs] == [
        ("moonshot", ("moonshot-backup", "moonshot-proxy")),
        ("moonshot-backup", ()),
        ("moonshot-proxy", ()),
    ]
