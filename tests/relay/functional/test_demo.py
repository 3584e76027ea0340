"""Probes (/healthz, /readyz), the demo page (GET /) and CORS, over real sockets."""

import re
from types import SimpleNamespace

import httpx

from proxy.config import Settings
from proxy.edge import CORSPolicy, Observer
from tests.conftest import start_relay, start_sim

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}]}
APP_ORIGIN = "https://app.example.com"


async def test_healthz_and_readyz_need_no_key(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url, api_keys="sk-only-this-key-0123")
    async with httpx.AsyncClient(timeout=10) as client:
        health = await client.get(root + "/healthz")
        ready = await client.get(root + "/readyz")
        metrics = await client.get(root + "/metrics")
        page = await client.get(root + "/")
        refused = await client.get(root + "/v1/models")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    upstream = sim.url.removeprefix("http://").removesuffix("/v1")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "upstreams": {upstream: {"state": "closed", "resting_s": 0.0}}}
    assert metrics.status_code == 200 and page.status_code == 200
    assert refused.status_code == 401


def test_readyz_reports_starting_and_draining():
    settings = Settings(access_log="off")
    streams = SimpleNamespace(draining=False)
    observer = Observer(None, settings, streams)
    assert observer.ready()[0] == 503  # lifespan startup has not run
    observer.serving = True
    assert observer.ready() == (200, b'{"status":"ready"}')
    streams.draining = True
    assert observer.ready() == (503, b'{"status":"draining"}')


async def test_page_is_self_contained(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    async with httpx.AsyncClient(timeout=10) as client:
        page = await client.get(root + "/")
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    for needle in ('id="prompt"', 'id="model"', 'id="send"', 'id="answer"', 'id="ttfc"', 'id="rate"'):
        assert needle in html
    assert "window.pieces" in html and "getReader()" in html and '"chat/completions"' in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "no CDN: everything is inline"


def test_cors_policy():
    none = CORSPolicy("")
    assert not none.enabled and not none.allows(b"https://a")
    some = CORSPolicy("https://a.example, https://B.example/")
    assert some.allows(b"https://b.example") and not some.allows(b"https://c.example")
    assert CORSPolicy("*").allows(b"http://anything:3000")
    status, headers = some.preflight(b"https://a.example", b"authorization, content-type")
    assert status == 204
    assert (b"access-control-allow-headers", b"authorization, content-type") in headers
    assert some.preflight(b"https://c.example", None)[0] == 403


async def test_cors_preflight_and_headers(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url, cors_origins=APP_ORIGIN, api_keys="sk-only-this-key-0123")
    preflight_headers = {
        "origin": APP_ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    async with httpx.AsyncClient(timeout=10) as client:
        preflight = await client.options(root + "/chat/completions", headers=preflight_headers)
        other = await client.options(root + "/chat/completions", headers={**preflight_headers, "origin": "https://x"})
        auth = {"origin": APP_ORIGIN, "authorization": "Bearer sk-only-this-key-0123"}
        chat = await client.post(root + "/chat/completions", json={**CHAT, "stream": True}, headers=auth)
        refused = await client.post(root + "/v1/chat/completions", json=CHAT, headers={"origin": APP_ORIGIN})
        foreign = await client.post(root + "/v1/chat/completions", json=CHAT, headers={**auth, "origin": "https://x"})
    assert preflight.status_code == 204  # answered before authentication: a preflight carries no key
    assert preflight.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert other.status_code == 403 and "access-control-allow-origin" not in other.headers
    assert chat.status_code == 200 and chat.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "x-request-id" in chat.headers["access-control-expose-headers"]
    assert "x-moonrelay-upstream" in chat.headers["access-control-expose-headers"]  # which upstream answered
    # Errors carry the headers too, or the page could not read why it failed.
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == APP_ORIGIN
    assert foreign.status_code == 200 and "access-control-allow-origin" not in foreign.headers


async def test_no_cors_headers_by_default(nursery):
    sim = await start_sim(nursery)
    root = await start_relay(nursery, sim.url)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/chat/completions", json=CHAT, headers={"origin": APP_ORIGIN})
        preflight = await client.options(
            root + "/v1/chat/completions", headers={"origin": APP_ORIGIN, "access-control-request-method": "POST"}
        )
    assert resp.status_code == 200 and "access-control-allow-origin" not in resp.headers
    assert preflight.status_code == 403
