"""The ``loadtest`` command line: parsing, a run against the sim CLI, report/compare, the embedded mode."""

import argparse
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.__main__ import build_parser, config_from_args, main, parse_duration, parse_slo
from loadtest.embedded import relay_workers_for, sim_workers_for
from loadtest.workload import load_dataset
from tests.support.children import assert_one_line_errors


def test_parse_slo_and_durations():
    assert parse_slo("ttfc=500ms,e2e=10s") == {"ttfc_ms": 500.0, "e2e_ms": 10000.0}
    assert parse_slo("gap=250") == {"gap_ms": 250.0}
    assert parse_duration("2m") == 120 and parse_duration("1.5") == 1.5 and parse_duration("20ms") == 0.02
    with pytest.raises(argparse.ArgumentTypeError):
        parse_slo("latency=5s")


def test_config_from_flags(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('"hello"\n{"prompt": "moon"}\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert len(load_dataset(str(data))) == 3
    args = build_parser().parse_args([
        "--url", "http://127.0.0.1:1/v1", "-c", "50", "--requests", "100", "--no-keepalive", "--no-stream",
        "--prompts", str(data), "--ttft", "0.1", "--ramp-up", "2s", "--timeout", "30",
    ])
    cfg = config_from_args(args, args.url)
    assert (cfg.concurrency, cfg.requests, cfg.keepalive, cfg.stream, cfg.ramp_up_s, cfg.timeout_s) == (
        50, 100, False, False, 2.0, 30.0
    )
    assert len(cfg.workload.prompts) == 3 and cfg.extra_body == {"sim_ttft": 0.1}
    big = config_from_args(build_parser().parse_args(["-c", "10000"]), "http://x/v1")
    assert big.ramp_up_s == 50.0 and big.extra_body == {}  # embedded: the profile goes to the sim's flags


def test_server_sizing():
    assert relay_workers_for(10_000, 20_000) == 2
    assert relay_workers_for(1_000, 20_000) == 1
    assert relay_workers_for(20_000, 20_000) == 3
    assert relay_workers_for(1_000, 1_024) == 3
    assert sim_workers_for(10_000, 20_000) == 1 and sim_workers_for(25_000, 20_000) == 3


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--rate", "5"])
    assert exc.value.code == 2
    assert "--rate needs" in capsys.readouterr().err


def test_command_line_mistakes_are_one_line_with_status_2():
    """The load generator's and the simulated upstream's: a bad --url or --bind, a port in use, an unknown flag."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    loadtest = [sys.executable, "-m", "loadtest", "--requests", "1", "--quiet"]
    sim = [sys.executable, "-m", "loadtest.sim"]
    cases = [
        (loadtest + ["--url", "http://127.0.0.1:99999/v1"], "loadtest: --url 'http://127.0.0.1:99999/v1': "),
        (loadtest + ["--url", "127.0.0.1:8117/v1"], "loadtest: --url '127.0.0.1:8117/v1': expected http"),
        (loadtest + ["--urll", "http://127.0.0.1:1/v1"], "did you mean --url?"),
        (sim + ["--bind", "localhost"], "python -m loadtest.sim: argument --bind: expected HOST:PORT"),
        (sim + ["--bind", "127.0.0.1:99999"], "0-65535"),
        (sim + ["--bind", f"127.0.0.1:{port}"], f"sim: cannot listen on 127.0.0.1:{port}: the port is in use"),
        (sim + ["--bind", f"127.0.0.1:{port}", "--workers", "2"], "the port is in use"),
        (sim + ["--bind", "no-such-host.invalid:9100"], "unknown host"),
    ]
    try:
        assert_one_line_errors(cases)
    finally:
        taken.close()


@pytest.fixture
def sim_url():
    """The sim's own CLI, as a child process on an ephemeral port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.sim", "--bind", "127.0.0.1:0", "--ttft", "0.02", "--chunks", "3",
         "--interval", "0.01"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        m = re.search(r"https?://\S+", line)
        assert m, f"sim did not start: {line!r}"
        yield m.group(0)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def test_run_against_url_writes_report_then_report_and_compare(sim_url, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--url", sim_url, "-c", "20", "--requests", "40", "--out", str(out), "--quiet",
                 "--slo", "ttfc=5s,e2e=10s"])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    s = result["summary"]
    assert (s["completed"], s["failed"], s["peak_concurrency"]) == (40, 0, 20)
    assert s["relay_delay_ms"]["p50"] is not None and s["goodput"]["sessions"] == 40
    assert (out / "report.md").exists()
    assert len((out / "requests.jsonl").read_text().splitlines()) == 40
    assert "40 completed, 0 failed" in capsys.readouterr().out

    assert main(["report", str(out / "result.json")]) == 0
    assert "loadtest" in capsys.readouterr().out.lower()
    assert main(["compare", str(out / "result.json"), str(out / "result.json")]) == 0
    assert "ttfc" in capsys.readouterr().out.lower()


def test_progress_is_a_plain_line_every_few_seconds_when_stdout_is_not_a_terminal(sim_url, tmp_path, capsys,
                                                                                   monkeypatch):  # fmt: skip
    """CI and ``| tee`` see the run move (rich's live table is for terminals only); --quiet silences both."""
    from loadtest import progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.1)
    args = ["--url", sim_url, "-c", "5", "--requests", "10", "--ttft", "0.3", "--no-save-requests"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if re.fullmatch(r"loadtest \d+s: open \d+ .*", x)]
    assert len(lines) >= 2 and "completed 0/10" in lines[0] and "TTFC p50/p99" in lines[-1], lines
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert "loadtest 0s:" not in capsys.readouterr().out


async def test_plain_progress_comes_every_five_seconds(autojump_clock):
    import io

    import trio

    from loadtest.progress import LiveStats, show

    live, out = LiveStats(), io.StringIO()
    live.planned = 4
    live.started()
    with trio.move_on_after(16):
        await show(live, out=out)
    assert out.getvalue().splitlines() == [
        f"loadtest {t}s: open 1  completed 0/4  failed 0  TTFC p50/p99 -" for t in (5, 10, 15)
    ]


def test_failures_give_exit_status_1(tmp_path):
    import socket

    with socket.socket() as s:  # bound, never listening: connections are refused, and nobody else can take the port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        code = main(["--url", f"http://127.0.0.1:{port}/v1", "-c", "2", "--out", str(tmp_path), "--quiet",
                     "--no-save-requests"])
    assert code == 1
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["summary"]["errors_by_kind"] == {"connect": 2}
    assert not (tmp_path / "requests.jsonl").exists()


@pytest.mark.slow
def test_embedded_smoke(tmp_path: Path):
    """Sim and relay as child processes, sized and stopped by the load generator itself."""
    code = main(["-c", "30", "--ttft", "0.05", "--ttft-jitter", "0.01", "--chunks", "3", "--interval", "0.05",
                 "--baseline", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    result = json.loads((tmp_path / "result.json").read_text())
    s = result["summary"]
    assert (s["completed"], s["failed"], s["peak_concurrency"]) == (30, 0, 30)
    # Sampled every 0.5 s from the sim: these 0.2 s streams may fall between samples, but never exceed 30.
    assert isinstance(s["upstream_peak_open"], int) and 0 <= s["upstream_peak_open"] <= 30
    assert s["direct"]["completed"] == 30 and s["overhead_ms"]["ttfc_p50"] is not None
    roles = sorted(p["role"] for p in result["processes"])
    assert roles == ["loadtest", "relay", "sim"]
    relay = next(p for p in result["processes"] if p["role"] == "relay")
    assert relay["cpu_s"] > 0 and relay["idle_rss_bytes"] > 0
    assert result["config"]["embedded"] and result["config"]["relay_workers"] == 1
    assert "sim listening" in (tmp_path / "sim.log").read_text()
