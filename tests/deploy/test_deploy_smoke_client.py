"""deploy/smoke_client.py against the real service on 127.0.0.1, without a container.

``.ci/container-smoke`` relies on this client to judge the image; running it here against ``python -m service``
with the ConfigMap's settings keeps its expectations (routes, response shape, metric names) in step with the
service on every test run, container engine or not.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_helpers import REPO_ROOT, run

#: A real server on 127.0.0.1, like the integration tests (the folder's conftest adds ``deploy``).
pytestmark = pytest.mark.integration
ENV_FILE = REPO_ROOT / "k8s/base/cnnserve.env"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _configmap_env() -> dict[str, str]:
    """The base ConfigMap's settings, with the repository path pointed at this checkout's models/."""
    pairs = (ln.split("=", 1) for ln in ENV_FILE.read_text(encoding="utf-8").splitlines() if ln and ln[0] != "#")
    env = dict(pairs)
    env["CNNSERVE_REPOSITORY_PATH"] = str(REPO_ROOT / "models")
    return env


@pytest.fixture
def service_url(tmp_path: Path) -> Iterator[str]:
    """A real ``python -m service`` on a free loopback port; stopped with SIGTERM (then SIGKILL) afterwards."""
    pytest.importorskip("service.main", reason="service/main.py is not importable yet")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNNSERVE_")} | _configmap_env()
    with (tmp_path / "service.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def test_smoke_client_passes_against_the_service(service_url: str) -> None:
    done = run([sys.executable, "deploy/smoke_client.py", "--url", service_url, "--ready-timeout-s", "60"])
    assert done.returncode == 0, f"smoke client failed:\n{done.stdout}{done.stderr}"
    assert "v2 metadata and /metrics counters OK" in done.stdout, done.stdout


def test_smoke_client_fails_on_an_unknown_model(service_url: str) -> None:
    """The client can fail: asking for a model the service lacks must end non-zero, naming the HTTP status."""
    done = run([sys.executable, "deploy/smoke_client.py", "--url", service_url, "--model", "no_such_model"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "HTTP 404" in done.stderr, done.stderr
