"""``loadtest --sweep`` as a user runs it: against a target whose knee the test sets (it holds K streams and answers
429 beyond), on the embedded default, its reports re-rendered, and sweep.html in a real browser; the raw probe."""

from __future__ import annotations

import json
import os
import sys

import h11
import pytest
import trio

from loadtest.probe import probe_once
from loadtest.shapes import LoadConfig
from tests.conftest import start_sim
from tests.loadtest.test_completion import openai_stream
from tests.support.browser import chromium
from tests.support.scripted import ScriptedServer, read_request

pytestmark = pytest.mark.slow


class Capacity(ScriptedServer):
    """A target that streams to at most ``k`` clients at once and answers 429 to the others: its knee is ``k``."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.open = 0
        self.peak = 0
        self.events = openai_stream(["a", "b", "c", "d"], usage=True).split(b"\n\n")[:-1]

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while await read_request(conn, stream):
                if self.open >= self.k:
                    body = b'{"error": {"message": "busy", "type": "rate_limit_reached_error"}}'
                    head = h11.Response(status_code=429, headers=[("content-type", "application/json"),
                                                                  ("content-length", str(len(body)))])
                    await stream.send_all(conn.send(head) + conn.send(h11.Data(data=body)) +
                                          conn.send(h11.EndOfMessage()))
                else:
                    self.open += 1
                    self.peak = max(self.peak, self.open)
                    try:
                        head = h11.Response(status_code=200, headers=[("content-type", "text/event-stream"),
                                                                      ("transfer-encoding", "chunked")])
                        await stream.send_all(conn.send(head))
                        for event in self.events:
                            await trio.sleep(0.01)
                            await stream.send_all(conn.send(h11.Data(data=event + b"\n\n")))
                        await stream.send_all(conn.send(h11.EndOfMessage()))
                    finally:
                        self.open -= 1  # before the next request on this connection is read
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()


async def loadtest(*args: str, timeout: float = 120) -> tuple[int, str]:
    with trio.fail_after(timeout):
        done = await trio.run_process([sys.executable, "-m", "loadtest", *args], check=False, capture_stdout=True,
                                      capture_stderr=True)
    return done.returncode, done.stdout.decode() + done.stderr.decode()


async def test_a_sweep_finds_the_knee_it_was_given(nursery, tmp_path):
    target = await nursery.start(Capacity(5).serve)
    out = tmp_path / "sweep"
    code, said = await loadtest("--url", target.url, "--sweep", "concurrency", "--steps", "2,4,8", "--step-duration",
                                "1s", "--sweep-slo", "errors=0%,ttft_p99=5s", "--repeats", "2", "--no-probe",
                                "--out", str(out), "--quiet")
    assert code == 0, said
    assert "largest load that met every objective: 5 concurrent (2 of 2 runs)" in said
    doc = json.loads((out / "sweep.json").read_text())
    runs = [(s["load"], s["phase"], s["passed"]) for s in doc["steps"]]
    assert runs == [(2, "climb", True), (4, "climb", True), (8, "climb", False), (6, "refine", False),
                    (5, "refine", True), (5, "repeat", True), (6, "repeat", False)]
    out_ = doc["outcome"]
    assert out_["knee"]["load"] == 5 and out_["first_failure"]["load"] == 6
    assert out_["first_failure"]["broken"] == ["errors"] and out_["stop"] == "an objective broke at 8"
    assert target.peak == 5
    step = json.loads((out / doc["steps"][0]["dir"] / "result.json").read_text())
    assert step["summary"]["per_token"]["source"] == "usage" and step["config"]["concurrency"] == 2
    md = (out / "sweep.md").read_text()
    assert "**The largest load that met every objective: 5 concurrent sessions**, in 2 of 2 runs." in md
    assert {p.name for p in out.glob("sweep_*.png")} == {"sweep_ttft.png", "sweep_itl.png", "sweep_throughput.png",
                                                         "sweep_goodput.png"}
    # re-rendered from sweep.json alone
    (out / "sweep.md").unlink()
    code, said = await loadtest("report", str(out / "sweep.json"))
    assert code == 0 and (out / "sweep.md").read_text() == md
    if os.environ.get("MOONRELAY_SKIP_BROWSER") == "1":
        return
    seen = await trio.to_thread.run_sync(_open, out / "sweep.html")
    assert seen["answer"].startswith("The largest load that met every objective: 5 concurrent sessions")
    assert len(seen["images"]) == 4 and all(w and w > 100 for w in seen["images"]), seen["images"]
    assert seen["console"] == []


def _open(path) -> dict:
    """Blocking: sweep.html in chromium; what a reader sees of it."""
    from selenium.webdriver.common.by import By

    with chromium(logs=True) as driver:
        driver.get(path.as_uri())
        return {
            "answer": driver.find_element(By.CSS_SELECTOR, "h2 + p strong").text,
            "images": [driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)
                       for i in driver.find_elements(By.TAG_NAME, "img")],
            "console": [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")],
        }


async def test_a_rate_sweep_runs_open_loop_steps(nursery, tmp_path):
    target = await nursery.start(Capacity(1000).serve)
    out = tmp_path / "sweep"
    code, said = await loadtest("--url", target.url, "--sweep", "rate", "--steps", "10,20", "--step-duration", "1s",
                                "--sweep-slo", "errors=0%,goodput=1/s", "--repeats", "1", "--no-probe", "--out",
                                str(out), "--quiet")
    assert code == 0, said
    doc = json.loads((out / "sweep.json").read_text())
    assert [(s["load"], s["passed"]) for s in doc["steps"]] == [(10, True), (20, True)]
    config = json.loads((out / doc["steps"][1]["dir"] / "result.json").read_text())["config"]
    assert (config["mode"], config["rate"], config["duration_s"], config["max_concurrency"]) == ("open", 20, 1, 10000)
    assert "20/s (1 of 1 runs)" in said


async def test_a_sweep_on_the_embedded_default(tmp_path):
    out = tmp_path / "sweep"
    code, said = await loadtest("--sweep", "concurrency", "--steps", "1,2", "--step-duration", "1s", "--sweep-slo",
                                "errors=0%", "--repeats", "1", "--ttft", "0.02", "--ttft-jitter", "0", "--interval",
                                "0.01", "--chunks", "3", "--out", str(out), "--quiet")
    assert code == 0, said
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["target"]["embedded"] and doc["outcome"]["knee"]["load"] == 2
    assert "the knee is higher" in doc["outcome"]["stop"]
    for s in doc["steps"]:
        assert s["figures"]["failed"] == 0 and s["summary"]["verified"] == s["summary"]["completed"] > 0
        assert s["summary"]["relay_cpu_s"] > 0  # measured per step
        assert s["probe"]["samples"] >= 1 and s["figures"]["probe_first_delay_p50"] is not None


async def test_the_probe_times_the_first_chunk_and_the_sims_send(nursery):
    sim = await start_sim(nursery, ttft=0.05, chunks=3)
    got = await probe_once(LoadConfig(url=sim.url), sim.url)
    assert got["ttfc_ms"] >= 45 and 0 <= got["first_delay_ms"] < got["ttfc_ms"]
    assert (await probe_once(LoadConfig(url=sim.url, extra_body={"sim_fault": "status:503"}), sim.url)) == {
        "error": "http_503"}
