"""The admin API over HTTP to a running relay: client keys created, listed, changed, disabled and deleted while it
runs, held as digests only (in the JSON file, in Redis), every change in the access log; the keys file still in
force beside them; a key's usage so far (requests, tokens, cost); two relays on one real redis-server seeing each
other's changes within a second; and what a wrong admin key, a malformed request or a stored record of another
version gets."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from proxy.limits import RedisConnection, parse_state_url
from tests.conftest import start_relay, start_sim, wait_lines
from tests.support.children import stop_child
from tests.support.relays import settled, start_relay_process

ADMIN = "mr-admin-0123456789abcdef"
ENV = "MOONRELAY_TEST_ADMIN_KEY"
FILE_KEY = "mr-file-0123456789abcd"
CHAT = {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
PRICES = {"moonshot-v1-8k": {"input": 1000, "output": 2000}}  # the sim's answer to CHAT: 4 + 1 tokens, 6,000 µ$
AS_ADMIN = {"authorization": f"Bearer {ADMIN}"}


@pytest.fixture(autouse=True)
def admin_key(monkeypatch):
    monkeypatch.setenv(ENV, ADMIN)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def chat(client: httpx.AsyncClient, root: str, key: str) -> int:
    return (await client.post(root + "/v1/chat/completions", json=CHAT, headers=bearer(key))).status_code


async def until(client: httpx.AsyncClient, root: str, key: str, status: int, within_s: float = 1.0) -> None:
    """Until ``key`` gets ``status`` from ``root``: another relay's change reached it."""
    with trio.fail_after(within_s):
        while await chat(client, root, key) != status:  # noqa: ASYNC110 - another relay's poll of the store
            await trio.sleep(0.02)


async def test_keys_created_used_disabled_and_deleted_in_a_file_beside_the_keys_file(nursery, tmp_path,
                                                                                     access_lines) -> None:
    sim = await start_sim(nursery)
    (tmp_path / "keys").write_text(f"{FILE_KEY} name=fromfile rpm=100\n")
    store = tmp_path / "admin-keys.json"
    off = await start_relay(nursery, sim.url)
    root = await start_relay(nursery, sim.url, admin_key_env=ENV, admin_keys_file=str(store),
                             api_keys_file=str(tmp_path / "keys"), prices=PRICES)  # fmt: skip
    admin = root + "/admin/keys"
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(off + "/admin/keys", headers=AS_ADMIN)).status_code == 404  # off by default
        made = await client.post(admin, json={"name": "team", "rpm": 60, "budget": "$20/30d"}, headers=AS_ADMIN)
        key = made.json()["key"]
        key_id = made.json()["id"]
        kept = store.read_text()
        used = [await chat(client, root, key), await chat(client, root, FILE_KEY)]
        await settled(client, root)
        listed = (await client.get(admin, headers=AS_ADMIN)).json()["keys"]
        one = (await client.get(f"{admin}/{key_id}", headers=AS_ADMIN)).json()
        disabled = await client.patch(f"{admin}/{key_id}", json={"disabled": True}, headers=AS_ADMIN)
        when_disabled = await chat(client, root, key)
        changed = await client.patch(f"{admin}/{key_id}", json={"disabled": False, "rpm": None, "tpm": 9000},
                                     headers=AS_ADMIN)  # fmt: skip
        when_enabled = await chat(client, root, key)
        deleted = await client.delete(f"{admin}/{key_id}", headers=AS_ADMIN)
        when_deleted = [await chat(client, root, key), await chat(client, root, FILE_KEY)]
        lines = await wait_lines(access_lines, 11)
    assert made.status_code == 201 and made.headers["location"] == f"/admin/keys/{key_id}" and key.startswith("mr-")
    assert {k: made.json()[k] for k in ("name", "rpm", "tpm", "budget", "disabled", "source")} == {
        "name": "team", "rpm": 60, "tpm": 0, "budget": "$20/30d", "disabled": False, "source": "admin"}  # fmt: skip
    assert used == [200, 200]
    assert [(k["name"], k["source"]) for k in listed] == [("fromfile", "keys_file"), ("team", "admin")]
    assert one["usage"] == {"requests": 1, "tokens": 5, "cost": 0.006}
    assert key not in json.dumps(listed) and key not in json.dumps(one)
    assert disabled.json()["disabled"] is True and when_disabled == 401
    assert (changed.json()["rpm"], changed.json()["tpm"], when_enabled) == (0, 9000, 200)
    assert deleted.json() == {"id": key_id, "deleted": True} and when_deleted == [401, 200]
    assert key not in kept and key_id in kept  # its digest only
    assert json.loads(store.read_text())["keys"] == {}
    notes = [line["admin"] for line in lines if "admin" in line]
    assert [(n["action"], n["key_id"], n.get("fields")) for n in notes] == [
        ("create", key_id, ["budget", "name", "rpm"]), ("disable", key_id, ["disabled"]),
        ("enable", key_id, ["disabled", "rpm", "tpm"]), ("delete", key_id, None)]  # fmt: skip
    assert all(key not in json.dumps(line) for line in lines)


BAD = [
    ("POST", "", b"{not json", 400, "invalid_json"),
    ("POST", "", b"[]", 400, "invalid_body"),
    ("POST", "", b'{"nmae": "x"}', 400, "unknown_field"),
    ("POST", "", b'{"rpm": "60"}', 400, "invalid_field"),
    ("POST", "", b'{"rpm": -1}', 400, "invalid_field"),
    ("POST", "", b'{"rpm": true}', 400, "invalid_field"),
    ("POST", "", b'{"budget": "$x/30d"}', 400, "invalid_field"),
    ("POST", "", b'{"budget": "100"}', 400, "invalid_field"),
    ("POST", "", b'{"name": "no spaces"}', 400, "invalid_field"),
    ("POST", "", b'{"key": "short"}', 400, "invalid_field"),
    ("POST", "", b'{"name": "fromfile"}', 409, "name_taken"),
    ("POST", "", b'{"key": "' + FILE_KEY.encode() + b'"}', 409, "key_exists"),
    ("PATCH", "/0123456789abcdef", b'{"rpm": 1}', 404, "key_not_found"),
    ("DELETE", "/0123456789abcdef", b"", 404, "key_not_found"),
    ("PATCH", "/FILE", b'{"rpm": 1}', 409, "key_in_keys_file"),
    ("PATCH", "/FILE", b'{"key": "mr-another-0123456789"}', 400, "unknown_field"),
]


async def test_a_wrong_admin_key_and_malformed_requests_are_refused_and_change_nothing(nursery, tmp_path) -> None:
    sim = await start_sim(nursery)
    (tmp_path / "keys").write_text(f"{FILE_KEY} name=fromfile\n")
    root = await start_relay(nursery, sim.url, admin_key_env=ENV, admin_keys_file=str(tmp_path / "admin.json"),
                             api_keys_file=str(tmp_path / "keys"))  # fmt: skip
    admin = root + "/admin/keys"
    file_id = __import__("proxy.limits", fromlist=["key_id"]).key_id(FILE_KEY)
    async with httpx.AsyncClient(timeout=10) as client:
        who = [await client.get(admin, headers=h) for h in ({}, bearer("mr-wrong-admin-0123456789"), bearer(FILE_KEY))]
        as_client = await chat(client, root, ADMIN)  # the admin key is no client key
        answers = [await client.request(method, admin + where.replace("FILE", file_id), content=body,
                                        headers={**AS_ADMIN, "content-type": "application/json"})
                   for method, where, body, _, _ in BAD]  # fmt: skip
        put = await client.put(admin, json={}, headers=AS_ADMIN)
        listed = (await client.get(admin, headers=AS_ADMIN)).json()["keys"]
    assert [(r.status_code, r.json()["error"]["code"]) for r in who] == [(401, "invalid_admin_key")] * 3
    assert as_client == 401
    assert [(r.status_code, r.json()["error"]["code"]) for r in answers] == [(s, c) for *_, s, c in BAD]
    assert "expected a whole number" not in answers[3].json()["error"]["message"]  # a JSON type error says so
    assert "budget needs a period" in answers[7].json()["error"]["message"]  # the keys file's own words
    assert put.status_code == 405
    assert [k["name"] for k in listed] == ["fromfile"]  # nothing was created
    assert not (tmp_path / "admin.json").exists()


async def test_a_keys_file_of_the_admin_api_that_does_not_parse_keeps_the_keys_in_force(nursery, tmp_path,
                                                                                      caplog) -> None:
    sim = await start_sim(nursery)
    store = tmp_path / "admin.json"
    root = await start_relay(nursery, sim.url, admin_key_env=ENV, admin_keys_file=str(store))
    async with httpx.AsyncClient(timeout=10) as client:
        made = (await client.post(root + "/admin/keys", json={"name": "team"}, headers=AS_ADMIN)).json()
        store.write_text('{"moonrelay_admin_keys": 1, "keys": {')  # a hand edit gone wrong
        listed = await client.get(root + "/admin/keys", headers=AS_ADMIN)
        with trio.fail_after(2):  # the workers' next poll reads it, refuses it, and says so once
            while "the keys in force stay until it answers" not in caplog.text:  # noqa: ASYNC110 - a log handler
                await trio.sleep(0.02)
        still = await chat(client, root, made["key"])
    assert (listed.status_code, listed.json()["error"]["code"]) == (503, "admin_store_unavailable")
    assert still == 200  # the keys in force stay
    assert caplog.text.count("the keys in force stay until it answers") == 1 and "does not parse" in caplog.text


async def test_two_relays_on_one_redis_follow_each_others_changes_within_a_second(nursery, redis_server,
                                                                                  caplog) -> None:
    sim = await start_sim(nursery)
    state = {"admin_key_env": ENV, "state": redis_server.url, "prices": PRICES}
    a = await start_relay(nursery, sim.url, **state)
    redis = RedisConnection(parse_state_url(redis_server.url))
    await nursery.start(redis.run)
    # A record of another format version (a newer relay's, or garbage) is skipped, never an error or a key let in.
    await redis.call("HSET", "moonrelay:admin:keys", "ffffffffffffffff", '{"v": 99, "id": "ffffffffffffffff"}')
    await redis.call("INCR", "moonrelay:admin:keys:version")
    b = await start_relay(nursery, sim.url, **state)
    async with httpx.AsyncClient(timeout=10) as client:
        made = (await client.post(a + "/admin/keys", json={"name": "team", "tpm": 100000}, headers=AS_ADMIN)).json()
        await until(client, b, made["key"], 200)
        await chat(client, b, made["key"])
        await settled(client, b)
        usage = (await client.get(f"{a}/admin/keys/{made['id']}", headers=AS_ADMIN)).json()["usage"]
        await client.patch(f"{b}/admin/keys/{made['id']}", json={"disabled": True}, headers=AS_ADMIN)
        await until(client, a, made["key"], 401)
        await client.patch(f"{a}/admin/keys/{made['id']}", json={"disabled": False}, headers=AS_ADMIN)
        await until(client, b, made["key"], 200)
        await client.delete(f"{a}/admin/keys/{made['id']}", headers=AS_ADMIN)
        await until(client, b, made["key"], 401)
        listed = (await client.get(b + "/admin/keys", headers=AS_ADMIN)).json()["keys"]
    assert usage == {"requests": 2, "tokens": 10, "cost": 0.012}  # both requests, counted in Redis by relay b
    assert listed == []
    stored = await redis.call("HGETALL", "moonrelay:admin:keys")
    assert made["key"].encode() not in b"".join(stored)  # type: ignore[arg-type]
    assert "record 'ffffffffffffffff' in Redis" in caplog.text and "is not one this relay reads" in caplog.text


async def spread(root: str, key: str) -> list[int]:
    """Sixteen requests at once, each on a connection of its own: the kernel hands new connections to the workers
    by hash, so both see some."""
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:

        async def one() -> None:
            statuses.append(await chat(client, root, key))

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(one)
    return statuses


async def test_every_worker_of_a_relay_follows_the_keys_file_of_the_admin_api(nursery, tmp_path) -> None:
    sim = await start_sim(nursery)
    args = ["--upstream", sim.url, "--workers", "2", "--admin-key-env", ENV, "--admin-keys-file",
            str(tmp_path / "admin.json")]  # fmt: skip
    proc, root = start_relay_process(args, tmp_path / "relay.err")
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            made = (await client.post(root + "/admin/keys", json={}, headers=AS_ADMIN)).json()
            with trio.fail_after(1.0):
                while await spread(root, made["key"]) != [200] * 16:
                    pass
            await client.delete(f"{root}/admin/keys/{made['id']}", headers=AS_ADMIN)
            with trio.fail_after(1.0):
                while await spread(root, made["key"]) != [401] * 16:
                    pass
    finally:
        stop_child(proc)


def test_the_cli_refuses_an_admin_api_without_its_key_or_a_store(tmp_path, monkeypatch, capsys) -> None:
    from proxy.__main__ import main

    assert main(["--admin-key-env", "MOONRELAY_TEST_UNSET_VARIABLE"]) == 2
    assert "must hold the admin key" in capsys.readouterr().err
    monkeypatch.setenv("MOONRELAY_TEST_SHORT", "too-short")
    assert main(["--admin-key-env", "MOONRELAY_TEST_SHORT", "--admin-keys-file", str(tmp_path / "a.json")]) == 2
    assert "at least 20 characters" in capsys.readouterr().err
    assert main(["--admin-key-env", ENV]) == 2
    assert "--state or admin_keys_file" in capsys.readouterr().err
