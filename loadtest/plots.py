"""PNG plots drawn from a result.json document alone.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas: no pyplot, no global
figure registry, no display. Everything plotted is already bounded in result.json (≤ 2,000 series points,
60 histogram buckets), so drawing costs the same for 100 or 10,000 sessions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLORS = {"relay": "tab:blue", "direct": "tab:orange"}
SIZE = (8, 4.5)
DPI = 100


def _new() -> Figure:
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_ttfc(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Histogram of TTFC per target (overlaid) with each target's CDF on a second axis."""
    fig = _new()
    ax = fig.add_subplot()
    h = (result.get("histograms") or {}).get("ttfc_ms") or {}
    edges = h.get("edges") or []
    counts = {t: c for t, c in (h.get("counts") or {}).items() if c and sum(c)}
    if not edges or not counts:
        _empty(ax, "no completed sessions")
    else:
        cdf_ax = ax.twinx()
        for target, c in counts.items():
            color = COLORS.get(target)
            ax.stairs(c, edges, fill=True, alpha=0.35, color=color, label=f"{target} (n={sum(c):,})")
            total = sum(c)
            acc = 0
            cdf = [0.0]
            for n in c:
                acc += n
                cdf.append(acc / total)
            cdf_ax.plot(edges, cdf, color=color, linewidth=1.5)
        if h.get("scale") == "log":
            ax.set_xscale("log")
        ax.set_xlabel("TTFC from intended start (ms)")
        ax.set_ylabel("sessions")
        cdf_ax.set_ylabel("cumulative fraction (lines)")
        cdf_ax.set_ylim(0, 1.02)
        ax.legend(loc="upper left")
    ax.set_title("Time to first chunk")
    return _save(fig, Path(path))


def _series_plot(points: list[list[float]], path: Path, title: str, ylabel: str, color: str) -> Path:
    fig = _new()
    ax = fig.add_subplot()
    if not points:
        _empty(ax, "no data")
    else:
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        ax.step(xs, ys, where="post", color=color, linewidth=1.2)
        ax.fill_between(xs, ys, step="post", alpha=0.2, color=color)
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def plot_open_sessions(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    series = result.get("series") or {}
    step = series.get("open_sessions_step_s")
    title = "Open sessions" + (f" (max per {step:g} s)" if step else "")
    return _series_plot(series.get("open_sessions") or [], Path(path), title, "open sessions", "tab:blue")


def plot_chunks_per_s(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    series = result.get("series") or {}
    step = series.get("chunks_per_s_step_s")
    title = "Chunks received per second" + (f" ({step:g} s buckets)" if step else "")
    return _series_plot(series.get("chunks_per_s") or [], Path(path), title, "chunks/s", "tab:green")


def write_plots(result: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """ttfc_distribution.png, open_sessions.png and chunks_per_s.png in ``out_dir``."""
    out = Path(out_dir)
    return [
        plot_ttfc(result, out / "ttfc_distribution.png"),
        plot_open_sessions(result, out / "open_sessions.png"),
        plot_chunks_per_s(result, out / "chunks_per_s.png"),
    ]
