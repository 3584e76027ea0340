"""Find the knee, sans I/O: which load to run next, whether a step met the SLOs, and what the sweep found.

``loadtest --sweep concurrency|rate`` runs steps of one load shape (closed-loop concurrency, or open-loop
arrivals per second) through :mod:`loadtest.sweeprun`, which only moves results in and out of the
:class:`Planner` here. The planner:

1. **climbs** the user's steps in order, judging each against the objectives (:func:`judge`), and stops at the
   first step that breaks one, or earlier when the target is *clearly saturated* (:func:`saturation`): more
   load bought no more throughput while latency grew, or most sessions failed;
2. **refines** between the largest step that met every objective and the first that broke one, by bisection
   (the geometric midpoint: steps usually double), until the two are within ``resolution`` (adjacent for
   concurrency) or ``refine`` bisections were run;
3. **repeats** the largest passing load, then the first failing one, until each has ``repeats`` runs, to show
   their spread. The answer is the largest load that met every objective in all of its runs: when the
   candidate fails a repeat, the next lower passing load is repeated in turn. Its confidence is "passed k of k
   runs", with the spread of each figure over them.

Every run counts against ``max_runs``; the outcome says why the sweep stopped. Objectives (``--sweep-slo``):
``<figure>_p<N>=<duration>`` for ``ttft``, ``ttfc``, ``itl``, ``tpot``, ``gap``, ``e2e`` at p50, p90, p95, p99
or p99.9 (a ceiling); ``errors=<ratio>`` (a ceiling on failed / sessions); ``goodput=<ratio>`` (a floor on the
share of good sessions: completed, and within ``--slo`` where given) or ``goodput=<N>/s`` (a floor per second).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtest.quantiles import DEFAULT_PS, pkey
from loadtest.report import LOOP_LAG_WARN_MS, SATURATION_UTILIZATION

__all__ = [
    "FIGURES", "MODES", "Check", "Objective", "Planner", "StepRun", "judge", "limit_summary", "limit_warnings",
    "parse_objectives",
    "parse_steps", "saturation", "step_figures",
]

MODES = ("concurrency", "rate")
# figure name -> where its percentiles sit in a target's summary
FIGURES: dict[str, tuple[str, ...]] = {
    "ttft": ("per_token", "ttft_ms"), "ttfc": ("ttfc_ms",), "itl": ("per_token", "itl_ms"),
    "tpot": ("per_token", "tpot_ms"), "gap": ("gap_ms",), "e2e": ("e2e_ms",),
}
PLOTTED_PS = (50, 90, 99)
# Clearly saturated: this much more load ...
SATURATION_LOAD_GROWTH = 1.5
# ... bought less than this much more throughput ...
SATURATION_THROUGHPUT_GROWTH = 1.05
# ... while TTFT p50 grew by more than this factor; or this share of the sessions failed.
SATURATION_LATENCY_GROWTH = 1.5
SATURATION_ERRORS = 0.5
# The load generator as the limit: its CPU per process and its event loop's lateness (the thresholds of a run's
# own warnings), its TTFC over a raw probe's.
LIMIT_CPU = SATURATION_UTILIZATION
LIMIT_LOOP_LAG_MS = LOOP_LAG_WARN_MS
LIMIT_PROBE_EXTRA_MS = 20.0
LIMIT_PROBE_EXTRA_RATIO = 0.25
LIMIT_PROBE_MIN_SAMPLES = 3


# --- objectives -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """One SLO a step must meet: ``figure`` (a key of :func:`step_figures`) at most / at least ``limit``."""

    figure: str
    limit: float
    ceiling: bool  # True: the figure must stay <= limit; False: it must reach >= limit

    def text(self) -> str:
        if self.figure in ("errors", "goodput"):
            shown = f"{self.limit * 100:g}%"
        elif self.figure == "goodput_per_s":
            return f"goodput ≥ {self.limit:g}/s"
        else:
            shown = f"{self.limit:g} ms"
        return f"{self.figure} {'≤' if self.ceiling else '≥'} {shown}"


def _ms(value: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (e.g. 500ms, 2s)")
    return float(m.group(1)) * {"ms": 1.0, "s": 1000.0, "m": 60_000.0, None: 1.0}[m.group(2)]


def _ratio(value: str) -> float:
    v = value.strip()
    r = float(v[:-1]) / 100 if v.endswith("%") else float(v)
    if not 0 <= r <= 1:
        raise ValueError(f"not a ratio between 0 and 1 (or 0% and 100%): {value!r}")
    return r


def parse_objectives(spec: str) -> list[Objective]:
    """``"ttft_p99=2s,itl_p99=200ms,errors=1%,goodput=95%"`` -> objectives (bare durations are ms)."""
    out: list[Objective] = []
    allowed = "|".join(re.escape(f"{p:g}") for p in DEFAULT_PS)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ValueError(f"bad objective {part!r}: use e.g. ttft_p99=2s,errors=1%,goodput=95%")
        m = re.fullmatch(rf"({'|'.join(FIGURES)})_p({allowed})(?:_ms)?", key)
        if m:
            out.append(Objective(f"{m.group(1)}_p{m.group(2)}", _ms(value), True))
        elif key == "errors":
            out.append(Objective("errors", _ratio(value), True))
        elif key == "goodput" and value.strip().endswith("/s"):
            out.append(Objective("goodput_per_s", float(value.strip()[:-2]), False))
        elif key == "goodput":
            out.append(Objective("goodput", _ratio(value), False))
        else:
            names = ", ".join(f"{f}_p99" for f in FIGURES)
            ps = ", ".join(pkey(p) for p in DEFAULT_PS)
            raise ValueError(f"unknown objective {key!r}: use {names} (or {ps}), errors, goodput")
    if not out:
        raise ValueError("no objective given")
    return out


def parse_steps(spec: str, *, integer: bool) -> list[float]:
    """``"10,20,50"`` or ``"10..640"`` (doubling from the first to at most the last) -> ascending loads."""
    spec = spec.strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*\.\.\s*([0-9]*\.?[0-9]+)(?:\s*x\s*([0-9]*\.?[0-9]+))?", spec)
    if m:
        lo, hi, factor = float(m.group(1)), float(m.group(2)), float(m.group(3) or 2)
        if lo <= 0 or hi < lo or factor <= 1:
            raise ValueError(f"bad step range {spec!r}: use FIRST..LAST[xFACTOR], 0 < FIRST <= LAST, FACTOR > 1")
        steps, v = [], lo
        while v <= hi * (1 + 1e-9):
            steps.append(v)
            v *= factor
    else:
        steps = [float(s) for s in spec.split(",") if s.strip()]
    if integer:
        steps = [float(round(s)) for s in steps]
    if not steps or any(s <= 0 for s in steps):
        raise ValueError(f"bad steps {spec!r}: positive loads, e.g. 10,20,40 or 10..640")
    return sorted(set(steps))


# --- a step's figures and its verdict ----------------------------------------------------------------------------


def _at(block: Mapping[str, Any] | None, path: Sequence[str]) -> Any:
    for k in path:
        if not isinstance(block, Mapping):
            return None
        block = block.get(k)
    return block


def step_figures(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What a step is judged on and plotted by, from its run's summary (:func:`loadtest.stats.summarize`).

    ``goodput`` is the share of sessions that completed and met ``--slo`` where it was given (else the share
    that completed); ``throughput`` is output tokens/s (completed sessions/s where no token was counted).
    """
    sessions = summary.get("sessions") or 0
    failed = summary.get("failed") or 0
    completed = summary.get("completed") or 0
    g = summary.get("goodput")
    window = summary.get("duration_s") or 0
    pt = summary.get("per_token") or {}
    tokens_per_s = pt.get("output_tokens_per_s")
    out: dict[str, Any] = {
        "sessions": sessions, "completed": completed, "failed": failed,
        "errors": failed / sessions if sessions else None,
        "goodput": (g["fraction"] if g else (completed / sessions if sessions else None)),
        "goodput_per_s": (g["per_s"] if g else (completed / window if window else None)),
        "requests_per_s": summary.get("requests_per_s"),
        "output_tokens_per_s": tokens_per_s,
        "throughput": tokens_per_s if tokens_per_s else summary.get("requests_per_s"),
        "peak_concurrency": summary.get("peak_concurrency"),
        "loadtest_cpu": summary.get("loadtest_cpu_utilization"),
        "loop_lag_p99_ms": _at(summary, ("loadtest_loop_lag_ms", "p99")),
        "first_chunk_delay_p50": _at(summary, ("first_chunk_delay_ms", "p50")),
        "errors_by_kind": dict(summary.get("errors_by_kind") or {}),
    }
    for name, path in FIGURES.items():
        block = _at(summary, path)
        for p in DEFAULT_PS:
            out[f"{name}_p{p:g}"] = _at(block, (pkey(p),))
    return out


@dataclass(frozen=True)
class Check:
    objective: Objective
    value: float | None
    ok: bool


def judge(figures: Mapping[str, Any], objectives: Sequence[Objective]) -> list[Check]:
    """Each objective against the step's figures; a figure that could not be measured (no completed session)
    breaks its objective."""
    checks = []
    for o in objectives:
        v = figures.get(o.figure)
        ok = v is not None and (v <= o.limit if o.ceiling else v >= o.limit)
        checks.append(Check(o, v, ok))
    return checks


def saturation(prev: Mapping[str, Any] | None, prev_load: float | None, cur: Mapping[str, Any],
               cur_load: float) -> str | None:
    """Why the target is clearly saturated at ``cur_load`` (more load can only queue), or None."""
    errors = cur.get("errors")
    if errors is not None and errors >= SATURATION_ERRORS:
        return f"{errors:.0%} of the sessions failed"
    if prev is None or prev_load is None or cur_load < prev_load * SATURATION_LOAD_GROWTH:
        return None
    t0, t1 = prev.get("throughput"), cur.get("throughput")
    l0, l1 = prev.get("ttft_p50") or prev.get("ttfc_p50"), cur.get("ttft_p50") or cur.get("ttfc_p50")
    if not t0 or t1 is None or not l0 or l1 is None:
        return None
    if t1 < t0 * SATURATION_THROUGHPUT_GROWTH and l1 > l0 * SATURATION_LATENCY_GROWTH:
        return (f"{cur_load / prev_load:.2g}× the load gave {t1 / t0:.2f}× the throughput while TTFT p50 grew "
                f"{l1 / l0:.2g}×")
    return None


def limit_warnings(figures: Mapping[str, Any], probe_ttfc_ms: Sequence[float] = (),
                   probe_first_delay_ms: Sequence[float] = ()) -> list[str]:
    """Why the load generator itself may have been the limit of a step: its CPU, its event-loop lag, or how much
    later than a raw probe (a separate process sending one request at a time during the step) it saw the first
    chunk. Where the sim stamps its chunks, that compares the time from the sim's send to the receipt (no random
    TTFT in it, so a few probes tell); elsewhere it compares TTFC, and only a difference beyond the probes' own
    spread counts."""
    out = []
    cpu = figures.get("loadtest_cpu")
    if cpu is not None and cpu >= LIMIT_CPU:
        out.append(f"CPU {cpu:.0%} of a core per load process")
    lag = figures.get("loop_lag_p99_ms")
    if lag is not None and lag > LIMIT_LOOP_LAG_MS:
        why = " (its CPU was low: the machine's cores were busy)" if cpu is not None and cpu < LIMIT_CPU / 2 else ""
        out.append(f"event-loop lag p99 {lag:,.0f} ms{why}")
    own_delay = figures.get("first_chunk_delay_p50")
    own_ttfc = figures.get("ttfc_p50")
    if own_delay is not None and len(probe_first_delay_ms) >= LIMIT_PROBE_MIN_SAMPLES:
        probe = statistics.median(probe_first_delay_ms)
        if own_delay - probe > max(LIMIT_PROBE_EXTRA_MS, LIMIT_PROBE_EXTRA_RATIO * probe):
            out.append(f"first chunk read {own_delay:,.0f} ms after the sim sent it (p50) vs {probe:,.0f} ms by a "
                       "raw probe")
    elif own_ttfc is not None and len(probe_ttfc_ms) >= LIMIT_PROBE_MIN_SAMPLES:
        q1, probe, q3 = statistics.quantiles(probe_ttfc_ms, n=4)
        if own_ttfc - probe > max(LIMIT_PROBE_EXTRA_MS, LIMIT_PROBE_EXTRA_RATIO * probe, q3 - q1):
            out.append(f"TTFC p50 {own_ttfc:,.0f} ms vs {probe:,.0f} ms by a raw probe")
    return out


def limit_summary(steps: Sequence[Mapping[str, Any]]) -> str | None:
    """One line over a sweep's steps (each with ``figures`` and the ``limits`` of :func:`limit_warnings`): in how
    many the load generator was near its limit, and the worst of each sign."""
    flagged = [s for s in steps if s.get("limits")]
    if not flagged:
        return None

    def having(prefix: str) -> list[Mapping[str, Any]]:
        return [s for s in flagged if any(w.startswith(prefix) for w in s["limits"])]

    parts = []
    if busy := having("CPU"):
        parts.append(f"its CPU up to {max(s['figures']['loadtest_cpu'] for s in busy):.0%} of a core")
    if late := having("event-loop"):
        worst = max(s["figures"]["loop_lag_p99_ms"] for s in late)
        starved = all("machine's cores were busy" in w for s in late for w in s["limits"] if w.startswith("event"))
        parts.append(f"its event-loop lag p99 up to {worst:,.0f} ms" +
                     (", with its own CPU low: the machine's cores were busy" if starved else ""))
    if slower := having("first chunk") + having("TTFC"):
        parts.append(f"first chunks read later than by a raw probe in {len(slower)} step(s)")
    return (f"in {len(flagged)} of {len(steps)} steps the load generator may have been the limit: "
            + "; ".join(parts) + " — add --workers, or load from another machine")


# --- the planner -------------------------------------------------------------------------------------------------


@dataclass
class StepRun:
    load: float
    phase: str  # "climb", "refine" or "repeat"
    passed: bool
    figures: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    saturated: str | None = None


class Planner:
    """Which load to run next (:meth:`next`), fed each run's verdict (:meth:`record`); :meth:`outcome` at the end.

    ``integer``: loads are whole numbers (concurrency), and a knee is found once two loads are adjacent.
    """

    def __init__(self, steps: Sequence[float], *, repeats: int = 3, refine: int = 4, max_runs: int = 30,
                 resolution: float = 0.1, integer: bool = True, min_load: float | None = None) -> None:
        if not steps:
            raise ValueError("no steps")
        self.steps = sorted(steps)
        self.repeats = max(1, repeats)
        self.refine_left = max(0, refine)
        self.max_runs = max(1, max_runs)
        self.resolution = resolution
        self.integer = integer
        self.min_load = min_load if min_load is not None else (1.0 if integer else self.steps[0] / 64)
        self.runs: list[StepRun] = []
        self.phase = "climb"
        self.stop: str | None = None  # why the climb ended
        self.saturated_at: float | None = None
        self.budget_spent = False
        self._climb = 0
        self._lo: float | None = None  # largest load that passed (climb or refine)
        self._hi: float | None = None  # smallest load that failed
        self._candidate: float | None = None  # the load being repeated as the answer
        self._rejected: set[float] = set()  # loads that failed a repeat

    # -- bookkeeping --------------------------------------------------------------------------------------------

    def runs_at(self, load: float) -> list[StepRun]:
        return [r for r in self.runs if r.load == load]

    def _passing_loads(self) -> list[float]:
        return sorted({r.load for r in self.runs if r.passed and r.load not in self._rejected
                       and (self._hi is None or r.load < self._hi)})

    def _round(self, v: float) -> float:
        if self.integer:
            return float(max(round(v), round(self.min_load)))
        return float(f"{max(v, self.min_load):.3g}")

    def _close_enough(self, lo: float, hi: float) -> bool:
        if self.integer:
            return hi - lo <= 1
        return hi <= lo * (1 + self.resolution)

    def _midpoint(self, lo: float | None, hi: float) -> float | None:
        if lo is None:
            mid = self._round(hi / 2)
            return mid if mid < hi else None
        for m in (math.sqrt(lo * hi), (lo + hi) / 2):
            mid = self._round(m)
            if lo < mid < hi:
                return mid
        return None

    # -- the protocol -------------------------------------------------------------------------------------------

    def next(self) -> tuple[float, str] | None:
        """The next ``(load, phase)`` to run, or None when the sweep is over."""
        if len(self.runs) >= self.max_runs:
            self.budget_spent = self.phase != "done"
            self.phase = "done"
            return None
        if self.phase == "climb":
            return self.steps[self._climb], "climb"
        if self.phase == "refine":
            mid = None
            if self.refine_left > 0 and not (self._lo is not None and self._close_enough(self._lo, self._hi)):
                mid = self._midpoint(self._lo, self._hi)  # type: ignore[arg-type]
            if mid is not None:
                return mid, "refine"
            self.phase = "repeat"
        if self.phase == "repeat":
            load = self._next_repeat()
            if load is not None:
                return load, "repeat"
            self.phase = "done"
        return None

    def _next_repeat(self) -> float | None:
        while True:
            if self._candidate is None:
                passing = self._passing_loads()
                if not passing:
                    break
                self._candidate = passing[-1]
            runs = self.runs_at(self._candidate)
            if not all(r.passed for r in runs):
                self._rejected.add(self._candidate)
                self._candidate = None
                continue
            if len(runs) < self.repeats:
                return self._candidate
            break
        if self._hi is not None and len(self.runs_at(self._hi)) < self.repeats:
            return self._hi
        return None

    def record(self, run: StepRun) -> None:
        """The verdict of the run :meth:`next` asked for."""
        self.runs.append(run)
        if run.phase == "climb":
            self._climb += 1
            if not run.passed:
                self._hi = run.load
                self.stop = f"an objective broke at {run.load:g}"
                self.phase = "refine"
                return
            self._lo = run.load
            if run.saturated:
                self.saturated_at = run.load
                self.stop = f"saturated at {run.load:g}: {run.saturated}"
                self.phase = "repeat"
            elif self._climb >= len(self.steps):
                self.stop = f"every step met the objectives, up to {run.load:g}: the knee is higher"
                self.phase = "repeat"
        elif run.phase == "refine":
            self.refine_left -= 1
            if run.passed:
                self._lo = run.load
            else:
                self._hi = run.load

    def outcome(self) -> dict[str, Any]:
        """What the sweep found: the largest load that met every objective in all its runs, with its confidence,
        the first load that broke one (and which), the largest other load that met them in some runs, why it stopped."""
        knee = None
        for load in reversed(self._passing_loads()):
            runs = self.runs_at(load)
            if all(r.passed for r in runs):
                knee = load
                break
        failing = self._hi
        best_partial = None  # the largest load above the answer, other than the first failure, that passed some runs
        for load in sorted({r.load for r in self.runs}, reverse=True):
            if knee is not None and load <= knee:
                break
            if load != failing and any(r.passed for r in self.runs_at(load)):
                best_partial = load
                break
        return {
            "knee": None if knee is None else _load_summary(knee, self.runs_at(knee)),
            "higher_partial": None if best_partial is None else _load_summary(best_partial, self.runs_at(best_partial)),
            "first_failure": None if failing is None else _load_summary(failing, self.runs_at(failing)),
            "stop": self.stop or ("no step was run" if not self.runs else "stopped"),
            "saturated_at": self.saturated_at,
            "budget_spent": self.budget_spent,
            "repeats": self.repeats,
        }


SPREAD_FIGURES = ("ttft_p99", "itl_p99", "tpot_p99", "gap_p99", "errors", "goodput", "throughput")


def _load_summary(load: float, runs: Sequence[StepRun]) -> dict[str, Any]:
    broken = sorted({c.objective.figure for r in runs for c in r.checks if not c.ok})
    spread = {}
    for f in SPREAD_FIGURES:
        vs = [r.figures.get(f) for r in runs if r.figures.get(f) is not None]
        if vs:
            spread[f] = [min(vs), max(vs)]
    return {"load": load, "runs": len(runs), "passed": sum(1 for r in runs if r.passed), "broken": broken,
            "spread": spread}
