"""CPU pinning for the per-core benchmarks (issue 16): the proxy on one core, the rig (sim + load generator) on
the others. Pure: it decides the cores and rewrites command lines; ``taskset`` applies them when the process
starts, and every process the target forks later (its workers) inherits the mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Pinning:
    proxy: tuple[int, ...]
    rig: tuple[int, ...]  # the sim and the load generator

    def describe(self) -> str:
        return (f"proxy on core {_cores(self.proxy)}; sim and load generator on core(s) {_cores(self.rig)} "
                f"(taskset -c)")


def _cores(cores: Iterable[int]) -> str:
    return ",".join(str(c) for c in cores)


def plan(proxy_core: int | None, available: Iterable[int]) -> Pinning | None:
    """``proxy_core`` for the proxy and every other available core for the rig; None: nothing pinned."""
    if proxy_core is None:
        return None
    cores = sorted(set(available))
    if proxy_core not in cores:
        raise ValueError(f"core {proxy_core} is not available to this process (available: {_cores(cores)})")
    rig = tuple(c for c in cores if c != proxy_core)
    if not rig:
        raise ValueError("pinning needs at least two cores: one for the proxy, one for the sim and load generator")
    return Pinning(proxy=(proxy_core,), rig=rig)


def pinned(argv: Sequence[str], cores: Sequence[int] | None) -> list[str]:
    """``argv`` run under ``taskset -c CORES``; unchanged when ``cores`` is None."""
    return list(argv) if cores is None else ["taskset", "-c", _cores(cores), *argv]
