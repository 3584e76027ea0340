"""Open-file limits: every relayed stream holds two sockets, so the soft limit must be raised first."""

from __future__ import annotations

import resource


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the (soft, hard) now in force.

    This machine's hard limit is 20,000 even for root, so one process relays at most ~9,990 streams
    (two fds each); callers size their worker count from the returned soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        target = 1_048_576
    else:
        target = hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def streams_per_process(fds_per_stream: int, reserve: int = 64) -> int:
    """How many concurrent streams fit in this process's fd soft limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, (soft - reserve) // fds_per_stream)
