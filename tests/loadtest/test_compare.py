"""compare(): two result.json documents side by side."""

from __future__ import annotations

import copy
import json

from loadtest import compare


def result(ttfc_p50: float, failed: int, errors: dict[str, int], *, overhead: bool = False) -> dict:
    summary = {
        "target": "relay",
        "sessions": 100,
        "failed": failed,
        "errors_by_kind": errors,
        "requests_per_s": 50.0,
        "ttfc_ms": {"p50": ttfc_p50, "p99": 400.0, "count": 100 - failed},
        "relay_delay_ms": {"p50": None},
    }
    if overhead:
        summary["overhead_ms"] = {"ttfc_p50": 12.5}
    return {"started_at": "2025-01-01T00:00:00+00:00", "command_line": "loadtest run -c 100",
            "summary": summary, "series": {"open_sessions": [[0.0, 1]]}}


def table_rows(text: str) -> dict[str, list[str]]:
    """metric -> the row's other cells, from rich's box-drawn text."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│").split("│")]
        if len(cells) == 5:
            out[cells[0]] = cells[1:]
    return out


def test_flatten_nested_and_skips_lists():
    assert compare.flatten({"a": {"b": {"c": 1}}, "d": [1, 2], "e": None}) == {"a.b.c": 1, "e": None}


def test_compare_shows_every_metric_with_delta_and_change():
    a = result(200.0, 2, {"timeout": 2})
    b = result(150.0, 5, {"timeout": 3, "http_429": 2}, overhead=True)
    text = compare.compare(a, b, labels=("before", "after"))
    assert "before" in text and "after" in text and "loadtest run -c 100" in text
    rows = table_rows(text)
    assert rows["ttfc_ms.p50"] == ["200.0", "150.0", "-50.00", "-25.0%"]
    assert rows["failed"] == ["2", "5", "+3", "+150.0%"]
    assert rows["requests_per_s"] == ["50.00", "50.00", "0", "+0.0%"]
    assert rows["errors_by_kind.http_429"] == ["—", "2", "", ""]  # only in B
    assert rows["overhead_ms.ttfc_p50"] == ["—", "12.50", "", ""]
    assert rows["relay_delay_ms.p50"] == ["—", "—", "", ""]
    assert rows["target"] == ["relay", "relay", "", ""]
    assert "open_sessions" not in text  # series are not summary metrics


def test_compare_zero_base_has_no_percentage():
    a = result(100.0, 0, {})
    b = result(100.0, 4, {})
    assert table_rows(compare.compare(a, b))["failed"] == ["0", "4", "+4", ""]


def test_compare_is_pure_and_works_on_loaded_json():
    a = result(200.0, 2, {"timeout": 2})
    b = json.loads(json.dumps(result(210.0, 2, {"timeout": 2})))
    before = copy.deepcopy((a, b))
    first = compare.compare(a, b, width=100)
    assert compare.compare(a, b, width=100) == first
    assert (a, b) == before
    assert all(len(line) <= 100 for line in first.splitlines())


def test_rows_direction_helpers():
    rows = {r[0]: r for r in compare.rows(result(200.0, 1, {}), result(100.0, 1, {}))}
    assert rows["ttfc_ms.p50"][3:] == (-100.0, -50.0)
    assert not compare._higher_is_better("ttfc_ms.p50")
    assert compare._higher_is_better("requests_per_s")
    assert not compare._higher_is_better("errors_by_kind.timeout")
