"""A real ``python -m service`` subprocess for integration tests, and the references its answers must equal.

``start_server`` launches one on a free 127.0.0.1 port, polls readiness within a bounded time, and is stopped by
PID (SIGTERM, then SIGKILL). ``Reference`` runs the repository's model files in ONNX Runtime directly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 90.0
#: Settings of the shared server: small limits so the error paths are cheap to reach.
MAX_BODY_BYTES = 2 * 2**20
MAX_IMAGE_PIXELS = 4_000_000


@dataclass
class Server:
    """A running service process."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    repository: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` as tritonclient wants it."""
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait for the graceful exit, SIGKILL if it does not come; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        return self.process.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(repository: Path | None, log_path: Path, *flags: str, **settings: str) -> Server:
    """Start ``python -m service`` with CLI ``flags`` and ``CNNSERVE_<KEY>`` settings; wait until it is ready.

    ``repository=None`` leaves the flag out, so the service serves its default repository (the repo's models/).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNNSERVE_")}
    env.update({f"CNNSERVE_{key.upper()}": value for key, value in settings.items()})
    port = free_port()
    command = [sys.executable, "-m", "service", "--port", str(port), *flags]
    if repository is not None:
        command += ["--repository", str(repository)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, port, log_path, repository or REPO_ROOT / "models")
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"service exited with {process.returncode} during startup:\n{server.log()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    pytest.fail(f"service not ready after {STARTUP_TIMEOUT_S} s:\n{server.log()[-3000:]}")


class Reference:
    """ONNX Runtime run directly on a repository's model files: what the service's answers must equal."""

    def __init__(self, repository: Path) -> None:
        self._sessions: dict[str, ort.InferenceSession] = {}
        self.repository = repository

    def __call__(self, model: str, x: np.ndarray) -> np.ndarray:
        if model not in self._sessions:
            path = self.repository / model / "1" / "model.onnx"
            self._sessions[model] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session = self._sessions[model]
        return session.run(None, {session.get_inputs()[0].name: x})[0]


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
