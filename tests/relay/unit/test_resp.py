"""The store's Redis client (proxy/limits/_resp.py): RESP2 framing with plain bytes, then the connection's behaviour
on a real redis-server (replies in order under concurrency, cancellation, a server that dies)."""

from __future__ import annotations

import pytest
import trio

from proxy.limits._resp import Connection, Parser, RedisUnavailable, ReplyError, encode


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


def test_a_url_names_a_tcp_or_unix_server_and_a_database() -> None:
    tcp = Connection("redis://10.0.0.5:6380/3")
    assert (tcp.host, tcp.port, tcp.db) == ("10.0.0.5", 6380, 3)
    unix = Connection("unix:///run/redis.sock?db=2")
    assert (unix.path, unix.db) == ("/run/redis.sock", 2)
    with pytest.raises(ValueError):
        Connection("http://x")


async def test_concurrent_calls_get_their_own_replies_and_a_cancelled_one_costs_nothing(redis_server, nursery):
    conn = Connection(redis_server.url.replace("/0", "/1"))
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
    conn = Connection(redis_server.url)
    await nursery.start(conn.run)
    assert await conn.call("PING") == b"PONG"
    redis_server.kill()
    with pytest.raises(RedisUnavailable):
        await conn.call("PING")
    redis_server.start()
    assert await conn.call("PING") == b"PONG"
