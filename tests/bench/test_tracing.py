"""bench/tracing.py runs end to end on a tiny load: the three cases measured (every sampled span flushed to its
collector process, or the run fails) and the report written."""

import json

from bench import tracing


def test_the_tracing_bench_runs_and_writes_its_report(tmp_path, capsys):
    assert tracing.main(["--sets", "20", "--rounds", "1", "--out", str(tmp_path)]) == 0
    rows = {r["case"]: r for r in json.loads((tmp_path / "results.json").read_text())["rows"]}
    assert set(rows) == {"off", "sampled", "unsampled"}
    assert 0 < rows["off"]["us_per_request"] < rows["unsampled"]["us_per_request"] < rows["sampled"]["us_per_request"]
    assert "| sampled |" in (tmp_path / "README.md").read_text() and "per chunk" in capsys.readouterr().out
