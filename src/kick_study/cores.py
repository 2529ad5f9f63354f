"""How many cores this machine lends a sweep, and each cell's share when several run at once."""

from __future__ import annotations

import os


def machine_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """Torch threads of each of ``jobs`` cells running at once: the cores shared out, at least one."""
    return max(1, (cores or machine_cores()) // max(1, jobs))
