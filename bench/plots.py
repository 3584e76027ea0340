"""Every figure bench draws: TTFC distributions overlaid, CPU bars per run, the summary's and the trend's figures.

Rules each figure keeps, so that a glance does not mislead (tests/bench/test_plots.py checks them):

- one colour per target everywhere (:mod:`loadtest.palette`);
- bars on a linear axis from zero: a bar's length is its value. Where the values in one figure differ by more
  than ``SPLIT_FACTOR``, the bars are split into side-by-side panels, each linear from zero on its own scale
  and titled with it, rather than drawn on a log axis (which shows 2.7× as a sliver);
- every bar says its value and its ratio to nginx in the same run;
- no legend over data: bars are labelled on their axis, and a legend sits outside the axes;
- titles say the scenario, the machine and the unit.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas: no pyplot, no global figure
registry, no display. Each function returns the figure it saved, so a test can look at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure

from loadtest.palette import GOAL, color

DPI = 110
SPLIT_FACTOR = 10.0  # values further apart than this share no axis
LABEL_ROOM = 1.6  # the value axis runs to this × the longest bar, so each bar's label fits beside it


def _new(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Figure:
    fig.savefig(path, format="png")
    return fig


def split_groups(values: dict[str, float], factor: float = SPLIT_FACTOR) -> list[list[str]]:
    """Targets grouped so that within a group the largest value is at most ``factor`` × the smallest; groups from
    small to large, each in the order of ``values``."""
    ranked = sorted((v, t) for t, v in values.items())
    groups: list[list[str]] = []
    floor = None
    for v, t in ranked:
        if floor is None or v > factor * floor:
            groups.append([])
            floor = v
        groups[-1].append(t)
    order = list(values)
    return [sorted(g, key=order.index) for g in groups]


@dataclass
class Bars:
    """One panel row: a bar per target (values on one unit), with the text printed beside each bar."""

    title: str
    values: dict[str, float]  # target -> value, in drawing order (top to bottom)
    labels: dict[str, str] = field(default_factory=dict)  # target -> text beside its bar
    ticks: dict[str, str] = field(default_factory=dict)  # target -> its axis label, where not its name
    goal: float | None = None  # a vertical goal line at this value
    goal_label: str = ""


def value_text(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def ratio_labels(values: dict[str, float], unit: str, reference: float | None) -> dict[str, str]:
    """"51.5 µs · 2.77× nginx" for each target (the reference's own bar only its value)."""
    out = {}
    for t, v in values.items():
        text = f"{value_text(v)} {unit}".strip()
        if reference and t != "nginx":
            text += f" · {v / reference:.2f}× nginx"
        out[t] = text
    return out


def _draw_bars(sub: Figure | SubFigure, row: Bars, xlabel: str) -> list:
    """Horizontal bars in one panel per :func:`split_groups` group; returns the axes."""
    groups = split_groups({t: v for t, v in row.values.items() if v is not None})
    if not groups:
        ax = sub.subplots()
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        sub.suptitle(row.title, fontsize=9)
        return [ax]
    axes = sub.subplots(1, len(groups), width_ratios=[max(1, len(g)) + 2 for g in groups], squeeze=False)[0]
    goal_drawn = False
    for ax, group in zip(axes, groups, strict=True):
        names = group[::-1]  # the first target on top
        vals = [row.values[t] for t in names]
        bars = ax.barh([row.ticks.get(t, t) for t in names], vals, color=[color(t) for t in names], height=0.6)
        ax.bar_label(bars, labels=[row.labels.get(t, value_text(row.values[t])) for t in names], padding=3,
                     fontsize=8)
        right = max(vals) * LABEL_ROOM if max(vals) > 0 else 1
        if row.goal is not None and not goal_drawn and row.goal <= right:
            # In the first panel whose scale holds it: where it means something beside the bars.
            ax.axvline(row.goal, color=GOAL, linestyle="--", linewidth=1)
            ax.text(row.goal, 1.0, f" {row.goal_label}", color=GOAL, fontsize=8, va="bottom", ha="left",
                    transform=ax.get_xaxis_transform())
            goal_drawn = True
        ax.set_xscale("linear")
        ax.set_xlim(0, right)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=8)
        if len(groups) > 1:
            ax.set_title(f"own scale, 0–{value_text(right)}"
                         + ("" if ax is axes[0] else f": values ≥ {SPLIT_FACTOR:g}× those at left"), fontsize=8,
                         loc="right")
    sub.suptitle(row.title, fontsize=9)
    return list(axes)


def bar_rows(rows: Sequence[Bars], title: str, xlabel: str, path: Path) -> Figure:
    """One row of bar panels per :class:`Bars`, under one title."""
    n_targets = [max(1, len(r.values)) for r in rows] or [1]
    fig = _new(11, 0.9 + sum(0.6 + 0.32 * n for n in n_targets))
    subs = fig.subfigures(max(1, len(rows)), 1, height_ratios=[1.7 + n for n in n_targets]) if rows else [fig]
    if len(rows) == 1:
        subs = [subs]
    for sub, row in zip(subs, rows, strict=False):
        _draw_bars(sub, row, xlabel)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def cpu_bars(values: dict[str, dict[str, float]], targets: Sequence[str], path: Path, *, machine: str,
             repeats: dict[str, int] | None = None) -> Figure:
    """``values[scenario][target]`` = CPU µs per relayed chunk, all from one run: one bar row per scenario."""
    rows = []
    for scenario, by_target in values.items():
        shown = {t: by_target[t] for t in targets if by_target.get(t)}
        n = (repeats or {}).get(scenario)
        rows.append(Bars(title=f"{scenario}" + (f", median of {n} repeat{'s' * (n != 1)}" if n else ""),
                         values=shown, labels=ratio_labels(shown, "µs", shown.get("nginx"))))
    return bar_rows(rows, f"Proxy CPU per relayed chunk, µs (whole process tree) · {machine}",
                    "µs of proxy CPU per relayed chunk (linear, from 0)", path)


def ttfc_cdf(title: str, samples: dict[str, list[float]], path: Path) -> Figure:
    """Empirical CDFs rather than histograms: overlaid histograms hide each other, CDFs do not. A linear time axis
    unless the sessions span more than ``SPLIT_FACTOR`` (a saturated peer's 100-s tail beside 1-s TTFCs): then a log
    axis, and the label says so."""
    fig = _new(9, 4.5)
    ax = fig.add_subplot()
    shown = {t: sorted(v) for t, v in samples.items() if v}
    for target, xs in shown.items():
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{target} (n={len(xs):,})", color=color(target), linewidth=1.4)
    lows = [xs[len(xs) // 2] for xs in shown.values()]
    highs = [xs[-1] for xs in shown.values()]
    log = bool(shown) and min(lows) > 0 and max(highs) > SPLIT_FACTOR * min(lows)
    ax.set_xscale("log" if log else "linear")
    ax.set_xlabel("time to first chunk, ms (from the intended start" + ("; log scale)" if log else ")"))
    ax.set_ylabel("fraction of sessions")
    ax.set_ylim(0, 1.02)
    fig.suptitle(title, fontsize=10)
    ax.grid(alpha=0.3)
    if shown:
        fig.legend(loc="outside right upper", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no sessions with a first chunk", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


@dataclass
class Series:
    """One line of a trend panel: a target's value per point on the panel's x axis (None: not in that run)."""

    target: str
    values: list[float | None]


@dataclass
class Panel:
    title: str
    ticks: list[str]  # one per run, oldest first
    series: list[Series]
    goal: float | None = None
    goal_label: str = ""


def trend(panels: Sequence[Panel], title: str, ylabel: str, path: Path) -> Figure:
    """One panel per scenario: each series a line over the runs (oldest left), y linear from 0."""
    fig = _new(11, 0.8 + 3.4 * max(1, len(panels)))
    axes = fig.subplots(max(1, len(panels)), 1, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels, strict=False):
        xs = list(range(len(panel.ticks)))
        top = 0.0
        for s in panel.series:
            pts = [(x, v) for x, v in zip(xs, s.values, strict=True) if v is not None]
            if not pts:
                continue
            ax.plot([x for x, _ in pts], [v for _, v in pts], marker="o", markersize=4, linewidth=1.4,
                    color=color(s.target), label=s.target)
            top = max(top, *(v for _, v in pts))
        if panel.goal is not None:
            ax.axhline(panel.goal, color=GOAL, linestyle="--", linewidth=1, label=panel.goal_label or "goal")
            top = max(top, panel.goal)
        ax.set_yscale("linear")
        ax.set_ylim(0, top * 1.15 if top > 0 else 1)
        ax.set_xticks(xs, panel.ticks, rotation=35, ha="right", fontsize=7)
        ax.set_xlim(-0.5, max(0.5, len(xs) - 0.5))
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_xlabel("runs, oldest first (evenly spaced, not to time scale)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)

