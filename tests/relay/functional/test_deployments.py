"""Deployments of one model over real sockets (issue 15, item 2): weights spread requests; a deployment that fails
before the first byte passes the request to the other; its breaker opens after N failures (the deployment then
receives nothing), lets one probe through after the cool-down, closes after a good one; a 429 rests a one-key
deployment; with every deployment out the relay answers at once; never a retry after the first byte.

Simulated upstreams whose faults are set per key (``key_faults``, a dict the test changes as it goes); the relay's
store is its own LocalStore, so these tests run in real time with a short cool-down."""

import json

import h11
import httpx
import trio

from tests.conftest import start_relay, start_sim, wait_lines
from tests.relay.functional.test_metrics import samples, total
from tests.support import ROOT
from tests.support.scripted import ScriptedServer, read_request

CHAT = {"messages": [{"role": "user", "content": "Tell me about the moon"}]}
KEY = "sk-primary"
MODEL = "kimi-k2"
COOLDOWN_S = 1.5  # long enough for the requests each phase sends, on a loaded machine


def deployment(name: str, url: str, **extra) -> dict:
    return {"name": name, "base_url": url, "models": [MODEL], **extra}


async def relay_for(nursery, monkeypatch, *tables: dict, **settings) -> str:
    monkeypatch.setenv("PRIMARY_KEY", KEY)
    return await start_relay(nursery, "http://flat-upstream.invalid/v1", upstreams=list(tables), retries=0,
                             **settings)  # fmt: skip


async def chat(client: httpx.AsyncClient, root: str, **extra) -> httpx.Response:
    with trio.fail_after(5):
        return await client.post(root + "/v1/chat/completions", json={**CHAT, "model": MODEL, **extra})


def started(sim) -> int:
    return sim.stats.snapshot()["started"]


async def upstream_states(client: httpx.AsyncClient, root: str) -> dict:
    ready = await client.get(root + "/readyz")
    assert ready.status_code == 200
    return ready.json()["upstreams"]


async def wait_state(client: httpx.AsyncClient, root: str, name: str, state: str) -> None:
    with trio.fail_after(5):
        while (await upstream_states(client, root))[name]["state"] != state:  # noqa: ASYNC110 - polling the relay
            await trio.sleep(0.02)


async def test_weights_spread_requests_in_proportion(nursery, monkeypatch, access_lines):
    heavy, light = await start_sim(nursery), await start_sim(nursery)
    root = await relay_for(nursery, monkeypatch, deployment("heavy", heavy.url, weight=3),
                           deployment("light", light.url))  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        served = [(await chat(client, root)).headers["x-moonrelay-upstream"] for _ in range(8)]
    assert served == ["heavy", "heavy", "light", "heavy"] * 2  # smooth weighted round robin, 3:1
    assert (started(heavy), started(light)) == (6, 2)
    lines = await wait_lines(access_lines, 8)
    assert [line["upstream"] for line in lines] == served


async def test_the_breaker_opens_probes_and_closes(nursery, monkeypatch, access_lines):
    faults = {KEY: "status:503"}
    primary = await start_sim(nursery, key_faults=faults)
    backup = await start_sim(nursery)
    breaker = {"breaker_failures": 2, "breaker_cooldown_s": COOLDOWN_S}
    root = await relay_for(nursery, monkeypatch, deployment("primary", primary.url, key_env="PRIMARY_KEY",
                           weight=100, **breaker), deployment("backup", backup.url, **breaker))  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        # Two failures at the primary, each request served by the other deployment before the first byte.
        for _ in range(2):
            resp = await chat(client, root, stream=True)
            assert resp.status_code == 200 and resp.headers["x-moonrelay-upstream"] == "backup"
        assert started(primary) == 2
        assert (await upstream_states(client, root))["primary"]["state"] == "open"
        found = samples((await client.get(root + "/metrics")).text)
        assert total(found, "moonrelay_upstream_circuit_state", upstream="primary") == 2
        assert total(found, "moonrelay_upstream_circuit_state", upstream="backup") == 0
        assert total(found, "moonrelay_upstream_circuit_openings_total", upstream="primary") == 1
        assert total(found, "moonrelay_fallbacks_total", **{"from": "primary", "to": "backup"}) == 2
        # Open: the primary receives nothing during the cool-down.
        for _ in range(3):
            assert (await chat(client, root)).headers["x-moonrelay-upstream"] == "backup"
        assert started(primary) == 2
        # Half-open: one probe; it fails, the circuit opens again and the request still lands on the backup.
        await wait_state(client, root, "primary", "half-open")
        found = samples((await client.get(root + "/metrics")).text)
        assert total(found, "moonrelay_upstream_circuit_state", upstream="primary") == 1
        assert (await chat(client, root)).headers["x-moonrelay-upstream"] == "backup"
        assert started(primary) == 3
        assert (await upstream_states(client, root))["primary"]["state"] == "open"
        assert (await chat(client, root)).headers["x-moonrelay-upstream"] == "backup"
        assert started(primary) == 3
        # The primary recovers: the next probe succeeds and closes the circuit.
        faults.clear()
        await wait_state(client, root, "primary", "half-open")
        resp = await chat(client, root, stream=True)
        assert resp.headers["x-moonrelay-upstream"] == "primary" and resp.text.endswith("data: [DONE]\n\n")
        assert (await upstream_states(client, root))["primary"] == {"state": "closed", "resting_s": 0.0}
        assert (await chat(client, root)).headers["x-moonrelay-upstream"] == "primary"
        assert started(primary) == 5
        found = samples((await client.get(root + "/metrics")).text)
    assert total(found, "moonrelay_upstream_circuit_state", upstream="primary") == 0
    assert total(found, "moonrelay_upstream_circuit_openings_total", upstream="primary") == 2
    lines = await wait_lines(access_lines, 9)
    assert [line["upstream"] for line in lines[-2:]] == ["primary", "primary"]


async def test_a_stalling_deployment_opens_too(nursery, monkeypatch):
    primary = await start_sim(nursery, key_faults={KEY: "stall"})
    backup = await start_sim(nursery)
    root = await relay_for(nursery, monkeypatch, deployment("primary", primary.url, key_env="PRIMARY_KEY",
                           weight=100, breaker_failures=1, first_byte_timeout_s=0.3),
                           deployment("backup", backup.url))  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await chat(client, root)).status_code == 504  # the primary may have it: not sent again
        assert (await upstream_states(client, root))["primary"]["state"] == "open"
        assert (await chat(client, root)).headers["x-moonrelay-upstream"] == "backup"
    assert (started(primary), started(backup)) == (1, 1)


async def test_concurrent_requests_while_half_open_send_one_probe(nursery, monkeypatch):
    faults = {KEY: "status:500"}
    primary = await start_sim(nursery, key_faults=faults)
    backup = await start_sim(nursery)
    root = await relay_for(nursery, monkeypatch, deployment("primary", primary.url, key_env="PRIMARY_KEY",
                           weight=100, breaker_failures=1, breaker_cooldown_s=COOLDOWN_S, first_byte_timeout_s=1,
                           retry_on_timeout=True), deployment("backup", backup.url))  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        await chat(client, root)
        faults[KEY] = "stall"  # the probe hangs until its first-byte timeout
        await wait_state(client, root, "primary", "half-open")
        served = []

        async def one() -> None:
            served.append((await chat(client, root)).headers["x-moonrelay-upstream"])

        async with trio.open_nursery() as requests:
            for _ in range(4):
                requests.start_soon(one)
    assert served == ["backup"] * 4
    assert started(primary) == 2  # the first failure, then exactly one probe


class AlwaysRateLimited(ScriptedServer):
    """Answers every request 429 with ``Retry-After: 30``; counts them."""

    requests = 0

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while await read_request(conn, stream):
                self.requests += 1
                body = json.dumps({"error": {"message": "slow down", "type": "rate_limit_reached_error"}}).encode()
                headers = [("content-type", "application/json"), ("content-length", str(len(body))),
                           ("retry-after", "30")]  # fmt: skip
                await stream.send_all(conn.send(h11.Response(status_code=429, headers=headers)) + conn.send(
                    h11.Data(data=body)) + conn.send(h11.EndOfMessage()))  # fmt: skip
                conn.start_next_cycle()


async def test_a_429_rests_a_one_key_deployment_for_its_retry_after(nursery, monkeypatch):
    limited = await nursery.start(AlwaysRateLimited().serve)
    backup = await start_sim(nursery)
    root = await relay_for(nursery, monkeypatch, deployment("limited", limited.url, key_env="PRIMARY_KEY", weight=100),
                           deployment("backup", backup.url))  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(4):
            assert (await chat(client, root)).headers["x-moonrelay-upstream"] == "backup"
        states = await upstream_states(client, root)
        found = samples((await client.get(root + "/metrics")).text)
    assert limited.requests == 1  # resting: nothing more sent there
    assert states["limited"]["state"] == "closed" and 25 < states["limited"]["resting_s"] <= 30
    assert total(found, "moonrelay_upstream_circuit_openings_total") == 0  # a 429 is not a failure


async def test_with_every_deployment_out_the_relay_answers_at_once(nursery, monkeypatch):
    one = await start_sim(nursery, key_faults={KEY: "status:502"})
    two = await start_sim(nursery, key_faults={KEY: "status:503"})
    root = await relay_for(nursery, monkeypatch, deployment("one", one.url, key_env="PRIMARY_KEY", breaker_failures=1),
                           deployment("two", two.url, key_env="PRIMARY_KEY", breaker_failures=1))  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        first = await chat(client, root)
        assert first.status_code == 503  # both failed: the last answer is relayed
        refused = await chat(client, root)
        seed = await client.get(root + "/chat/completions", params={"content": "hi", "model": MODEL})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "upstream_circuit_open"
    assert refused.json()["error"]["message"] == f"Every upstream for the model '{MODEL}' is unavailable " \
        f"(circuit open); retry in {refused.headers['retry-after']} s."  # the model, never the upstreams' names
    assert refused.json()["error"]["type"] == "server_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert seed.status_code == 503 and json.loads(seed.text)["error"]["code"] == "upstream_circuit_open"
    assert (started(one), started(two)) == (1, 1)  # nothing sent upstream


async def test_nothing_moves_after_the_first_byte(nursery, monkeypatch, access_lines):
    primary = await start_sim(nursery, key_faults={KEY: "drop:2"})
    backup = await start_sim(nursery)
    root = await relay_for(nursery, monkeypatch, deployment("primary", primary.url, key_env="PRIMARY_KEY",
                           weight=100), deployment("backup", backup.url))  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await chat(client, root, stream=True)
    assert resp.status_code == 200 and resp.headers["x-moonrelay-upstream"] == "primary"
    events = [e.removeprefix("data: ") for e in resp.text.split("\n\n") if e]
    assert json.loads(events[-1])["error"]["type"] == "upstream_error"
    (line,) = await wait_lines(access_lines, 1)
    assert line["upstream"] == "primary" and started(backup) == 0


def test_the_example_in_the_reference_loads(tmp_path):

    from proxy.config import load
    from proxy.routing import Router

    text = (ROOT / "docs" / "reference.md").read_text()
    example = text.split("**Deployments and circuit breakers.**", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "deployments.toml"
    path.write_text(example)
    configs = load({}, {}, str(path)).routes
    a, b, gateway = configs
    assert Router(configs).deployments("kimi-k2-0711-preview") == ("moonshot-a", "moonshot-b")
    assert Router(configs).deployments("moonshot-v1-8k") == ("moonshot-a",)
    assert (a.weight, b.weight, a.fallbacks, gateway.breaker_failures) == (3, 1, ("gateway",), 0)
    assert (a.breaker_failures, a.breaker_window_s, a.breaker_cooldown_s) == (5, 30.0, 60.0)
