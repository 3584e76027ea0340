"""sweep.md, sweep.html and the curves, from sweep.json alone (fresh, or loaded by ``loadtest report``).

The answer first (the largest load that met every objective, with its confidence), then every step, the
curves, the environment, and how the sweep decides.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from loadtest.reportmd import fmt_num

__all__ = ["DEFINITIONS", "render_markdown", "write_sweep"]

DEFINITIONS = (
    ("Step", "one ordinary run at one load: closed-loop concurrency (each slot starts sessions back to back for "
     "the step's duration) or open-loop Poisson arrivals per second for the step's duration; its own result.json "
     "is under `steps/`. Its figures are those of `loadtest`'s report: TTFT and ITL per token, goodput (sessions "
     "that completed and met `--slo`, else every completed session), failed share, output tokens/s."),
    ("Objectives", "`--sweep-slo`: ceilings on latency percentiles and the failed share, floors on goodput. A step "
     "meets them all or breaks at least one; a figure with no completed session to measure breaks its objective."),
    ("Climb", "the steps in order, until one breaks an objective or the target is clearly saturated: 1.5× the load "
     "gave less than 1.05× the throughput while TTFT p50 grew more than 1.5×, or half the sessions failed."),
    ("Refine", "bisection (geometric midpoint) between the largest load that met every objective and the first "
     "that broke one, until they are adjacent (concurrency) or within `--resolution` (rate)."),
    ("Repeat", "the largest passing load and the first failing one are run until each has `--repeats` runs. The "
     "answer is the largest load that met every objective in all its runs; if a repeat fails, the next lower "
     "passing load is repeated in turn. Spread: the lowest and highest value of a figure over a load's runs."),
    ("Load generator as the limit", "per step: its CPU ≥ 80 % of a core per process, its event loop waking more "
     "than 25 ms late (p99), or its TTFC p50 above that of a raw probe (a process of its own sending one request "
     "at a time during the step) by more than 20 ms and 25 %. Then the step measured the load generator too."),
)


def _fmt_load(load: float | None, mode: str) -> str:
    if load is None:
        return "—"
    return f"{load:g} concurrent sessions" if mode == "concurrency" else f"{load:g} arrivals/s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = "|".join("---" if i == 0 else "---:" for i in range(len(header)))
    return ["| " + " | ".join(header) + " |", f"|{align}|"] + ["| " + " | ".join(r) + " |" for r in rows]


def _range(v: list[float] | None, scale: float = 1, digits: int | None = None) -> str:
    if not v:
        return "—"
    lo, hi = (x * scale for x in v)
    return fmt_num(lo, digits) if lo == hi else f"{fmt_num(lo, digits)} – {fmt_num(hi, digits)}"


def render_markdown(doc: dict[str, Any]) -> str:
    plan = doc.get("plan") or {}
    mode = plan.get("mode", "concurrency")
    out = doc.get("outcome") or {}
    lines = [f"# moonrelay load sweep — {doc.get('started_at', '')}", ""]
    if doc.get("interrupted"):
        lines += ["> **Interrupted**: the sweep stopped before its planned end.", ""]
    if doc.get("warnings"):
        lines += ["> [!WARNING]"] + [f"> ⚠ {w}  " for w in doc["warnings"]] + [""]

    lines += ["## Answer", ""]
    knee = out.get("knee")
    if knee:
        lines.append(f"**The largest load that met every objective: {_fmt_load(knee['load'], mode)}**, in "
                     f"{knee['passed']} of {knee['runs']} runs.")
    else:
        lines.append("**No load met every objective in all its runs.**")
    lines.append("")
    facts = [f"Objectives: {', '.join(plan.get('objectives') or [])}" + (
        f"; a good session (goodput): {', '.join(f'{k} ≤ {fmt_num(v)}' for k, v in doc['slo'].items())}"
        if doc.get("slo") else "; goodput counts every completed session (no `--slo`)")]
    fail = out.get("first_failure")
    partial = out.get("higher_partial")
    if partial and fail and partial["load"] == fail["load"]:
        partial = None  # the first failure's line says how many of its runs broke
    if partial:
        facts.append(f"{_fmt_load(partial['load'], mode)} met them in {partial['passed']} of {partial['runs']} runs")
    if fail:
        facts.append(f"First load that broke one: {_fmt_load(fail['load'], mode)} ({', '.join(fail['broken']) or '—'}"
                     f"; {fail['runs'] - fail['passed']} of {fail['runs']} runs broke)")
    facts.append(f"Why the sweep stopped: {out.get('stop', '—')}" + (
        " (then the run budget, --max-runs, was spent)" if out.get("budget_spent") else ""))
    lines += [f"- {f}" for f in facts] + [""]
    spread_rows = []
    for label, block in (("answer", knee), ("first failure", fail), ("partly met", partial)):
        if not block:
            continue
        sp = block.get("spread") or {}
        spread_rows.append([label, f"{block['load']:g}", f"{block['passed']} of {block['runs']}",
                            _range(sp.get("ttft_p99")), _range(sp.get("itl_p99")), _range(sp.get("tpot_p99")),
                            _range(sp.get("goodput"), 100, 1), _range(sp.get("errors"), 100, 1),
                            _range(sp.get("throughput"))])
    if spread_rows:
        lines += ["Spread over each load's runs (lowest – highest):", ""]
        lines += _table(["", "load", "met all", "TTFT p99 (ms)", "ITL p99 (ms)", "TPOT p99 (ms)", "goodput (%)",
                         "failed (%)", "output tokens/s"], spread_rows) + [""]

    lines += ["## Reproduce", "", "```sh", doc.get("command_line", ""), "```", ""]

    lines += ["## Steps", ""]
    rows = []
    for s in doc.get("steps") or []:
        f = s["figures"]
        notes = []
        if s.get("saturated"):
            notes.append(f"saturated: {s['saturated']}")
        notes += [f"load generator near its limit: {w}" for w in s.get("limits") or []]
        if s.get("interrupted"):
            notes.append("interrupted")
        broke = [c["objective"] for c in s.get("checks") or [] if not c["ok"]]
        rows.append([str(s["index"]), s["phase"], f"{s['load']:g}", fmt_num(f.get("sessions")),
                     fmt_num(f.get("failed")), fmt_num(f.get("ttft_p50")), fmt_num(f.get("ttft_p99")),
                     fmt_num(f.get("itl_p50")), fmt_num(f.get("itl_p99")), fmt_num(f.get("tpot_p50")),
                     "—" if f.get("goodput") is None else f"{f['goodput']:.1%}", fmt_num(f.get("throughput")),
                     fmt_num(f.get("probe_ttfc_p50")), "met all" if s.get("passed") else "broke " + ", ".join(broke),
                     "; ".join(notes), f"[result.json]({s['dir']}/result.json)"])
    lines += _table(["#", "phase", "load", "sessions", "failed", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99",
                     "TPOT p50", "goodput", "tokens/s", "probe TTFC p50", "verdict", "notes", "result"], rows)
    lines += ["", "Latencies in ms; tokens/s: output tokens per second over all streams (completed sessions per "
              "second where no token was counted).", ""]

    from loadtest.sweepplots import PLOTS

    lines += ["## Curves", ""] + [f"![{p[0].removesuffix('.png')}]({p[0]})" for p in PLOTS] + [""]

    m = doc.get("machine") or {}
    vers = doc.get("versions") or {}
    lines += ["## Environment", "",
              f"- Machine: {m.get('hostname')} — {m.get('cpus')} CPUs, {m.get('platform')}, {m.get('python')}",
              f"- Open-file limit: soft {m.get('fd_limit_soft')}, hard {m.get('fd_limit_hard')}",
              "- Versions: " + ", ".join(f"{k} {v or '—'}" for k, v in vers.items())]
    if doc.get("target"):
        lines.append(f"- Target: `{json.dumps(doc['target'])}`")
    lines.append(f"- Plan: `{json.dumps(plan)}`")
    lines.append("")
    lines += ["## How the sweep decides", ""] + [f"- **{n}**: {t}" for n, t in DEFINITIONS] + [""]
    return "\n".join(lines)


def write_sweep(out_dir: str | os.PathLike[str], doc: dict[str, Any]) -> list[Path]:
    """sweep.json (when ``doc`` is fresh), sweep.md, the curves and sweep.html, into ``out_dir``."""
    from loadtest import sweepplots
    from loadtest.reporthtml import render_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep.json"
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    text = render_markdown(doc)
    md = out / "sweep.md"
    md.write_text(text, encoding="utf-8")
    drawn = sweepplots.write_plots(doc, out)
    page = out / "sweep.html"
    page.write_text(render_html(text, title=f"moonrelay load sweep — {doc.get('started_at', '')}", folder=out),
                    encoding="utf-8")
    return [path, md, page, *drawn]
