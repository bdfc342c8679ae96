"""Servers under test as subprocesses on 127.0.0.1 free ports: the service and the plain FastAPI baseline.

Each is started with a clean environment plus its own settings, optionally confined to some CPUs (the bench
process narrows its own affinity around ``Popen`` so the child inherits it from birth), polled until ready within
a bounded time, and stopped by PID: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 240.0  # ResNet-18 warms up every batch size 1..32 before it reports ready


@dataclass
class Server:
    """A running server process."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    grpc_port: int = 0  # the service's gRPC port, when its command line took one (``{grpc_port}``)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` as tritonclient wants it."""
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in ``timeout_s``. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        return self.process.returncode


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _confine_threads(pid: int, cpus: set[int]) -> None:
    """Put every thread of ``pid`` back on ``cpus``.

    ONNX Runtime's default intra-op pool sets each worker thread's affinity to a core of its own choosing, which
    escapes the mask the process inherited (seen with the baseline's default session under ``--pin``). Threads
    made later inherit from their (confined) creator.
    """
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.sched_setaffinity(int(task.name), cpus)


def start(
    name: str, command: list[str], env: dict[str, str], ready_path: str, log_path: Path, cpus: set[int] | None
) -> Server:
    """Start ``command`` (which must listen on the port it is given via ``{port}``) and wait until it is ready.

    A ``{grpc_port}`` in ``command`` is given a second free port (the service's gRPC port).

    Raises:
        RuntimeError: the process exited, or was not ready within ``STARTUP_TIMEOUT_S`` (log tail quoted).
    """
    port = free_port()
    grpc_port = free_port() if "{grpc_port}" in command else 0
    argv = [part.replace("{port}", str(port)).replace("{grpc_port}", str(grpc_port)) for part in command]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CNNSERVE_", "BASELINE_"))}
    mine = os.sched_getaffinity(0)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        if cpus:
            os.sched_setaffinity(0, cpus)
        try:
            process = subprocess.Popen(argv, cwd=REPO_ROOT, env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT)
        finally:
            os.sched_setaffinity(0, mine)
    server = Server(name, process, port, log_path, grpc_port)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} at startup:\n{log_path.read_text()[-2000:]}")
        if _ready(server.url + ready_path):
            if cpus:
                _confine_threads(process.pid, cpus)
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name} not ready after {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-2000:]}")


def service(repository: Path, model: str, settings: dict[str, str], log_path: Path, cpus: set[int] | None) -> Server:
    """``python -m service`` serving only ``model``, with ``CNNSERVE_<KEY>`` settings."""
    command = [
        sys.executable, "-m", "service", "--repository", str(repository), "--models", model,
        "--port", "{port}", "--grpc-port", "{grpc_port}",
    ]  # fmt: skip
    env = {f"CNNSERVE_{k.upper()}": v for k, v in settings.items()}
    return start(f"service {model}", command, env, "/v2/health/ready", log_path, cpus)


def baseline(model_dir: Path, log_path: Path, cpus: set[int] | None) -> Server:
    """``bench/baseline_app.py`` under uvicorn (uvloop + httptools, no access log), one process."""
    command = [
        sys.executable, "-m", "uvicorn", "bench.baseline_app:app", "--host", "127.0.0.1", "--port", "{port}",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return start("baseline", command, {"BASELINE_MODEL_DIR": str(model_dir)}, "/openapi.json", log_path, cpus)


def bare(model_dir: Path, log_path: Path, cpus: set[int] | None) -> Server:
    """``bench/bare_app.py`` under uvicorn (uvloop + httptools), one worker process per CPU it may use."""
    workers = len(cpus or os.sched_getaffinity(0))
    command = [
        sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1", "--port", "{port}",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        "--workers", str(workers), "--lifespan", "off",
    ]  # fmt: skip
    return start("bare ASGI", command, {"BASELINE_MODEL_DIR": str(model_dir)}, "/ready", log_path, cpus)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def memory_mib(pid: int) -> list[float]:
    """Resident memory (MiB) of ``pid`` and every process under it, ``pid`` first: a server's cost in memory."""
    sizes = []
    pending = [pid]
    while pending:
        current = pending.pop(0)
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{current}/status").read_text()
            kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            sizes.append(kib / 1024)
            pending += _children(current)
    return sizes
