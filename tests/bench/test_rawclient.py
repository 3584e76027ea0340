"""bench/rawclient.py against an in-process sim over real sockets: its TTFC is never below the sim's TTFT."""

import time
from functools import partial

from bench.rawclient import describe, run_phased, run_sessions, sim_send_ns
from loadtest.sim import SimConfig, serve_sim

TTFT_S = 0.2


async def test_twenty_sessions_measure_at_least_the_sims_ttft(nursery):
    server = await nursery.start(partial(serve_sim, SimConfig(port=0, ttft=TTFT_S, chunks=3, interval=0.01)))
    ttfc, own = await run_sessions(server.url, 20)
    assert None not in ttfc and None not in own and len(ttfc) == len(own) == 20
    assert min(own) >= TTFT_S * 1e9
    assert max(ttfc) < (TTFT_S + 2.0) * 1e9  # not the whole stream, nor a stall
    # From the common start, each session also counts the client's start-up queue ahead of it: never less.
    assert all(c >= o for c, o in zip(ttfc, own, strict=True))


async def test_a_failed_session_is_none(nursery):
    server = await nursery.start(partial(serve_sim, SimConfig(port=0, ttft=0, chunks=1, interval=0,
                                                              require_key="sk-right")))
    assert await run_sessions(server.url, 2, api_key="sk-wrong") == ([None, None], [None, None])
    assert None not in (await run_sessions(server.url, 2, api_key="sk-right"))[0]


async def test_phases_come_in_order_and_the_read_lag_is_read_from_the_sims_stamp(nursery):
    server = await nursery.start(partial(serve_sim, SimConfig(port=0, ttft=TTFT_S, chunks=2, interval=0.01)))
    due, phases = await run_phased(server.url, 5)
    assert None not in phases
    for p in phases:
        assert due <= p.start <= p.sent <= p.headers <= p.first
        assert p.first - p.sent >= TTFT_S * 1e9
    doc = describe(due, phases)
    assert doc["ttfc_ns"] == [p.first - due for p in phases]
    assert doc["sent_ns"] == [p.sent - due for p in phases]
    # The first chunk was stamped by the sim before it was sent, and read after that: 0 <= lag < the TTFT.
    assert all(lag is not None and 0 <= lag < TTFT_S * 1e9 for lag in doc["read_lag_ns"])


def test_sim_send_stamp_is_read_from_the_first_events_bytes():
    data = b'data: {"id":"x","choices":[],"sim":{"ns":123456789,"seq":0,"of":3}}\n\n'
    assert sim_send_ns(data) == 123456789
    assert sim_send_ns(b'data: {"id":"x","choices":[]}\n\n') is None
    assert describe(0, [None]) == {"ttfc_ns": [None], "ttfc_own_ns": [None], "sent_ns": [None],
                                   "headers_ns": [None], "read_lag_ns": [None]}


async def test_sessions_wait_for_a_start_given_ahead(nursery):
    server = await nursery.start(partial(serve_sim, SimConfig(port=0, ttft=0, chunks=1, interval=0)))
    start = time.monotonic_ns() + 200_000_000
    due, phases = await run_phased(server.url, 3, start_ns=start)
    assert due == start
    assert all(p is not None and p.start >= start for p in phases)
