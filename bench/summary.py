"""``python -m bench.summary``: where moonrelay stands, from the latest committed run of each scenario.

Writes ``results/SUMMARY.md`` (every scenario's table against nginx, LiteLLM and openai-forward, each figure linked
to the run it came from, the goals of ``bench/goals.toml`` met, missed by how much or not measured yet),
``results/summary.png`` (one figure), the section of ``README.md`` between its summary markers, and the trend
(:mod:`bench.trend`). Nothing in them is typed by hand: change a run or a goal, then run this again;
``--check`` only says whether the files are what the runs give (exit 1 if not), and a test does the same.

Which run a column comes from: for each scenario and target, the newest run (``date (UTC)`` of the command that
wrote it) in which the target ran beside nginx, so that every ratio is to nginx in the same run. A peer that has
not run since an older run shows that older run, and says so. Rendering is pure (runs in, text out); only
:func:`write` and :func:`main` touch files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import archive, goals, readme
from bench.archive import REFERENCE, Run

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
README = ROOT / "README.md"
SUMMARY_NAME = "SUMMARY.md"
FIGURE_NAME = "summary.png"
START = "<!-- bench.summary: written by `python -m bench.summary` from results/ and bench/goals.toml; never by hand -->"
END = "<!-- /bench.summary -->"

# The targets a reader compares; the A/B variants (moonrelay-nopump, -quiet, ...) stay in their runs' own reports.
COMPARED = ("moonrelay", "nginx", "litellm", "litellm-tuned", "openai-forward", "openai-forward-tuned")
README_COLUMNS = ("moonrelay", "nginx", "litellm", "openai-forward")
NAMES = {"litellm": "LiteLLM", "litellm-tuned": "LiteLLM tuned", "openai-forward-tuned": "openai-forward tuned"}


def name(target: str) -> str:
    return NAMES.get(target, target)


def number(value: float, fmt: str) -> str:
    return fmt.format(value).replace("-", "−")


@dataclass(frozen=True)
class Row:
    """One figure of a scenario table: the median keys it shows and how."""

    label: str
    keys: tuple[str, ...]
    fmt: str
    ratio: bool = False  # "(N×)": the first key over nginx's, same run

    def text(self, median: dict[str, Any], ref: dict[str, Any] | None) -> str | None:
        """The cell for one target's medians; None where the run has none of this figure."""
        values = [median.get(k) for k in self.keys]
        if self.keys == FAILURES:
            done, unverified, failed = values
            if done is None or failed is None:
                return None
            left = f"{done:,.0f}" + (f" + {unverified:,.0f} unverified" if unverified else "")
            return f"{left} / {failed:,.0f}"
        if any(not isinstance(v, int | float) for v in values):
            return None
        text = " / ".join(number(v, self.fmt) for v in values)
        nginx = (ref or {}).get(self.keys[0])
        if self.ratio and median is not ref and isinstance(nginx, int | float) and nginx > 0:
            text += f" ({values[0] / nginx:.2f}×)"
        return text


FAILURES = ("completed", "unverified", "failed")
ROWS: tuple[Row, ...] = (
    Row("proxy CPU µs per chunk", ("cpu_us_per_chunk",), "{:,.1f}", ratio=True),
    Row("proxy CPU µs per request", ("cpu_us_per_request",), "{:,.1f}", ratio=True),
    Row("TTFC overhead vs direct, p50 / p99 ms", ("ttfc_overhead_p50_ms", "ttfc_overhead_p99_ms"), "{:+,.1f}"),
    Row("added latency vs direct, p50 / p99 ms", ("added_latency_p50_ms", "added_latency_p99_ms"), "{:+,.2f}"),
    Row("first chunk after the sim sent it, p50 / p99 ms", ("first_chunk_delay_p50_ms", "first_chunk_delay_p99_ms"),
        "{:,.1f}"),
    Row("memory per upstream stream KB", ("mem_per_stream_kb",), "{:,.1f}", ratio=True),
    Row("memory per client session KB", ("mem_per_session_kb",), "{:,.1f}", ratio=True),
    Row("completed / failed", FAILURES, "{:,.0f}"),
)


@dataclass
class Scenario:
    name: str
    shape: dict[str, Any]
    columns: dict[str, Run]  # target -> the run its column comes from (only targets that ran)

    @property
    def main(self) -> Run:
        """moonrelay's run (else nginx's, else any): the run a scenario's heading names."""
        for t in ("moonrelay", REFERENCE, *self.columns):
            if t in self.columns:
                return self.columns[t]
        raise ValueError(f"{self.name}: no run")

    def runs(self) -> list[Run]:
        """Each run a column comes from, once, newest first."""
        seen: dict[str, Run] = {}
        for run in self.columns.values():
            seen.setdefault(run.folder, run)
        return sorted(seen.values(), key=lambda r: (r.date, r.folder), reverse=True)


@dataclass
class Judged:
    goal: goals.Goal
    run: Run | None
    verdict: goals.Verdict


@dataclass
class Summary:
    scenarios: list[Scenario]
    judged: list[Judged]
    left_out: list[str] = field(default_factory=list)


def build(runs: list[Run], goal_list: list[goals.Goal], left_out: list[str] | None = None) -> Summary:
    """The summary of ``runs`` (pure)."""
    scenarios = []
    for sc in archive.scenario_order({r.scenario for r in runs}):
        columns = {t: run for t in COMPARED if (run := archive.latest(runs, sc, t)) is not None}
        if columns:
            first = next(iter(columns.values()))
            scenarios.append(Scenario(sc, next(iter(first.docs.values()))["scenario"], columns))
    judged = []
    for g in goal_list:
        run = archive.latest(runs, g.scenario, "moonrelay")
        mine = run.figure("moonrelay", g.figure) if run else None
        ref = run.figure(REFERENCE, g.figure) if run else None
        judged.append(Judged(g, run, goals.judge(g, mine, ref)))
    return Summary(scenarios, judged, list(left_out or []))


# --- Markdown -------------------------------------------------------------------------------------------------


def run_facts(run: Run) -> str:
    return (f"{run.date} UTC, moonrelay {run.commit or '—'}, {archive.machine_label(run.machine)}, "
            f"{run.repeats} repeat{'s' * (run.repeats != 1)}")


def _cell(row: Row, sc: Scenario, target: str) -> str | None:
    run = sc.columns[target]
    median = run.median(target)
    if median is None:
        return None
    return row.text(median, run.median(REFERENCE))


def scenario_table(sc: Scenario, results: Path) -> list[str]:
    targets = list(sc.columns)
    lines = ["| | " + " | ".join(name(t) for t in targets) + " |", "|---|" + "---:|" * len(targets)]
    runs = [f"[{r.date[5:]}, {r.commit.removeprefix('git ') or '—'}]({archive.link(results, r)})"
            for r in (sc.columns[t] for t in targets)]
    lines.append("| run (UTC date, moonrelay commit) | " + " | ".join(runs) + " |")
    for row in ROWS:
        cells = [_cell(row, sc, t) for t in targets]
        if all(c is None for c in cells):
            continue
        shown = [f"[{c}]({sc.columns[t].doc_path(t)})" if c is not None else "—"
                 for c, t in zip(cells, targets, strict=True)]
        lines.append(f"| {row.label} | " + " | ".join(shown) + " |")
    return lines


def goal_rows(summary: Summary, results: Path, prefix: str = "") -> list[str]:
    lines = ["| goal | source | measured | verdict |", "|---|---|---|---|"]
    for j in summary.judged:
        g, v = j.goal, j.verdict
        if j.run is None:
            measured = f"no committed `{g.scenario}` run"
        elif v.measured is None:
            measured = f"{v.note} ([{j.run.folder}]({prefix}{archive.link(results, j.run)}))"
        else:
            measured = f"[{v.note}]({prefix}{j.run.doc_path('moonrelay')}) ({j.run.date[:10]})"
        limit = goals.fmt(g.limit, g.unit)
        lines.append(f"| {g.what} | {g.source} | {measured} | {v.text(g.unit)}"
                     + (f" (limit {limit})" if v.status == "missed" else "") + " |")
    return lines


def counts(summary: Summary) -> str:
    tally = {s: sum(j.verdict.status == s for j in summary.judged) for s in ("met", "missed", "not measured yet")}
    return ", ".join(f"{n} {s}" for s, n in tally.items())


def render_summary(summary: Summary, results: Path) -> str:
    out = [
        "# Where moonrelay stands",
        "",
        START,
        "",
        "The latest committed run of each scenario, side by side. Each figure is the median over the run's repeats "
        "and links to the file it came from; `(N×)` is the ratio to nginx **in the same run** (this VM's speed "
        "drifts up to 3× between hours, so ratios compare across runs and absolute µs do not). Each column comes "
        "from the newest run in which that target ran beside nginx: for a peer that has not run since, an older "
        "run, named in the table's first row and listed under it with its machine and command. How the bench "
        "measures: [bench/README.md](../bench/README.md); every run: [README.md](README.md); each change and "
        "its effect: [PERF-LOG.md](PERF-LOG.md); the same figures across every run: [TREND.md](TREND.md).",
        "",
        f"![Proxy CPU per relayed chunk, × nginx in the same run, latest run of each scenario]({FIGURE_NAME})",
        "",
        "## Goals",
        "",
        f"The project's own goals (`bench/goals.toml`, each with its issue's words), judged on moonrelay in the "
        f"latest run of the goal's scenario: {counts(summary)}.",
        "",
        *goal_rows(summary, results),
        "",
    ]
    for sc in summary.scenarios:
        out += [f"## {sc.name}", "", f"{readme.describe(sc.shape)}.", "", *scenario_table(sc, results), ""]
        for run in sc.runs():
            cmd = (run.docs.get("moonrelay") or next(iter(run.docs.values()))).get("command", "")
            out.append(f"- [{run.folder}]({archive.link(results, run)}): {run_facts(run)}; `{cmd}`")
        out.append("")
    out += ["## Goals' words", ""]
    for source, text in dict.fromkeys((j.goal.source, j.goal.text) for j in summary.judged):
        out.append(f"- {source}: “{text}”")
    out.append("")
    if summary.left_out:
        out += ["## Runs left out", "", *[f"- {why}" for why in summary.left_out], ""]
    out += [END, ""]
    return "\n".join(out)


def headline_text(run: Run, target: str, key: str) -> str | None:
    """A README cell: the figure to three significant digits or so, and its ratio to nginx in the same run."""
    value, ratio = run.figure(target, key), run.ratio(target, key)
    if value is None:
        return None
    text = f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    if ratio is not None and target != REFERENCE:
        text += f" ({ratio:.0f}×)" if ratio >= 10 else f" ({ratio:.2f}×)"
    return text


def render_readme_section(summary: Summary, results: Path) -> str:
    """The README's results: the headline figure per scenario against the three peers, and every goal's verdict."""
    refs: dict[str, int] = {}
    titles: dict[str, list[str]] = {}  # one folder may hold runs of several commands: each says its own

    def ref(run: Run) -> str:
        link = archive.link(results, run)
        title = f"{run.date} UTC, moonrelay {run.commit or '—'}"  # the machine: results/SUMMARY.md
        if title not in titles.setdefault(link, []):
            titles[link].append(title)
        return f"[{refs.setdefault(link, len(refs) + 1)}]"

    lines = ["| scenario | " + " | ".join(name(t) for t in README_COLUMNS) + " |",
             "|---|" + "---:|" * len(README_COLUMNS)]
    for sc in summary.scenarios:
        key = archive.headline_key(list(sc.columns.values()))
        if key is None:
            continue
        cells = []
        for t in README_COLUMNS:
            text = headline_text(sc.columns[t], t, key) if t in sc.columns else None
            cells.append(f"[{text}]{ref(sc.columns[t])}" if text else "—")
        lines.append(f"| {sc.name} | " + " | ".join(cells) + " |")
    verdicts = []
    for status in ("met", "missed", "not measured yet"):
        these = [j for j in summary.judged if j.verdict.status == status]
        if these:
            items = "; ".join(j.goal.what + (f" (by {goals.fmt(j.verdict.by, j.goal.unit)})" if j.verdict.by else "")
                              for j in these)
            verdicts.append(f"{status.capitalize()}: {items}.")
    return "\n".join([
        START,
        "Proxy CPU µs per relayed chunk (per request where no chunks) in the latest committed run of each "
        "scenario, median of its repeats; "
        f"`(N×)`: the ratio to nginx in the same run. Each figure with its run and machine: [results/{SUMMARY_NAME}]"
        f"(results/{SUMMARY_NAME}); every run: [results/README.md](results/README.md).",
        "",
        *lines,
        "",
        f"![Proxy CPU per relayed chunk, × nginx in the same run](results/{FIGURE_NAME})",
        "",
        f"**Goals** ([each with its source and run](results/{SUMMARY_NAME}#goals)). " + " ".join(verdicts),
        "",
        *[f'[{n}]: results/{link} "{"; ".join(titles[link])}"' for link, n in refs.items()],
        END,
    ])


def replace_section(text: str, section: str) -> str:
    """``text`` with what lies between the summary markers (markers included) replaced by ``section``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no {START!r} ... {END!r} section")
    return text[:start] + section + text[end + len(END):]


# --- the figure -----------------------------------------------------------------------------------------------


def draw(summary: Summary, path: Path):
    """Proxy CPU per chunk (or per request) over nginx's in the same run: one bar row per scenario."""
    from bench import plots  # matplotlib only when drawing

    rows = []
    for sc in summary.scenarios:
        key = archive.headline_key(list(sc.columns.values()))
        if key is None:
            continue
        main = sc.main
        values, labels, ticks = {}, {}, {}
        for t, run in sc.columns.items():
            ratio, value = run.ratio(t, key), run.figure(t, key)
            if ratio is None or value is None:
                continue
            values[t] = ratio
            labels[t] = f"{ratio:.2f}× ({plots.value_text(value)} µs)"
            if run is not main:
                ticks[t] = f"{t}\n(run of {run.date[:10]})"
        goal = next((j.goal for j in summary.judged
                     if j.goal.scenario == sc.name and j.goal.figure == key and j.goal.kind == "ratio"), None)
        per = "chunk" if key == "cpu_us_per_chunk" else "request"
        rows.append(plots.Bars(
            title=f"{sc.name} (per {per}) · {main.folder} · {main.date} UTC · {main.commit or 'no moonrelay'} · "
                  f"{archive.machine_label(main.machine)}",
            values=values, labels=labels, ticks=ticks, goal=goal.limit if goal else None,
            goal_label=f"goal ≤ {goal.limit:g}× ({goal.source})" if goal else ""))
    return plots.bar_rows(rows, "Proxy CPU per relayed chunk ÷ nginx's in the same run: the latest committed run of "
                          "each scenario", "× nginx's CPU (linear, from 0)", path)


# --- files ----------------------------------------------------------------------------------------------------


def generate(results: Path = RESULTS, goal_file: Path = goals.GOALS_FILE) -> Summary:
    runs, left_out = archive.discover(results)
    return build(runs, goals.load(goal_file), left_out)


def expected_files(results: Path, readme_path: Path, summary: Summary) -> dict[Path, str]:
    """Every text file the summary writes, with the text it should hold."""
    from bench import trend

    return {
        results / SUMMARY_NAME: render_summary(summary, results),
        readme_path: replace_section(readme_path.read_text(), render_readme_section(summary, results)),
        **trend.expected_files(results),
    }


def write(results: Path = RESULTS, readme_path: Path = README, *, figures: bool = True,
          echo: Callable[[str], None] = print) -> list[Path]:
    """Write SUMMARY.md, the README section, the trend, and (``figures``) their PNGs; returns what was written."""
    from bench import trend

    summary = generate(results)
    written = []
    for path, text in expected_files(results, readme_path, summary).items():
        path.write_text(text)
        written.append(path)
    if figures:
        draw(summary, results / FIGURE_NAME)
        written += [results / FIGURE_NAME, *trend.draw_all(results)]
    for p in written:
        echo(f"[bench.summary] wrote {p}")
    return written


def stale(results: Path = RESULTS, readme_path: Path = README) -> list[Path]:
    """The text files that differ from what the runs give."""
    summary = generate(results)
    return [p for p, text in expected_files(results, readme_path, summary).items()
            if not p.exists() or p.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=RESULTS, help="the results folder (default: the repository's)")
    p.add_argument("--readme", type=Path, default=README, help="the README.md holding the summary section")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is not what the runs give")
    args = p.parse_args(argv)
    if args.check:
        bad = stale(args.results, args.readme)
        for path in bad:
            print(f"[bench.summary] out of date: {path} (run python -m bench.summary)")
        return 1 if bad else 0
    write(args.results, args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
