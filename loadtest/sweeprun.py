"""``loadtest --sweep``: the I/O shell around :class:`loadtest.sweep.Planner`.

:class:`Sweep` asks the planner for a load, runs it as one ordinary run (:class:`loadtest.runner.Runner`, the
step's :class:`~loadtest.shapes.LoadConfig` built by the caller), with a raw probe beside it
(:mod:`loadtest.probe`, a process of its own), turns the run into its result.json document
(:func:`loadtest.report.build_result`, kept under ``steps/``), and hands the planner the step's figures and
verdict. With the embedded default the sim and relay children are started once, for every step
(:func:`loadtest.embedded.servers`), and each step's process CPU is measured on its own. The sweep's own
document, sweep.json, and its reports (:mod:`loadtest.sweepreport`) are written at the end, also when it was
interrupted.
"""

from __future__ import annotations

import json
import pickle
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from loadtest import report, sweep
from loadtest.runner import Runner
from loadtest.shapes import LoadConfig
from loadtest.sweep import Objective, Planner, StepRun

__all__ = ["SCHEMA", "Sweep", "SweepPlan"]

SCHEMA = "loadtest-sweep/1"


@dataclass
class SweepPlan:
    """What the user asked of the sweep (the CLI's flags)."""

    mode: str  # "concurrency" or "rate"
    steps: list[float]
    objectives: list[Objective]
    step_s: float
    repeats: int = 3
    refine: int = 4
    max_runs: int = 30
    resolution: float = 0.1
    probe: bool = True

    def planner(self) -> Planner:
        return Planner(self.steps, repeats=self.repeats, refine=self.refine, max_runs=self.max_runs,
                       resolution=self.resolution, integer=self.mode == "concurrency")

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "steps": self.steps, "objectives": [o.text() for o in self.objectives],
                "step_s": self.step_s, "repeats": self.repeats, "refine": self.refine, "max_runs": self.max_runs,
                "resolution": self.resolution, "probe": self.probe}


PROBE_START_S = 30.0  # the longest a step waits for its probe process to be ready

@dataclass
class _Probe:
    """The raw probe process of one step and what it printed."""

    process: trio.Process
    ttfc_ms: list[float] = field(default_factory=list)
    first_delay_ms: list[float] = field(default_factory=list)
    errors: int = 0
    ready: trio.Event = field(default_factory=trio.Event)

    async def read(self) -> None:
        buf = b""
        assert self.process.stdout is not None
        while data := await self.process.stdout.receive_some(4096):
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                if "ready" in d:
                    self.ready.set()
                elif "ttfc_ms" in d:
                    self.ttfc_ms.append(float(d["ttfc_ms"]))
                    if "first_delay_ms" in d:
                        self.first_delay_ms.append(float(d["first_delay_ms"]))
                else:
                    self.errors += 1


class Sweep:
    """Runs a :class:`SweepPlan` against one URL; ``config(url, load)`` is the step's load configuration."""

    def __init__(self, plan: SweepPlan, config: Callable[[str, float], LoadConfig], *, out_dir: Path,
                 command: list[str], workers: int = 1, slo: dict[str, float] | None = None,
                 show_progress: bool = False, say: Callable[[str], None] = print) -> None:
        self.plan = plan
        self.config = config
        self.out_dir = out_dir
        self.command = command
        self.workers = workers
        self.slo = slo
        self.show_progress = show_progress
        self.say = say
        self.planner = plan.planner()
        self.steps: list[dict[str, Any]] = []
        self.interrupted = False
        self._runner: Runner | None = None

    def interrupt(self) -> None:
        self.interrupted = True
        if self._runner is not None:
            self._runner.interrupt()

    async def run(self, url: str, servers: Any = None, *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every step the planner asks for; the sweep document (written as sweep.json by :meth:`write`)."""
        started = time.time()
        last_climb: tuple[float, dict[str, Any]] | None = None
        while not self.interrupted:
            nxt = self.planner.next()
            if nxt is None:
                break
            load, phase = nxt
            cfg = self.config(url, load)
            step = await self._step(len(self.steps), load, phase, cfg, url, servers)
            figures = step["figures"]
            checks = sweep.judge(figures, self.plan.objectives)
            saturated = None
            if phase == "climb":
                prev_load, prev = last_climb if last_climb else (None, None)
                saturated = sweep.saturation(prev, prev_load, figures, load)
            passed = all(c.ok for c in checks) and not step["interrupted"]
            step.update(passed=passed, saturated=saturated,
                        checks=[{"objective": c.objective.text(), "figure": c.objective.figure,
                                 "limit": c.objective.limit, "value": c.value, "ok": c.ok} for c in checks])
            self.steps.append(step)
            if step["interrupted"]:
                break
            self.planner.record(StepRun(load, phase, passed, figures, checks, saturated))
            if phase == "climb" and passed:
                last_climb = (load, figures)
            self.say(_step_line(step, self.plan.mode))
        return self.document(started, extra or {})

    async def _step(self, index: int, load: float, phase: str, cfg: LoadConfig, url: str,
                    servers: Any) -> dict[str, Any]:
        runner = self._runner = Runner(cfg, workers=self.workers, command=self.command, slo=self.slo)
        probe: _Probe | None = None
        if servers is not None:
            servers.mark_start()
        with tempfile.TemporaryDirectory(prefix="loadtest-probe-") as tmp:
            async with trio.open_nursery() as nursery:
                if self.plan.probe:
                    probe = await self._start_probe(nursery, cfg, url, Path(tmp))
                if self.show_progress:
                    from loadtest.progress import show

                    nursery.start_soon(show, runner.live)
                try:
                    data = await runner.run()
                finally:
                    self._runner = None
                    if probe is not None:
                        with trio.CancelScope(shield=True):
                            await _stop_probe(probe)
                nursery.cancel_scope.cancel()
        if servers is not None:
            data.processes.extend(servers.usage())
        result = report.build_result(data)
        name = f"{index:02d}-{self.plan.mode}-{load:g}"
        step_dir = self.out_dir / "steps" / name
        step_dir.mkdir(parents=True, exist_ok=True)
        (step_dir / "result.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        figures = sweep.step_figures(result["summary"])
        probe_ttfc = probe.ttfc_ms if probe is not None else []
        probe_delay = probe.first_delay_ms if probe is not None else []
        if probe_ttfc:
            figures["probe_ttfc_p50"] = statistics.median(probe_ttfc)
        if probe_delay:
            figures["probe_first_delay_p50"] = statistics.median(probe_delay)
        return {
            "index": index, "load": load, "phase": phase, "dir": f"steps/{name}", "interrupted": data.interrupted,
            "figures": figures, "probe": {"samples": len(probe_ttfc), "errors": probe.errors if probe else 0},
            "limits": sweep.limit_warnings(figures, probe_ttfc, probe_delay), "warnings": result["warnings"],
            "summary": _compact(result["summary"]),
        }

    async def _start_probe(self, nursery: trio.Nursery, cfg: LoadConfig, url: str, tmp: Path) -> _Probe:
        spec = tmp / "probe.pickle"
        spec.write_bytes(pickle.dumps((cfg, url)))
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "loadtest.probe", str(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        probe = _Probe(process)
        nursery.start_soon(probe.read)
        with trio.move_on_after(PROBE_START_S):  # a probe that never starts leaves the step without samples
            await probe.ready.wait()
        return probe

    def document(self, started_unix: float, extra: dict[str, Any]) -> dict[str, Any]:
        """sweep.json: the plan, every step (figures, checks, verdict), the outcome, and where it ran."""
        outcome = self.planner.outcome()
        if self.interrupted:
            outcome["stop"] = "interrupted"
        warnings = []
        limits = sweep.limit_summary(self.steps)
        if limits:
            warnings.append(limits)
        knee = outcome.get("knee")
        if knee is not None:
            at_knee = [s for s in self.steps if s["load"] == knee["load"] and s["limits"]]
            if at_knee:
                warnings.append(f"at the knee ({knee['load']:g}) the load generator itself was near its limit: "
                                "the target may hold more")
        return {
            "schema": SCHEMA,
            "command": list(self.command),
            "command_line": shlex.join(self.command),
            "started_at": datetime.fromtimestamp(started_unix, UTC).isoformat(timespec="seconds"),
            "plan": self.plan.describe(),
            "slo": dict(self.slo) if self.slo else None,
            "machine": report.machine_info(_fd_limit()),
            "versions": report.package_versions(),
            **extra,
            "outcome": outcome,
            "steps": self.steps,
            "warnings": warnings,
            "interrupted": self.interrupted,
        }


def _fd_limit() -> tuple[int, int]:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)


async def _stop_probe(probe: _Probe) -> None:
    p = probe.process
    if p.stdin is not None:
        await p.stdin.aclose()  # the probe stops at the end of its stdin
    with trio.move_on_after(5):
        await p.wait()
    if p.returncode is None:
        p.kill()
        await p.wait()


_COMPACT_KEYS = ("sessions", "completed", "verified", "unverified", "failed", "errors_by_kind", "peak_concurrency",
                 "duration_s", "requests_per_s", "relay_cpu_s", "relay_cpu_us_per_chunk", "loadtest_cpu_utilization")


def _compact(summary: dict[str, Any]) -> dict[str, Any]:
    """The few summary facts sweep.json repeats per step (the step's result.json has them all)."""
    return {k: summary[k] for k in _COMPACT_KEYS if k in summary}


def _step_line(step: dict[str, Any], mode: str) -> str:
    f = step["figures"]
    unit = "concurrent" if mode == "concurrency" else "/s"
    verdict = "pass" if step["passed"] else "FAIL " + ", ".join(c["objective"] for c in step["checks"] if not c["ok"])

    def ms(key: str) -> str:
        v = f.get(key)
        return "-" if v is None else f"{v:,.0f}"

    line = (f"[sweep] {step['phase']:<6} {step['load']:g} {unit}: {f['completed']:,}/{f['sessions']:,} completed, "
            f"TTFT p99 {ms('ttft_p99')} ms, ITL p99 {ms('itl_p99')} ms, errors "
            f"{(f['errors'] or 0):.1%} — {verdict}")
    if step.get("saturated"):
        line += f" (saturated: {step['saturated']})"
    if step["limits"]:
        line += f" [load generator near its limit: {'; '.join(step['limits'])}]"
    return line
