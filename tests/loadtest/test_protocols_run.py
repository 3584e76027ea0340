"""``loadtest --api messages|responses`` over real sockets: every session judged by its protocol, stream and not,
with tools, errors and the exit status.

The targets are the simulated upstream directly (its ``/v1`` routes, and for Messages Moonshot's ``/anthropic``
base path too). The relay joins them when it serves ``/v1/messages`` and ``/v1/responses`` (natively relayed and
translated onto chat): a target is a base URL ending in ``/v1``, so its fixture is all that changes.
"""

from __future__ import annotations

import json
import sys

import pytest
import trio

from loadtest import stats
from loadtest.runner import LoadConfig, Runner
from loadtest.workload import Workload, parse_distribution
from tests.conftest import start_sim

TARGETS = {"messages": ["sim", "sim-anthropic"], "responses": ["sim"]}
CASES = [(api, target) for api, targets in TARGETS.items() for target in targets]
FINISH = {"messages": "max_tokens", "responses": "max_output_tokens"}
TOOL_FINISH = {"chat": "tool_calls", "messages": "tool_use", "responses": "completed"}


async def target_url(nursery, target: str, **sim) -> str:
    server = await start_sim(nursery, **sim)
    return server.anthropic_url + "/v1" if target == "sim-anthropic" else server.url


async def run(url: str, api: str, **cfg) -> tuple[dict, list]:
    with trio.fail_after(30):
        data = await Runner(LoadConfig(url=url, api=api, **cfg)).run()
    return stats.summarize(data), data.records


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
@pytest.mark.parametrize("api, target", CASES)
async def test_every_session_completes_with_the_length_it_asked_for(nursery, api, target, stream):
    url = await target_url(nursery, target, ttft=0.02, interval=0.002)
    workload = Workload(input_tokens=parse_distribution("uniform:10,40"),
                        output_tokens=parse_distribution("uniform:3,9"), seed=5)
    s, records = await run(url, api, concurrency=4, requests=12, stream=stream, workload=workload)
    asked = [workload.request(i).max_tokens for i in range(12)]
    assert (s["completed"], s["verified"], s["failed"]) == (12, 12, 0), s["errors_by_kind"]
    assert s["tokens"]["completion"] == sum(asked) and s["per_token"]["source"] == "usage"
    assert {r.finish_reason for r in records} == {FINISH[api]} and all(r.prompt_tokens for r in records)
    if stream:  # a chunk per output token (the sim's one token per send), each with the sim's send stamp
        assert s["chunks"] == sum(asked) and s["relay_delay_ms"]["count"] == sum(asked)
        assert s["per_token"]["ttft_ms"]["p50"] == pytest.approx(s["ttfc_ms"]["p50"])


@pytest.mark.parametrize("api", ["chat", "messages", "responses"])
async def test_a_tool_calling_load(nursery, api):
    """Each request offers a tool and demands a call: the answer is the call, its arguments streamed in pieces."""
    url = await target_url(nursery, "sim", ttft=0.02, interval=0.002)
    s, records = await run(url, api, concurrency=3, requests=6, tool_call=True, extra_body={"sim_tool_pieces": 4})
    assert (s["completed"], s["verified"], s["failed"]) == (6, 6, 0), s["errors_by_kind"]
    assert {r.finish_reason for r in records} == {TOOL_FINISH[api]}
    if api != "chat":  # chat's first chunk also carries the call's id and name with the first piece
        assert {r.chunks for r in records} == {4}


@pytest.mark.parametrize("api, detail", [("messages", "overloaded_error: Overloaded"), (
    "responses", "response.failed: server_error: The server had an error while processing your request.")])
async def test_an_error_event_mid_stream_fails_the_session(nursery, api, detail):
    url = await target_url(nursery, "sim", ttft=0.02, interval=0.002, chunks=5)
    s, records = await run(url, api, concurrency=2, requests=4, extra_body={"sim_fault": "error:2"})
    assert (s["completed"], s["failed"], s["errors_by_kind"]) == (0, 4, {"error_event": 4})
    assert {r.error_detail for r in records} == {detail}
    assert {r.chunks for r in records} == {2}  # the two tokens before the error were read


@pytest.mark.parametrize("api, kind", [("messages", "overloaded_error"), ("responses", "server_error")])
async def test_a_refusal_is_an_http_error_with_the_protocols_body(nursery, api, kind):
    url = await target_url(nursery, "sim")
    s, records = await run(url, api, concurrency=2, requests=2, stream=False, extra_body={"sim_fault": "status:529"})
    assert s["errors_by_kind"] == {"http_529": 2}
    assert all(kind in r.error_detail for r in records)


@pytest.mark.parametrize("api, fault", [("messages", "drop:2"), ("responses", "malformed:3")])
async def test_a_cut_or_broken_stream_fails(nursery, api, fault):
    url = await target_url(nursery, "sim", ttft=0.02, interval=0.002, chunks=5)
    s, _ = await run(url, api, concurrency=2, requests=2, extra_body={"sim_fault": fault})
    assert s["errors_by_kind"] == {"reset" if fault.startswith("drop") else "malformed": 2}


# --- the command line -------------------------------------------------------------------------------------------


async def loadtest(*args: str) -> tuple[int, str, str]:
    with trio.fail_after(60):
        done = await trio.run_process([sys.executable, "-m", "loadtest", *args], check=False, capture_stdout=True,
                                      capture_stderr=True)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.parametrize("api, target", CASES)
async def test_the_command_line_runs_the_protocol(nursery, tmp_path, api, target):
    url = await target_url(nursery, target, ttft=0.02, interval=0.002)
    out = tmp_path / "run"
    code, stdout, stderr = await loadtest("--url", url, "--api", api, "-c", "3", "--requests", "6", "--chunks", "4",
                                          "--quiet", "--out", str(out))
    assert code == 0, stderr
    result = json.loads((out / "result.json").read_text())
    s = result["summary"]
    assert (s["completed"], s["verified"], s["chunks"], s["tokens"]["completion"]) == (6, 6, 24, 24)
    assert result["config"]["api"] == api and "6 completed, 0 failed" in stdout
    assert f"Protocol: `--api {api}`" in (out / "report.md").read_text()


@pytest.mark.parametrize("api", ["messages", "responses"])
async def test_a_target_without_the_route_is_one_line(nursery, tmp_path, api):
    """A relay that does not serve the protocol answers its route 404: said once, before any load."""
    url = await target_url(nursery, "sim")
    code, stdout, stderr = await loadtest("--url", url.removesuffix("/v1") + "/elsewhere/v1", "--api", api, "-c",
                                          "50", "--quiet", "--out", str(tmp_path / "run"))
    assert code == 1 and stdout == ""
    assert stderr.count("\n") == 1 and f"/elsewhere/v1/{api} answered 404" in stderr, stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("ratio, code", [(None, 1), ("49%", 1), ("50%", 0)])
async def test_max_failed_ratio_is_honoured(nursery, tmp_path, ratio, code):
    """Half the prompts ask for 2 tokens, half for 400 at 10 ms a token: those run past --timeout and fail."""
    url = await target_url(nursery, "sim", ttft=0.02)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "short", "max_tokens": 2}\n{"prompt": "long", "max_tokens": 400}\n')
    args = ["--url", url, "--api", "messages", "--prompts", str(prompts), "-c", "4", "--requests", "4",
            "--interval", "0.01", "--timeout", "1", "--quiet", "--no-save-requests", "--out", str(tmp_path / "run")]
    got, _, stderr = await loadtest(*args, *(["--max-failed-ratio", ratio] if ratio else []))
    assert got == code, stderr
    s = json.loads((tmp_path / "run" / "result.json").read_text())["summary"]
    assert (s["completed"], s["failed"], s["errors_by_kind"]) == (2, 2, {"timeout": 2})


@pytest.mark.slow
@pytest.mark.parametrize("api", ["messages", "responses"])
async def test_the_embedded_default_speaks_the_protocol_through_the_relay(tmp_path, api):
    """Sim and relay as children. A relay that serves the route completes every session; one that does not yet
    is refused in one line, never measured at the sim's native route instead (the relay's routes for these
    protocols land separately: then only the first holds)."""
    out = tmp_path / "run"
    code, stdout, stderr = await loadtest("-c", "4", "--api", api, "--ttft", "0.05", "--ttft-jitter", "0",
                                          "--chunks", "3", "--interval", "0.01", "--quiet", "--out", str(out))
    if code == 0:
        s = json.loads((out / "result.json").read_text())["summary"]
        assert (s["completed"], s["failed"], s["tokens"]["completion"]) == (4, 0, 12), s
    else:
        assert code == 1 and stderr.count("\n") == 1, stderr
        assert "the embedded relay does not serve" in stderr and f"(POST /v1/{api} answered 404)" in stderr, stderr
        assert not (out / "result.json").exists()


@pytest.mark.parametrize("api", ["messages", "responses"])
async def test_the_sweeps_raw_probe_times_the_protocols_first_output_event(nursery, api):
    from loadtest.probe import probe_once

    url = await target_url(nursery, "sim", ttft=0.05, interval=0.002)
    got = await probe_once(LoadConfig(url=url, api=api, extra_body={"sim_chunks": 3}), url)
    assert got["ttfc_ms"] >= 50 and got["first_delay_ms"] >= 0, got
    refused = await probe_once(LoadConfig(url=url, api=api), url + "/elsewhere")
    assert refused == {"error": "http_404"}
