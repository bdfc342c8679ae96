"""The machine a benchmark ran on: CPU model, cores usable, memory, load, and the versions that matter."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

PACKAGES = ("onnxruntime-gpu", "onnxruntime", "numpy", "fastapi", "starlette", "uvicorn", "uvloop", "httptools",
            "pillow", "simplejpeg", "orjson")  # fmt: skip


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return None


@dataclass(frozen=True)
class Machine:
    """The machine a run used; the load average says how busy it was when the run began."""

    cpu_model: str
    logical_cpus: int | None
    usable_cpus: list[int]
    memory_gib: float | None
    load_average: list[float]
    platform: str
    python: str
    versions: dict[str, str]  # of PACKAGES, those installed


def describe() -> Machine:
    """This machine, now."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return Machine(
        cpu_model=_cpu_model(),
        logical_cpus=os.cpu_count(),
        usable_cpus=sorted(os.sched_getaffinity(0)),
        memory_gib=_memory_gib(),
        load_average=[round(x, 2) for x in os.getloadavg()],
        platform=platform.platform(),
        python=platform.python_version(),
        versions=versions,
    )
