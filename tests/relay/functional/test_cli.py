"""The relay as a user starts it (``python -m proxy``, ``./dev moonrelay``): mistakes on the command line and in a
config file are one line and exit status 2; a second relay never shares a served port; the reload signal never
stops a relay; reloads and the --state Redis say what happened in one line; paths resolve from where the user is
(command line) and from the config file (its own paths)."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading

import httpx
import psutil
import pytest

from tests.support import ROOT
from tests.support.children import LineReader, assert_one_line_errors, start_child, stop_child

LISTENING = "moonrelay listening on "
NOWHERE = "http://127.0.0.1:1/v1"  # an upstream that refuses: these tests never reach one


def relay_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "proxy", "--access-log", "off", "--upstream", NOWHERE, *args]


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def fresh_connections() -> httpx.Client:
    """A new connection per request, so the kernel spreads them over every socket on the port."""
    return httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))


def test_command_line_and_config_mistakes_are_one_line_with_status_2(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    (tmp_path / "syntax.toml").write_text('workers = 2\nbind = "127.0.0.1:0\n')
    (tmp_path / "typo.toml").write_text("backlog = 64\nwrokers = 2\n")
    cases = [
        (["--bind", "localhost"], "bind: expected HOST:PORT"),
        (["--bind", "127.0.0.1:99999"], "0-65535"),
        (["--bind", "no-such-host.invalid:8117"], "unknown host"),
        (["--bind", f"127.0.0.1:{port}"], "in use"),
        (["--bind", f"127.0.0.1:{port}", "--workers", "2"], "in use"),
        (["--config", "syntax.toml"], "syntax.toml, line 2"),
        (["--config", "typo.toml"], "typo.toml, line 2: unknown setting 'wrokers' (did you mean 'workers'?)"),
        (["--config", "missing.toml"], "missing.toml"),
        (["--bnd", "127.0.0.1:0"], "did you mean --bind?"),
    ]
    try:
        assert_one_line_errors([(relay_argv(*args), says) for args, says in cases], tmp_path, starts="moonrelay: ")
    finally:
        taken.close()


def test_a_second_relay_on_a_served_port_fails_and_the_first_keeps_every_request(tmp_path):
    with open(tmp_path / "first.err", "w") as err:
        first, root = start_child(relay_argv("--workers", "2", "--bind", "127.0.0.1:0", "--api-keys", "mr-first-key"),
                                  LISTENING, child_env(), err)  # fmt: skip
    try:
        port = root.rsplit(":", 1)[1]
        second = subprocess.Popen(relay_argv("--workers", "2", "--bind", f"127.0.0.1:{port}"), env=child_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        killer = threading.Timer(30, second.kill)
        killer.start()
        try:
            out, err = second.communicate()
        finally:
            killer.cancel()
        assert LISTENING not in out, "the second relay joined the first one's port"
        lines = err.splitlines()
        assert second.returncode == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"moonrelay: cannot listen on 127.0.0.1:{port}: the port is in use"), err
        with fresh_connections() as client:  # keyless: only the first relay, which needs a key, answers them
            assert [client.get(root + "/v1/models").status_code for _ in range(20)] == [401] * 20
    finally:
        stop_child(first)


@pytest.mark.parametrize("keys_file", [False, True], ids=["no-keys-file", "keys-file"])
@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_to_the_supervisor_or_any_worker_never_stops_the_relay(tmp_path, workers, keys_file):
    args = ["--workers", str(workers), "--bind", "127.0.0.1:0"]
    keys = tmp_path / "keys.txt"
    if keys_file:
        keys.write_text("mr-before-sighup\n")
        args += ["--api-keys-file", str(keys)]
    relay, root = start_child(relay_argv(*args), LISTENING, child_env(), subprocess.PIPE)
    log = LineReader(relay.stderr)
    try:
        workers_pids = [p.pid for p in psutil.Process(relay.pid).children()] if workers > 1 else []
        if keys_file:
            keys.write_text("mr-after-sighup\n")
        # One at a time (signals of one kind coalesce): the supervisor passes its SIGHUP to every worker.
        for pid, reloads in [(relay.pid, workers), *((pid, 1) for pid in workers_pids)]:
            os.kill(pid, signal.SIGHUP)
            lines = log.wait_for("SIGHUP", count=reloads)
            says = "client keys reloaded" if keys_file else "config reloaded"
            assert all(says in line for line in lines), lines
        assert relay.poll() is None and all(psutil.pid_exists(pid) for pid in workers_pids)
        with fresh_connections() as client:
            for _ in range(8):
                assert client.get(root + "/healthz").status_code == 200
                if keys_file:  # every worker reads the new file
                    old = client.get(root + "/v1/models", headers={"authorization": "Bearer mr-before-sighup"})
                    assert old.status_code == 401
                    new = client.get(root + "/v1/models", headers={"authorization": "Bearer mr-after-sighup"})
                    assert new.status_code != 401
    finally:
        stop_child(relay)
        log.close()
    assert relay.returncode == 0


def test_the_state_redis_says_once_when_it_is_connected_and_when_it_answers_again(redis_server):
    """One line per worker when --state's Redis answers at start, one when it stops, one when it answers again."""
    args = ["--bind", "127.0.0.1:0", "--state", redis_server.url, "--api-keys", "mr-key", "--key-rpm", "1000"]
    relay, root = start_child(relay_argv(*args), LISTENING, child_env(), subprocess.PIPE)
    log = LineReader(relay.stderr)
    try:
        assert log.wait_for("state: ")[0].endswith(f"state: shared on {redis_server.url}"), log.seen
        keyed = {"authorization": "Bearer mr-key"}
        with fresh_connections() as client:
            redis_server.pause()
            try:
                assert client.get(root + "/v1/models", headers=keyed).status_code != 401  # counted locally
                assert "unavailable" in log.wait_for("state: ")[0]
            finally:
                redis_server.resume()
            assert "answers again" in log.wait_for("state: ")[0]  # the worker's probe, every --state-probe-s
    finally:
        stop_child(relay)
        log.close()
    assert len([line for line in log.seen if "state: " in line]) == 3, log.seen


def _dev_venv_ready() -> bool:
    """Whether ./dev would run at once: its .venv is built for this pyproject.toml and requirements.lock."""
    digest = hashlib.sha1((ROOT / "pyproject.toml").read_bytes() + (ROOT / "requirements.lock").read_bytes())
    return (ROOT / ".venv" / f".installed-{digest.hexdigest()[:12]}").exists()


@pytest.mark.skipif(not _dev_venv_ready(), reason="./dev has not built .venv for this pyproject.toml and lock")
def test_dev_runs_where_the_user_is_and_a_config_files_paths_are_its_own(tmp_path):
    """``./dev moonrelay --config conf/relay.toml`` from another folder: the flag's path is the user's, the keys
    file named in the config file is next to it."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "keys.txt").write_text("mr-from-conf\n")
    (conf / "relay.toml").write_text(
        f'bind = "127.0.0.1:0"\nupstream = "{NOWHERE}"\naccess_log = "off"\napi_keys_file = "keys.txt"\n'
    )
    with open(tmp_path / "relay.err", "w") as err:
        relay, root = start_child([str(ROOT / "dev"), "moonrelay", "--config", "conf/relay.toml"], LISTENING,
                                  child_env(), err, cwd=tmp_path)  # fmt: skip
    try:
        with fresh_connections() as client:
            assert client.get(root + "/v1/models").status_code == 401
            keyed = client.get(root + "/v1/models", headers={"authorization": "Bearer mr-from-conf"})
            assert keyed.status_code != 401
    finally:
        stop_child(relay)
