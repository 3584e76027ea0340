"""Routing by model and key pools: the pure matcher, config validation and key rotation first, then the
relay against several simulated upstreams (one sim per upstream, real sockets, ephemeral ports)."""

import json
import logging
import math

import httpx
import pytest
import trio

from proxy.auth import fingerprint
from proxy.config import Settings, load
from proxy.routing import (
    DEFAULT_REST_S,
    MAX_REST_S,
    AllKeysResting,
    ConfigError,
    KeyPool,
    Router,
    UpstreamConfig,
    rest_seconds,
)
from proxy.routing import _router as routing
from tests.conftest import start_relay, start_sim, wait_lines
from tests.relay.functional.test_fallbacks import refused_url
from tests.relay.functional.test_metrics import samples, total
from tests.support import ROOT


def table(name: str, **extra) -> dict:
    return {"name": name, "base_url": f"http://{name}.test/v1", **extra}


def router_for(*tables: dict) -> Router:
    return Router(Settings(upstreams=tables).routes)


# -- the matcher --------------------------------------------------------------------------------------


def test_exact_names_win_over_patterns_then_patterns_in_config_order_then_default():
    r = router_for(
        table("moonshot", models=["moonshot-*", "kimi-*"]),
        table("wide", models=["*-8k", "kimi-k2-0711-preview"]),
        table("openai", models=["gpt-4o", "gpt-*", "o[13]-mini"], default=True),
    )
    assert r.route("moonshot-v1-8k") == "moonshot"  # both patterns match: the first upstream's wins
    assert r.route("deepseek-8k") == "wide"
    assert r.route("kimi-k2-0711-preview") == "wide"  # an exact name beats an earlier upstream's pattern
    assert r.route("gpt-4o-mini") == "openai"
    assert r.route("o3-mini") == "openai" and r.route("o2-mini") == "openai"  # o2: the default
    assert r.route("anything-else") == "openai"
    assert r.route("MOONSHOT-V1-8K") == "openai"  # case-sensitive, as the upstreams are


def test_no_default_means_no_route_and_star_is_the_default():
    r = router_for(table("moonshot", models=["moonshot-*"]))
    assert r.default is None and r.route("gpt-4o") is None and r.route("moonshot-v1-8k") == "moonshot"
    r = router_for(table("moonshot", models=["moonshot-*"]), table("any", models=["*"]))
    assert r.default == "any" and r.route("gpt-4o") == "any"


def test_decisions_are_cached_and_the_cache_is_bounded(monkeypatch):
    r = router_for(table("a", models=["m-*"]))
    monkeypatch.setattr(routing, "CACHE_LIMIT", 2)
    assert [r.route(m) for m in ("m-1", "x", "m-2", "m-3")] == ["a", None, "a", "a"]
    assert r._cache == {"m-1": ("a",), "x": ()}  # unknown names are cached too, up to the limit
    r._patterns.clear()  # the cached decision is what answers now
    assert r.route("m-1") == "a" and r.route("m-3") is None


def test_a_name_too_long_for_any_model_is_decided_not_cached():
    """A client's model name can be as long as a request body: the cache keeps none over CACHED_NAME_MAX."""
    r = router_for(table("a", models=["m-*"]))
    long = "m-" + "x" * routing.CACHED_NAME_MAX
    assert r.route(long) == "a" and r.route("m-" + "x" * 10) == "a"
    assert list(r._cache) == ["m-" + "x" * 10]


def test_the_flat_settings_make_one_default_upstream_named_as_before():
    (only,) = Settings(upstream="http://127.0.0.1:9100/v1", upstream_key_env="SIM_KEY").routes
    assert only == UpstreamConfig(
        name="127.0.0.1:9100", base_url="http://127.0.0.1:9100/v1", key_envs=("SIM_KEY",), default=True
    )
    assert Router([only]).route("whatever") == "127.0.0.1:9100"


def test_per_upstream_settings_default_to_the_global_ones():
    s = Settings(idle_timeout_s=7, upstream_ca_file="/ca.pem", upstreams=(table("a", connect_timeout_s=2),))
    (a,) = s.routes
    assert (a.connect_timeout_s, a.idle_timeout_s, a.first_byte_timeout_s, a.ca_file) == (2.0, 7.0, 300.0, "/ca.pem")
    assert (a.max_concurrent, a.include_usage, a.key_envs) == (0, False, ())
    (b,) = Settings(upstreams=(table("b", key_env="B_KEY", max_concurrent=3, include_usage=True),)).routes
    assert (b.key_envs, b.max_concurrent, b.include_usage) == (("B_KEY",), 3, True)


def test_an_upstream_declares_the_protocol_it_speaks_chat_by_default():
    chat, anthropic, responses = Settings(
        upstreams=(table("a"), table("b", api="anthropic"), table("c", api="responses"))
    ).routes
    assert (chat.api, anthropic.api, responses.api) == ("chat", "anthropic", "responses")
    (flat,) = Settings(upstream="http://x/anthropic", upstream_api="anthropic").routes
    assert flat.api == "anthropic"
    with pytest.raises(ConfigError, match="--upstream-api: 'api' must be one of"):
        Settings(upstream_api="claude").routes  # noqa: B018


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ([table("a"), table("a")], "used twice"),
        ([{"name": "a"}], "'base_url' is required"),
        ([table("a", base_url="ftp://x/v1")], "not an http(s) URL"),
        ([{"base_url": "http://x/v1"}], "'name' is required"),
        ([table("a b")], "'name' is required"),
        ([table("a", models=["moonshot-[v1"])], "bad model pattern 'moonshot-[v1'"),
        ([table("a", models=[""])], "bad model pattern"),
        ([table("a", models=["gpt 4"])], "whitespace"),
        ([table("a", models="gpt-*")], "must be a list"),
        ([table("a", default=True), table("b", models=["*"])], "more than one default"),
        ([table("a", weight=0)], "'weight' must be a whole number from 1 to 1000"),
        ([table("a", weight=1.5)], "'weight' must be a whole number"),
        ([table("a", breaker_failures=-1)], "'breaker_failures' must be at least 0"),
        ([table("a", breaker_cooldown_s=0)], "'breaker_cooldown_s' must be positive"),
        ([table("a", breaker_window_s="30")], "'breaker_window_s' must be a number"),
        ([table("a", key_env="A", key_envs=["B"])], "not both"),
        ([table("a", key_envs=["not-a-var"])], "environment variables"),
        ([table("a", key_envs=["K", "K"])], "twice"),
        ([table("a", max_concurent=5)], "unknown key(s) max_concurent"),
        ([table("a", max_concurrent=-1)], "at least 0"),
        ([table("a", idle_timeout_s=0)], "positive"),
        ([table("a", idle_timeout_s="5")], "must be a number"),
        ([table("a", include_usage="yes")], "true or false"),
        ([table("a", api="messages")], "'api' must be one of chat, anthropic, responses, got 'messages'"),
    ],
)
def test_bad_upstream_tables_are_refused_with_a_clear_message(tables, message):
    with pytest.raises(ConfigError) as exc:
        _ = Settings(upstreams=tuple(tables)).routes
    assert message in str(exc.value)


def test_config_file_tables_are_read_and_validated_at_load(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(
        '[relay]\nidle_timeout_s = 9\n\n[[upstreams]]\nname = "sim"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'models = ["*"]\n'
    )
    s = load({}, {"MOONRELAY_CONNECT_TIMEOUT_S": "3"}, str(good))
    (sim,) = s.routes
    assert (sim.name, sim.default, sim.idle_timeout_s, sim.connect_timeout_s) == ("sim", True, 9.0, 3.0)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[upstreams]]\nname = "a"\nbase_url = "http://a/v1"\n[[upstreams]]\nname = "a"\nbase_url = "x"\n')
    with pytest.raises(ValueError, match="base_url"):
        load({}, {}, str(bad))
    assert load({}, {"MOONRELAY_UPSTREAMS": "x"}).upstreams == ()  # the file only: no variable, no flag
    from proxy.__main__ import build_parser

    assert "--upstreams" not in build_parser().format_help()


def test_cli_exits_2_on_a_bad_config(tmp_path, capsys):
    from proxy.__main__ import main

    bad = tmp_path / "bad.toml"
    bad.write_text('[[upstreams]]\nname = "a"\nbase_url = "http://a/v1"\nmodels = ["x["]\n')
    assert main(["--config", str(bad)]) == 2
    assert "bad model pattern 'x['" in capsys.readouterr().err


# -- key pools ----------------------------------------------------------------------------------------


def test_keys_are_used_in_turn_and_a_resting_key_is_skipped():
    pool = KeyPool(["k1", "k2", "k3"])
    free = [0.0, 0.0, 0.0]
    assert [pool.pick(free).fingerprint for _ in range(4)] == [pool.keys[i].fingerprint for i in (0, 1, 2, 0)]
    k2 = pool.keys[1]
    assert pool.rest_s("2") == 2 and pool.names[1] == f"key:{k2.fingerprint}"
    assert [pool.pick([0, 1.5, 0]) for _ in range(3)] == [pool.keys[2], pool.keys[0], pool.keys[2]]
    assert [pool.pick(free) for _ in range(2)] == [pool.keys[0], k2]  # its rest is over: back in turn
    assert "k2" not in repr(k2) and k2.authorization == b"Bearer k2"


def test_all_keys_resting_says_when_one_wakes():
    pool = KeyPool(["k1", "k2"])
    with pytest.raises(AllKeysResting) as exc:
        pool.pick([4.5, 0.5])
    assert exc.value.wake_in_s == pytest.approx(0.5)
    assert pool.pick([4.5, 0]) is pool.keys[1]


def test_a_single_key_or_none_never_rests():
    one = KeyPool(["only"])
    assert one.rest_s("30") == 0 and one.pick([30]) is one.keys[0] and one.pick(None) is one.keys[0]
    assert KeyPool([]).pick(None) is None
    assert KeyPool.from_env(["A", "B", "C"], {"A": "ka", "C": ""}).keys[0].authorization == b"Bearer ka"
    assert len(KeyPool.from_env(["A", "B"], {"A": "same", "B": "same"}).keys) == 1


async def test_key_rests_live_in_the_store_by_fingerprint():
    from proxy.limits import LocalStore
    from proxy.routing import free_key

    store = LocalStore()
    pool, same_keys_elsewhere = KeyPool(["k1", "k2"]), KeyPool(["k1", "k2"])
    await store.rest(pool.names[0], 30)  # one upstream's 429 on k1 ...
    assert [await free_key(store, same_keys_elsewhere) for _ in range(2)] == [same_keys_elsewhere.keys[1]] * 2


def test_rest_follows_a_sane_retry_after_within_bounds():
    assert rest_seconds("3") == 3 and rest_seconds(None) == DEFAULT_REST_S and rest_seconds("soon") == DEFAULT_REST_S
    assert rest_seconds("86400") == MAX_REST_S and rest_seconds("0") == 0
    assert not math.isnan(rest_seconds("nan"))


# -- the relay against several sims ----------------------------------------------------------------------

CHAT = {"messages": [{"role": "user", "content": "Tell me about the moon"}]}


def upstream(name: str, sim, **extra) -> dict:
    return {"name": name, "base_url": sim.url, **extra}


async def relay_with(nursery, *tables: dict, **overrides) -> str:
    """The relay with these [[upstreams]] tables (its flat --upstream is then unused)."""
    return await start_relay(nursery, "http://flat-upstream.invalid/v1", upstreams=tables, **overrides)


async def started(client: httpx.AsyncClient, sim) -> int:
    return (await client.get(sim.url.removesuffix("/v1") + "/sim/stats")).json()["started"]


async def test_requests_go_to_the_upstream_their_model_routes_to(nursery):
    moon, other = await start_sim(nursery), await start_sim(nursery)
    root = await relay_with(
        nursery, upstream("moon", moon, models=["moonshot-*"]), upstream("other", other, models=["gpt-*", "*"])
    )
    async with httpx.AsyncClient(timeout=10) as client:
        url = root + "/v1/chat/completions"
        streamed = await client.post(url, json={**CHAT, "model": "moonshot-v1-32k", "stream": True})
        assert streamed.status_code == 200 and streamed.content.endswith(b"data: [DONE]\n\n")
        assert (await started(client, moon), await started(client, other)) == (1, 0)
        assert (await client.post(url, json={**CHAT, "model": "gpt-4o"})).json()["model"] == "gpt-4o"
        assert (await started(client, moon), await started(client, other)) == (1, 1)
        assert (await client.post(url, json={**CHAT, "model": "llama-3"})).status_code == 200  # the default
        assert (await client.post(url, json=CHAT)).json()["model"] == "moonshot-v1-8k"  # --default-model, routed
        assert (await started(client, moon), await started(client, other)) == (2, 2)
        seed = await client.get(root + "/chat/completions", params={"content": "hi", "model": "gpt-4o-mini"})
        assert seed.status_code == 200 and json.loads(seed.text.splitlines()[0])["model"] == "gpt-4o-mini"
        assert (await started(client, moon), await started(client, other)) == (2, 3)


async def test_unknown_model_without_a_default_upstream_is_404_and_not_forwarded(nursery):
    moon = await start_sim(nursery)
    root = await relay_with(nursery, upstream("moon", moon, models=["moonshot-*"]))
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "model": "gpt-4o", "stream": True})
        assert resp.status_code == 404
        assert resp.json() == {
            "error": {
                "message": "No upstream serves the model 'gpt-4o'.",
                "type": "invalid_request_error",
                "code": "model_not_found",
            }
        }
        seed = await client.get(root + "/chat/completions", params={"content": "hi", "model": "gpt-4o"})
        assert seed.status_code == 404 and json.loads(seed.text)["error"]["code"] == "model_not_found"
        assert await started(client, moon) == 0
        ok = await client.post(root + "/v1/chat/completions", json=CHAT)  # the default model is a moonshot one
        assert ok.status_code == 200 and await started(client, moon) == 1


async def test_access_log_and_metrics_name_the_upstream_used(nursery, access_lines):
    moon, other = await start_sim(nursery), await start_sim(nursery)
    root = await relay_with(nursery, upstream("moon", moon, models=["moonshot-*"]), upstream("other", other))
    async with httpx.AsyncClient(timeout=10) as client:
        url = root + "/v1/chat/completions"
        assert (await client.post(url, json={**CHAT, "model": "moonshot-v1-8k", "stream": True})).status_code == 200
        assert (await client.post(url, json={**CHAT, "model": "gpt-4o"})).status_code == 404
        lines = await wait_lines(access_lines, 2)
        found = samples((await client.get(root + "/metrics")).text)
    assert [(x["upstream"], x["status"], x["model"]) for x in lines] == [
        ("moon", 200, "moonshot-v1-8k"),
        ("none", 404, "gpt-4o"),
    ]
    assert lines[0]["completion_tokens"] == 5
    assert total(found, "moonrelay_requests_total", upstream="moon", status="200") == 1
    assert total(found, "moonrelay_completion_tokens_total", upstream="moon") == 5
    assert total(found, "moonrelay_requests_total", upstream="none", status="404") == 1


async def test_models_lists_are_merged_and_a_failing_upstream_left_out(nursery):
    a = await start_sim(nursery, models=("moonshot-v1-8k", "shared"))
    b = await start_sim(nursery, models=("gpt-4o", "shared", "gpt-4o-mini"))
    down = {"name": "down", "base_url": refused_url()}
    root = await relay_with(nursery, upstream("a", a, models=["*"]), down, upstream("b", b), retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(root + "/v1/models")
    assert resp.status_code == 200 and resp.json()["object"] == "list"
    assert [m["id"] for m in resp.json()["data"]] == ["moonshot-v1-8k", "shared", "gpt-4o", "gpt-4o-mini"]

    root = await relay_with(nursery, down, {"name": "down2", "base_url": refused_url()}, retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.get(root + "/v1/models")
    assert resp.status_code == 502
    err = resp.json()["error"]
    assert (err["type"], err["code"]) == ("upstream_error", "upstream_unavailable")
    assert err["message"] == "No upstream answered the model list."  # which ones failed, and why: the log only


async def test_keys_of_a_pool_are_used_in_turn(nursery, monkeypatch):
    monkeypatch.setenv("POOL_KEY_1", "sk-one")
    monkeypatch.setenv("POOL_KEY_2", "sk-two")
    sim = await start_sim(nursery)
    root = await relay_with(nursery, upstream("moon", sim, key_envs=["POOL_KEY_1", "POOL_KEY_2"], default=True))
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(4):
            resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
            assert resp.status_code == 200 and b"sk-" not in resp.content
    used = [r["headers"]["authorization"] for r in sim.recent]
    assert used == ["Bearer sk-one", "Bearer sk-two"] * 2


async def test_a_rate_limited_key_rests_while_the_others_serve(nursery, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="moonrelay")
    for name, key in (("POOL_A", "sk-aaaa"), ("POOL_B", "sk-bbbb")):
        monkeypatch.setenv(name, key)
    sim = await start_sim(nursery, key_faults={"sk-aaaa": "status:429"})  # the sim's 429 says Retry-After: 1
    pool = upstream("moon", sim, key_envs=["POOL_A", "POOL_B"], default=True)
    root = await relay_with(nursery, pool, retries=0)  # a key switch is not a retry
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(3):
            resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
            assert resp.status_code == 200 and resp.content.endswith(b"data: [DONE]\n\n")
    # a: 429, at once b; then a rests (1 s) and b serves both requests that follow.
    assert [r["headers"]["authorization"] for r in sim.recent] == ["Bearer sk-aaaa"] + ["Bearer sk-bbbb"] * 3
    assert f"key {fingerprint('sk-aaaa')} answered 429; it rests 1.0 s" in caplog.text
    assert f"2 key(s) (sha256 {fingerprint('sk-aaaa')}, {fingerprint('sk-bbbb')})" in caplog.text
    assert "sk-aaaa" not in caplog.text and "sk-bbbb" not in caplog.text


async def test_when_every_key_rests_the_429_is_relayed_then_refused_without_calling(nursery, monkeypatch):
    for name, key in (("POOL_A", "sk-aaaa"), ("POOL_B", "sk-bbbb")):
        monkeypatch.setenv(name, key)
    sim = await start_sim(nursery, key_faults={"sk-aaaa": "status:429", "sk-bbbb": "status:429"})
    pool = upstream("moon", sim, key_envs=["POOL_A", "POOL_B"], default=True)
    root = await relay_with(nursery, pool, retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        relayed = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
        assert relayed.status_code == 429 and relayed.json()["error"]["type"] == "rate_limit_reached_error"
        assert relayed.headers["retry-after"] == "1" and "x-ratelimit-remaining" in relayed.headers
        assert sim.stats.snapshot()["started"] == 2  # one try per key; one request rests one key (a)
        again = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
        assert again.status_code == 429 and sim.stats.snapshot()["started"] == 3  # b, which rests now
        refused = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
        seed = await client.get(root + "/chat/completions", params={"content": "hi"})
    assert sim.stats.snapshot()["started"] == 3  # neither reached the upstream
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == {  # the model, never the upstream's name
        "message": "Every API key for the model 'moonshot-v1-8k' is rate limited; retry in 1 s.",
        "type": "rate_limit_error",
        "code": "upstream_rate_limited",
    }
    assert seed.status_code == 429 and json.loads(seed.text)["error"]["code"] == "upstream_rate_limited"


async def test_waiting_for_a_resting_key_is_a_retry(nursery, monkeypatch):
    for name, key in (("POOL_A", "sk-aaaa"), ("POOL_B", "sk-bbbb")):
        monkeypatch.setenv(name, key)
    sim = await start_sim(nursery, key_faults={"sk-aaaa": "status:429", "sk-bbbb": "status:429"})
    pool = upstream("moon", sim, key_envs=["POOL_A", "POOL_B"], default=True)
    root = await relay_with(nursery, pool, retries=1, retry_max_wait_s=2)
    async with httpx.AsyncClient(timeout=10) as client:
        t0 = trio.current_time()
        resp = await client.post(root + "/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status_code == 429
    assert trio.current_time() - t0 >= 0.9  # waited for the first key to wake (Retry-After: 1)
    # Round 1: a, b (both rest 1 s); the wait for the first to wake is the one retry; round 2: a (round robin
    # and the first awake), then b only if it woke meanwhile (it rested from a moment later: timing decides).
    sent = [r["headers"]["authorization"] for r in sim.recent]
    assert sent in (["Bearer sk-aaaa", "Bearer sk-bbbb", "Bearer sk-aaaa"], ["Bearer sk-aaaa", "Bearer sk-bbbb"] * 2)


async def test_the_upstream_cap_refuses_at_once_and_frees_its_slot(nursery):
    slow, other = await start_sim(nursery, ttft=0.01, interval=0.3, chunks=3), await start_sim(nursery)
    root = await relay_with(
        nursery, upstream("slow", slow, models=["moonshot-*"], max_concurrent=1), upstream("other", other, default=True)
    )
    url = root + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=10) as client:
        data = b""
        async with client.stream("POST", url, json={**CHAT, "stream": True}) as first:
            parts = first.aiter_raw()
            while b"data: " not in data:
                data += await parts.__anext__()
            t0 = trio.current_time()
            refused = await client.post(url, json={**CHAT, "stream": True})
            assert trio.current_time() - t0 < 0.5
            elsewhere = await client.post(url, json={**CHAT, "model": "gpt-4o"})  # another upstream: no cap
            async for part in parts:
                data += part
        assert first.status_code == 200 and data.endswith(b"data: [DONE]\n\n")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        err = refused.json()["error"]
        assert (err["type"], err["code"]) == ("rate_limit_error", "upstream_concurrency_limit")
        assert err["message"] == ("The upstream for the model 'moonshot-v1-8k' is at its limit of concurrent "
                                  "requests on this relay worker; retry shortly.")  # fmt: skip
        assert elsewhere.status_code == 200
        again = await client.post(url, json={**CHAT, "stream": True})  # the slot came back with the stream's end
        assert again.status_code == 200
    assert slow.stats.snapshot()["started"] == 2


async def test_each_upstream_has_its_own_timeouts(nursery):
    quick, patient = await start_sim(nursery), await start_sim(nursery)
    root = await relay_with(
        nursery,
        upstream("quick", quick, models=["moonshot-*"], first_byte_timeout_s=0.3),
        upstream("patient", patient, default=True),
        first_byte_timeout_s=30,
    )
    stalled = {**CHAT, "stream": True, "sim_fault": "stall"}
    async with httpx.AsyncClient(timeout=10) as client:
        with trio.fail_after(5):
            resp = await client.post(root + "/v1/chat/completions", json=stalled)
        assert resp.status_code == 504 and resp.json()["error"]["code"] == "upstream_timeout"
        # The global 30 s still holds for the other upstream: headers three times the quick limit away arrive.
        t0 = trio.current_time()
        slow = await client.post(root + "/v1/chat/completions", json={**CHAT, "model": "gpt-4o", "sim_ttft": 0.9})
        assert slow.status_code == 200 and slow.json()["object"] == "chat.completion", slow.text
        assert trio.current_time() - t0 >= 0.9


def test_the_example_config_in_docs_loads_and_routes():

    path = ROOT / "docs" / "moonrelay.example.toml"
    settings = load({}, {}, str(path))
    configs = settings.routes
    assert [(c.name, c.base_url, c.key_envs) for c in configs] == [
        ("moonshot", "https://api.moonshot.cn/v1", ("MOONSHOT_API_KEY", "MOONSHOT_API_KEY_2")),
        ("deepseek", "https://api.deepseek.com/v1", ("DEEPSEEK_API_KEY",)),
        ("openai", "https://api.openai.com/v1", ("OPENAI_API_KEY",)),
    ]
    r = Router(configs)
    routes = {m: r.route(m) for m in ("moonshot-v1-8k", "kimi-k2-0711-preview", "deepseek-reasoner", "gpt-4o",
                                      "o3-mini", "text-embedding-3-small", "qwen-max")}  # fmt: skip
    assert routes == {
        "moonshot-v1-8k": "moonshot", "kimi-k2-0711-preview": "moonshot", "deepseek-reasoner": "deepseek",
        "gpt-4o": "openai", "o3-mini": "openai", "text-embedding-3-small": "openai", "qwen-max": "moonshot",
    }  # fmt: skip
    assert (settings.workers, configs[0].max_concurrent, configs[1].first_byte_timeout_s) == (2, 500, 600.0)
    assert settings.passthrough.startswith("/v1/embeddings") and configs[2].include_usage


# -- the attempts loop, in virtual time -------------------------------------------------------------------


def busy(retry_after: str = "1") -> httpx.Response:
    return httpx.Response(429, headers={"retry-after": retry_after}, content=b'{"error":{"message":"slow down"}}')


async def test_keys_rested_again_while_waiting_give_the_last_429(autojump_clock):
    from types import SimpleNamespace

    from proxy.limits import LocalStore
    from proxy.routing import send_with_retries

    pool = KeyPool(["sk-a", "sk-b"])
    store = LocalStore(trio.current_time)  # virtual time
    upstream = SimpleNamespace(name="u", keys=pool, store=store)
    used = []

    async def send(key):
        used.append(key.authorization)
        return busy()

    async def another_request_gets_429s_meanwhile():
        await trio.sleep(0.5)
        for name in pool.names:
            await store.rest(name, 10)

    settings = Settings(retries=1, retry_max_wait_s=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(another_request_gets_429s_meanwhile)
        response, content = await send_with_retries(upstream, send, settings)
    assert response.status_code == 429 and b"slow down" in content
    assert used == [b"Bearer sk-a", b"Bearer sk-b"]  # woke at 1 s to find both resting again: no third call
    with pytest.raises(AllKeysResting):  # and a new request is refused before any call
        await send_with_retries(upstream, send, settings)
    assert len(used) == 2


async def test_a_single_key_is_retried_as_before(autojump_clock):
    from types import SimpleNamespace

    from proxy.routing import send_with_retries

    upstream = SimpleNamespace(name="u", keys=KeyPool(["only"]), store=None)  # a pool of one reads no store
    answers = [busy("2"), httpx.Response(200, content=b"ok")]

    async def send(key):
        return answers.pop(0)

    t0 = trio.current_time()
    response, content = await send_with_retries(upstream, send, Settings(retries=1))
    assert (response.status_code, content, trio.current_time() - t0) == (200, None, 2.0)  # waited its Retry-After


async def test_a_bare_429_moves_to_the_next_key_and_rests_none(autojump_clock):
    from types import SimpleNamespace

    from proxy.limits import LocalStore
    from proxy.routing import send_with_retries

    pool = KeyPool(["sk-a", "sk-b"])
    store = LocalStore(trio.current_time)  # virtual time
    upstream = SimpleNamespace(name="u", keys=pool, store=store)
    used, ok_key = [], [b"Bearer sk-b"]

    async def send(key):
        used.append(key.authorization)
        if key.authorization in ok_key:
            return httpx.Response(200, content=b"ok")
        return httpx.Response(429, content=b"Too Many Requests")  # says nothing about the account

    response, _ = await send_with_retries(upstream, send, Settings(retries=1))
    assert response.status_code == 200 and used == [b"Bearer sk-a", b"Bearer sk-b"]
    assert await store.resting(pool.names) == [0.0, 0.0]
    ok_key.clear()  # every key answers 429: each once a round, one retry, then the last 429
    used.clear()
    response, content = await send_with_retries(upstream, send, Settings(retries=1))
    assert response.status_code == 429 and content == b"Too Many Requests"
    assert used == [b"Bearer sk-a", b"Bearer sk-b"] * 2 and await store.resting(pool.names) == [0.0, 0.0]
