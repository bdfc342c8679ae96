"""Two worker processes behind one port answer as one server: counts, statistics, load and unload, readiness.

The server runs with ``CNNSERVE_WORKERS=2`` and its temporary folder (``TMPDIR``) in the test's, so the test can
also reach each worker alone through its private socket (``service/peers.py``) and check the whole against the
parts. Which worker accepts a fresh connection is the kernel's choice; every assertion holds whichever it is.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from live_server import REPO_ROOT, metric_value

from bench.servers import Server, start

MODEL = "lenet5_digits"
WORKERS = 2
REQUESTS = 30
DIGIT = (REPO_ROOT / "samples" / "digits" / "digit-7.png").read_bytes()
TIMEOUT_S = 30.0
SUCCESS = {"model": MODEL, "outcome": "success", "reason": "ok"}
MAX_BODY_BYTES = 2**20


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workers")


@pytest.fixture(scope="module")
def server(model_repository: Path, tmp: Path) -> Iterator[Server]:
    command = [sys.executable, "-m", "service", "--port", "{port}", "--repository", str(model_repository)]
    env = {
        "CNNSERVE_WORKERS": str(WORKERS),
        "CNNSERVE_MODELS": MODEL,
        "CNNSERVE_MODEL_CONTROL": "explicit",
        "CNNSERVE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "TMPDIR": str(tmp),
    }
    running = start("two workers", command, env, "/v2/health/ready", tmp / "server.log", cpus=None)
    yield running
    assert running.stop() == 0, running.log()[-3000:]


def _sockets(tmp: Path) -> list[Path]:
    (peer_dir,) = tmp.glob("cnnserve-peers-*")
    return sorted(peer_dir.glob("*.sock"))


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("worker", timeout=TIMEOUT_S)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT_S)
        self.sock.connect(str(self.path))


def _fresh(server: Server | Path, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on a new connection: to the server's port, or to one worker's own socket."""
    if isinstance(server, Path):
        connection: http.client.HTTPConnection = _UnixConnection(server)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT_S)
    try:
        connection.request(method, path, body=body)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def _successes(scrape: bytes) -> float:
    return metric_value(scrape.decode(), "cnnserve_requests_total", **SUCCESS)


def _inferences(stats: bytes) -> int:
    (entry,) = orjson.loads(stats)["model_stats"]
    return int(entry["inference_count"])


def test_counts_and_statistics_cover_every_worker_on_every_connection(server: Server, tmp: Path) -> None:
    before_scrape = _successes(_fresh(server, "GET", "/metrics")[1])
    before_stats = _inferences(_fresh(server, "GET", f"/v2/models/{MODEL}/stats")[1])
    for _ in range(REQUESTS):
        assert _fresh(server, "POST", f"/v1/models/{MODEL}/classify", DIGIT)[0] == 200
    workers = _sockets(tmp)
    assert len(workers) == WORKERS
    parts = [_successes(_fresh(worker, "GET", "/metrics")[1]) for worker in workers]
    print(f"\n{REQUESTS} requests on fresh connections; the workers' own counts: {parts}")
    assert sum(parts) - before_scrape == REQUESTS
    for _ in range(10):  # each on a fresh connection, whichever worker takes it
        status, scrape = _fresh(server, "GET", "/metrics")
        assert status == 200
        assert _successes(scrape) - before_scrape == REQUESTS
        for path in ("/v2/models/stats", f"/v2/models/{MODEL}/stats", f"/v2/models/{MODEL}/versions/1/stats"):
            status, stats = _fresh(server, "GET", path)
            assert status == 200, stats
            assert _inferences(stats) - before_stats == REQUESTS


def test_unload_and_load_reach_every_worker_before_they_answer(server: Server, tmp: Path) -> None:
    status, body = _fresh(server, "POST", f"/v2/repository/models/{MODEL}/unload")
    assert status == 200, body
    try:
        for _ in range(10):
            assert _fresh(server, "GET", f"/v2/models/{MODEL}/ready")[0] == 503
            assert _fresh(server, "POST", f"/v1/models/{MODEL}/classify", DIGIT)[0] == 503
        for worker in _sockets(tmp):
            assert _fresh(worker, "GET", f"/v2/models/{MODEL}/ready")[0] == 503
    finally:
        status, body = _fresh(server, "POST", f"/v2/repository/models/{MODEL}/load")
        assert status == 200, body
    for _ in range(10):
        assert _fresh(server, "GET", f"/v2/models/{MODEL}/ready")[0] == 200
    for worker in _sockets(tmp):
        assert _fresh(worker, "GET", f"/v2/models/{MODEL}/ready")[0] == 200


def test_a_worker_that_dies_is_replaced_and_the_server_is_ready_again(server: Server, tmp: Path) -> None:
    victim = _sockets(tmp)[0]
    os.kill(int(victim.stem), signal.SIGKILL)
    deadline = time.monotonic() + TIMEOUT_S
    while victim.exists() or len(_sockets(tmp)) < WORKERS or _fresh(server, "GET", "/v2/health/ready")[0] != 200:
        assert time.monotonic() < deadline, f"no replacement worker ready: {_sockets(tmp)}"
        time.sleep(0.1)
    assert f"worker {victim.stem} died" in server.log()
    for _ in range(10):
        assert _fresh(server, "POST", f"/v1/models/{MODEL}/classify", DIGIT)[0] == 200
        assert _fresh(server, "GET", "/metrics")[0] == 200


def test_a_whole_server_call_with_a_body_over_the_limit_is_refused_before_any_worker_sees_it(server: Server) -> None:
    status, body = _fresh(server, "POST", f"/v2/repository/models/{MODEL}/load", b"{" * (MAX_BODY_BYTES + 1))
    assert status == 413, body
    answer = orjson.loads(body)
    assert answer["code"] == "body_too_large"
    assert f"the limit is {MAX_BODY_BYTES} bytes (CNNSERVE_MAX_BODY_BYTES)" in answer["error"]
    assert _fresh(server, "GET", f"/v2/models/{MODEL}/ready")[0] == 200  # nothing was loaded or unloaded


def test_a_scrape_fails_with_503_naming_the_worker_that_does_not_answer(server: Server, tmp: Path) -> None:
    """A worker held stopped takes no connection and answers no sibling: the scrape says so rather than undercount."""
    stopped = _sockets(tmp)[0]
    os.kill(int(stopped.stem), signal.SIGSTOP)
    try:
        status, body = _fresh(server, "GET", "/metrics")  # only the running worker accepts: it asks the stopped one
    finally:
        os.kill(int(stopped.stem), signal.SIGCONT)
    assert status == 503, body
    answer = orjson.loads(body)
    assert answer["code"] == "worker_unavailable"
    assert f"worker {stopped.stem} of this server did not answer" in answer["error"]
    assert _fresh(server, "GET", "/metrics")[0] == 200  # answered again once it runs
