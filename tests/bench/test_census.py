"""bench/census.py's pure parts: where an allocation is grouped, growth per stream, await chains, the README."""

from __future__ import annotations

import os

import trio

from bench.census import STDLIB, chain, diff, group, render, task_chains


def test_group_by_package_and_layer() -> None:
    site = "/x/.venv/lib/python3.11/site-packages"
    assert group(f"{site}/trio/_core/_run.py") == "trio"
    assert group(f"{site}/hypercorn/protocol/h11.py") == "hypercorn"
    assert group(f"{site}/yaml/reader.py") == "yaml (other)"
    assert group("/work/main/proxy/stream/_bodies.py") == "moonrelay proxy/"
    assert group("/work/main/wire/_chunked.py") == "moonrelay wire/"
    assert group(os.path.join(STDLIB, "asyncio", "events.py")) == "python stdlib"
    assert group("<frozen importlib._bootstrap>") == "python stdlib"


def test_diff_is_growth_per_stream_largest_first() -> None:
    before = {"a": 100, "b": 50, "gone": 10}
    after = {"a": 300, "b": 50, "new": 1000}
    assert diff(before, after, 10) == [("new", 100.0), ("a", 20.0)]


async def test_chains_name_each_frame_of_a_waiting_task() -> None:
    async def inner() -> None:
        await trio.sleep_forever()

    async def outer() -> None:
        await inner()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(outer)
        await trio.testing.wait_all_tasks_blocked()
        chains = task_chains()
        nursery.cancel_scope.cancel()
    [waiting] = [c for c in chains if "outer" in c]
    assert waiting.startswith("test_chains_name_each_frame_of_a_waiting_task.<locals>.outer → ")
    assert "inner → sleep_forever" in waiting
    assert chain(None) == ""


def test_render_shows_every_table() -> None:
    result = {"streams": 2000, "command": "python -m bench.census", "git": "abc1234", "when": "2026-12-04T00:00:00",
              "python": "3.11.7", "alloc_per_stream": 1000.0, "objects_per_stream": 10.0,
              "by_package": [("trio", 600.0), ("h11", 400.0)], "by_line": [("trio/_core/_run.py:10", 50.0)],
              "tasks_by_chain": [("a → b", 1.0)],
              "objects_by_type": [("builtins.set", 2.0)], "bytes_by_type": [("builtins.set", 432.0)]}  # fmt: skip
    text = render(result)
    assert "(2,000 streams held)" in text
    assert "| trio | 600 | 60% |" in text
    assert "| 1.00 | `a → b` |" in text
    assert "| `trio/_core/_run.py:10` | 50 |" in text
    assert "| `builtins.set` | 2.00 | 432 |" in text
