"""Two result.json documents side by side: every summary metric, A, B, B − A and the change in percent."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from loadtest.reportmd import fmt_num

# Metrics where a larger B is an improvement; everything else numeric (latencies, failures, CPU) is
# better smaller. Used only to colour the delta.
HIGHER_IS_BETTER = ("completed", "requests_per_s", "chunks_per_s", "tokens_per_s", "chunks", "fraction",
                    "per_s", "goodput.sessions", "peak_concurrency", "sessions", "tokens.")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys: {"ttfc_ms": {"p50": 1}} -> {"ttfc_ms.p50": 1}. Lists are skipped."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif not isinstance(v, list):
            out[key] = v
    return out


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _higher_is_better(key: str) -> bool:
    if key.startswith(("errors_by_kind", "failed")) or key.endswith(("_ms", "failed")) or "_ms." in key:
        return False
    return any(h in key for h in HIGHER_IS_BETTER)


def rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any, float | None, float | None]]:
    """(metric, A, B, B − A, % change) for every summary metric in either document, A's order first."""
    fa, fb = flatten(a.get("summary") or {}), flatten(b.get("summary") or {})
    keys = list(fa) + [k for k in fb if k not in fa]
    out = []
    for k in keys:
        va, vb = fa.get(k), fb.get(k)
        delta = pct = None
        if _is_num(va) and _is_num(vb):
            delta = vb - va
            pct = delta / abs(va) * 100 if va else None
        out.append((k, va, vb, delta, pct))
    return out


def compare(a: dict[str, Any], b: dict[str, Any], *, labels: tuple[str, str] = ("A", "B"), width: int = 120) -> str:
    """A rich table of every summary metric of ``a`` and ``b`` (result.json documents), as plain text."""
    table = Table(title="moonrelay load test comparison", show_lines=False)
    table.add_column("metric", no_wrap=True)
    table.add_column(labels[0], justify="right")
    table.add_column(labels[1], justify="right")
    table.add_column("delta", justify="right")
    table.add_column("change", justify="right")
    for key, va, vb, delta, pct in rows(a, b):
        style = ""
        if delta:
            better = (delta > 0) == _higher_is_better(key)
            style = "green" if better else "red"
        d = "" if delta is None else "0" if delta == 0 else ("+" if delta > 0 else "") + fmt_num(delta)
        p = "" if pct is None else f"{pct:+.1f}%"
        table.add_row(key, fmt_num(va), fmt_num(vb), d, p, style=style or None)

    # record=True keeps what was printed for export_text; the StringIO file keeps it off the terminal.
    console = Console(record=True, file=io.StringIO(), width=width, color_system=None)
    console.print(f"{labels[0]}: {a.get('started_at', '?')}  {a.get('command_line', '')}", soft_wrap=True)
    console.print(f"{labels[1]}: {b.get('started_at', '?')}  {b.get('command_line', '')}", soft_wrap=True)
    console.print(table)
    return console.export_text()
