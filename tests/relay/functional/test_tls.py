"""The https upstream path: verification on, a private CA accepted only when configured."""

import httpx

from tests.conftest import start_relay, start_sim

CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def test_https_upstream_with_private_ca(nursery, tmp_path):
    sim = await start_sim(nursery, tls_dir=str(tmp_path))
    assert sim.url.startswith("https://")
    trusted = await start_relay(nursery, sim.url, upstream_ca_file=str(tmp_path / "ca.pem"))
    untrusted = await start_relay(nursery, sim.url)
    async with httpx.AsyncClient(timeout=10) as client:
        ok = await client.post(trusted + "/v1/chat/completions", json=CHAT)
        refused = await client.post(untrusted + "/v1/chat/completions", json=CHAT)
    assert ok.status_code == 200 and ok.content.endswith(b"data: [DONE]\n\n")
    assert refused.status_code == 502
    assert refused.json()["error"]["code"] == "upstream_unavailable"
