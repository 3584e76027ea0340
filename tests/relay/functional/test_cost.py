"""Cost in money in a running relay with the sim as its upstream: each answer's cost in the access log and in
``moonrelay_cost_total{key,model}``, from the [prices] table and the usage the answer reported (streamed and not),
and a client key's budget in money refusing once spent, as a token budget does."""

from __future__ import annotations

import httpx

from tests.conftest import start_relay, start_sim, wait_lines

KEY = "mr-team-0123456789"
CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "price me"}], "max_tokens": 1}
# Per million tokens: a prompt token costs 1,000 micro-units ($0.001), an output token 2,000.
PRICES = {"moonshot-v1-8k": {"input": 1000, "output": 2000}, "kimi-*": {"input": 1, "output": 1}}


async def test_each_answer_costs_its_usage_at_its_models_price_and_a_money_budget_refuses(nursery, tmp_path,
                                                                                           access_lines) -> None:
    sim = await start_sim(nursery)
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY} name=team budget=$0.01/1d\nmr-free-0123456789 name=free\n")
    root = await start_relay(nursery, sim.url, api_keys_file=str(keys), prices=PRICES)
    url = root + "/v1/chat/completions"
    team, free = ({"authorization": f"Bearer {k}"} for k in (KEY, "mr-free-0123456789"))
    async with httpx.AsyncClient(timeout=10) as client:
        plain = await client.post(url, json=CHAT, headers=free)
        streamed = await client.post(url, json={**CHAT, "stream": True}, headers=free)
        spent = [await client.post(url, json=CHAT, headers=team) for _ in range(2)]  # 7,000 µ$ each
        await wait_lines(access_lines, 4)
        refused = await client.post(url, json=CHAT, headers=team)
        metrics = (await client.get(root + "/metrics")).text
    assert plain.json()["usage"] == {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    lines = await wait_lines(access_lines, 5)
    assert [line.get("cost") for line in lines[:4]] == [0.007] * 4  # 5 × 1,000 + 1 × 2,000 µ$, streamed or not
    assert [r.status_code for r in (streamed, *spent)] == [200, 200, 200]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    assert "budget of $0.01" in refused.json()["error"]["message"] and "cost" not in lines[4]
    assert 'moonrelay_cost_total{key="free",model="moonshot-v1-8k"} 0.014' in metrics
    assert 'moonrelay_cost_total{key="team",model="moonshot-v1-8k"} 0.014' in metrics
