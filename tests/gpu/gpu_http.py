"""Images/s over HTTP: a real ``python -m service`` on 127.0.0.1 and the project's harness ``python -m loadtest``.

The server runs in its own process group and is stopped with SIGTERM (then SIGKILL) whatever happens; the load
runs closed-loop at a few concurrencies with v2 binary tensors, ``--batch`` rows a request, every step bounded by
``--duration`` and ``--requests``, the whole harness by a timeout. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gpu_report import HttpStep

from bench.servers import free_port  # the repository root is on sys.path (gpu_check.py puts it there)

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class HttpPlan:
    """What to serve and how hard to load it."""

    repository: Path
    model: str
    providers: str
    workers: int
    batch: int
    concurrency: str  # e.g. "1,8,32"
    duration_s: float
    ready_timeout_s: float
    trt_cache: Path
    require_gpu: bool


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextlib.contextmanager
def serving(plan: HttpPlan, log: Path) -> Iterator[tuple[int, int]]:
    """Start the server, wait until it is ready, yield (port, pid); stop it on the way out.

    Raises:
        RuntimeError: the server exited or was not ready within ``plan.ready_timeout_s``.
    """
    port = free_port()
    env = {
        **os.environ,
        "CNNSERVE_PROVIDERS": plan.providers,
        "CNNSERVE_TENSORRT_CACHE_PATH": str(plan.trt_cache),
        "CNNSERVE_REQUIRE_GPU": "true" if plan.require_gpu else "false",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "service", "--repository", str(plan.repository), "--models", plan.model,
               "--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0",
               "--workers", str(plan.workers)]  # fmt: skip
    with log.open("w") as sink:
        server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + plan.ready_timeout_s
        while not _ready(port):
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with {server.returncode} before it was ready (see {log.name})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready after {plan.ready_timeout_s:.0f} s (see {log.name})")
            time.sleep(0.5)
        yield port, server.pid
    finally:
        _stop(server)


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def run_load(plan: HttpPlan, out: Path, timeout_s: float) -> list[HttpStep]:
    """Serve ``plan.model`` and load it, all within ``timeout_s``; the steps of the sweep (JSON kept in ``out``).

    Raises:
        RuntimeError: the server did not come up, or the harness failed or wrote no report.
        subprocess.TimeoutExpired: the harness ran past what was left of ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    report = out / "loadtest.json"
    report.unlink(missing_ok=True)
    steps_s = len(plan.concurrency.split(",")) * (plan.duration_s + 5)
    plan = dataclasses.replace(plan, ready_timeout_s=max(10.0, min(plan.ready_timeout_s, timeout_s - steps_s)))
    with serving(plan, out / "server.log") as (port, pid):
        command = [sys.executable, "-m", "loadtest", "--url", f"http://127.0.0.1:{port}", "--model", plan.model,
                   "--target", "v2", "--batch", str(plan.batch), "--concurrency", plan.concurrency,
                   "--duration", str(plan.duration_s), "--warmup", "2", "--requests", "100000", "--timeout", "30",
                   "--server-pid", str(pid), "--json", str(report), "--quiet"]  # fmt: skip
        left = max(1.0, deadline - time.monotonic())
        with (out / "loadtest.log").open("w") as sink:
            done = subprocess.run(command, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT, timeout=left)
    if done.returncode != 0 or not report.is_file():
        raise RuntimeError(f"python -m loadtest exited with {done.returncode} (see loadtest.log)")
    steps = []
    for step in json.loads(report.read_text())["steps"]:
        latency = step["latency_ms"] or {}
        steps.append(
            HttpStep(
                concurrency=int(step["load"].get("concurrency", 0)),
                images_per_s=float(step["images_per_s"]),
                p50_ms=float(latency.get("p50", "nan")),
                p99_ms=float(latency.get("p99", "nan")),
                ok=int(step["ok"]),
                errors=dict(step["errors"]),
            )
        )
    return steps
