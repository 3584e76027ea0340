"""The store's Redis client (proxy/limits/_resp.py): RESP2 framing with plain bytes, the ``--state`` URL
(proxy/limits/_address.py), then the connection's behaviour on a real redis-server (replies in order under
concurrency, cancellation, a server that dies, a password or an ACL user)."""

from __future__ import annotations

import pytest
import trio

from proxy.limits import StateURLError, parse_state_url
from proxy.limits._resp import (
    MAX_ARRAY,
    MAX_BULK,
    MAX_DEPTH,
    Parser,
    RedisConnection,
    RedisRefused,
    RedisUnavailable,
    ReplyError,
    encode,
)
from tests.support.redisserver import RedisServer


def test_encode_is_an_array_of_bulk_strings() -> None:
    wire = b"*5\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n" + b"$3\r\nk\r\n\r\n$3\r\n2.5\r\n"
    assert encode("EVALSHA", "ab", 1, b"k\r\n", 2.5) == wire


def test_replies_of_every_kind_split_anywhere() -> None:
    wire = b"+OK\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*3\r\n:1\r\n*1\r\n$0\r\n\r\n:-7\r\n"
    wire += b"-NOSCRIPT No matching script\r\n*-1\r\n"
    for cut in range(len(wire) + 1):  # the reply stream may arrive cut at any byte
        parser = Parser()
        parser.feed(wire[:cut])
        got = parser.replies()
        parser.feed(wire[cut:])
        got += parser.replies()
        assert got[:5] == [b"OK", 42, b"abc", None, [1, [b""], -7]]
        assert isinstance(got[5], ReplyError) and str(got[5]).startswith("NOSCRIPT") and got[6] is None


def test_a_reply_parses_up_to_its_bounds() -> None:
    parser = Parser()
    parser.feed(b"*1\r\n" * (MAX_DEPTH - 1) + b":1\r\n")
    reply = parser.replies()[0]
    for _ in range(MAX_DEPTH - 1):
        assert isinstance(reply, list) and len(reply) == 1
        reply = reply[0]
    assert reply == 1
    parser.feed(b"$%d\r\n" % MAX_BULK)
    parser.feed(b"x" * MAX_BULK + b"\r\n")
    assert parser.replies() == [b"x" * MAX_BULK]


@pytest.mark.parametrize(
    "wire",
    [
        b"*1\r\n" * 5000 + b":1\r\n",  # nested far deeper than any reply the store asks for (and than Python recurses)
        b"*1\r\n" * MAX_DEPTH + b":1\r\n",
        b"$%d\r\n" % (MAX_BULK + 1),  # refused from its header, before its bytes are waited for
        b"$99999999999999999999999\r\n",
        b"*%d\r\n" % (MAX_ARRAY + 1),
        b"+" + b"a" * 70000,  # a line that never ends
        b":12x\r\n",
        b"$3\r\nabcde\r\n",  # a string longer than it said
        b"?what\r\n",
    ],
    ids=["nested-5000", "nested-bound", "bulk-bound", "bulk-huge", "array-bound", "long-line", "int", "bulk-end",
         "kind"],
)
def test_a_reply_out_of_bounds_or_not_resp_is_a_broken_connection(wire) -> None:
    parser = Parser()
    parser.feed(wire)
    with pytest.raises(RedisUnavailable, match="not RESP|out of bounds"):
        parser.replies()


def test_a_url_names_a_tcp_or_unix_server_a_database_and_credentials() -> None:
    tcp = parse_state_url("redis://10.0.0.5:6380/3")
    assert (tcp.host, tcp.port, tcp.db, tcp.username, tcp.password) == ("10.0.0.5", 6380, 3, None, None)
    assert parse_state_url("redis://redis.internal").port == 6379 and parse_state_url("redis://h/").db == 0
    secret = parse_state_url("redis://:p%40ss%2Fw@10.0.0.5:6380/3")
    assert (secret.username, secret.password, secret.shown) == (None, "p@ss/w", "redis://:***@10.0.0.5:6380/3")
    acl = parse_state_url("redis://relay:pw@[::1]:6380/1")
    assert (acl.host, acl.username, acl.password, acl.shown) == ("::1", "relay", "pw", "redis://relay:***@[::1]:6380/1")
    assert "pw" not in repr(acl)
    unix = parse_state_url("unix://:pw@/run/redis.sock?db=2")
    assert (unix.path, unix.db, unix.password, unix.shown) == ("/run/redis.sock", 2, "pw", "unix://:***@/run/redis.sock?db=2")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://:pw@h/abc", "database index"),
        ("redis://:pw@h/-1", "database index"),
        ("redis://:pw@h/1/2", "database index"),
        ("unix://:pw@/run/r.sock?db=x", "database index"),
        ("rediss://:pw@h/0", "TLS"),
        ("http://:pw@h/0", "redis://HOST:PORT/DB"),
        ("localhost:6379", "redis://HOST:PORT/DB"),
        ("redis://:pw@h/0?protocol=3", "query options"),
        ("unix://:pw@/run/r.sock?db=0&timeout=1", "query options"),
        ("redis://:pw@h/0#x", "fragment"),
        ("redis://:pw@h:99999/0", "port"),
        ("redis://:pw@h:12ab/0", "port"),
        ("redis://:pw@/0", "host"),
        ("unix://:pw@?db=0", "path"),
        ("redis://pw@h/0", "password"),  # a user without a password: maybe the password in the wrong place
        ("redis://user:@h/0", "password"),
    ],
)
def test_a_url_the_relay_cannot_use_is_refused_without_showing_its_password(url, says) -> None:
    with pytest.raises(StateURLError, match=says) as caught:
        parse_state_url(url)
    assert "pw" not in str(caught.value).replace("password", "")


async def test_concurrent_calls_get_their_own_replies_and_a_cancelled_one_costs_nothing(redis_server, nursery):
    conn = RedisConnection(parse_state_url(redis_server.url.replace("/0", "/1")))
    await nursery.start(conn.run)
    got: dict[int, object] = {}

    async def echo(i: int) -> None:
        got[i] = await conn.call("ECHO", f"n{i}")

    async with trio.open_nursery() as calls:
        for i in range(200):
            calls.start_soon(echo, i)
    assert got == {i: f"n{i}".encode() for i in range(200)}
    with trio.move_on_after(0):  # cancelled before or after its command went out: the next reply is still right
        await conn.call("ECHO", "lost")
    assert await conn.call("ECHO", "next") == b"next"
    assert await conn.call("SET", "k", "v") == b"OK"
    assert redis_server.command("EXISTS", "k") == b":0\r\n"  # it went to db 1, not the default db 0
    with pytest.raises(ReplyError):
        await conn.call("NOSUCHCOMMAND")


async def test_a_dead_server_fails_the_calls_and_a_new_one_is_reached_again(redis_server, nursery):
    conn = RedisConnection(parse_state_url(redis_server.url))
    await nursery.start(conn.run)
    assert await conn.call("PING") == b"PONG"
    redis_server.kill()
    with pytest.raises(RedisUnavailable):
        await conn.call("PING")
    redis_server.start()
    assert await conn.call("PING") == b"PONG"


@pytest.mark.parametrize("acl", [False, True], ids=["password", "acl-user"])
async def test_every_new_connection_authenticates_first(tmp_path, nursery, acl) -> None:
    if acl:
        config = ["--user", "default", "off", "--user", "relay", "on", ">pw", "~*", "&*", "+@all"]
        auth = ["relay", "pw"]
    else:
        config, auth = ["--requirepass", "pw"], ["pw"]
    server = RedisServer(tmp_path, config=config, auth=auth)
    server.start()
    try:
        user = "relay" if acl else ""
        conn = RedisConnection(parse_state_url(f"redis://{user}:pw@127.0.0.1:{server.port}/1"))
        await nursery.start(conn.run)
        assert await conn.call("SET", "k", "v") == b"OK"
        assert server.command("EXISTS", "k") == b":0\r\n"  # in db 1, not the tests' own db 0
        server.kill()
        server.start()  # the same port: a new connection, which authenticates again
        for _ in range(3):  # the call on the connection to the old server fails once
            try:
                assert await conn.call("PING") == b"PONG"
                break
            except RedisUnavailable:
                pass
        else:
            raise AssertionError("never reconnected")
        wrong = RedisConnection(parse_state_url(f"redis://{user}:wrong@127.0.0.1:{server.port}/0"))
        await nursery.start(wrong.run)
        with pytest.raises(RedisRefused, match="WRONGPASS"):
            await wrong.call("PING")
        out_of_range = RedisConnection(parse_state_url(f"redis://{user}:pw@127.0.0.1:{server.port}/99"))
        await nursery.start(out_of_range.run)
        with pytest.raises(RedisRefused, match="DB index"):
            await out_of_range.call("PING")
    finally:
        server.stop()
