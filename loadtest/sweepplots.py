"""The sweep's curves, PNG, drawn from sweep.json alone: TTFT, inter-token latency, throughput, and goodput and
errors, each against the load.

Every run is a point (filled: it met every objective; a cross: it broke one), the line joins each load's
median, an objective on the figure is a dashed horizontal line, the knee a vertical one. Linear axes from zero,
one fixed colour per series, the legend below the axes (never over the data). Like :mod:`loadtest.plots`:
``matplotlib.figure.Figure`` through the Agg canvas, no pyplot.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["PLOTS", "write_plots"]

SIZE = (8, 4.8)
DPI = 100
COLORS = {"p50": "#1f77b4", "p99": "#d62728", "throughput": "#2ca02c", "goodput": "#1f77b4", "errors": "#d62728",
          "knee": "#444444"}
# file, title, y label, [(figure, label, colour key)], scale of the values (1: as stored; 100: ratios in %)
PLOTS: tuple[tuple[str, str, str, tuple[tuple[str, str, str], ...], float], ...] = (
    ("sweep_ttft.png", "Time to first token", "TTFT (ms)", (("ttft_p50", "p50", "p50"), ("ttft_p99", "p99", "p99")), 1),
    ("sweep_itl.png", "Inter-token latency, per token", "ITL (ms)",
     (("itl_p50", "p50", "p50"), ("itl_p99", "p99", "p99")), 1),
    ("sweep_throughput.png", "Throughput", "output tokens/s (all streams)",
     (("throughput", "throughput", "throughput"),), 1),
    ("sweep_goodput.png", "Goodput and errors", "share of the step's sessions (%)",
     (("goodput", "goodput", "goodput"), ("errors", "failed", "errors")), 100),
)


def _figure() -> Figure:
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _series(steps: Sequence[dict[str, Any]], key: str, scale: float):
    """(passed points, failed points, median line) of one figure over the steps."""
    ok, bad, by_load = [], [], {}
    for s in steps:
        v = s["figures"].get(key)
        if v is None:
            continue
        point = (s["load"], v * scale)
        (ok if s.get("passed") else bad).append(point)
        by_load.setdefault(s["load"], []).append(v * scale)
    line = sorted((load, statistics.median(vs)) for load, vs in by_load.items())
    return ok, bad, line


def _plot(doc: dict[str, Any], spec, path: Path) -> Path:
    name, title, ylabel, series, scale = spec
    steps = [s for s in doc.get("steps") or [] if not s.get("interrupted")]
    fig = _figure()
    ax = fig.add_subplot()
    unit = "concurrent sessions" if (doc.get("plan") or {}).get("mode") == "concurrency" else "arrivals per second"
    drawn = False
    for key, label, colour in series:
        ok, bad, line = _series(steps, key, scale)
        if not line:
            continue
        drawn = True
        c = COLORS[colour]
        ax.plot([x for x, _ in line], [y for _, y in line], color=c, linewidth=1.5,
                label=f"{label} (median per load)")
        if ok:
            ax.scatter([x for x, _ in ok], [y for _, y in ok], color=c, s=22, zorder=3,
                       label=f"{label}: met every objective")
        if bad:
            ax.scatter([x for x, _ in bad], [y for _, y in bad], color=c, marker="x", s=36, zorder=3,
                       label=f"{label}: broke one")
        for chk in _objectives(doc, key):
            ax.axhline(chk * scale, color=c, linestyle="--", linewidth=1, label=f"objective: {key} {chk * scale:g}")
    knee = ((doc.get("outcome") or {}).get("knee") or {}).get("load")
    if knee is not None and drawn:
        ax.axvline(knee, color=COLORS["knee"], linestyle=":", linewidth=1.2, label=f"knee: {knee:g}")
    if not drawn:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(unit)
        ax.set_ylabel(ylabel)
        fig.legend(loc="outside lower center", ncol=3, fontsize="small", frameon=False)
    ax.set_title(title)
    fig.savefig(path, format="png")
    return path


def _objectives(doc: dict[str, Any], figure: str) -> list[float]:
    """The limits of the objectives on ``figure`` (taken from the first step's checks)."""
    steps = doc.get("steps") or []
    if not steps:
        return []
    return [c["limit"] for c in steps[0].get("checks") or [] if c["figure"] == figure]


def write_plots(doc: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Every curve of :data:`PLOTS` into ``out_dir``."""
    out = Path(out_dir)
    return [_plot(doc, spec, out / spec[0]) for spec in PLOTS]
