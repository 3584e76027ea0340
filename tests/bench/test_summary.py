"""The generated summary and trend: the committed files are what the committed runs give, every cell is the figure in
the run it links to, goals are met, missed by how much or not measured yet, and a new scenario joins by its data."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from bench import archive, goals, summary, trend
from bench.scenarios import SCENARIOS, Scenario
from tests.support import ROOT

RESULTS = ROOT / "results"
LINK = re.compile(r"\[([^\]]+)\]\(([^)]+\.json)\)")
NUMBER = re.compile(r"[−+-]?\d[\d,]*(?:\.\d+)?")


def _numbers(text: str) -> list[tuple[float, int]]:
    """Each number in ``text`` and how many decimals it was written with."""
    out = []
    for m in NUMBER.findall(text):
        plain = m.replace(",", "").replace("−", "-")
        out.append((float(plain), len(plain.split(".")[1]) if "." in plain else 0))
    return out


def _agrees(text: str, values: list[float], ratio: float | None) -> bool:
    """``text`` shows ``values`` (each rounded as written) and, in "(N×)", ``ratio``."""
    main, _, rest = text.partition(" (")
    shown = _numbers(main)
    if len(shown) != len(values) or any(round(v, d) != n for v, (n, d) in zip(values, shown, strict=True)):
        return False
    if rest:
        [(n, d)] = _numbers(rest)
        return ratio is not None and round(ratio, d) == n
    return True


def _expected(row: summary.Row, median: dict) -> list[float]:
    if row.keys == summary.FAILURES:
        done, unverified, failed = (median[k] for k in row.keys)
        return [done, *([unverified] if unverified else []), failed]
    return [median[k] for k in row.keys]


# --- the committed files --------------------------------------------------------------------------------------


def test_the_committed_summary_readme_section_and_trend_are_what_the_runs_give():
    """Nobody edits them by hand: run ``python -m bench.summary`` after adding a run or changing a goal."""
    assert summary.stale() == []


def test_every_summary_cell_is_the_figure_in_the_run_it_links_to():
    text = (RESULTS / "SUMMARY.md").read_text()
    rows = {r.label: r for r in summary.ROWS}
    checked = 0
    for line in text.splitlines():
        label = line.split("|")[1].strip() if line.startswith("| ") else ""
        if label not in rows:
            continue
        for shown, path in LINK.findall(line):
            doc = json.loads((RESULTS / path).read_text())
            nginx_path = RESULTS / path.rsplit("/", 1)[0] / f"{doc['scenario']['name']}-nginx.json"
            nginx = json.loads(nginx_path.read_text())["median"] if nginx_path.exists() else {}
            row, median = rows[label], doc["median"]
            ref = nginx.get(row.keys[0])
            ratio = median[row.keys[0]] / ref if row.ratio and ref and doc["target"] != "nginx" else None
            assert _agrees(shown, _expected(row, median), ratio), f"{label}: {shown} vs {path}"
            checked += 1
    assert checked >= 50


def test_every_readme_cell_is_the_figure_in_the_run_it_links_to():
    text = (ROOT / "README.md").read_text()
    section = text[text.index(summary.START):text.index(summary.END)]
    refs = dict(re.findall(r'^\[(\d+)\]: (\S+) "[^"]+"$', section, re.M))
    header = None
    checked = 0
    for line in section.splitlines():
        if line.startswith("| scenario |"):
            header = [c.strip() for c in line.strip("|").split("|")]
            continue
        if header is None or not line.startswith("| ") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        scenario = cells[0]
        for column, cell in zip(header[1:], cells[1:], strict=True):
            if cell == "—":  # a peer not run in this scenario yet
                continue
            m = re.fullmatch(r"\[([^\]]+)\]\[(\d+)\]", cell)
            assert m, cell
            target = {summary.name(t): t for t in summary.README_COLUMNS}[column]
            folder = ROOT / refs[m.group(2)].removesuffix("README.md")
            median = json.loads((folder / f"{scenario}-{target}.json").read_text())["median"]
            nginx = json.loads((folder / f"{scenario}-nginx.json").read_text())["median"]
            key = "cpu_us_per_chunk" if median.get("cpu_us_per_chunk") is not None else "cpu_us_per_request"
            value = median[key]
            ratio = value / nginx[key] if target != "nginx" else None
            assert _agrees(m.group(1), [value], ratio), f"{scenario} {target}: {cell}"
            checked += 1
    rows = [r for r in section.splitlines() if r.startswith("| ") and "scenario" not in r]
    assert checked == sum(len(re.findall(r"\]\[\d+\]", r)) for r in rows) >= 2 * len(rows)  # moonrelay, nginx


def test_the_summary_judges_the_latest_run_of_each_goal():
    judged = {j.goal.what: j for j in summary.generate().judged}
    token = judged["token rate: CPU per chunk ≤ 2× nginx"]
    run = archive.latest(archive.discover(RESULTS)[0], "token-rate", "moonrelay")
    assert token.run.folder == run.folder
    assert token.verdict.measured == pytest.approx(run.ratio("moonrelay", "cpu_us_per_chunk"))
    request_goals = [j for j in judged.values() if j.goal.scenario == "requests"]
    run = archive.latest(archive.discover(RESULTS)[0], "requests", "moonrelay")
    assert request_goals and all(j.run.folder == run.folder for j in request_goals)


# --- the pieces, from fixtures --------------------------------------------------------------------------------


def _doc(folder: Path, scenario: str, target: str, median: dict | None, *, date: str, version: str = "git abc1234",
         shape: dict | None = None) -> None:
    sc = shape or dataclasses.asdict(SCENARIOS[scenario])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{scenario}-{target}.json").write_text(json.dumps({
        "scenario": sc, "target": target, "version": version if target.startswith("moonrelay") else "v1",
        "median": median, "repeats": [{"repeat": 1}], "command": f"python -m bench.run --out {folder.name}",
        "machine": {"date (UTC)": date, "cores (logical)": 2, "cpu": "Test(R) CPU Processor", "memory": "1.0 GiB"},
    }))


def _cpu(us: float, **more) -> dict:
    return {"cpu_us_per_chunk": us, "completed": 100, "unverified": 0, "failed": 0, **more}


def test_each_column_comes_from_the_newest_run_beside_nginx(tmp_path):
    old, new, alone = tmp_path / "bench-old", tmp_path / "bench-new", tmp_path / "ab" / "bench-alone"
    for target, us in (("moonrelay", 60.0), ("nginx", 20.0), ("litellm", 800.0)):
        _doc(old, "token-rate", target, _cpu(us), date="2026-12-01 10:00", version="git 1111111")
    for target, us in (("moonrelay", 50.0), ("nginx", 25.0)):
        _doc(new, "token-rate", target, _cpu(us), date="2026-12-02 10:00", version="git 2222222")
    _doc(alone, "token-rate", "moonrelay", _cpu(10.0), date="2026-12-03 10:00")  # no nginx: no ratio, not picked
    scaled = dataclasses.replace(SCENARIOS["token-rate"], streams=10)
    _doc(tmp_path / "bench-smoke", "token-rate", "moonrelay", _cpu(1.0), date="2026-12-04 10:00",
         shape=dataclasses.asdict(scaled))
    runs, left_out = archive.discover(tmp_path)
    assert left_out == ["bench-smoke (token-rate): not today's shape: streams 10 (now 100)"]
    [sc] = summary.build(runs, []).scenarios
    assert {t: r.folder for t, r in sc.columns.items()} == {"moonrelay": "bench-new", "nginx": "bench-new",
                                                             "litellm": "bench-old"}
    text = summary.render_summary(summary.build(runs, [], left_out), tmp_path)
    assert "| proxy CPU µs per chunk | [50.0 (2.00×)](bench-new/token-rate-moonrelay.json) | " \
           "[25.0](bench-new/token-rate-nginx.json) | [800.0 (40.00×)](bench-old/token-rate-litellm.json) |" in text
    assert "[12-01 10:00, 1111111](bench-old/)" in text  # the older run says it is older
    assert "- bench-smoke (token-rate): not today's shape" in text
    [(_, (key, rows))] = trend.by_scenario(runs).items()
    assert key == "cpu_us_per_chunk" and [r.folder for r in rows] == ["bench-old", "bench-new"]


@pytest.mark.parametrize(("kind", "mine", "nginx", "status", "by"), [
    ("ratio", 51.5, 18.6, "missed", 51.5 / 18.6 - 2.0),
    ("ratio", 30.0, 18.0, "met", None),
    ("above_nginx", 499.4, 18.6, "missed", 499.4 - 18.6 - 100.0),
    ("above_nginx", 20.0, -50.0, "met", None),
    ("at_most", 36.7, 17.8, "missed", 36.7 - 20.0),
    ("at_most", 0, 0, "met", None),
    ("at_most", None, 17.8, "not measured yet", None),
    ("ratio", 51.5, None, "not measured yet", None),
])
def test_a_goal_is_met_missed_by_how_much_or_not_measured_yet(kind, mine, nginx, status, by):
    limit = {"ratio": 2.0, "above_nginx": 100.0, "at_most": 20.0 if mine else 0}[kind]
    goal = goals.Goal("g", "token-rate", "f", kind, limit, "×" if kind == "ratio" else "ms", "issue 0", "words")
    verdict = goals.judge(goal, mine, nginx)
    assert verdict.status == status
    assert verdict.by == (pytest.approx(by) if by is not None else None)


def test_every_goal_in_the_file_names_its_source_and_a_known_kind():
    for g in goals.load():
        assert g.source.startswith("issue ") and g.text and g.kind in goals.KINDS


def test_a_new_scenario_joins_the_summary_and_its_goals_by_its_data(tmp_path):
    shape = dataclasses.asdict(Scenario("requests", streams=50, ttft_s=0, ttft_jitter_s=0, chunks=1, interval_s=0,
                                        proxy_workers=1))
    folder = tmp_path / "bench-requests"
    for target, cpu, p99 in (("moonrelay", 210.0, 0.8), ("nginx", 70.0, 0.1), ("openai-forward", 900.0, 9.0)):
        _doc(folder, "requests", target, {"cpu_us_per_request": cpu, "added_latency_p50_ms": p99 / 2,
                                          "added_latency_p99_ms": p99, "completed": 5000, "unverified": 0,
                                          "failed": 0}, date="2026-12-06 10:00", shape=shape)
    runs, _ = archive.discover(tmp_path)
    built = summary.build(runs, goals.load())
    judged = {j.goal.what: j.verdict for j in built.judged if j.goal.scenario == "requests"}
    assert judged["CPU per non-streaming request ≤ 3× nginx"].status == "met"  # 3.00×
    assert judged["added latency p99 ≤ 1 ms at 500 requests/s, one worker"].status == "met"
    assert all(j.verdict.status == "not measured yet" for j in built.judged if j.goal.scenario == "token-rate")
    text = summary.render_summary(built, tmp_path)
    assert "| proxy CPU µs per request | [210.0 (3.00×)](bench-requests/requests-moonrelay.json) |" in text
    assert "| added latency vs direct, p50 / p99 ms | [+0.40 / +0.80]" in text
    section = summary.render_readme_section(built, tmp_path)
    title = "2026-12-06 10:00 UTC, moonrelay git abc1234"  # the machine is in results/SUMMARY.md
    assert f'[1]: results/bench-requests/ "{title}"' in section
    assert "| requests | [210 (3.00×)][1] | [70.0][1] | — | [900 (13×)][1] |" in section
    assert "Met: CPU per non-streaming request ≤ 3× nginx; added latency p99" in section


def test_the_readme_section_lies_between_its_markers():
    text = f"# T\n\n## Results\n\n{summary.START}\nold\n{summary.END}\n\n## Next\n"
    assert summary.replace_section(text, f"{summary.START}\nnew\n{summary.END}") == (
        f"# T\n\n## Results\n\n{summary.START}\nnew\n{summary.END}\n\n## Next\n")
    with pytest.raises(ValueError, match="section"):
        summary.replace_section("# T\n", "x")
