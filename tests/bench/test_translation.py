"""bench/translation.py runs end to end on a tiny load: every path relays its streams whole (the asserts inside
each path: every event well formed, each translator done with the usage) and the report is written."""

import json

from bench import translation


def test_the_translation_bench_runs_and_writes_its_report(tmp_path, capsys):
    assert translation.main(["--chunks", "12", "--streams", "2", "--rounds", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {(r["workload"], r["path"]) for r in rows} == {
        ("text", "chat"), ("text", "messages"), ("text", "responses"), ("text", "messages-native"),
        ("tools", "chat"), ("tools", "messages"), ("tools", "responses")}  # fmt: skip
    assert all(r["us_per_chunk"] > 0 for r in rows)
    assert "| text | messages |" in (tmp_path / "README.md").read_text() and "vs chat" in capsys.readouterr().out
