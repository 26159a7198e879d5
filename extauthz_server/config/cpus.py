"""How many CPUs this process may use, as a container sees it: `server.workers: auto`.

The host's core count is not the answer in a container: a pod limited to 2 CPUs on a
64-core node would start 64 workers and be throttled. The answer is the smallest of the
CPUs the process may run on (affinity, cpusets) and the CFS quota (cgroup v2 `cpu.max`, or
cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), rounded up.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    usable = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup_root)
    if quota is not None:
        usable = min(usable, max(1, math.ceil(quota)))
    return max(1, usable)


def cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time per period the cgroup may use; None when unlimited or unknown."""
    v2 = _read(cgroup_root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return _ratio(quota, period)
    v1 = cgroup_root / "cpu"
    quota_us, period_us = _read(v1 / "cpu.cfs_quota_us"), _read(v1 / "cpu.cfs_period_us")
    if quota_us is None or period_us is None:
        return None
    return _ratio(quota_us, period_us)


def _ratio(quota: str, period: str) -> float | None:
    try:
        quota_value, period_value = int(quota), int(period)
    except ValueError:
        return None  # "max": no quota
    if quota_value <= 0 or period_value <= 0:
        return None  # -1 in cgroup v1: no quota
    return quota_value / period_value


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeError):
        return None
