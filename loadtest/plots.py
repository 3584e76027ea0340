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

from loadtest.palette import NEUTRAL, color

SIZE = (8, 4.5)
DPI = 100
CONTEXT_MAX = 70  # characters of the command line a title shows


def _new() -> Figure:
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _context(result: dict[str, Any]) -> str:
    """The run's command line and machine, for a title's second line: which load, on what."""
    command = result.get("command_line") or "loadtest"
    if len(command) > CONTEXT_MAX:
        command = command[: CONTEXT_MAX - 1] + "…"
    machine = result.get("machine") or {}
    cpus = f"{machine['cpus']} CPUs" if machine.get("cpus") else ""
    return " · ".join(p for p in (command, cpus, machine.get("python") or "") if p)


def _title(fig: Figure, what: str, result: dict[str, Any]) -> None:
    fig.suptitle(f"{what}\n{_context(result)}", fontsize=10)


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
            colour = color(target)
            ax.stairs(c, edges, fill=True, alpha=0.35, color=colour, label=f"{target} (n={sum(c):,})")
            total = sum(c)
            acc = 0
            cdf = [0.0]
            for n in c:
                acc += n
                cdf.append(acc / total)
            cdf_ax.plot(edges, cdf, color=colour, linewidth=1.5)
        if h.get("scale") == "log":
            ax.set_xscale("log")
        ax.set_xlabel("TTFC from intended start (ms" + ("; log scale)" if h.get("scale") == "log" else ")"))
        ax.set_ylabel("sessions per bucket (bars)")
        ax.set_ylim(bottom=0)
        cdf_ax.set_ylabel("cumulative fraction (lines)")
        cdf_ax.set_ylim(0, 1.02)
        fig.legend(loc="outside right upper", fontsize=8)
    _title(fig, "Time to first chunk, ms", result)
    return _save(fig, Path(path))


def _series_plot(points: list[list[float]], path: Path, title: str, ylabel: str, result: dict[str, Any]) -> Path:
    fig = _new()
    ax = fig.add_subplot()
    if not points:
        _empty(ax, "no data")
    else:
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        # A whole run's line, not one target's: the neutral colour, so no target's colour means two things.
        ax.step(xs, ys, where="post", color=NEUTRAL, linewidth=1.2)
        ax.fill_between(xs, ys, step="post", alpha=0.2, color=NEUTRAL)
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    _title(fig, title, result)
    return _save(fig, path)


def plot_open_sessions(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    series = result.get("series") or {}
    step = series.get("open_sessions_step_s")
    title = "Open sessions, count" + (f" (max per {step:g} s)" if step else "")
    return _series_plot(series.get("open_sessions") or [], Path(path), title, "open sessions", result)


def plot_chunks_per_s(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    series = result.get("series") or {}
    step = series.get("chunks_per_s_step_s")
    title = "Chunks received per second, chunks/s" + (f" ({step:g} s buckets)" if step else "")
    return _series_plot(series.get("chunks_per_s") or [], Path(path), title, "chunks/s", result)


def write_plots(result: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    """ttfc_distribution.png, open_sessions.png and chunks_per_s.png in ``out_dir``."""
    out = Path(out_dir)
    return [
        plot_ttfc(result, out / "ttfc_distribution.png"),
        plot_open_sessions(result, out / "open_sessions.png"),
        plot_chunks_per_s(result, out / "chunks_per_s.png"),
    ]
