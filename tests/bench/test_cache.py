"""bench/cache.py runs end to end on a tiny load (the recorder keeps each stream, the store gives back what it was
given) and writes its report."""

import json

from bench import cache


def test_the_cache_bench_runs_and_writes_its_report(tmp_path):
    assert cache.main(["--chunks", "12", "--requests", "3", "--rounds", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["piece"] for r in rows] == ["key", "memory put + get", "record", "encode (Redis)", "decode (Redis)",
                                          "replay"]  # fmt: skip
    assert all(r["us"] > 0 for r in rows) and "| record |" in (tmp_path / "README.md").read_text()
