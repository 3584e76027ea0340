"""The embedded default (sim + relay as children) with a workload, live metrics and a shard, in one run."""

import json

import pytest

from loadtest.__main__ import SHAPED_INTERVAL_S, _profile, build_parser, main
from loadtest.workload import Workload, parse_distribution


def test_output_lengths_give_the_embedded_sim_a_tokens_pace():
    args = build_parser().parse_args(["--output-tokens", "normal:200,50"])
    assert _profile(args).interval_s == SHAPED_INTERVAL_S
    assert _profile(build_parser().parse_args(["--max-tokens", "9", "--interval", "0.2"])).interval_s == 0.2
    assert _profile(build_parser().parse_args([])).interval_s == 12.0  # the default profile: a slow LLM


@pytest.mark.slow
def test_embedded_workload_metrics_and_a_shard(tmp_path, capsys):
    shard = tmp_path / "s0"
    code = main(["-c", "6", "--ttft", "0.05", "--ttft-jitter", "0", "--interval", "0.01", "--seed", "4",
                 "--input-tokens", "uniform:10,40", "--output-tokens", "uniform:3,7", "--metrics-bind", "127.0.0.1:0",
                 "--shard", "0/1", "--coordinator-bind", "127.0.0.1:0", "--out", str(shard), "--quiet"])
    assert code == 0
    assert "metrics on http://127.0.0.1:" in capsys.readouterr().err
    result = json.loads((shard / "result.json").read_text())
    s = result["summary"]
    w = Workload(input_tokens=parse_distribution("uniform:10,40"), output_tokens=parse_distribution("uniform:3,7"),
                 seed=4)
    asked = [w.request(i).max_tokens for i in range(6)]
    # Through the relay: the sim answered each request with exactly its max_tokens (one token a chunk), plus the
    # final chunk with the usage that says so.
    assert (s["completed"], s["failed"]) == (6, 0)
    assert s["tokens"]["completion"] == sum(asked) and s["chunks"] == sum(asked) + 6
    assert result["config"]["workload"]["output_tokens"] == "uniform:3,7" and result["config"]["embedded"]

    assert main(["merge", str(shard), "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "result.json").read_text())["summary"]
    assert {k: merged[k] for k in ("sessions", "completed", "chunks", "tokens")} == {
        k: s[k] for k in ("sessions", "completed", "chunks", "tokens")}
