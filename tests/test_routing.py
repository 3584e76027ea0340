"""Routing by model and key pools: the pure matcher, config validation and key rotation first, then the
relay against several simulated upstreams (one sim per upstream, real sockets, ephemeral ports)."""

import math

import pytest

from proxy import routing
from proxy.config import Settings, load
from proxy.keypool import DEFAULT_REST_S, MAX_REST_S, AllKeysResting, KeyPool, rest_seconds
from proxy.routing import ConfigError, Router, UpstreamConfig, upstream_configs


def table(name: str, **extra) -> dict:
    return {"name": name, "base_url": f"http://{name}.test/v1", **extra}


def router_for(*tables: dict) -> Router:
    return Router(upstream_configs(Settings(upstreams=tables)))


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
    assert r._cache == {"m-1": "a", "x": None}  # unknown names are cached too, up to the limit
    r._patterns.clear()  # the cached decision is what answers now
    assert r.route("m-1") == "a" and r.route("m-3") is None


def test_the_flat_settings_make_one_default_upstream_named_as_before():
    (only,) = upstream_configs(Settings(upstream="http://127.0.0.1:9100/v1", upstream_key_env="SIM_KEY"))
    assert only == UpstreamConfig(
        name="127.0.0.1:9100", base_url="http://127.0.0.1:9100/v1", key_envs=("SIM_KEY",), default=True
    )
    assert Router([only]).route("whatever") == "127.0.0.1:9100"


def test_per_upstream_settings_default_to_the_global_ones():
    s = Settings(idle_timeout_s=7, upstream_ca_file="/ca.pem", upstreams=(table("a", connect_timeout_s=2),))
    (a,) = upstream_configs(s)
    assert (a.connect_timeout_s, a.idle_timeout_s, a.first_byte_timeout_s, a.ca_file) == (2.0, 7.0, 300.0, "/ca.pem")
    assert (a.max_concurrent, a.include_usage, a.key_envs) == (0, False, ())
    (b,) = upstream_configs(Settings(upstreams=(table("b", key_env="B_KEY", max_concurrent=3, include_usage=True),)))
    assert (b.key_envs, b.max_concurrent, b.include_usage) == (("B_KEY",), 3, True)


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
        ([table("a", models=["gpt-4o"]), table("b", models=["gpt-4o"])], "listed by both 'a' and 'b'"),
        ([table("a", key_env="A", key_envs=["B"])], "not both"),
        ([table("a", key_envs=["not-a-var"])], "environment variables"),
        ([table("a", key_envs=["K", "K"])], "twice"),
        ([table("a", max_concurent=5)], "unknown key(s) max_concurent"),
        ([table("a", max_concurrent=-1)], "at least 0"),
        ([table("a", idle_timeout_s=0)], "positive"),
        ([table("a", idle_timeout_s="5")], "must be a number"),
        ([table("a", include_usage="yes")], "true or false"),
    ],
)
def test_bad_upstream_tables_are_refused_with_a_clear_message(tables, message):
    with pytest.raises(ConfigError) as exc:
        upstream_configs(Settings(upstreams=tuple(tables)))
    assert message in str(exc.value)


def test_config_file_tables_are_read_and_validated_at_load(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(
        '[relay]\nidle_timeout_s = 9\n\n[[upstreams]]\nname = "sim"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'models = ["*"]\n'
    )
    s = load({}, {"MOONRELAY_CONNECT_TIMEOUT_S": "3"}, str(good))
    (sim,) = upstream_configs(s)
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
    assert [pool.pick(0).fingerprint for _ in range(4)] == [pool.keys[i].fingerprint for i in (0, 1, 2, 0)]
    k2 = pool.keys[1]
    assert pool.rest(k2, "2", now=10) == 2
    assert [pool.pick(10.5) for _ in range(3)] == [pool.keys[2], pool.keys[0], pool.keys[2]]
    assert [pool.pick(12) for _ in range(2)] == [pool.keys[0], k2]  # its rest is over: back in turn
    assert "k2" not in repr(k2) and k2.authorization == b"Bearer k2"


def test_all_keys_resting_says_when_one_wakes():
    pool = KeyPool(["k1", "k2"])
    pool.rest(pool.keys[0], None, now=0)
    pool.rest(pool.keys[1], "1", now=0)
    assert not pool.ready(0.5)
    with pytest.raises(AllKeysResting) as exc:
        pool.pick(0.5)
    assert exc.value.wake_in_s == pytest.approx(0.5)
    assert pool.ready(1.0) and pool.pick(1.0) is pool.keys[1]


def test_a_single_key_or_none_never_rests():
    one = KeyPool(["only"])
    assert one.rest(one.keys[0], "30", now=0) == 0 and one.pick(1) is one.keys[0] and one.ready(1)
    assert KeyPool([]).pick(0) is None
    assert KeyPool.from_env(["A", "B", "C"], {"A": "ka", "C": ""}).keys[0].authorization == b"Bearer ka"
    assert len(KeyPool.from_env(["A", "B"], {"A": "same", "B": "same"}).keys) == 1


def test_rest_follows_a_sane_retry_after_within_bounds():
    assert rest_seconds("3") == 3 and rest_seconds(None) == DEFAULT_REST_S and rest_seconds("soon") == DEFAULT_REST_S
    assert rest_seconds("86400") == MAX_REST_S and rest_seconds("0") == 0
    assert not math.isnan(rest_seconds("nan"))
