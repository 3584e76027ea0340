"""The open-file limit: every stream holds one socket (two in the relay), so the soft limit is raised first."""

from __future__ import annotations

import resource

__all__ = ["raise_nofile_limit"]


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (1,048,576 when unlimited); return the (soft, hard) in force.

    Callers size their process counts from the soft limit it returns; a limit the kernel refuses is left
    as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)
