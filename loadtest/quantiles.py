"""Percentiles, pure: the one definition every figure of the load generator uses.

Linear interpolation between closest ranks, numpy's default (``method="linear"``, Hyndman & Fan type 7): for
sorted values ``x[0..n-1]`` the p-th percentile sits at rank ``h = (n - 1) * p / 100`` and is
``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``. Weighted values (a chunk's gap shared by
the tokens it carried) use the inverted CDF instead (numpy's ``method="inverted_cdf"`` with weights): the
smallest value whose cumulative weight reaches ``p`` percent of the total; there is no rank to interpolate.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["DEFAULT_PS", "percentiles", "pkey", "quantile_sorted", "weighted_percentiles"]

DEFAULT_PS: tuple[float, ...] = (50, 90, 95, 99, 99.9)


def pkey(p: float) -> str:
    """The key a percentile is stored under: 50 -> "p50", 99.9 -> "p99.9"."""
    return f"p{p:g}"


def quantile_sorted(xs: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) of already sorted, non-empty ``xs`` by linear interpolation."""
    if not xs:
        raise ValueError("no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} outside [0, 100]")
    h = (len(xs) - 1) * p / 100
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    a, b = xs[lo], xs[hi]
    v = a + (h - lo) * (b - a)
    # Clamp: float rounding must not push an interpolated value past its neighbours (keeps p monotone).
    return min(max(v, a), b)


def percentiles(values: Iterable[float], ps: Sequence[float] = DEFAULT_PS) -> dict[str, Any]:
    """Percentiles plus min, max, mean and count of ``values``; all None (count 0) when empty."""
    xs = sorted(values)
    out: dict[str, Any] = {pkey(p): None for p in ps}
    out.update(min=None, max=None, mean=None, count=len(xs))
    if not xs:
        return out
    for p in ps:
        out[pkey(p)] = quantile_sorted(xs, p)
    out["min"] = xs[0]
    out["max"] = xs[-1]
    out["mean"] = math.fsum(xs) / len(xs)
    return out



def weighted_percentiles(pairs: Iterable[tuple[float, float]], ps: Sequence[float] = DEFAULT_PS) -> dict[str, Any]:
    """Percentiles of ``(value, weight)`` pairs by the inverted CDF, plus min, max, the weighted mean and
    ``count``, the total weight; all None (count 0) when there is no positive weight."""
    xs = sorted((v, w) for v, w in pairs if w > 0)
    total = math.fsum(w for _, w in xs)
    out: dict[str, Any] = {pkey(p): None for p in ps}
    out.update(min=None, max=None, mean=None, count=total)
    if not xs:
        return out
    cum: list[float] = []
    acc = 0.0
    for _, w in xs:
        acc += w
        cum.append(acc)
    for p in ps:
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} outside [0, 100]")
        need = p / 100 * total
        i = min(bisect.bisect_left(cum, need * (1 - 1e-12)), len(xs) - 1)
        out[pkey(p)] = xs[i][0]
    out["min"] = xs[0][0]
    out["max"] = xs[-1][0]
    out["mean"] = math.fsum(v * w for v, w in xs) / total
    return out
