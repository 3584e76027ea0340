"""Client keys, and neither key going where it must not: responses, logs, or (the client's) upstream."""

import logging

import httpx
import pytest

from proxy.auth import ClientKeys, bearer_token, fingerprint, load_client_keys, parse_keys
from proxy.config import Settings, load
from tests.conftest import start_relay, start_sim

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}]}
UPSTREAM_KEY = "sk-upstream-secret-0123456789"
CLIENT_KEY = "mr-client-key-abcdef"


def test_keys_file_and_env(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# team keys\n\nmr-one\n  mr-two  \n#mr-disabled\n")
    assert parse_keys(path.read_text()) == ["mr-one", "mr-two"]
    keys = load_client_keys(load({"api_keys_file": str(path)}, {"MOONRELAY_API_KEYS": "mr-three, mr-four"}))
    assert len(keys) == 4
    assert all(keys.allows(k) for k in ("mr-one", "mr-two", "mr-three", "mr-four"))
    assert not keys.allows("mr-disabled") and not keys.allows(None) and not keys.allows("mr-one ")
    assert load_client_keys(Settings()) is None
    (tmp_path / "empty").write_text("# nothing yet\n")
    with pytest.raises(ValueError):  # a keys file without keys must not leave the relay open
        load_client_keys(Settings(api_keys_file=str(tmp_path / "empty")))


def test_bearer_parsing_and_fingerprint():
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token("Bearer") is None and bearer_token(None) is None
    assert fingerprint("abc") == "ba7816bf" and len(fingerprint(CLIENT_KEY)) == 8
    keys = ClientKeys([CLIENT_KEY])
    assert keys.allows(CLIENT_KEY) and CLIENT_KEY not in repr(keys._digests)  # only digests are held


async def test_client_keys_required_except_healthz(nursery, tmp_path):
    sim = await start_sim(nursery)
    path = tmp_path / "keys"
    path.write_text(f"# clients\n{CLIENT_KEY}\n")
    root = await start_relay(nursery, sim.url, api_keys_file=str(path))
    url = root + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=10) as client:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": CLIENT_KEY}):
            resp = await client.post(url, json={**CHAT, "stream": True}, headers=headers)
            assert resp.status_code == 401
            assert set(resp.json()["error"]) == {"message", "type", "code"}
            assert resp.json()["error"]["code"] == "invalid_api_key"
        assert (await client.get(root + "/v1/models")).status_code == 401
        seed = await client.get(root + "/chat/completions", params={"content": "hi"})
        assert seed.status_code == 401
        assert sim.stats.snapshot()["started"] == 0
        assert (await client.get(root + "/healthz")).status_code == 200
        ok = await client.post(url, json={**CHAT, "stream": True}, headers={"authorization": f"Bearer {CLIENT_KEY}"})
        assert ok.status_code == 200 and ok.content.endswith(b"data: [DONE]\n\n")


async def test_keys_never_leak(nursery, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("MOONSHOT_API_KEY", UPSTREAM_KEY)
    sim = await start_sim(nursery, require_key=UPSTREAM_KEY)
    root = await start_relay(nursery, sim.url, api_keys=CLIENT_KEY)
    url = root + "/v1/chat/completions"
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    answers = []
    async with httpx.AsyncClient(timeout=10) as client:
        answers.append(await client.post(url, json={**CHAT, "stream": True}, headers=auth))
        answers.append(await client.post(url, json=CHAT, headers=auth))
        answers.append(await client.get(root + "/chat/completions", params={"content": "hi"}, headers=auth))
        answers.append(await client.get(root + "/v1/models", headers=auth))
        for fault in ("status:401", "status:500", "drop:1", "malformed:1"):
            answers.append(await client.post(url, json={**CHAT, "stream": True, "sim_fault": fault}, headers=auth))
        answers.append(await client.post(url, content=b"{bad", headers={**auth, "content-type": "application/json"}))
        answers.append(await client.post(url, json=CHAT, headers={"authorization": "Bearer wrong-key-123"}))
    dead = await start_relay(nursery, "http://127.0.0.1:9/v1", api_keys=CLIENT_KEY)
    async with httpx.AsyncClient(timeout=10) as client:
        answers.append(await client.post(dead + "/v1/chat/completions", json=CHAT, headers=auth))
    assert [a.status_code for a in answers[:4]] == [200, 200, 200, 200]
    assert answers[-1].status_code == 502 and answers[-2].status_code == 401
    for answer in answers:
        everything = answer.content + str(answer.headers).encode()
        assert UPSTREAM_KEY.encode() not in everything
    out = capsys.readouterr()
    logged = caplog.text + out.out + out.err
    assert UPSTREAM_KEY not in logged and CLIENT_KEY not in logged and "wrong-key-123" not in logged
    assert fingerprint("wrong-key-123") in logged  # a refused key shows as its fingerprint only
    upstream_headers = [r["headers"] for r in sim.recent]
    assert upstream_headers and all(h.get("authorization") == f"Bearer {UPSTREAM_KEY}" for h in upstream_headers)
    assert not any(CLIENT_KEY in v for h in upstream_headers for v in h.values())
    assert not any(CLIENT_KEY in repr(r["body"]) for r in sim.recent)


def test_cli_refuses_a_missing_or_empty_keys_file(tmp_path, capsys):
    from proxy.__main__ import main

    assert main(["--api-keys-file", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").write_text("\n# none\n")
    assert main(["--api-keys-file", str(tmp_path / "empty")]) == 2
    assert "holds no key" in capsys.readouterr().err


async def test_open_routes_and_metrics_behind_a_key_with_metrics_auth(nursery):
    sim = await start_sim(nursery)
    page = "https://app.example"
    open_root = await start_relay(nursery, sim.url, api_keys=CLIENT_KEY, cors_origins=page)
    closed_root = await start_relay(nursery, sim.url, api_keys=CLIENT_KEY, metrics_auth="on")
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    preflight = {"origin": page, "access-control-request-method": "POST"}
    async with httpx.AsyncClient(timeout=10) as client:
        for path in ("/healthz", "/readyz", "/metrics", "/"):  # no key needed (metrics_auth off, the default)
            assert (await client.get(open_root + path)).status_code == 200, path
        assert (await client.options(open_root + "/v1/chat/completions", headers=preflight)).status_code == 204
        assert (await client.get(open_root + "/v1/models")).status_code == 401

        assert (await client.post(closed_root + "/v1/chat/completions", json=CHAT, headers=auth)).status_code == 200
        refused = [await client.get(closed_root + "/metrics", headers=h) for h in ({}, {"authorization": "Bearer x"})]
        scraped = await client.get(closed_root + "/metrics", headers=auth)
        probes = [(await client.get(closed_root + path)).status_code for path in ("/healthz", "/readyz")]
    for resp in refused:
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
        assert b"moonrelay_" not in resp.content
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    assert 'moonrelay_requests_total{route="/v1/chat/completions"' in scraped.text
    assert "/metrics" not in scraped.text  # scrapes are neither logged nor counted
    assert probes == [200, 200]


def test_metrics_auth_setting(tmp_path, capsys):
    from proxy.__main__ import build_parser, main

    assert Settings().metrics_auth == "off"
    assert load({}, {"MOONRELAY_METRICS_AUTH": "on"}).metrics_auth == "on"
    assert vars(build_parser().parse_args(["--metrics-auth", "on"]))["metrics_auth"] == "on"
    config = tmp_path / "relay.toml"
    config.write_text('metrics_auth = "on"\napi_keys = "mr-one"\n')
    settings = load({}, {}, str(config))
    assert settings.metrics_auth == "on" and len(load_client_keys(settings)) == 1
    with pytest.raises(ValueError, match="needs client keys"):  # "on" without keys would leave /metrics open
        load_client_keys(Settings(metrics_auth="on"))
    with pytest.raises(ValueError, match="on or off"):
        load_client_keys(Settings(metrics_auth="yes"))
    assert main(["--metrics-auth", "on"]) == 2
    assert "needs client keys" in capsys.readouterr().err
