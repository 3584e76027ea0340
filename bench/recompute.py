"""The per-request data a bench run commits, and every figure recomputed from it.

``python -m bench.recompute OUT`` recomputes every repeat's figures, the overheads against ``direct`` and
the medians of ``OUT/<scenario>-<target>.json`` from the committed per-request files, and says whether
each comes out equal to what the run wrote (exit 1 if any differs). ``python -m bench.run --report --out
OUT`` redraws the README and the TTFC plots, which read the same files.

The load generator writes ``runs/<scenario>/<target>/r<k>/loadtest/requests.jsonl`` (every field of every
session, ~1 MB per 1,000 sessions of 20 chunks), which git ignores. Beside it the bench writes
``requests.jsonl.gz``, which git keeps::

    line 1   {"format": "bench-requests", "version": 1, "fields": [...], ...}
    line 2…  one JSON array per session, its values in ``fields`` order

It is lossless for every field a figure reads: the timestamps are integer nanoseconds already, and each
per-chunk delay (milliseconds, a float computed from two integer nanosecond clocks) is stored as those
integer nanoseconds wherever dividing them by 1e6 gives back the same float, else as the float itself.
``gaps_ms`` (no bench figure reads it, and it would double the file) is left out, and ``error_detail`` is
cut to ``ERROR_DETAIL_MAX`` characters.

Recomputing one repeat: the load generator's own statistics (:func:`loadtest.stats.target_summary`) over
the decompressed sessions; from the run's record, what is not per request (the measured window
``run_duration_s``, the load generator's CPU utilisation, the process trees' CPU and RSS, the sim's peak of
open streams); then :func:`bench.metrics.figures`, :func:`bench.metrics.add_overheads` over the repeat's
targets, and :func:`bench.metrics.median` over the repeats.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import metrics
from loadtest import stats
from loadtest.record import SessionRecord

FORMAT = "bench-requests"
VERSION = 1
JSONL_NAME = "requests.jsonl"
GZ_NAME = "requests.jsonl.gz"
DROPPED = ("gaps_ms",)
NS_LISTS = ("relay_delay_ms",)  # ints in the file are nanoseconds, floats are milliseconds
ERROR_DETAIL_MAX = 300
# Summary keys figures() reads that no session record holds: measured over the run's window, not per request.
RUN_KEYS = ("run_duration_s", "loadtest_cpu_utilization")
_RECORD_FIELDS = tuple(SessionRecord.__dataclass_fields__)


def _ns_or_ms(ms: float) -> int | float:
    ns = round(ms * 1e6)
    return ns if ns / 1e6 == ms else ms


def compact_rows(sessions: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The lines of the compact file (header first) for session dicts as the load generator writes them."""
    fields = [f for f in _RECORD_FIELDS if f not in DROPPED]
    yield json.dumps({"format": FORMAT, "version": VERSION, "fields": fields, "ns_lists": list(NS_LISTS),
                      "dropped": list(DROPPED), "error_detail_max": ERROR_DETAIL_MAX}, separators=(",", ":"))
    for d in sessions:
        record = SessionRecord.from_json(d)  # a field an older file lacks takes its default
        row = []
        for f in fields:
            v = getattr(record, f)
            if f in NS_LISTS and v:
                v = [_ns_or_ms(x) for x in v]
            elif f == "error_detail" and isinstance(v, str):
                v = v[:ERROR_DETAIL_MAX]
            row.append(v)
        yield json.dumps(row, separators=(",", ":"))


def write_compact(jsonl: Path, gz: Path) -> None:
    """``requests.jsonl`` → ``requests.jsonl.gz``; the same bytes for the same sessions (no name, no mtime)."""
    with jsonl.open(encoding="utf-8") as src, gz.open("wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as zf:
            out = io.TextIOWrapper(zf, encoding="utf-8", newline="\n")
            for line in compact_rows(json.loads(ln) for ln in src if ln.strip()):
                out.write(line + "\n")
            out.flush()
            out.detach()


def read_compact(gz: Path) -> list[SessionRecord]:
    with gzip.open(gz, "rt", encoding="utf-8") as f:
        header = json.loads(f.readline())
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise ValueError(f"{gz}: not a {FORMAT} v{VERSION} file: {header}")
        fields, ns_lists = header["fields"], set(header["ns_lists"])
        out = []
        for line in f:
            d = dict(zip(fields, json.loads(line), strict=True))
            for name in ns_lists:
                if d.get(name):
                    d[name] = [v / 1e6 if isinstance(v, int) else v for v in d[name]]
            out.append(SessionRecord(**{k: v for k, v in d.items() if k in SessionRecord.__dataclass_fields__}))
    return out


def load_records(loadtest_dir: Path) -> list[SessionRecord]:
    """A run's sessions: from the committed ``requests.jsonl.gz``, else the load generator's own file, else none."""
    if (loadtest_dir / GZ_NAME).exists():
        return read_compact(loadtest_dir / GZ_NAME)
    path = loadtest_dir / JSONL_NAME
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [SessionRecord.from_json(json.loads(ln)) for ln in f if ln.strip()]


def summary_of(records: list[SessionRecord], stored: dict[str, Any]) -> dict[str, Any]:
    """The load generator's summary of the primary target's sessions, plus ``RUN_KEYS`` from ``stored``."""
    targets = stats.by_target(records)
    primary = stored.get("target") or ("relay" if "relay" in targets or not targets else next(iter(targets)))
    summary = stats.target_summary(targets.get(primary, []))
    for key in RUN_KEYS:
        summary[key] = stored.get(key)
    return summary


def run_figures(record: dict[str, Any], records: list[SessionRecord]) -> dict[str, Any]:
    """One repeat's figures (before overheads) from its sessions and its run record."""
    return metrics.figures(summary_of(records, record["summary"]), record["proxy_usage"], record["sim_usage"],
                           record.get("upstream_peak_open"))


@dataclass
class Check:
    """What :func:`verify` found: runs recomputed, runs without per-request data, figures that differ."""

    recomputed: list[str] = field(default_factory=list)  # "scenario/target/r1"
    missing: list[str] = field(default_factory=list)
    differ: list[str] = field(default_factory=list)  # "scenario/target/r1 key: stored X, recomputed Y"


def _compare(where: str, stored: dict[str, Any], mine: dict[str, Any], check: Check) -> None:
    for key in sorted(set(stored) | set(mine)):
        if stored.get(key) != mine.get(key):
            check.differ.append(f"{where} {key}: stored {stored.get(key)!r}, recomputed {mine.get(key)!r}")


def scenario_docs(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``docs[scenario][target]``: the ``<scenario>-<target>.json`` files a run wrote."""
    docs: dict[str, dict[str, dict[str, Any]]] = {}
    for f in sorted(out.glob("*.json")):
        d = json.loads(f.read_text())
        if isinstance(d, dict) and "scenario" in d and "target" in d and "repeats" in d:
            docs.setdefault(d["scenario"]["name"], {})[d["target"]] = d
    return docs


def verify(out: Path) -> Check:
    """Recompute every figure under ``out`` from its per-request files and compare with what was written."""
    check = Check()
    for scenario, docs in scenario_docs(out).items():
        figs: dict[str, dict[int, dict[str, Any]]] = {}
        for target, doc in docs.items():
            for rec in doc["repeats"]:
                if "figures" not in rec:
                    continue
                where = f"{scenario}/{target}/r{rec['repeat']}"
                gz = out / "runs" / scenario / target / f"r{rec['repeat']}" / "loadtest" / GZ_NAME
                if not gz.exists():
                    check.missing.append(where)
                    continue
                figs.setdefault(target, {})[rec["repeat"]] = run_figures(rec, read_compact(gz))
        for rep in sorted({r for by_rep in figs.values() for r in by_rep}):
            metrics.add_overheads({t: by_rep[rep] for t, by_rep in figs.items() if rep in by_rep})
        for target, doc in docs.items():
            done = [r for r in doc["repeats"] if "figures" in r]
            mine = figs.get(target, {})
            for rec in done:
                if rec["repeat"] in mine:
                    where = f"{scenario}/{target}/r{rec['repeat']}"
                    check.recomputed.append(where)
                    _compare(where, rec["figures"], mine[rec["repeat"]], check)
            if done and len(mine) == len(done) and doc.get("median") is not None:
                _compare(f"{scenario}/{target}/median", doc["median"], metrics.median(list(mine.values())), check)
    return check


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.recompute", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="a bench output folder, e.g. results/bench-YYYY-MM-DD")
    args = p.parse_args(argv)
    check = verify(args.out)
    print(f"recomputed from per-request data: {len(check.recomputed)} runs; "
          f"without per-request data: {len(check.missing)}; figures that differ: {len(check.differ)}")
    for where in check.missing:
        print(f"  no {GZ_NAME}: {where}")
    for line in check.differ:
        print(f"  DIFFERS {line}")
    return 1 if check.differ or not check.recomputed else 0


if __name__ == "__main__":
    sys.exit(main())
