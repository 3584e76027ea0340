"""Shards, sans I/O and in-process: ``--shard``/``--start-at`` parsing, the exact merge, the coordinator's barrier."""

import random
import time
from dataclasses import replace
from functools import partial

import pytest
import trio

from loadtest.coordinator import CoordinatorError, join, serve_coordinator
from loadtest.merge import merge
from loadtest.record import RunData, SessionRecord
from loadtest.report import build_result
from loadtest.reportmd import shards_markdown
from loadtest.shards import ShardClock, StartMissed, parse_shard, parse_start_at

MACHINE = {"cpus": 2, "hostname": "h"}
VERSIONS = {"moonrelay": "test"}
T0 = 5_000_000_000_000


def test_parse_shard_and_start_at():
    assert parse_shard("0/4") == (0, 4) and parse_shard(" 3 / 4 ") == (3, 4)
    for bad in ("4/4", "1/0", "-1/2", "1", "a/b"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    assert parse_start_at("2026-12-06T12:00:00Z") == 1_796_558_400 * 10**9
    assert parse_start_at("2026-12-06T13:00:00+01:00") == 1_796_558_400 * 10**9
    assert parse_start_at("@1796558400.5") == parse_start_at("1796558400.5") == 1_796_558_400_500_000_000
    for bad in ("2026-12-06T12:00:00", "tomorrow", ""):
        with pytest.raises(ValueError):
            parse_start_at(bad)


def test_a_missed_start_is_refused():
    clock = ShardClock(0, 2, "start-at", start_unix_ns=time.time_ns() - 10**9)
    with pytest.raises(StartMissed, match="passed"):
        clock.start_at()


def _records(n: int = 60) -> list[SessionRecord]:
    """Sessions of one run on lanes 0..3 (two shards of two lanes each), some failed, one warmup."""
    rng = random.Random(1)
    out = []
    for k in range(n):
        intended = T0 + rng.randrange(2_000_000_000)
        start = intended + rng.randrange(1_000_000)
        first = start + rng.randrange(50_000_000, 900_000_000)
        gaps = [rng.uniform(1, 40) for _ in range(rng.randrange(1, 6))]
        kind = rng.choice([None] * 8 + ["timeout", "http_429"])
        out.append(SessionRecord(
            worker=k % 4, slot=k % 20, seq=k // 20, intended_ns=intended, start_ns=start,
            connected_ns=start + 100_000 if k < 20 else None, sent_ns=start + 200_000, headers_ns=first - 1000,
            first_chunk_ns=first, end_ns=first + round(sum(gaps) * 1e6) + 1000, status=200, chunks=len(gaps) + 1,
            expected_chunks=len(gaps) + 1, done=True, bytes=100 * (len(gaps) + 1), gaps_ms=gaps,
            relay_delay_ms=[rng.uniform(0.1, 2) for _ in range(len(gaps) + 1)], prompt_tokens=rng.randrange(5, 50),
            completion_tokens=len(gaps) + 1, error_kind=kind, warmup=k == 7,
        ))
    return out


def _run(records, t0=T0, **kw) -> RunData:
    end = max(r.end_ns for r in records) + 5_000_000
    base = dict(command=["loadtest"], config={"concurrency": 20, "seed": 0}, started_unix=1.7e9, t0_ns=t0,
                t_end_ns=end, records=records, cores=2)
    return RunData(**(base | kw))


def _shift(rec: SessionRecord, d: int) -> SessionRecord:
    names = ("intended_ns", "start_ns", "connected_ns", "sent_ns", "headers_ns", "first_chunk_ns", "end_ns")
    return replace(rec, **{f: getattr(rec, f) + d for f in names if getattr(rec, f) is not None})


def _split(records, d: int = 10**12 + 12_345):
    """Two shards of one run; shard 1 on a machine whose monotonic clock reads ``d`` ns more."""
    original = _run(records)
    s0 = _run([r for r in records if r.worker < 2], config=original.config | {"shard": 0, "shards": 2},
              t_end_ns=original.t_end_ns - 3_000_000)
    s1 = _run([_shift(r, d) for r in records if r.worker >= 2], t0=T0 + d, t_end_ns=original.t_end_ns + d,
              config=original.config | {"shard": 1, "shards": 2})
    c0 = ShardClock(0, 2, "coordinator", start_unix_ns=17 * 10**17, offset_ns=40_000, uncertainty_ns=60_000,
                    t0_ns=T0, wall_at_t0_ns=17 * 10**17 - 40_000, host="h")
    c1 = ShardClock(1, 2, "coordinator", start_unix_ns=17 * 10**17, offset_ns=-2_000_000, uncertainty_ns=90_000,
                    t0_ns=T0 + d, wall_at_t0_ns=17 * 10**17 + 2_000_000, host="h")
    return original, [(c0, s0, MACHINE), (c1, s1, MACHINE)]


def test_merge_is_exact():
    original, shards = _split(_records())
    merged = merge(shards[::-1], ["b", "a"])  # in any order
    want, got = (build_result(r, machine=MACHINE, versions=VERSIONS) for r in (original, merged.run))
    for block in ("summary", "histograms", "series"):
        assert got[block] == want[block], block
    assert got["summary"]["errors_by_kind"] and got["summary"]["warmup_sessions"] == 1
    assert merged.run.warnings == [] and merged.block["missing"] == []
    rows = merged.block["per_shard"]
    assert [(r["shard"], r["source"], r["offset_ms"], r["uncertainty_ms"]) for r in rows] == [
        (0, "a", 0.04, 0.06), (1, "b", -2.0, 0.09)]
    assert merged.block["offset_spread_ms"] == pytest.approx(2.04)
    assert "aligned to within ±0.090 ms" in merged.block["note"]
    assert sum(r["sessions"] for r in rows) == want["summary"]["sessions"]
    md = "\n".join(shards_markdown(merged.block))
    assert "| 1/2 | h |" in md and "2 of 2 shards merged" in md


def test_merge_warns_of_what_does_not_add_up():
    _, (first, second) = _split(_records())
    c1, s1, m1 = second
    late = replace(c1, late_ns=250_000_000, uncertainty_ns=30_000_000)
    other = replace(s1, config=s1.config | {"concurrency": 21}, warnings=["3 connect retries"])
    merged = merge([first, (late, other, m1)])
    text = "\n".join(merged.run.warnings)
    assert "other load options than shard 0: concurrency" in text
    assert "learned its start 250 ms after it" in text and "±30.0 ms only" in text
    assert "shard 1/2: 3 connect retries" in text

    alone = merge([first])
    assert alone.block["missing"] == [1] and "shard(s) 1/2 missing" in alone.run.warnings[0]
    with pytest.raises(ValueError, match="given twice"):
        merge([first, first], ["x", "y"])
    with pytest.raises(ValueError, match="different splits"):
        merge([first, (replace(c1, shards=3), s1, m1)])


async def test_coordinator_starts_every_shard_at_one_instant(nursery):
    address = await nursery.start(partial(serve_coordinator, "127.0.0.1", 0, 3, lead_s=0.2))
    host, port = address.rsplit(":", 1)
    agreed = {}

    async def shard(i: int) -> None:
        agreed[i] = await join(host, int(port), i, 3)

    with trio.fail_after(20):
        async with trio.open_nursery() as shards:
            for i in range(3):
                shards.start_soon(shard, i)
    assert len({a.start_unix_ns for a in agreed.values()}) == 1
    # One host, one clock: each offset is zero to within its half round trip, and the starts coincide.
    for a in agreed.values():
        assert abs(a.offset_ns) <= a.rtt_ns / 2 + 1_000_000
    t0s = sorted(a.t0_ns for a in agreed.values())
    assert t0s[-1] - t0s[0] <= sum(a.rtt_ns for a in agreed.values()) / 2 + 20_000_000


async def test_coordinator_refuses_misfits_and_frees_a_leavers_index(nursery):
    done = []
    ready, finished = trio.Event(), trio.Event()

    async def serve(task_status=trio.TASK_STATUS_IGNORED):
        done.append(await serve_coordinator("127.0.0.1", 0, 2, lead_s=0.05, on_join=lambda j: ready.set(),
                                            task_status=task_status))
        finished.set()

    address = await nursery.start(serve)
    host, port = address.rsplit(":", 1)
    port = int(port)
    got = []
    with trio.fail_after(20):
        with pytest.raises(CoordinatorError, match="runs 2 shards"):
            await join(host, port, 0, 3)
        async with trio.open_nursery() as inner:

            async def shard(i: int) -> None:
                got.append(await join(host, port, i, 2))

            inner.start_soon(shard, 0)
            await ready.wait()  # shard 0 holds its index and waits for the start: a second shard 0 is refused
            with pytest.raises(CoordinatorError, match="joined already"):
                await join(host, port, 0, 2)
            # A shard 1 that leaves before it is ready gives its index back (once the coordinator saw it go).
            stream = await trio.open_tcp_stream(host, port)
            await stream.send_all(b'{"hello": {"shard": 1, "shards": 2}}\n')
            await stream.aclose()
            while True:
                try:
                    await shard(1)
                    break
                except CoordinatorError as exc:
                    assert "joined already" in str(exc)
        await finished.wait()  # the coordinator ends once every shard has its start
    assert got[0].start_unix_ns == got[1].start_unix_ns and done and len(done[0][1]) == 2


async def test_a_start_at_is_a_monotonic_instant_ahead():
    from loadtest.client import now_ns
    from loadtest.shards import ShardStart

    ahead = 5 * 10**9
    start = ShardStart(ShardClock(1, 3, "start-at", start_unix_ns=time.time_ns() + ahead))
    before = now_ns()
    t0 = await start()
    assert before < t0 <= now_ns() + ahead and start.clock.late_ns == 0 and start.clock.t0_ns == t0
    assert abs(start.clock.wall_at_t0_ns - start.clock.start_unix_ns) < 10_000_000
    assert start.labels == {"shard": "1/3"}


@pytest.mark.parametrize(("argv", "says"), [
    (["--start-at", "2099-01-01T00:00:00Z"], "--start-at needs --shard"),
    (["--shard", "0/2", "--start-at", "2020-01-01T00:00:00Z"], "in the past"),
    (["--shard", "0/2", "--start-at", "2099-01-01T00:00:00Z", "--coordinator", "h:1"], "exclude each other"),
    (["--shard", "0/2", "--baseline"], "--baseline"),
    (["--shard", "0/2", "--no-save-requests"], "requests.jsonl"),
    (["--shard", "2/2"], "0 <= i < N"),
])
def test_shard_usage_errors(argv, says, capsys):
    from loadtest.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["--url", "http://127.0.0.1:1/v1", *argv])
    assert exc.value.code == 2 and says in capsys.readouterr().err


def test_merge_of_no_shard_is_a_usage_error(tmp_path, capsys):
    from loadtest.__main__ import main

    assert main(["merge", str(tmp_path)]) == 2
    assert "no shard.json" in capsys.readouterr().err


async def test_a_shard_waits_for_a_coordinator_that_starts_after_it(nursery):
    import socket

    import trio.testing

    holder = socket.socket()  # bound, not listening: the port is ours, and connecting to it is refused
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    got = []

    async def shard(i: int) -> None:
        got.append(await join("127.0.0.1", port, i, 2, connect_within_s=30))

    with trio.fail_after(30):
        async with trio.open_nursery() as shards:
            shards.start_soon(shard, 0)
            await trio.testing.wait_all_tasks_blocked()  # its first connect was refused: it waits to try again
            holder.close()
            await nursery.start(partial(serve_coordinator, "127.0.0.1", port, 2, lead_s=0.05))
            shards.start_soon(shard, 1)
    assert len(got) == 2 and got[0].start_unix_ns == got[1].start_unix_ns


async def test_a_coordinator_whose_clock_is_ahead_still_starts_shards_after_its_lead(nursery):
    from loadtest.client import now_ns

    skew = 5 * 10**9  # the coordinator's machine reads 5 s more than this one
    address = await nursery.start(partial(serve_coordinator, "127.0.0.1", 0, 1, lead_s=0.2,
                                          clock=lambda: time.time_ns() + skew))
    host, port = address.rsplit(":", 1)
    with trio.fail_after(20):
        before = now_ns()
        agreed = await join(host, int(port), 0, 1)
    assert abs(agreed.offset_ns - skew) <= agreed.rtt_ns / 2 + 1_000_000  # measured, to within half a round trip
    # The start is 0.2 s after the join on the coordinator's clock: so on ours too, not 5 s off either way.
    assert before < agreed.t0_ns < now_ns() + 200_000_000 + agreed.rtt_ns
