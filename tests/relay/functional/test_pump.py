"""The pump (proxy/transport/_pump.py): parked streams relayed from one task, handed back for all else."""

import os
import socket
from collections import Counter

import h11
import httpx
import pytest
import trio
import trio.testing

from proxy.transport import RESUME, WOKEN, Pump
from tests.conftest import start_relay, start_sim
from tests.support.scripted import ScriptedServer, read_request

CHAT = {"model": "moonshot-v1-8k", "stream": True, "messages": [{"role": "user", "content": "hi"}],
        "sim_deterministic": True}


class TaskSteps(trio.abc.Instrument):
    """How many times each task ran (a task switch each)."""

    def __init__(self) -> None:
        self.steps: Counter = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] += 1


@pytest.fixture
async def task_steps():
    instrument = TaskSteps()
    trio.lowlevel.add_instrument(instrument)
    yield instrument.steps
    trio.lowlevel.remove_instrument(instrument)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


class Reads:
    """A step that reads its socket; it hands the stream back at b"end" (or raises at b"boom")."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.got: list[bytes] = []

    def __call__(self, now: float) -> object:
        data = os.read(self.sock.fileno(), 100)
        self.got.append(data)
        if data == b"boom":
            raise ValueError("a bug in a step")
        return "ended" if data == b"end" else None


async def _park(pump: Pump, fd: int, step, results: list) -> None:
    try:
        results.append(await pump.park(fd, step))
    except BaseException as exc:
        results.append(exc)
        raise


async def _parked(nursery, sock: socket.socket) -> tuple[Pump, Reads, list]:
    """A running pump with one task parked on ``sock``: the pump, the step, what the park returned (or raised)."""
    pump = Pump()
    await nursery.start(pump.run)
    step, results = Reads(sock), []
    nursery.start_soon(_park, pump, sock.fileno(), step, results)
    await trio.testing.wait_all_tasks_blocked()
    return pump, step, results


async def _send(sock: socket.socket, data: bytes) -> None:
    sock.send(data)
    await trio.testing.wait_all_tasks_blocked()


async def test_each_read_runs_in_the_pump_and_the_parked_task_wakes_once(nursery, pair, task_steps):
    a, b = pair
    pump, step, results = await _parked(nursery, b)
    (parked,) = [task for task in task_steps if task.name.endswith("_park")]
    for n in range(5):
        await _send(a, b"chunk %d" % n)
    assert step.got == [b"chunk %d" % n for n in range(5)] and results == []
    assert task_steps[parked] == 1  # it has not run since it parked
    await _send(a, b"end")
    assert results == ["ended"]
    assert task_steps[parked] == 2  # woken once, for the hand-back
    assert pump.steps == 6


async def test_wake_hands_the_stream_back_and_its_socket_leaves_the_set(nursery, pair):
    a, b = pair
    pump, step, results = await _parked(nursery, b)
    assert pump.wake(b.fileno()) is True
    await trio.testing.wait_all_tasks_blocked()
    assert results == [WOKEN]
    assert pump.wake(b.fileno()) is False  # no longer parked
    await _send(a, b"after")
    assert step.got == []  # the pump no longer reads it


async def test_a_cancelled_park_leaves_the_set_at_once(nursery, pair):
    a, b = pair
    pump = Pump()
    await nursery.start(pump.run)
    step, results = Reads(b), []
    async with trio.open_nursery() as inner:
        inner.start_soon(_park, pump, b.fileno(), step, results)
        await trio.testing.wait_all_tasks_blocked()
        inner.cancel_scope.cancel()
    assert type(results[0]) is trio.Cancelled
    await _send(a, b"after")
    assert step.got == [] and not pump.wake(b.fileno())


async def test_a_step_that_raises_raises_in_its_own_task_and_the_pump_goes_on(nursery, pair):
    a, b = pair
    c, d = socket.socketpair()
    with c, d:
        d.setblocking(False)
        pump = Pump()
        await nursery.start(pump.run)
        broken, fine, results, others = Reads(b), Reads(d), [], []

        async def park_broken() -> None:
            with pytest.raises(ValueError, match="a bug in a step"):
                await _park(pump, b.fileno(), broken, results)

        nursery.start_soon(park_broken)
        nursery.start_soon(_park, pump, d.fileno(), fine, others)
        await trio.testing.wait_all_tasks_blocked()
        await _send(a, b"boom")
        assert type(results[0]) is ValueError
        await _send(c, b"end")
        assert others == ["ended"]


async def test_when_the_pump_stops_parked_streams_resume_on_their_own(pair):
    a, b = pair
    pump = Pump()
    step, results = Reads(b), []
    with trio.fail_after(5):  # a stream left parked would hold the nursery forever
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as pumping:
                await pumping.start(pump.run)
                nursery.start_soon(_park, pump, b.fileno(), step, results)
                await trio.testing.wait_all_tasks_blocked()
                pumping.cancel_scope.cancel()
    assert results == [RESUME]
    assert not pump.running
    assert await pump.park(b.fileno(), step) == RESUME  # a stopped pump parks nothing


# -- through the relay -------------------------------------------------------------------------------------------


def _handler_steps(task_steps: Counter) -> int:
    """Task switches of the relay's request tasks (hypercorn's ``_handle``, which runs the whole call)."""
    return sum(n for task, n in task_steps.items() if task.name.endswith("task_group._handle"))


@pytest.mark.fast_paths("the pump serves directly written streams")
@pytest.mark.parametrize("pump", ["on", "off"])
async def test_a_relayed_stream_switches_tasks_per_chunk_only_without_the_pump(nursery, task_steps, pump):
    sim = await start_sim(nursery, chunks=60, interval=0.002)
    root = await start_relay(nursery, sim.url, pump=pump, heartbeat_s=0)
    async with httpx.AsyncClient(timeout=10) as client:
        expected = (await client.post(sim.url + "/chat/completions", json=CHAT)).content
        task_steps.clear()
        got = await client.post(root + "/v1/chat/completions", json=CHAT)
    assert got.status_code == 200 and got.content == expected
    steps = _handler_steps(task_steps)
    if pump == "on":
        assert steps < 30, steps  # set-up, the first byte, the end: not one per chunk
    else:
        assert steps >= 60, steps


class Parks:
    """Every park of a relayed stream in the relay's pump: set when one began, and what each returned."""

    def __init__(self) -> None:
        self.began = trio.Event()
        self.returned: list[object] = []


@pytest.fixture
def parks(monkeypatch):
    """The relay's own parks, recorded on their way through (the pump runs unchanged)."""
    seen = Parks()
    park = Pump.park

    async def recording(self: Pump, fd: int, step) -> object:
        seen.began.set()  # the socket joins the set before the park's first wait: no task runs in between
        result = await park(self, fd, step)
        seen.returned.append(result)
        return result

    monkeypatch.setattr(Pump, "park", recording)
    return seen


class _EndsThenCloses(ScriptedServer):
    """An NDJSON-bound stream whose last read is ``[DONE]`` with the body's terminator, then the upstream closes:
    a read that completes the body with nothing to write must end it, not wait on (and read the EOF)."""

    def __init__(self, parks: Parks) -> None:
        self.parks = parks

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            if not await read_request(conn, stream):
                return
            head = conn.send(h11.Response(status_code=200, headers=[("content-type", "text/event-stream"),
                                                                    ("transfer-encoding", "chunked")]))
            await stream.send_all(head + conn.send(h11.Data(data=b'data: {"n": 1}\n\n')))
            with trio.fail_after(5):
                await self.parks.began.wait()  # the relay waits for the rest in its pump
            assert self.parks.returned == []  # and is parked there still
            await stream.send_all(conn.send(h11.Data(data=b"data: [DONE]\n\n")) + conn.send(h11.EndOfMessage()))


@pytest.mark.fast_paths("the pump serves directly written streams")
async def test_a_body_that_ends_with_nothing_to_write_ends_cleanly(nursery, parks):
    upstream = await nursery.start(_EndsThenCloses(parks).serve)
    root = await start_relay(nursery, upstream.url, heartbeat_s=0, retries=0)
    async with httpx.AsyncClient(timeout=10) as client:
        got = await client.get(root + "/chat/completions", params={"content": "hi"})
    assert got.status_code == 200
    assert got.content == b'{"n": 1}\n'  # no error line after it
    assert len(parks.returned) == 1 and parks.returned[0] not in (RESUME, WOKEN)  # the pump's read ended it
