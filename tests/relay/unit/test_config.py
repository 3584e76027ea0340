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
    from proxy.edge import create_app, worker_config

    app = create_app(Settings())
    assert app.config["RESPONSE_TIMEOUT"] is None  # Quart's 60 s would cut long completions
    config = worker_config(Settings())
    assert config.backlog >= 4096  # hypercorn's 100 resets connection storms
    assert config.keep_alive_timeout >= 60  # hypercorn's 5 s


def test_paths_in_a_config_file_are_read_from_its_folder_and_flags_from_the_working_directory(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "relay.toml").write_text(
        'api_keys_file = "keys.txt"\nupstream_ca_file = "/etc/ca.pem"\n\n'
        '[[upstreams]]\nname = "a"\nbase_url = "https://a.example/v1"\nca_file = "../ca/a.pem"\n'
    )
    s = load({}, {}, str(conf / "relay.toml"))
    assert s.api_keys_file == str(conf / "keys.txt") and s.upstream_ca_file == "/etc/ca.pem"
    assert s.upstreams[0]["ca_file"] == str(conf / "../ca/a.pem")
    flagged = load({"api_keys_file": "mine.txt"}, {"MOONRELAY_UPSTREAM_CA_FILE": "ca.pem"}, str(conf / "relay.toml"))
    assert (flagged.api_keys_file, flagged.upstream_ca_file) == ("mine.txt", "ca.pem")  # the user's own folder


@pytest.mark.parametrize(
    "text, says",
    [
        ('workers = 2\nbind = "127.0.0.1:0\n', "relay.toml, line 2, column 20: Illegal character"),
        ("backlog = 64\nwrokers = 2\n", "relay.toml, line 2: unknown setting 'wrokers' (did you mean 'workers'?)"),
        ("[relya]\nworkers = 2\n", "relay.toml, line 1: unknown table [relya] (did you mean 'relay'?)"),
        ('[state]\nurl = "redis://x"\ntimeout = 1\n', "line 3: unknown setting 'timeout' (did you mean 'timeout_s'?)"),
        ("workers = 2\n[relay]\nbacklog = 9\n", "relay.toml: settings both at the top level and in [relay]"),
        ('workers = "two"\n', "relay.toml: workers: expected a number, got 'two'"),
    ],
)
def test_config_file_mistakes_name_the_file_the_line_and_the_closest_name(tmp_path, text, says):
    path = tmp_path / "relay.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as exc:
        load({}, {}, str(path))
    assert str(exc.value).startswith(str(path)) and says in str(exc.value), exc.value


def test_an_unknown_setting_names_the_closest_one():
    with pytest.raises(ValueError, match=r"unknown setting 'state_lease' \(did you mean 'state_lease_s'\?\)"):
        Settings().with_overrides({"state_lease": "3"})
