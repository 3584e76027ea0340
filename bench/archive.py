"""The committed bench runs in results/, as data: which scenario ran when, at which commit, on which machine.

A *run* is one scenario in one results folder: the ``<scenario>-<target>.json`` documents ``python -m bench.run``
wrote there (medians over the repeats, every repeat, the command, the machine facts). The summary and the trend
read runs only through this module, so a new scenario joins both by having run, with no list to update.

A run counts for its scenario only if its load shape is the scenario's shape today (``bench/scenarios.py``,
every field but the goal's wording): a ``--scale 0.1`` smoke run, or a run of a shape since changed, measured
something else and is left out, with the reason. A scenario no longer defined keeps the shape it ran with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scenarios import SCENARIOS

SKIP_DIRS = {"runs", "loadtest"}  # raw per-repeat records: never a scenario document
REFERENCE = "nginx"  # every ratio is to nginx in the same run
_DOC = re.compile(r".+-.+\.json$")
_IGNORED_SHAPE_KEYS = {"goal"}


@dataclass(frozen=True)
class Run:
    """One scenario of one results folder."""

    folder: str  # relative to results/, "/"-separated
    scenario: str
    docs: dict[str, dict[str, Any]]  # target -> its <scenario>-<target>.json

    @property
    def date(self) -> str:
        """UTC "YYYY-MM-DD HH:MM" of the command that wrote it (the latest, if two commands wrote targets)."""
        return max((d.get("machine") or {}).get("date (UTC)", "") for d in self.docs.values())

    @property
    def machine(self) -> dict[str, Any]:
        latest = max(self.docs.values(), key=lambda d: (d.get("machine") or {}).get("date (UTC)", ""))
        return latest.get("machine") or {}

    @property
    def commit(self) -> str:
        """moonrelay's version in this run ("git abc1234"), or "" where no moonrelay target ran."""
        versions = [d.get("version") for t, d in sorted(self.docs.items()) if t.startswith("moonrelay")]
        return next((v for v in versions if v), "")

    @property
    def repeats(self) -> int:
        return max(len(d.get("repeats") or []) for d in self.docs.values())

    def median(self, target: str) -> dict[str, Any] | None:
        doc = self.docs.get(target)
        return doc.get("median") if doc else None

    def figure(self, target: str, key: str) -> float | None:
        value = (self.median(target) or {}).get(key)
        return value if isinstance(value, int | float) else None

    def ratio(self, target: str, key: str) -> float | None:
        """``target``'s figure over nginx's in this run."""
        mine, ref = self.figure(target, key), self.figure(REFERENCE, key)
        return mine / ref if mine is not None and ref else None

    def doc_path(self, target: str) -> str:
        return f"{self.folder}/{self.scenario}-{target}.json"


def link(results: Path, run: Run) -> str:
    """Where a link to ``run`` leads, relative to ``results``: its folder's README.md where it has one."""
    return f"{run.folder}/README.md" if (results / run.folder / "README.md").exists() else f"{run.folder}/"


def cpu_label(facts: dict[str, Any]) -> str:
    """"Intel Xeon" for "Intel(R) Xeon(R) Processor"."""
    cpu = re.sub(r"\((R|TM)\)|\bProcessor\b|\bCPU\b|@.*$", "", str(facts.get("cpu") or ""))
    return re.sub(r"\s+", " ", cpu).strip()


def machine_label(facts: dict[str, Any]) -> str:
    """"2 cores, Intel Xeon, 23.5 GiB": what a figure's title and a table's run cell say of the machine."""
    parts = [f"{facts['cores (logical)']} cores" if facts.get("cores (logical)") else "", cpu_label(facts),
             str(facts.get("memory") or "")]
    if facts.get("cpu pinning"):
        parts.append("proxy pinned to one core")
    return ", ".join(p for p in parts if p) or "machine not recorded"


def _shape(scenario: dict[str, Any]) -> dict[str, Any]:
    shape = {k: v for k, v in scenario.items() if k not in _IGNORED_SHAPE_KEYS}
    if shape.get("api") == "chat":
        del shape["api"]  # runs from before the field spoke chat
    return shape


def _folders(results: Path) -> list[Path]:
    out = []
    for here, dirs, files in os.walk(results):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        if any(_DOC.match(f) for f in files):
            out.append(Path(here))
    return sorted(out)


def discover(results: Path) -> tuple[list[Run], list[str]]:
    """Every run under ``results`` whose shape is its scenario's, and why each other one was left out."""
    runs, left_out = [], []
    for folder in _folders(results):
        docs: dict[str, dict[str, dict[str, Any]]] = {}
        for f in sorted(folder.glob("*.json")):
            if not _DOC.match(f.name):
                continue
            d = json.loads(f.read_text())
            if isinstance(d, dict) and {"scenario", "target", "repeats"} <= set(d):
                docs.setdefault(d["scenario"]["name"], {})[d["target"]] = d
        rel = folder.relative_to(results).as_posix()
        for name, by_target in sorted(docs.items()):
            stored = _shape(next(iter(by_target.values()))["scenario"])
            if name in SCENARIOS and stored != _shape(dataclasses.asdict(SCENARIOS[name])):
                now = _shape(dataclasses.asdict(SCENARIOS[name]))
                differs = ", ".join(f"{k} {stored.get(k)!r} (now {now.get(k)!r})"
                                    for k in sorted(set(stored) | set(now)) if stored.get(k) != now.get(k))
                left_out.append(f"{rel} ({name}): not today's shape: {differs}")
                continue
            runs.append(Run(folder=rel, scenario=name, docs=by_target))
    return runs, left_out


def scenario_order(names: set[str]) -> list[str]:
    """bench/scenarios.py's order, then any other scenario by name."""
    return [n for n in SCENARIOS if n in names] + sorted(names - set(SCENARIOS))


def latest(runs: list[Run], scenario: str, target: str) -> Run | None:
    """The newest run of ``scenario`` in which ``target`` ran beside nginx (so its ratio is from one run); where
    no run of the scenario has nginx, the newest run of ``target``."""
    ran = [r for r in runs if r.scenario == scenario and target in r.docs]
    beside = [r for r in ran if REFERENCE in r.docs]
    return max(beside or ran, key=lambda r: (r.date, r.folder), default=None)


def headline_key(runs: list[Run]) -> str | None:
    """The figure a scenario is compared on: CPU per relayed chunk where chunks were relayed, else per request."""
    for key in ("cpu_us_per_chunk", "cpu_us_per_request"):
        if any(r.figure(t, key) is not None for r in runs for t in r.docs):
            return key
    return None
