"""The relay object (proxy/relay/_relay.py ``Relay``) without sockets: admission, routing and the drain's 503."""

from types import SimpleNamespace

import pytest
import trio

from proxy.config import Settings
from proxy.errors import InvalidRequest, Refused
from proxy.relay import Relay, Streams
from proxy.state import RequestState


class FakeUpstream:
    def __init__(self, name: str, max_concurrent: int = 0) -> None:
        self.name = name
        self.config = SimpleNamespace(max_concurrent=max_concurrent, include_usage=False)
        self.active = 0

    store = SimpleNamespace(shared=False)

    async def take(self) -> str | None:
        if self.config.max_concurrent and self.active >= self.config.max_concurrent:
            return None
        self.active += 1
        return "lease"

    async def give_back(self, lease: str) -> None:
        self.active -= 1


class FakeUpstreams:
    def __init__(self, **by_model: FakeUpstream) -> None:
        self.by_model = by_model

    def route(self, model: str):
        return self.by_model.get(model)


def make_relay(max_streams: int = 0, **by_model: FakeUpstream) -> Relay:
    return Relay(Settings(max_streams=max_streams), FakeUpstreams(**by_model), Streams(max_streams))


def test_route_notes_the_upstream_or_refuses_an_unknown_model():
    kimi = FakeUpstream("kimi")
    relay = make_relay(k=kimi)
    state = RequestState()
    assert relay.route(state, "k") is kimi and state.upstream == "kimi"
    with pytest.raises(InvalidRequest) as refused:
        relay.route(RequestState(), "gpt-9")
    assert (refused.value.status, refused.value.code) == (404, "model_not_found")


async def test_admit_takes_both_slots_and_release_gives_them_back():
    up = FakeUpstream("one", max_concurrent=1)
    relay = make_relay(max_streams=2, m=up)
    first, second, third = RequestState(), RequestState(), RequestState()
    await relay.admit(first, up)
    assert first.admitted and first.upstream_slot is up and relay.streams.active == 1 and up.active == 1
    with pytest.raises(Refused) as upstream_full:
        await relay.admit(second, up)
    assert (upstream_full.value.status, upstream_full.value.code) == (429, "upstream_concurrency_limit")
    await relay.streams.release(second)  # the worker slot it took goes back with the call, as the Observer does
    await relay.streams.release(first)
    assert relay.streams.active == 0 and up.active == 0
    await relay.admit(third, FakeUpstream("other"))
    await relay.admit(RequestState(), FakeUpstream("other"))
    with pytest.raises(Refused) as worker_full:
        await relay.admit(RequestState(), FakeUpstream("other"))
    assert (worker_full.value.status, worker_full.value.code) == (429, "relay_overloaded")


async def test_a_draining_relay_refuses_new_requests():
    relay = make_relay()
    relay.streams.draining = True
    with pytest.raises(Refused) as refused:
        await relay.admit(RequestState(), FakeUpstream("x"))
    assert (refused.value.status, refused.value.code) == (503, "shutting_down")


async def test_a_drain_that_runs_out_of_time_is_refused_with_503():
    relay = make_relay()
    started = trio.Event()

    async def never_answers():
        started.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        answers = []

        async def ask():
            try:
                await relay.until_answered(never_answers)
            except Refused as exc:
                answers.append(exc)

        nursery.start_soon(ask)
        await started.wait()
        relay.streams.stop_all()
    assert (answers[0].status, answers[0].code) == (503, "shutting_down")
    assert not relay.streams.waiting
