"""How many CPUs this process may really use: the figure behind ``CNNSERVE_WORKERS=auto`` and ONNX Runtime's threads.

In a container ``os.cpu_count()`` and even the affinity mask report the host's CPUs (say 64) while the cgroup CPU
quota allows only, say, 2 (``docker run --cpus 2``). Sizing workers and threads from the host figure oversubscribes
the quota badly: the kernel throttles every thread each period and latency jumps. So the budget is the smaller of
the affinity mask and the cgroup quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), rounded down, at least 1.
Nothing here raises: a missing, unreadable or garbled file only means that source is unknown, so the server starts
on any Linux or non-Linux machine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process may use, with where the figure came from (for the startup log)."""

    affinity: int
    quota: float | None
    usable: int
    source: str


def _read(path: Path) -> str | None:
    """A file's stripped text, or None where it is missing, unreadable or not text: unknown, never an error."""
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None


def _ratio(quota: str, period: str) -> float | None:
    """``quota / period`` in CPUs; None for unlimited (``max``, ``-1``) or anything garbled."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _v2_quota(root: Path, group: str) -> tuple[float, Path] | None:
    """The tightest ``cpu.max`` from the process's own cgroup up to the root: a parent's limit binds its children.

    The walk ends at the root's own ``cpu.max`` too, which is the one that counts inside a container, where the
    cgroup namespace makes the path ``/`` (or names a host path absent from the container's mount).
    """
    tightest: tuple[float, Path] | None = None
    directory = root / group.lstrip("/")
    while True:
        fields = (_read(directory / "cpu.max") or "").split()
        cpus = _ratio(*fields) if len(fields) == 2 else None
        if cpus is not None and (tightest is None or cpus < tightest[0]):
            tightest = (cpus, directory / "cpu.max")
        if directory == root or root not in directory.parents:
            return tightest
        directory = directory.parent


def _v1_quota(root: Path, group: str) -> tuple[float, Path] | None:
    """The CFS quota of the v1 ``cpu`` controller, under either mount name, at the process's path or the mount root."""
    for mount in ("cpu,cpuacct", "cpu"):
        for directory in (root / mount / group.lstrip("/"), root / mount):
            quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
            if quota is not None and period is not None:
                cpus = _ratio(quota, period)
                return None if cpus is None else (cpus, directory / "cpu.cfs_quota_us")
    return None


def _cgroup_quota(cgroup_root: Path, proc_self_cgroup: Path) -> tuple[float, str] | None:
    """The cgroup CPU quota and a phrase naming its file; a v1 ``cpu`` controller (hybrid hosts) wins over v2."""
    v2_group: str | None = None
    for line in (_read(proc_self_cgroup) or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, group = rest.partition(":")
        if "cpu" in controllers.split(","):
            found = _v1_quota(cgroup_root, group)
            return None if found is None else (found[0], f"cgroup v1 quota {found[0]:g} CPUs ({found[1]})")
        if hierarchy == "0" and controllers == "":
            v2_group = group
    found = None if v2_group is None else _v2_quota(cgroup_root, v2_group)
    return None if found is None else (found[0], f"cgroup v2 quota {found[0]:g} CPUs ({found[1]})")


def _affinity() -> int:
    """CPUs in the affinity mask; ``os.cpu_count()`` where the platform has no ``sched_getaffinity`` (macOS)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        return max(1, len(getaffinity(0)))
    return os.cpu_count() or 1


def cpu_budget(
    cgroup_root: Path = Path("/sys/fs/cgroup"), proc_self_cgroup: Path = Path("/proc/self/cgroup")
) -> CpuBudget:
    """The CPUs to size workers and threads from: min(affinity, floor(quota)), at least 1, with a log phrase."""
    affinity = _affinity()
    found = _cgroup_quota(cgroup_root, proc_self_cgroup)
    if found is None:
        return CpuBudget(affinity, None, affinity, f"affinity {affinity} CPUs, no cgroup quota")
    quota, phrase = found
    usable = max(1, min(affinity, math.floor(quota)))
    return CpuBudget(affinity, quota, usable, f"affinity {affinity} CPUs, {phrase}")
