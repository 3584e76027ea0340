import pytest

from proxy.__main__ import build_parser
from proxy.config import Settings, load


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    cfg = tmp_path / "relay.toml"
    cfg.write_text('[relay]\nworkers = 3\nbacklog = 100\nupstream = "http://file/v1"\n')
    env = {"MOONRELAY_BACKLOG": "200", "MOONRELAY_UPSTREAM": "http://env/v1"}
    flags = {"upstream": "http://flag/v1"}
    s = load(flags, env, str(cfg))
    assert s.upstream == "http://flag/v1"
    assert s.backlog == 200
    assert s.workers == 3
    assert s.keep_alive_s == Settings().keep_alive_s


def test_parser_only_returns_passed_flags():
    args = vars(build_parser().parse_args(["--workers", "2", "--idle-timeout-s", "1.5"]))
    assert args.pop("config") is None
    assert args == {"workers": "2", "idle_timeout_s": "1.5"}
    s = load(args, {})
    assert s.workers == 2 and s.idle_timeout_s == 1.5


def test_bad_values_are_refused():
    with pytest.raises(ValueError):
        load({"workers": "many"}, {})
    with pytest.raises(ValueError):
        load({"nonsense": "1"}, {})


def test_key_comes_from_named_env(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    assert Settings(upstream_key_env="MY_KEY").upstream_key == "sk-test"
    assert Settings().default_model == "moonshot-v1-8k"
    assert Settings().upstream == "https://api.moonshot.cn/v1"


def test_framework_defaults_that_would_cut_or_reset_streams_are_overridden():
    from proxy.app import create_app
    from proxy.server import worker_config

    app = create_app(Settings())
    assert app.config["RESPONSE_TIMEOUT"] is None  # Quart's 60 s would cut long completions
    config = worker_config(Settings())
    assert config.backlog >= 4096  # hypercorn's 100 resets connection storms
    assert config.keep_alive_timeout >= 60  # hypercorn's 5 s
