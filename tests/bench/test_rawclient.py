"""bench/rawclient.py against an in-process sim over real sockets: its TTFC is never below the sim's TTFT."""

from functools import partial

from bench.rawclient import run_sessions
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
