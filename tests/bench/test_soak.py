"""bench/soak.py's verdict from samples (pure), and bench/soakload.py's mix against a real relay and sim."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import trio

from bench.soak import MB, fit_slope, render, verdict
from bench.soakload import MIX
from tests.conftest import start_relay, start_sim
from tests.support import ROOT

IDLE = {"in_flight": 1, "streams": 0, "connections": 1, "tasks": 15}


def samples(soak_rss, after_hold_mb: float = 50.0, counts_after_hold=IDLE) -> list[dict]:
    """A run's samples: idle at 50 MB, a soak of 10,000 requests a sample at ``soak_rss(requests)``, idle, a hold."""
    rows = [{"phase": "idle warm", "requests": 0, "procs": {"relay": {"rss": 50 * MB}}, "counts": IDLE}]
    for i in range(1, 51):
        n = i * 10_000
        rows.append({"phase": "soak", "requests": n, "procs": {"relay": {"rss": soak_rss(n)},
                                                                 "loadtest stream": {"rss": 40 * MB + 100 * n}}})
    rows.append({"phase": "idle after soak", "requests": n, "procs": {"relay": {"rss": soak_rss(n)}}, "counts": IDLE})
    rows.append({"phase": "hold", "requests": n, "procs": {"relay": {"rss": 200 * MB}}})
    rows.append({"phase": "idle after hold", "requests": n, "procs": {"relay": {"rss": after_hold_mb * MB}},
                 "counts": counts_after_hold})  # fmt: skip
    return rows


def test_a_straight_line_has_its_slope() -> None:
    assert fit_slope([0, 1, 2, 3], [5, 7, 9, 11]) == pytest.approx(2.0)
    assert fit_slope([1, 1, 1], [1, 2, 3]) is None
    assert fit_slope([1, 2], [1, 2]) is None


def test_a_flat_relay_meets_every_goal() -> None:
    v = verdict(samples(lambda n: 50 * MB + (n % 3) * 1000))
    assert all(v["goals"].values()), v["goals"]
    assert abs(v["relay"]["soak_growth_per_million_mb_extrapolated"]) < 0.1
    assert v["loadtest stream"]["soak_slope_bytes_per_request"] == pytest.approx(100.0)  # every process is judged


@pytest.mark.parametrize(("kwargs", "missed"), [
    ({"soak_rss": lambda n: 50 * MB + 10 * n}, "growth over 1,000,000 requests"),
    ({"soak_rss": lambda n: 50 * MB, "after_hold_mb": 53.0}, "within 5 %"),
    ({"soak_rss": lambda n: 50 * MB, "counts_after_hold": {**IDLE, "connections": 2}}, "/healthz"),
])  # fmt: skip
def test_each_goal_can_be_missed(kwargs, missed) -> None:
    goals = verdict(samples(**kwargs))["goals"]
    assert [goal for goal, met in goals.items() if not met] == [g for g in goals if missed in g]


def test_the_readme_says_the_verdict_and_the_figures() -> None:
    result = {"title": "t", "command": "python -m bench.soak", "git": "abc1234", "relay_from": "/x",
              "machine": {"date (UTC)": "2026-12-07 00:00", "load average at start (1, 5, 15 min)": (1, 1, 1)},
              "loads": {}, "samples": samples(lambda n: 50 * MB + 10 * n)}  # fmt: skip
    result["verdict"] = verdict(result["samples"])
    text = render(result)
    assert "| growth over 1,000,000 requests <= 5 MB (extrapolated from the soak's slope) | **no** |" in text
    assert "| RSS slope in the soak, bytes per request (least squares) | 10.0 |" in text
    assert "| loadtest stream |" in text


async def test_the_mix_gets_the_answer_each_kind_expects(nursery) -> None:
    sim = await start_sim(nursery, ttft=0, interval=0)
    root = await start_relay(nursery, sim.url)
    argv = [sys.executable, "-m", "bench.soakload", "--url", root, "--duration", "1", "--connections", "3"]
    done = await trio.run_process(argv, cwd=ROOT, capture_stdout=True, stderr=subprocess.DEVNULL)
    summary = json.loads(done.stdout)
    assert set(summary["by_kind"]) == {kind.name for kind in MIX}
    assert all(set(outcomes) == {"ok"} for outcomes in summary["by_kind"].values()), summary["by_kind"]
    assert summary["requests"] >= len(MIX)
