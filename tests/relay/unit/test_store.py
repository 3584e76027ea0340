"""The limits store's contract (proxy/limits/_store.py): slots, windows, rests.

``store_contract`` cases hold for every store; the Redis store's tests run them against a real redis-server too.
"""

from __future__ import annotations

import pytest

from proxy.limits import LocalStore, window_bounds


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def contract_slots(store) -> None:
    a = await store.acquire("slots:x", 2)
    b = await store.acquire("slots:x", 2)
    assert a and b and a != b
    assert await store.acquire("slots:x", 2) is None
    assert await store.held("slots:x") == 2
    assert await store.acquire("slots:y", 1) is not None  # another name counts apart
    await store.release("slots:x", a)
    await store.release("slots:x", a)  # twice: ignored, not a second slot
    assert await store.held("slots:x") == 1
    c = await store.acquire("slots:x", 2)
    assert c is not None and await store.acquire("slots:x", 2) is None
    await store.release("slots:x", b)
    assert await store.held("slots:x") == 1  # free once release returned, for everyone


async def contract_windows(store) -> None:
    first = await store.hit("rpm:k", 60.0, 2)
    assert first.allowed and first.used == 1 and first.limit == 2 and 0 < first.reset_s <= 60
    assert (await store.hit("rpm:k", 60.0, 2)).allowed
    refused = await store.hit("rpm:k", 60.0, 2)
    assert not refused.allowed and refused.used == 2  # nothing added when refused
    assert not (await store.hit("tpm:k", 60.0, 10, cost=11)).allowed
    assert await store.add("tpm:k", 60.0, 7) == 7
    assert await store.add("tpm:k", 60.0, 5) == 12  # add ignores the limit: tokens already spent
    used, reset_s = await store.used("tpm:k", 60.0)
    assert used == 12 and 0 < reset_s <= 60
    never, reset_s = await store.used("never", 60.0)
    assert never == 0 and 0 < reset_s <= 60


async def contract_rests(store) -> None:
    assert await store.resting(["key:a", "key:b"]) == [0.0, 0.0]
    await store.rest("key:a", 5.0)
    await store.rest("key:a", 1.0)  # a shorter rest does not cut a longer one
    left_a, left_b = await store.resting(["key:a", "key:b"])
    assert 4.0 < left_a <= 5.0 and left_b == 0.0
    await store.clear("key:a")
    assert await store.resting(["key:a"]) == [0.0]


@pytest.mark.parametrize("case", [contract_slots, contract_windows, contract_rests])
async def test_local_store_contract(case) -> None:
    await case(LocalStore(FakeClock()))


async def test_windows_are_epoch_aligned_and_start_again_at_zero() -> None:
    clock = FakeClock(120.0 * 1000 + 59.5)  # half a second before a minute ends
    store = LocalStore(clock)
    hit = await store.hit("rpm:k", 60.0, 1)
    assert hit.allowed and hit.reset_s == pytest.approx(0.5)
    assert not (await store.hit("rpm:k", 60.0, 1)).allowed
    clock.now += 0.5  # the next minute
    again = await store.hit("rpm:k", 60.0, 1)
    assert again.allowed and again.used == 1 and again.reset_s == pytest.approx(60.0)


async def test_rests_end_by_the_clock() -> None:
    clock = FakeClock()
    store = LocalStore(clock)
    await store.rest("upstream:a", 2.0)
    clock.now += 1.5
    assert await store.resting(["upstream:a"]) == [pytest.approx(0.5)]
    clock.now += 0.5
    assert await store.resting(["upstream:a"]) == [0.0]


def test_window_bounds() -> None:
    assert window_bounds(125.0, 60.0) == (2, 55.0)
    assert window_bounds(120.0, 60.0) == (2, 60.0)
