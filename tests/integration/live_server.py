"""A real ``python -m service`` subprocess for integration tests, and the references its answers must equal.

``start_server`` launches one through ``bench.servers`` (the one launcher: a free 127.0.0.1 port, readiness polled
within a bounded time, stopped by PID with SIGTERM, then SIGKILL). ``Reference`` runs the repository's model files
in ONNX Runtime directly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.servers import Server, start

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Settings of the shared server: small limits so the error paths are cheap to reach.
MAX_BODY_BYTES = 2 * 2**20
MAX_IMAGE_PIXELS = 4_000_000


def start_server(
    repository: Path | None, log_path: Path, *flags: str, cpus: set[int] | None = None, **settings: str
) -> Server:
    """Start ``python -m service`` with CLI ``flags`` and ``CNNSERVE_<KEY>`` settings; wait until it is ready.

    ``repository=None`` leaves the flag out, so the service serves its default repository (the repo's models/).
    ``cpus`` confines the server and all its threads to those CPUs.
    The servers of the tests accept the repository load/unload API (``model_control=explicit``) unless a test
    passes another ``model_control``; the service's own default, ``none``, is tested in test_model_control.py.
    """
    settings.setdefault("model_control", "explicit")
    command = [sys.executable, "-m", "service", "--port", "{port}", "--grpc-port", "{grpc_port}", *flags]
    if repository is not None:
        command += ["--repository", str(repository)]
    env = {f"CNNSERVE_{key.upper()}": value for key, value in settings.items()}
    try:
        return start("service", command, env, "/v2/health/ready", log_path, cpus=cpus)
    except RuntimeError as err:  # startup failed: the message quotes the log's tail
        pytest.fail(str(err))


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


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` carrying ``labels`` (0 when none does)."""
    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )
