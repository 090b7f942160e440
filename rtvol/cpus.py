"""How many cores this process may use: its CPU affinity, capped by the cgroup CPU limit
(a pod's ``resources.limits.cpu``), which os.cpu_count() sees neither of."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def available(cgroup: Path = CGROUP) -> int:
    """At least 1."""
    cores = len(os.sched_getaffinity(0))
    quota = cgroup_limit(cgroup)
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def cgroup_limit(cgroup: Path = CGROUP) -> float | None:
    """CPUs the cgroup may use (quota / period; cgroup v2 ``cpu.max``, else v1
    ``cpu.cfs_quota_us``), None when unlimited or unknown."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None
