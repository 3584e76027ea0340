"""The shared deadline timer, on virtual time (all waiting here is in-process)."""

import pytest
import trio

from loadtest.timer import DeadlineTimer


@pytest.fixture
async def timer(nursery):
    timer = DeadlineTimer()
    await nursery.start(timer.run)
    return timer


async def test_wakes_in_deadline_order(timer, nursery, autojump_clock):
    woke = []
    start = trio.current_time()

    async def sleeper(name, delay):
        await timer.sleep_until(start + delay)
        woke.append((name, trio.current_time() - start))

    async with trio.open_nursery() as n:
        for name, delay in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0)]:
            n.start_soon(sleeper, name, delay)
    # Equal deadlines wake in one batch, in whatever order trio's scheduler runs them.
    assert [name.rstrip("2") for name, _ in woke] == ["a", "a", "b", "c"]
    for name, at in woke:
        assert at == pytest.approx({"a": 1.0, "a2": 1.0, "b": 2.0, "c": 3.0}[name])


async def test_new_earlier_deadline_wakes_timer(timer, autojump_clock):
    start = trio.current_time()
    async with trio.open_nursery() as n:
        n.start_soon(timer.sleep_until, start + 100.0)
        await trio.sleep(1.0)
        await timer.sleep_until(trio.current_time() + 0.5)
        assert trio.current_time() - start == pytest.approx(1.5)
        n.cancel_scope.cancel()


async def test_past_deadline_is_a_checkpoint(timer):
    with trio.CancelScope() as scope:
        scope.cancel()
        await timer.sleep_until(trio.current_time() - 1)
        pytest.fail("not a checkpoint")
    assert scope.cancelled_caught


async def test_cancellation(timer, autojump_clock):
    start = trio.current_time()
    with trio.move_on_after(1.0):
        await timer.sleep_until(start + 10.0)
    assert trio.current_time() - start == pytest.approx(1.0)
    # The dead entry is dropped when its deadline passes, without waking anyone.
    woken = timer.woken
    await trio.sleep(10.0)
    assert timer.woken == woken
    assert len(timer) == 0


async def test_many_waiters_one_batch(timer, autojump_clock):
    start = trio.current_time()
    done = []

    async def sleeper(i):
        await timer.sleep_until(start + 1.0 + (i % 10) * 0.1)
        done.append(i)

    async with trio.open_nursery() as n:
        for i in range(5000):
            n.start_soon(sleeper, i)
        await trio.sleep(0.5)
        # Cancelling half of them leaves the others on time.
        n.cancel_scope.deadline = start + 1.45
    assert sorted(done) == sorted(i for i in range(5000) if i % 10 <= 4)
    assert timer.woken == 2500


async def test_sleep_without_running_timer_fails():
    with pytest.raises(RuntimeError):
        await DeadlineTimer().sleep_until(trio.current_time() + 1)


async def test_stopping_timer_fails_waiters(autojump_clock):
    timer = DeadlineTimer()
    scope = trio.CancelScope()

    async def run_timer(*, task_status):
        with scope:
            await timer.run(task_status=task_status)

    async def stop_soon():
        await trio.sleep(1)
        scope.cancel()

    async with trio.open_nursery() as n:
        await n.start(run_timer)
        n.start_soon(stop_soon)
        with pytest.raises(RuntimeError, match="stopped"):
            await timer.sleep_until(trio.current_time() + 5)
