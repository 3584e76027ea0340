"""bench/ pieces that need no peer: log trimming, the target lists and command lines, scenario flags, figures,
the report, and recomputing every figure from the committed per-request files."""

import gzip
import json
import random

import pytest
import trio

from bench import metrics, readme, recompute
from bench.floor import _launch as floor_launch
from bench.floor import drive, request_bytes, response_complete
from bench.floor_servers import serve_h11
from bench.metrics import MIB, figures
from bench.peers import BACKLOG, DEFAULT_TARGETS, PEERS, TARGETS
from bench.run import _finish, trim_log, write_scenario_docs
from bench.scenarios import SCENARIOS
from loadtest.record import ProcessUsage, RunData, SessionRecord
from loadtest.report import record_json
from loadtest.stats import summarize

SIM = "http://127.0.0.1:1/v1"


def test_trim_log_keeps_head_and_tail(tmp_path):
    log = tmp_path / "moonrelay.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(10_000)))
    trim_log(log, limit=1_000, head=3, tail=2)
    assert log.read_bytes() == b"line 0\nline 1\nline 2\n[bench: 9,995 lines cut of 10,000]\nline 9998\nline 9999\n"


def test_trim_log_leaves_small_logs(tmp_path):
    log = tmp_path / "sim.log"
    log.write_bytes(b"sim listening on http://127.0.0.1:1\n")
    trim_log(log, limit=1_000)
    assert log.read_bytes() == b"sim listening on http://127.0.0.1:1\n"


def test_quiet_moonrelay_runs_only_on_request():
    assert "moonrelay-quiet" in TARGETS and "moonrelay-quiet" not in DEFAULT_TARGETS
    quiet = PEERS["moonrelay-quiet"].launch(SIM, None, 2, 1_000)
    loud = PEERS["moonrelay"].launch(SIM, None, 2, 1_000)
    assert quiet.argv == loud.argv
    assert quiet.env["MOONRELAY_ACCESS_LOG"] == "off" and quiet.env["MOONRELAY_METRICS"] == "off"
    assert loud.env["MOONRELAY_ACCESS_LOG"] == "stderr"  # whatever the bench's own environment says


def _pairs(argv):
    return {a: b for a, b in zip(argv, argv[1:], strict=False) if a.startswith("--")}


def _without_port(argv):
    i = argv.index("--port")
    return argv[:i] + argv[i + 2 :]


def test_tuned_peers_run_by_default_with_raised_caps_and_the_common_backlog(tmp_path):
    assert {"litellm-tuned", "openai-forward-tuned"} <= set(DEFAULT_TARGETS)
    plain = PEERS["litellm"].launch(SIM, tmp_path, 2, 10_000)
    tuned = PEERS["litellm-tuned"].launch(SIM, tmp_path, 2, 10_000)
    assert not any(k.startswith("AIOHTTP_") for k in plain.env)  # the default row keeps LiteLLM's own caps
    assert tuned.env["AIOHTTP_CONNECTOR_LIMIT"] == tuned.env["AIOHTTP_CONNECTOR_LIMIT_PER_HOST"] == "10000"
    flags = _pairs(tuned.argv)
    assert flags["--backlog"] == str(BACKLOG) == "4096" and flags["--workers"] == "2"
    assert "litellm.proxy.proxy_server:app" in tuned.argv and "--limit-concurrency" not in tuned.argv
    config = json.loads((tmp_path / "litellm.yaml").read_text())
    assert tuned.env["CONFIG_FILE_PATH"] == str(tmp_path / "litellm.yaml")
    assert config["model_list"][0]["litellm_params"]["api_base"] == SIM
    # A scenario below LiteLLM's defaults never lowers them.
    small = PEERS["litellm-tuned"].launch(SIM, tmp_path, 2, 100)
    assert small.env["AIOHTTP_CONNECTOR_LIMIT"] == small.env["AIOHTTP_CONNECTOR_LIMIT_PER_HOST"] == "1000"

    forward = PEERS["openai-forward"].launch(SIM, tmp_path, 2, 10_000)
    forward_tuned = PEERS["openai-forward-tuned"].launch(SIM, tmp_path, 2, 10_000)
    assert "--backlog" not in forward.argv
    assert _without_port(forward_tuned.argv) == [*_without_port(forward.argv), "--backlog", "4096"]
    assert forward_tuned.env == forward.env


def test_moonrelay_and_nginx_share_backlog_and_access_log_policy(tmp_path):
    relay = PEERS["moonrelay"].launch(SIM, tmp_path, 2, 1_000)
    assert _pairs(relay.argv)["--backlog"] == "4096"
    PEERS["nginx"].launch(SIM, tmp_path, 2, 1_000)
    conf = (tmp_path / "nginx.conf").read_text()
    assert "backlog=4096 reuseport" in conf
    assert "access_log off" not in conf and f"access_log {tmp_path}/access.log bench;" in conf
    assert "log_format bench escape=json '{\"request_id\":\"$request_id\"" in conf  # $$ rendered as nginx's $


def test_hold_scenario_flags():
    hold = SCENARIOS["hold"]
    assert hold.loadtest_flags() == ["-c", "10000", "--duration", "60", "--ramp-up", "10"]
    assert hold.scaled(0.1).streams == 1_000


def test_memory_per_upstream_stream_and_per_client_session():
    summary = {"chunks": 100, "peak_concurrency": 10_000, "duration_s": 10}
    proxy = {"cpu_s": 1.0, "idle_rss_bytes": 100 * MIB, "peak_rss_bytes": 100 * MIB + 4_000 * 40 * 1024}
    held = figures(summary, proxy, {"cpu_s": 1.0}, upstream_open=4_000)
    assert held["mem_per_stream_kb"] == 40.0 and held["upstream_peak_open"] == 4_000
    assert held["mem_per_session_kb"] == 16.0 and held["peak_open_streams"] == 10_000
    # Records made before the sim was sampled fall back to the load generator's peak.
    assert figures(summary, proxy, {"cpu_s": 1.0})["mem_per_stream_kb"] == 16.0
    assert figures(summary, None, {"cpu_s": 1.0})["mem_per_session_kb"] is None  # direct: no proxy


def test_report_shows_both_memory_rows_and_the_tuned_columns():
    medians = {
        "nginx": {"mem_per_stream_kb": 17.8, "mem_per_session_kb": 17.8, "completed": 30_000},
        "litellm": {"mem_per_stream_kb": 429.3, "mem_per_session_kb": 42.9, "completed": 5_628},
        "litellm-tuned": {"mem_per_stream_kb": 50.0, "mem_per_session_kb": 45.0, "completed": 9_000},
    }
    text = readme.table(medians, list(TARGETS))
    header, _, *rows = text.splitlines()
    assert header == "| figure | nginx | litellm | litellm-tuned |"
    per_stream = next(r for r in rows if r.startswith("| memory per upstream stream KB"))
    per_session = next(r for r in rows if r.startswith("| memory per client session KB"))
    assert per_stream.endswith("| 17.8 (1.00×) | 429.3 (24.12×) | 50.0 (2.81×) |")
    assert per_session.endswith("| 17.8 (1.00×) | 42.9 (2.41×) | 45.0 (2.53×) |")
    assert not any(r.startswith("| failed") for r in rows)  # a row no target has is left out


# --- per-request data: compact, lossless for the figures, recomputable ---------------------------------------


def _sessions(rng: random.Random, n: int, t0: int) -> list[SessionRecord]:
    """Streams as the load generator records them: integer ns clocks, per-chunk delays from two ns stamps."""
    out = []
    for i in range(n):
        start = t0 + i * 1_000_000 + rng.randrange(1_000)
        first = start + rng.randrange(900_000_000, 1_200_000_000)
        recv = [first + k * 500_000_000 + rng.randrange(3_000_000) for k in range(20)]
        stamps = [t - rng.randrange(50_000, 40_000_000) for t in recv]
        out.append(SessionRecord(
            slot=i, intended_ns=start, start_ns=start, connected_ns=start + 40_000, sent_ns=start + 90_000,
            headers_ns=first - 1_000, first_chunk_ns=first, end_ns=recv[-1] + 10_000, status=200, chunks=20,
            expected_chunks=20, done=True, bytes=5_000, prompt_tokens=12, completion_tokens=20,
            gaps_ms=[(b - a) / 1e6 for a, b in zip(recv, recv[1:], strict=False)],
            relay_delay_ms=[(t - s) / 1e6 for t, s in zip(recv, stamps, strict=True)],
        ))
    out[0].relay_delay_ms[3] = 1 / 3  # not a whole number of ns: kept as the float
    out[1].error_kind, out[1].error_detail = "timeout", "x" * 1_000
    out[2].warmup = True
    return out


def _write_run(rundir, records, t0):
    """What ``python -m loadtest --out`` leaves: requests.jsonl and result.json's summary."""
    (rundir / "loadtest").mkdir(parents=True)
    with (rundir / "loadtest" / "requests.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(record_json(r), separators=(",", ":")) + "\n")
    run = RunData(command=["loadtest"], config={}, started_unix=0.0, t0_ns=t0, t_end_ns=max(r.end_ns for r in records),
                  records=records, processes=[ProcessUsage("loadtest", 1, cpu_s=3.5, peak_rss_bytes=MIB)])
    (rundir / "loadtest" / "result.json").write_text(json.dumps({"summary": summarize(run)}))


def test_compact_requests_keep_every_field_a_figure_reads(tmp_path):
    records = _sessions(random.Random(1), 40, 10**12)
    _write_run(tmp_path, records, 10**12)
    recompute.write_compact(tmp_path / "loadtest" / "requests.jsonl", tmp_path / "requests.jsonl.gz")
    back = recompute.read_compact(tmp_path / "requests.jsonl.gz")
    assert len(back) == len(records)
    for mine, theirs in zip(records, back, strict=True):
        assert theirs.relay_delay_ms == mine.relay_delay_ms and theirs.ttfc_ms == mine.ttfc_ms
        assert theirs.gaps_ms == [] and theirs.error_detail == (mine.error_detail and mine.error_detail[:300])
        for name in SessionRecord.__dataclass_fields__:
            if name not in ("gaps_ms", "error_detail"):
                assert getattr(theirs, name) == getattr(mine, name), name
    assert back[0].relay_delay_ms[3] == 1 / 3
    lines = gzip.decompress((tmp_path / "requests.jsonl.gz").read_bytes()).decode().splitlines()
    at = json.loads(lines[0])["fields"].index("relay_delay_ms")
    stored = [json.loads(line)[at] for line in lines[1:]]
    assert stored[0][3] == 1 / 3 and stored[0][2] == round(records[0].relay_delay_ms[2] * 1e6)
    assert all(isinstance(v, int) for delays in stored[1:] for v in delays)  # whole ns: stored as integers
    # The same sessions give the same bytes: no file name or time in the gzip header.
    recompute.write_compact(tmp_path / "loadtest" / "requests.jsonl", tmp_path / "again.gz")
    assert (tmp_path / "again.gz").read_bytes() == (tmp_path / "requests.jsonl.gz").read_bytes()


def test_every_figure_recomputes_from_the_committed_requests(tmp_path):
    rng, t0 = random.Random(7), 10**12
    scenario = SCENARIOS["relay-cost"]
    runs = {scenario.name: {"direct": [], "moonrelay": []}}
    for rep in (1, 2):
        this_rep = {}
        for target, proxy in (("direct", None), ("moonrelay", {"cpu_s": 8.5 + rep, "idle_rss_bytes": 137 * MIB,
                                                               "peak_rss_bytes": 163 * MIB + rep * 12_345})):
            rundir = tmp_path / "runs" / scenario.name / target / f"r{rep}"
            _write_run(rundir, _sessions(rng, 30, t0), t0)
            record = _finish({"scenario": scenario.name, "target": target, "proxy_usage": proxy,
                              "sim_usage": {"cpu_s": 5.0}, "upstream_peak_open": 29, "loadtest_exit": 0}, rundir)
            record["repeat"] = rep
            runs[scenario.name][target].append(record)
            this_rep[target] = record["figures"]
        metrics.add_overheads(this_rep)
    write_scenario_docs(tmp_path, [scenario], runs, {}, "python -m bench.run", {})
    assert (tmp_path / "runs/relay-cost/moonrelay/r2/loadtest/requests.jsonl.gz").exists()

    check = recompute.verify(tmp_path)
    assert check.differ == [] and check.missing == []
    assert sorted(check.recomputed) == ["relay-cost/direct/r1", "relay-cost/direct/r2",
                                        "relay-cost/moonrelay/r1", "relay-cost/moonrelay/r2"]
    assert recompute.main([str(tmp_path)]) == 0
    # Recomputing really reads the committed sessions: one session's first chunk 2 s later changes figures.
    gz = tmp_path / "runs/relay-cost/moonrelay/r2/loadtest/requests.jsonl.gz"
    lines = gzip.decompress(gz.read_bytes()).decode().splitlines()
    fields = json.loads(lines[0])["fields"]
    row = json.loads(lines[5])
    row[fields.index("first_chunk_ns")] += 2_000_000_000
    lines[5] = json.dumps(row)
    gz.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    differ = recompute.verify(tmp_path).differ
    assert any(d.startswith("relay-cost/moonrelay/r2 ttfc_p99_ms:") for d in differ)
    assert any(d.startswith("relay-cost/moonrelay/r2 ttfc_overhead_p99_ms:") for d in differ)
    assert any(d.startswith("relay-cost/moonrelay/median ttfc_p99_ms:") for d in differ)
    assert not any(d.startswith("relay-cost/direct/") for d in differ)
    assert recompute.main([str(tmp_path)]) == 1


def test_floor_launches_the_relays_with_one_worker(tmp_path):
    assert _pairs(floor_launch("moonrelay", SIM, tmp_path).argv)["--workers"] == "1"
    floor_launch("nginx", SIM, tmp_path)
    assert "worker_processes 1;" in (tmp_path / "nginx.conf").read_text()


def test_floor_request_and_response_framing():
    request = request_bytes("127.0.0.1:1")
    head, body = request.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and json.loads(body)["stream"] is True
    assert f"content-length: {len(body)}".encode() in head
    assert not response_complete(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
    assert response_complete(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


async def test_floor_client_drives_the_h11_floor_server(nursery):
    port = await nursery.start(serve_h11, 0)
    await drive(port, 50, keep_alive=True)
    await drive(port, 10, keep_alive=False)
    refusing = await nursery.start(serve_h11_refusing)
    with pytest.raises(ExceptionGroup) as failed:  # a server that refuses is an error, not a figure
        await drive(refusing, 1, keep_alive=True)
    assert failed.group_contains(RuntimeError, match="not a 200")


async def serve_h11_refusing(task_status=trio.TASK_STATUS_IGNORED) -> None:
    async def refuse(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(65536)
            await stream.send_all(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(refuse, listeners)


def test_token_rate_scenario_is_a_real_token_stream():
    sc = SCENARIOS["token-rate"]
    flags = sc.sim_flags()
    assert flags[flags.index("--ttft") + 1] == "2" and flags[flags.index("--ttft-jitter") + 1] == "1"
    assert flags[flags.index("--chunks") + 1] == "300"
    assert float(flags[flags.index("--interval") + 1]) == pytest.approx(1 / 30, rel=1e-8)
    assert sc.proxy_workers == 1  # one core's worth of proxy
    assert sc.with_streams(400).streams == 400 and sc.with_streams(400).chunks == 300


def test_a_redraw_keeps_the_machine_facts_the_runs_were_measured_on(tmp_path):
    """``--report`` redraws a folder written on another day (or machine): its facts stay the recorded ones."""
    from bench.run import main

    facts = {"cores (logical)": 2, "cpu": "Recorded CPU", "fd limit (soft, hard)": [20000, 20000],
             "date (UTC)": "2026-01-01 00:00"}
    (tmp_path / "bench.json").write_text(json.dumps({"commands": ["python -m bench.run --out x"], "machine": facts,
                                                     "versions": {}, "unavailable": {}}))
    scenario = SCENARIOS["token-rate"]
    runs = {scenario.name: {"nginx": [{"repeat": 1, "figures": {"cpu_us_per_chunk": 18.6, "completed": 100}}]}}
    write_scenario_docs(tmp_path, [scenario], runs, {"nginx": "nginx/1"}, "python -m bench.run --out x", facts)
    assert main(["--report", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "bench.json").read_text())["machine"] == facts
    readme_text = (tmp_path / "README.md").read_text()
    assert "- date (UTC): 2026-01-01 00:00" in readme_text and "- fd limit (soft, hard): (20000, 20000)" in readme_text
    assert (tmp_path / "cpu-per-chunk.png").exists() and (tmp_path / "token-rate-ttfc.png").exists()
