"""What the hot microbenchmarks share (``bench.translation``, ``bench.tracing``, ``bench.cache``): CPU medians, and
the report each prints and writes (``README.md`` with the exact command and machine facts, ``results.json``)."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def arguments(doc: str) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc``, with ``--rounds`` and ``--out``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported (default 5)")
    parser.add_argument("--out", type=Path, help="a folder to write README.md and results.json to")
    return parser


def cpu_us(work: Callable[[], object], rounds: int, per: int) -> float:
    """Median over ``rounds`` of process CPU µs per unit, ``per`` units a call of ``work`` (called once first, to
    warm)."""
    work()
    runs = []
    for _ in range(rounds):
        start = time.process_time_ns()
        work()
        runs.append((time.process_time_ns() - start) / 1000 / per)
    return statistics.median(runs)


def python() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}"


def report(title: str, module: str, argv: Sequence[str] | None, facts: str, table: Sequence[str],
           rows: list[dict[str, Any]], out: Path | None) -> None:  # fmt: skip
    """Print ``table`` (Markdown lines) and ``facts``; with ``out``, write them and ``rows`` there too."""
    command = f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(table)
    print(text)
    print(facts)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"command": command, "facts": facts, "rows": rows}, indent=1))
        (out / "README.md").write_text(f"# {title}\n\n`{command.strip()}`\n\n{facts}\n\n{text}\n")
