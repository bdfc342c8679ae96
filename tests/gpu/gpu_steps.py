"""The GPU check's building blocks: a time budget, nvidia-smi queries, one probe process, parity against PyTorch.

gpu_check.py composes them; gpu_probe.py is the process ``run_probe`` starts for each load.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from gpu_report import NO_GPU, Figure, Parity, Probe

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).resolve().parent / "gpu_probe.py"
SHORT = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Budget:
    """The run's deadline: each step gets what it asks for, or what is left less a margin for the report."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def allow(self, wanted_s: float) -> float:
        return max(0.0, min(wanted_s, self.deadline - time.monotonic() - 10))


def nvidia_smi(query: str) -> list[str]:
    """``nvidia-smi --query-gpu=<query>`` rows for GPU 0 (none without nvidia-smi or a GPU)."""
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-i", "0"],
                              capture_output=True, text=True, timeout=20, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [part.strip() for part in done.stdout.strip().split(",")] if done.stdout.strip() else []


def run_probe(work: Path, out: Path, budget: Budget, probe: Probe, repository: Path, extra: list[str],
              timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run gpu_probe.py for ``probe`` (filled in place) and return its raw result."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{probe.model} {probe.label}".lower()).strip("-")
    result_path = work / f"probe-{slug}.json"
    result_path.unlink(missing_ok=True)
    allowed = budget.allow(timeout_s)
    if allowed < 5:
        probe.runs = probe.error = probe.load_s = probe.gpu_memory_mb = "skipped: time budget"
        return {"skipped": probe.error}
    before = nvidia_smi("memory.used")
    command = [sys.executable, str(PROBE), "--repository", str(repository), "--model", probe.model,
               "--providers", probe.requested, "--trt-cache", str(work / "trt_cache"), "--result", str(result_path),
               *extra]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=allowed, cwd=REPO_ROOT, env=env)
        stdout, stderr = done.stdout, done.stderr
    except subprocess.TimeoutExpired as err:
        stdout, stderr = _text(err.stdout), _text(err.stderr)
        probe.error = f"timed out after {allowed:.0f} s"
    (out / "probes").mkdir(parents=True, exist_ok=True)
    (out / "probes" / f"{slug}.log").write_text(f"$ {' '.join(command)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    probe.stdout = stdout
    probe.logged = [_ANSI.sub("", line)[:300] for line in stderr.splitlines() if line.strip()][-20:]
    result: dict[str, Any] = json.loads(result_path.read_text()) if result_path.is_file() else {}
    probe.error = result.get("error", probe.error or ("" if result else "no result (see probes/ logs)"))
    probe.runs = result.get("runs", f"none: {probe.error}"[:200])
    probe.device = result.get("device", "")
    probe.load_s = result.get("load_s", f"unmeasured: {probe.error}"[:200])
    if "process_mb" in result:
        probe.gpu_memory_mb = result["process_mb"]
    elif "device_used_mb" in result and before:
        probe.gpu_memory_mb = result["device_used_mb"] - float(before[0])
    else:
        probe.gpu_memory_mb = NO_GPU if not before else "unmeasured: nvidia-smi gave no figure"
    return result


def _text(value: str | bytes | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def tolerance_of(provider: str, precision: str) -> Figure:
    """The service's tolerance for what ran (``service.precision``), or why there is none."""
    try:
        from service.precision import tolerance
    except ImportError as err:
        return f"unknown: {err}"
    try:
        return tolerance(provider, precision)
    except KeyError:
        return f"unknown: no TOLERANCES entry for ({provider}, {precision})"


def parity_row(
    label: str, precision: str, result: dict[str, Any], outputs: Path, ref: npt.NDArray[np.float64]
) -> Parity:
    """Compare a probe's outputs with the PyTorch reference, as the export's parity check measures it."""
    provider = SHORT.get(result.get("runs", ""), "none")
    limit = tolerance_of(provider, precision)
    if not outputs.is_file():
        error = result.get("error") or result.get("skipped") or "the load did not finish"
        why = (error if error.startswith("skipped") else f"unmeasured: {error}")[:200]
        return Parity(label, provider, why, why, limit, why)
    diff = float(np.max(np.abs(np.load(outputs).astype(np.float64) - ref)))
    relative = diff / max(1.0, float(np.max(np.abs(ref))))
    return Parity(label, provider, diff, relative, limit, relative <= limit if isinstance(limit, float) else limit)
