"""SIGHUP reloads the whole config of a running relay (``python -m proxy``, real sockets, simulated upstreams): an
upstream's URL and weight change, a fallback is added, a config with errors is kept out, a stream in flight ends
on the upstream it started on. Each step waits on what the relay shows (its config generation and reload counts
in /metrics, its log), never on time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import start_sim
from tests.relay.functional.test_metrics import samples, total
from tests.support import ROOT
from tests.support.children import stop_child
from tests.support.relays import start_relay_process

REFUSED = "http://127.0.0.1:1/v1"  # nothing listens there: every attempt fails before the first byte
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def upstream(name: str, url: str, **extra: object) -> str:
    lines = [f'[[upstreams]]\nname = "{name}"\nbase_url = "{url}"']
    for key, value in extra.items():
        text = str(value).lower() if isinstance(value, bool) else f'"{value}"' if isinstance(value, str) else value
        lines.append(f"{key} = {text}".replace("'", '"'))
    return "\n".join(lines) + "\n"


def write(path: Path, *tables: str) -> None:
    """The config file replaced whole, as an operator's tooling does (written beside it, renamed over it)."""
    new = path.with_suffix(".new")
    new.write_text("\n".join(tables))
    os.replace(new, path)


async def metric(client: httpx.AsyncClient, root: str, name: str, **labels: str) -> float:
    return total(samples((await client.get(root + "/metrics")).text), name, **labels)


async def until(client: httpx.AsyncClient, root: str, name: str, value: float, **labels: str) -> None:
    """Until the relay's /metrics says ``name`` is ``value`` (every worker's reload is in it)."""
    deadline = time.monotonic() + 15
    while await metric(client, root, name, **labels) != value:
        assert time.monotonic() < deadline, f"{name}{labels} never became {value}"
        await trio.sleep(0.02)  # noqa: ASYNC110 - polling another process's metrics


async def reload(client: httpx.AsyncClient, root: str, pid: int, generation: int) -> None:
    os.kill(pid, signal.SIGHUP)  # the supervisor passes it to every worker
    await until(client, root, "moonrelay_config_generation", generation)


async def answer(client: httpx.AsyncClient, root: str) -> tuple[str, int]:
    """Which upstream answered a stream (its name) and how many events it sent (which sim it was)."""
    response = await client.post(root + "/v1/chat/completions", json=CHAT)
    assert response.status_code == 200, response.text
    return response.headers["x-moonrelay-upstream"], response.text.count("data: ")


async def events_of(client: httpx.AsyncClient, sim_url: str) -> int:
    response = await client.post(sim_url + "/chat/completions", json=CHAT)
    return response.text.count("data: ")


async def start(nursery, folder: Path, *args: str) -> tuple[Any, Any, Path, Path, subprocess.Popen, str]:
    """Two sims told apart by their answers' lengths (A: 3 chunks, B: 6), and a relay whose config file routes
    every model to A (``main``): the sims, the config file, the relay's log, the relay and its root URL."""
    sim_a = await start_sim(nursery, chunks=3)
    sim_b = await start_sim(nursery, chunks=6)
    config = folder / "relay.toml"
    write(config, upstream("main", sim_a.url, default=True))
    log = folder / "relay.err"
    return sim_a, sim_b, config, log, *start_relay_process(["--config", str(config), *args], log)


async def test_sighup_changes_urls_and_weights_adds_a_fallback_and_keeps_a_broken_config_out(nursery, tmp_path):
    sim_a, sim_b, config, log, relay, root = await start(nursery, tmp_path, "--workers", "2")
    try:
        async with httpx.AsyncClient(timeout=10) as client:  # one connection: one worker, its own round robin
            a, b = await events_of(client, sim_a.url), await events_of(client, sim_b.url)
            assert a != b
            assert await answer(client, root) == ("main", a)
            assert (await client.get(root + "/healthz")).json()["config"] == 1

            write(config, upstream("main", sim_b.url, default=True))  # the URL changes
            await reload(client, root, relay.pid, 2)
            assert [await answer(client, root) for _ in range(3)] == [("main", b)] * 3
            assert (await client.get(root + "/healthz")).json()["config"] == 2

            write(config, upstream("main", sim_b.url, models=["m"], weight=3),
                  upstream("other", sim_a.url, models=["m"], weight=1))  # fmt: skip
            await reload(client, root, relay.pid, 3)
            assert Counter([(await answer(client, root))[0] for _ in range(4)]) == {"main": 3, "other": 1}
            write(config, upstream("main", sim_b.url, models=["m"], weight=1),
                  upstream("other", sim_a.url, models=["m"], weight=3))  # fmt: skip
            await reload(client, root, relay.pid, 4)  # the weights change
            assert Counter([(await answer(client, root))[0] for _ in range(4)]) == {"main": 1, "other": 3}

            write(config, upstream("main", REFUSED, default=True), upstream("backup", sim_a.url))
            await reload(client, root, relay.pid, 5)
            failed = await client.post(root + "/v1/chat/completions", json=CHAT)
            assert failed.status_code == 502  # no fallback yet
            write(config, "backlog = 128\n", upstream("main", REFUSED, default=True, fallbacks=["backup"]),
                  upstream("backup", sim_a.url))  # fmt: skip
            await reload(client, root, relay.pid, 6)  # a fallback is added (and a setting only a restart changes)
            assert await answer(client, root) == ("backup", a)

            for broken in (upstream("main", sim_b.url, default=True, fallbacks=["nowhere"]),  # names no upstream
                           'workers = 2\n[[upstreams]]\nname = "main"\nbase_url = "',  # does not parse
                           upstream("main", sim_b.url, default=True, weight=0)):  # fmt: skip
                refused = await metric(client, root, "moonrelay_config_reloads_total", result="refused")
                write(config, broken)
                os.kill(relay.pid, signal.SIGHUP)
                await until(client, root, "moonrelay_config_reloads_total", refused + 2, result="refused")
                assert await metric(client, root, "moonrelay_config_generation") == 6  # the config in force stays
                assert await answer(client, root) == ("backup", a)
    finally:
        stop_child(relay)
    lines = [line for line in log.read_text().splitlines() if "SIGHUP" in line]
    refusals = [line for line in lines if "config not reloaded, generation 6 stays" in line]
    assert len(refusals) == 6 and len(lines) == 2 * 5 + 6, lines  # one line per worker and reload, no more
    sixth = [line for line in lines if "config reloaded, generation 6" in line]
    assert len(sixth) == 2 and all("upstreams main (new), backup; no client keys; backlog unchanged until a restart"
                                   in line for line in sixth), sixth  # fmt: skip
    assert sum("'fallbacks' names no upstream: nowhere" in line for line in refusals) == 2, refusals
    assert sum("relay.toml: Unterminated string" in line for line in refusals) == 2, refusals
    assert sum("'weight' must be" in line for line in refusals) == 2, refusals


async def test_a_stream_in_flight_across_a_reload_ends_on_its_old_upstream(nursery, tmp_path):
    sim_a, sim_b, config, log, relay, root = await start(nursery, tmp_path)
    try:
        async with httpx.AsyncClient(timeout=10) as client, httpx.AsyncClient(timeout=10) as other:
            long = {**CHAT, "sim_chunks": 40, "sim_interval": 0.02}
            async with other.stream("POST", root + "/v1/chat/completions", json=long) as held:
                assert held.status_code == 200 and held.headers["x-moonrelay-upstream"] == "main"
                lines = held.aiter_lines()
                first = await anext(lines)
                assert first.startswith("data: ")  # it streams from sim A
                write(config, upstream("main", sim_b.url, default=True))
                await reload(client, root, relay.pid, 2)
                assert await answer(client, root) == ("main", await events_of(client, sim_b.url))  # new ones: B
                assert "of config generation 1 closed" not in log.read_text()  # not while a stream holds it
                rest = [line async for line in lines]
            events = [line.removeprefix("data: ") for line in [first, *rest] if line.startswith("data: ")]
            assert events[-1] == "[DONE]" and '"error"' not in "".join(events)
            seqs = [json.loads(event)["sim"] for event in events[:-1]]  # the sim numbers each chunk of its answer
            assert [s["seq"] for s in seqs] == list(range(seqs[0]["of"])) and seqs[0]["of"] > 40  # all of A's
            deadline = time.monotonic() + 15
            while "upstream main of config generation 1 closed" not in log.read_text():  # its last request ended
                assert time.monotonic() < deadline, log.read_text()
                await trio.sleep(0.02)  # noqa: ASYNC110 - polling another process's log
    finally:
        stop_child(relay)


def test_the_example_in_the_reference_loads(tmp_path):
    """docs/reference.md's reload example: the config before and the config after are what it says they are."""
    from proxy.config import load

    section = (ROOT / "docs" / "reference.md").read_text().split("## Reloading the config", 1)[1].split("\n## ", 1)[0]
    before, after = (block.split("```", 1)[0] for block in section.split("```toml\n")[1:3])
    (tmp_path / "before.toml").write_text(before)
    (tmp_path / "after.toml").write_text(after)
    (main,) = load({}, {}, str(tmp_path / "before.toml")).routes
    assert (main.name, main.base_url, main.default, main.fallbacks) == ("main", "http://127.0.0.1:9100/v1", True, ())
    main, backup = load({}, {}, str(tmp_path / "after.toml")).routes
    assert (main.base_url, main.fallbacks, backup.base_url) == ("http://127.0.0.1:9101/v1", ("backup",),
                                                                "http://127.0.0.1:9100/v1")  # fmt: skip
    assert "mv relay.toml.new relay.toml && kill -HUP" in section
