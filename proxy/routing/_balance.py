"""Which of a model's deployments takes a request, sans I/O: nginx's smooth weighted round robin.

Deterministic (no random numbers: a test can predict every choice) and smooth: weights 5, 1, 1 give
``a a b a c a a``, not five a's in a row. Deployments that cannot take a request now (open circuit, resting) are
left out of a round without losing their place, as nginx leaves out a peer that is down. The position is this
worker's own (several workers each spread their requests in the same proportions); health is the store's.
"""

from __future__ import annotations

from collections.abc import Sequence


class SmoothWeighted:
    """Smooth weighted round robin over fixed ``weights``; :meth:`pick` returns an index."""

    __slots__ = ("weights", "current")

    def __init__(self, weights: Sequence[int]) -> None:
        self.weights = tuple(weights)
        self.current = [0] * len(self.weights)

    def pick(self, usable: Sequence[bool]) -> int | None:
        """The next index among the usable ones; None when none is."""
        best = None
        total = 0
        current = self.current
        for i, weight in enumerate(self.weights):
            if not usable[i]:
                continue
            current[i] += weight
            total += weight
            if best is None or current[i] > current[best]:
                best = i
        if best is not None:
            current[best] -= total
        return best


def order(weights: Sequence[int], first: int) -> list[int]:
    """Every index, ``first`` first, then the others by weight (heavier first) and config order: where a request
    goes when the chosen deployment fails before the first byte."""
    rest = sorted((i for i in range(len(weights)) if i != first), key=lambda i: -weights[i])
    return [first, *rest]
