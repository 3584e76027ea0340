"""The project's performance goals (``bench/goals.toml``) and the verdict a run gives each. Pure.

A verdict is met, missed by how much, or not measured yet; it never guesses a figure no run holds.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

GOALS_FILE = Path(__file__).with_name("goals.toml")
KINDS = ("ratio", "above_nginx", "at_most")


@dataclass(frozen=True)
class Goal:
    what: str  # the goal in a line
    scenario: str
    figure: str  # a key of the run's medians
    kind: str  # one of KINDS
    limit: float
    unit: str
    source: str  # where the project set it ("issue 23, goal 3")
    text: str  # that words


@dataclass(frozen=True)
class Verdict:
    status: str  # "met", "missed", "not measured yet"
    measured: float | None  # in the goal's unit (a ratio for "ratio", the difference for "above_nginx")
    by: float | None  # how far over the limit (missed only)
    note: str  # what the measured value is, in words

    def text(self, unit: str) -> str:
        if self.status == "missed":
            return f"**missed** by {fmt(self.by, unit)}"
        return f"**{self.status}**" if self.status == "met" else self.status


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "×":
        return f"{value:.2f}×"
    number = f"{value:,.0f}" if abs(value) >= 1000 or float(value).is_integer() else f"{value:,.1f}"
    return f"{number} {unit}".strip()


def load(path: Path = GOALS_FILE) -> list[Goal]:
    goals = [Goal(**{**g, "limit": float(g["limit"])}) for g in tomllib.loads(path.read_text())["goal"]]
    for g in goals:
        if g.kind not in KINDS:
            raise ValueError(f"{path}: goal {g.what!r}: kind {g.kind!r} is not one of {KINDS}")
    return goals


def judge(goal: Goal, mine: float | None, nginx: float | None) -> Verdict:
    """The verdict for moonrelay's figure ``mine`` and nginx's ``nginx`` from the same run (None: not in it)."""
    if mine is None or (goal.kind != "at_most" and nginx is None):
        missing = "no run has this figure" if mine is None else "no nginx in the same run"
        return Verdict("not measured yet", None, None, missing)
    if goal.kind == "ratio":
        measured = mine / nginx if nginx else None
        if measured is None:
            return Verdict("not measured yet", None, None, "nginx's figure is 0")
        note = f"{measured:.2f}× nginx"
    elif goal.kind == "above_nginx":
        measured = mine - nginx
        note = f"nginx's {measured:+,.1f} {goal.unit}".rstrip()
    else:
        measured = mine
        note = fmt(measured, goal.unit) + (f"; nginx {fmt(nginx, goal.unit)}" if nginx is not None else "")
    over = measured - goal.limit
    return Verdict("met" if over <= 0 else "missed", measured, over if over > 0 else None, note)
