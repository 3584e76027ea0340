"""/metrics after known traffic: in-process (one worker) and ``python -m proxy --workers 2`` (summed over workers)."""

import json
import os
import sys
import time

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from proxy.config import Settings
from proxy.observability import MULTIPROC_ENV, prepare_multiprocess
from tests.conftest import start_relay, start_sim
from tests.support.children import start_child, stop_child
from tests.support.recorder import serve_recorder

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "Tell me about the moon"}]}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(found: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and all((k, labels[k]) in ls for k in labels))


async def scrape_after(client: httpx.AsyncClient, root: str, requests: int) -> dict:
    """/metrics once ``requests`` requests are counted: each is counted when its call returns, a moment
    after the client had its last byte."""
    with trio.fail_after(5):
        while True:
            found = samples((await client.get(root + "/metrics")).text)
            if total(found, "moonrelay_requests_total") >= requests:
                return found
            await trio.sleep(0.01)


async def test_metrics_after_known_traffic(nursery):
    sim = await start_sim(nursery, chunks=4)
    root = await start_relay(nursery, sim.url)
    chat = "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(3):
            assert (await client.post(root + chat, json={**CHAT, "stream": True})).status_code == 200
        assert (await client.post(root + chat, json=CHAT)).status_code == 200
        assert (await client.post(root + chat, content=b"{not json")).status_code == 400
        failing = {**CHAT, "stream": True, "sim_fault": "status:500"}
        assert (await client.post(root + chat, json=failing)).status_code == 500
        found = await scrape_after(client, root, 6)
    assert total(found, "moonrelay_requests_total", route=chat, status="200") == 4
    assert total(found, "moonrelay_requests_total", route=chat, status="400") == 1
    assert total(found, "moonrelay_requests_total", route=chat, status="500") == 1
    assert total(found, "moonrelay_ttfc_seconds_count", route=chat) == 3  # streams only
    assert total(found, "moonrelay_upstream_first_byte_seconds_count", route=chat) == 3
    assert total(found, "moonrelay_request_duration_seconds_count", route=chat) == 6
    # Streamed chunks are counted per send; each stream has at least its 4 content chunks' worth of sends.
    assert total(found, "moonrelay_chunks_relayed_total", route=chat) >= 3 * 2 + 1
    assert total(found, "moonrelay_completion_tokens_total", model="moonshot-v1-8k") == 4 * 4
    assert total(found, "moonrelay_prompt_tokens_total") > 0
    assert total(found, "moonrelay_upstream_errors_total", kind="http_500") == 1
    assert total(found, "moonrelay_streams_in_flight") == 0


async def test_upstream_unreachable_counts_a_transport_error(nursery):
    root = await start_relay(nursery, "http://127.0.0.1:9/v1", retries=0)  # port 9 (discard): refused
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(root + "/v1/chat/completions", json=CHAT)).status_code == 502
        found = await scrape_after(client, root, 1)
    assert total(found, "moonrelay_upstream_errors_total", kind="upstream_unavailable") == 1


async def test_metrics_off(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url, metrics="off")
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(root + "/metrics")).status_code == 404


@pytest.mark.slow
def test_two_workers_sum_their_metrics(tmp_path):
    metrics_dir = tmp_path / "prom"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONUNBUFFERED": "1"}
    sim_args = [sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0.01"]
    sim_args += ["--interval", "0.002", "--chunks", "3"]
    with open(tmp_path / "sim.err", "w") as sim_err, open(tmp_path / "relay.err", "w") as relay_err:
        sim, sim_url = start_child(sim_args, "sim listening on ", env, sim_err)
        try:
            relay_args = [sys.executable, "-m", "proxy", "--workers", "2", "--bind", "127.0.0.1:0"]
            relay, root = start_child(relay_args + ["--upstream", sim_url], "moonrelay listening on ", env, relay_err)
            try:
                k = 24
                # A new connection per request, so the kernel spreads them over both workers.
                with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
                    for i in range(k):
                        body = {**CHAT, "stream": i % 2 == 0}
                        assert client.post(root + "/v1/chat/completions", json=body).status_code == 200
                    deadline = time.monotonic() + 5  # the last request is counted just after its last byte
                    while total(samples(client.get(root + "/metrics").text), "moonrelay_requests_total") < k:
                        assert time.monotonic() < deadline
                        time.sleep(0.01)
                    scrapes = [samples(client.get(root + "/metrics").text) for _ in range(4)]
            finally:
                stop_child(relay)
        finally:
            stop_child(sim)
    for found in scrapes:  # whichever worker answered the scrape, it reports both workers' requests
        assert total(found, "moonrelay_requests_total", route="/v1/chat/completions", status="200") == k
        assert total(found, "moonrelay_completion_tokens_total") == 3 * k
        assert total(found, "moonrelay_ttfc_seconds_count") == k // 2
    writers = {p.name.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}
    assert len(writers) == 2, f"expected both workers to have counted requests, got {writers}"
    lines = [json.loads(x) for x in (tmp_path / "relay.err").read_text().splitlines() if x.startswith("{")]
    assert len([x for x in lines if x["route"] == "/v1/chat/completions"]) == k


def test_parent_prepares_a_fresh_directory(monkeypatch):
    monkeypatch.setenv(MULTIPROC_ENV, "")  # so that monkeypatch restores the variable's absence afterwards
    monkeypatch.delenv(MULTIPROC_ENV)
    assert prepare_multiprocess(Settings(workers=1)) is None
    assert prepare_multiprocess(Settings(workers=2, metrics="off")) is None
    path = prepare_multiprocess(Settings(workers=2))
    assert path is not None and os.environ[MULTIPROC_ENV] == path
    assert os.path.isdir(path) and not os.listdir(path)  # removed again when this process exits
    monkeypatch.undo()
    assert MULTIPROC_ENV not in os.environ  # later relays in this session must not inherit it


async def test_stream_error_event_counts_by_kind(nursery):
    sim = await start_sim(nursery, chunks=5)
    root = await start_relay(nursery, sim.url)
    body = {**CHAT, "stream": True, "sim_fault": "malformed:2"}
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/chat/completions", json=body)
        assert resp.status_code == 200 and b"upstream_malformed" in resp.content
        found = await scrape_after(client, root, 1)
    assert total(found, "moonrelay_upstream_errors_total", kind="upstream_malformed") == 1


def label_values(found: dict, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for (n, labels) in found if n == name}


async def test_client_chosen_strings_do_not_make_new_series(nursery):
    """Model names label a series only when configured (default model, exact names in [[upstreams]]); any other
    (a client's invention, or one only a glob matches) is ``other``. An upstream's own error code is no kind."""
    sim = await start_sim(nursery, chunks=2)
    tables = ({"name": "moon", "base_url": sim.url, "models": ["moonshot-v1-32k", "kimi-*"], "default": True},)
    root = await start_relay(nursery, sim.url, upstreams=tables)
    chat = root + "/v1/chat/completions"
    names = [f"client-model-{i}" for i in range(30)] + ["kimi-k2", "moonshot-v1-32k", "moonshot-v1-8k"]
    async with httpx.AsyncClient(timeout=10) as client:
        for model in names:
            assert (await client.post(chat, json={**CHAT, "model": model})).status_code == 200
        found = await scrape_after(client, root, len(names))
    for family in ("moonrelay_completion_tokens_total", "moonrelay_prompt_tokens_total"):
        assert label_values(found, family, "model") == {"moonshot-v1-32k", "moonshot-v1-8k", "other"}
    assert total(found, "moonrelay_completion_tokens_total", model="other") == 31 * 2

    recorder = await nursery.start(serve_recorder)
    codes = iter(range(1000))

    def failing(_) -> bytes:
        body = json.dumps({"error": {"message": "no", "type": "upstream_error", "code": f"code-{next(codes)}"}})
        return b"HTTP/1.1 500 x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
            len(body), body.encode())  # fmt: skip

    recorder.reply = failing
    passing = await start_relay(nursery, recorder.url + "/v1", passthrough="on", retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(20):
            assert (await client.get(passing + "/v1/files")).status_code == 500
        found = await scrape_after(client, passing, 20)
    assert label_values(found, "moonrelay_upstream_errors_total", "kind") == {"upstream_error"}
    assert total(found, "moonrelay_upstream_errors_total") == 20


async def test_healthz_reads_counts_instead_of_walking_the_tasks(nursery, monkeypatch):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    walks = []
    real = trio.lowlevel.current_root_task

    def counted():
        walks.append(1)
        return real()

    monkeypatch.setattr(trio.lowlevel, "current_root_task", counted)  # what a walk of the task tree starts from
    async with httpx.AsyncClient(timeout=10) as client:
        before = (await client.get(root + "/healthz")).json()
        async with trio.open_nursery() as extra:
            for _ in range(300):
                extra.start_soon(trio.sleep_forever)
            during = (await client.get(root + "/healthz")).json()
            extra.cancel_scope.cancel()
        after = (await client.get(root + "/healthz")).json()
    assert walks == []  # three probes, no walk: the cost does not grow with the tasks
    assert during["tasks"] - before["tasks"] >= 290 and during["tasks"] - after["tasks"] >= 290  # still meaningful
    assert (before["status"], before["in_flight"], before["streams"]) == ("ok", 1, 0)
