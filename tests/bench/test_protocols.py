"""bench/protocols.py runs end to end on a tiny load: a relay per path in front of one sim, every stream read whole
to its last event (asserted inside), and the report is written."""

import json

from bench import protocols


def test_the_protocols_bench_runs_and_writes_its_report(tmp_path, capsys):
    argv = ["--streams", "4", "--concurrency", "4", "--chunks", "5", "--interval", "0.001", "--rounds", "1"]
    assert protocols.main([*argv, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["path"] for r in rows] == ["chat", "responses translated", "responses native",
                                          "messages translated", "messages native"]
    assert all(r["cpu_us_per_chunk"] >= 0 for r in rows)
    assert "| responses native |" in (tmp_path / "README.md").read_text() and "vs chat" in capsys.readouterr().out


def test_a_run_that_read_no_cpu_on_chat_still_reports(tmp_path, monkeypatch):
    """psutil's CPU times tick in 10 ms: a tiny run can read 0 for chat, and the ratios then say so instead of
    dividing by it."""
    monkeypatch.setattr(protocols.trio, "run", lambda *_: {name: [0.0] for name in protocols.PATHS})
    assert protocols.main(["--out", str(tmp_path)]) == 0
    assert "| chat | 0.0 | – |" in (tmp_path / "README.md").read_text()
