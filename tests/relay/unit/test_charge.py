"""A client key's token charge without sockets: the reserve and the charge's rules (proxy/limits/_charge.py), the
reserve held in and taken back from the windows, and its settling, in a LocalStore whose clock is trio's virtual
one (proxy/limits/_tokens.py), so a window's end is where the test puts it."""

from __future__ import annotations

import trio

from proxy.limits import DEFAULT_RESERVE_TOKENS, Charge, ClientKey, ClientLimits, LocalStore, Refusal
from proxy.limits._tokens import EDGE_S
from proxy.protocol import ReportedUsage

MINUTE_START = 1_000_020.0  # a multiple of 60: a minute starts here


def key(**limits) -> ClientKey:
    return ClientKey(id="0123456789abcdef", label="web", **limits)


def test_the_reserve_is_the_prompts_estimate_and_the_output_asked_for():
    chat = "/v1/chat/completions"
    assert Charge.of(chat, {"max_tokens": 300}, 101, 1024).reserve == 26 + 300  # ceil(101 / 4)
    assert Charge.of(chat, {"max_completion_tokens": 50, "max_tokens": 300}, 8, 1024).output == 50
    assert Charge.of(chat, {"max_tokens": 100, "n": 3}, 0, 1024).output == 300
    assert Charge.of(chat, {}, 0, 1024).output == 1024  # no maximum: the default
    assert Charge.of(chat, {"max_tokens": "lots", "n": -1}, 0, 7).output == 7
    assert Charge.of("/v1/responses", {"max_output_tokens": 64}, 40, 1024).reserve == 10 + 64
    assert Charge.of("/v1/completions", None, 400, 1024).reserve == 100 + 1024  # a body not read: the default
    embeddings = Charge.of("/v1/embeddings", {"input": "x"}, 400, 1024)
    assert (embeddings.prompt, embeddings.output) == (100, 0)  # nothing generated
    files = Charge.of("/v1/files", None, 4_000_000, 1024)
    assert files.reserve == 0  # a route that consumes no tokens reserves none (its usage, if any, is still charged)
    assert Charge.of(chat, {"stream": True}, 0, 1).streamed and not Charge.of(chat, {"stream": "yes"}, 0, 1).streamed
    assert DEFAULT_RESERVE_TOKENS == 1024


def test_the_charge_when_the_call_ends():
    def charge(streamed: bool) -> Charge:
        return Charge(prompt=20, output=300, streamed=streamed)

    reported = charge(True)
    reported.meter.events = 900
    reported.meter.usage = ReportedUsage(5, 7, None)
    assert reported.tokens() == 12  # the usage, whatever was counted
    refused = charge(False)
    refused.status = 429
    assert refused.tokens() == 0  # an error status: nothing
    left = charge(True)
    left.meter.events = 41
    assert left.tokens() == 20 + 41  # a stream without usage: the prompt's estimate and an event a token
    left.status = 200
    assert left.tokens() == 61
    assert charge(False).tokens() == 320  # not streamed, no usage: the whole reserve


class Minute:
    """A key with ``tpm=1000`` admitted ``at`` seconds into a minute of a LocalStore on trio's virtual clock."""

    def __init__(self, store: LocalStore, limits: ClientLimits, k: ClientKey) -> None:
        self.store, self.limits, self.key = store, limits, k

    async def admitted(self):
        got = await self.limits.admit(self.key)
        assert not isinstance(got, Refusal)
        return got

    async def used(self) -> int:
        return (await self.store.used(f"key:{self.key.id}:tpm", 60))[0]


async def minute(mock_clock, at: float, **limits) -> Minute:
    store = LocalStore(lambda: MINUTE_START + trio.current_time())
    mock_clock.jump(at)
    return Minute(store, ClientLimits(store), key(**{"tpm": 1000, **limits}))


async def test_the_reserve_is_held_at_once_and_refused_when_the_window_is_full(mock_clock):
    m = await minute(mock_clock, 10, budget=5000, budget_s=3600)
    holds = [await m.admitted() for _ in range(6)]  # all admitted while nothing is charged yet
    verdicts = [await m.limits.reserve(a, 300) for a in holds]
    assert [v is None for v in verdicts] == [True] * 4 + [False] * 2  # 0, 300, 600, 900 < 1000; then full
    refused = verdicts[4]
    assert refused.limit == "tpm" and refused.response_headers()["retry-after"] == "50"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert await m.store.used(f"key:{m.key.id}:tpm", 60) == (1200, 50)  # the refused reserves were taken back
    assert (await m.store.used(f"key:{m.key.id}:budget:3600", 3600))[0] == 1200
    for a, tokens in zip(holds, (10, 20, 30, 40, 0, 0), strict=True):
        await a.settle(tokens)  # each charge replaces its reserve
    assert await m.used() == 100
    assert (await m.store.used(f"key:{m.key.id}:budget:3600", 3600))[0] == 100


async def test_a_charge_settled_in_a_later_window_goes_there_whole(mock_clock):
    m = await minute(mock_clock, 30)
    hold = await m.admitted()
    assert await m.limits.reserve(hold, 400) is None
    mock_clock.jump(40)  # the next minute: the reserve stays in the one that ended
    await hold.settle(250)
    assert await m.used() == 250


async def test_near_a_windows_end_a_reserve_is_never_taken_back(mock_clock):
    """Within EDGE_S of the end the store may already be in the next window: a take-back there could drive that one
    below what it holds, so the reserve stays (counted over, never under)."""
    m = await minute(mock_clock, 60 - EDGE_S / 2)
    hold = await m.admitted()
    assert await m.limits.reserve(hold, 400) is None
    await hold.settle(250)
    assert await m.used() == 650  # the reserve and the charge, until the minute ends
    mock_clock.jump(EDGE_S)
    assert await m.used() == 0


async def test_a_settle_twice_and_a_reserve_of_nothing_change_nothing(mock_clock):
    m = await minute(mock_clock, 5)
    hold = await m.admitted()
    assert await m.limits.reserve(hold, 0) is None
    assert await m.used() == 0
    assert await m.limits.reserve(hold, 100) is None
    await hold.settle(None)  # nothing charged: the reserve is given back
    await hold.settle(70)  # a second settle adds its tokens, takes no reserve back twice
    assert await m.used() == 70
