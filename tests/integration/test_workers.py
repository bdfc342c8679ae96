"""Two worker processes behind one port answer as one server: counts, statistics, load and unload, readiness.

The server runs with ``CNNSERVE_WORKERS=2`` and its temporary folder (``TMPDIR``) in the test's, so the test can
also reach each worker alone through its private socket (``service/peers.py``) and check the whole against the
parts. Which worker serves a fresh connection is the kernel's choice, evened out by the workers
(``service/connection_balance.py``); every assertion but that one's holds whichever it is.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.grpc
from live_server import REPO_ROOT, metric_value
from tritonclient.utils import InferenceServerException

from bench.servers import Server, start
from service.connection_balance import COUNT_SUFFIX, RECORD
from service.supervisor import UnixHTTPConnection, answers_liveness

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
    command = [sys.executable, "-m", "service", "--port", "{port}", "--grpc-port", "{grpc_port}"]
    command += ["--repository", str(model_repository)]
    env = {
        "CNNSERVE_WORKERS": str(WORKERS),
        "CNNSERVE_MODELS": MODEL,
        "CNNSERVE_MODEL_CONTROL": "explicit",
        "CNNSERVE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        # A worker held stopped below must be left to the test, not killed by the liveness watchdog meanwhile.
        "CNNSERVE_WORKER_TIMEOUT_S": "3600",
        "TMPDIR": str(tmp),
    }
    running = start("two workers", command, env, "/v2/health/ready", tmp / "server.log", cpus=None)
    yield running
    assert running.stop() == 0, running.log()[-3000:]


def _sockets(tmp: Path) -> list[Path]:
    (peer_dir,) = tmp.glob("cnnserve-peers-*")
    return sorted(peer_dir.glob("*.sock"))


def _fresh(server: Server | Path, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on a new connection: to the server's port, or to one worker's own socket."""
    if isinstance(server, Path):
        connection: http.client.HTTPConnection = UnixHTTPConnection(server, TIMEOUT_S)
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


def _first_answer(server: Server, path: str, attempts: int) -> tuple[int, bytes]:
    """The first answer among ``attempts`` requests sent at once, each on a fresh connection.

    The kernel spreads connections over the workers' sockets by a hash of their addresses: with one worker stopped,
    one connection in two waits in its queue. Of 32, the chance that none reaches the running worker is 2**-32.
    """
    pool = ThreadPoolExecutor(attempts)
    try:
        futures = [pool.submit(_fresh, server, "GET", path) for _ in range(attempts)]
        return next(as_completed(futures, timeout=TIMEOUT_S)).result()
    finally:
        pool.shutdown(wait=False)  # the requests queued at the stopped worker finish once it runs again


def test_a_scrape_fails_with_503_naming_the_worker_that_does_not_answer(server: Server, tmp: Path) -> None:
    """A worker held stopped answers no sibling: the running worker's scrape says so rather than undercount."""
    stopped = _sockets(tmp)[0]
    os.kill(int(stopped.stem), signal.SIGSTOP)
    try:
        status, body = _first_answer(server, "/metrics", attempts=32)
    finally:
        os.kill(int(stopped.stem), signal.SIGCONT)  # the requests queued at the stopped worker are answered now
    assert status == 503, body
    answer = orjson.loads(body)
    assert answer["code"] == "worker_unavailable"
    assert f"worker {stopped.stem} of this server did not answer" in answer["error"]
    assert _fresh(server, "GET", "/metrics")[0] == 200  # answered again once it runs


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (IPv4 and IPv6), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


def test_every_worker_listens_on_a_socket_of_its_own(server: Server, tmp: Path) -> None:
    """With SO_REUSEPORT the kernel spreads connections over the workers; a shared socket let one take them all."""
    listening = _listening_inodes(server.port)
    workers = [int(path.stem) for path in _sockets(tmp)]
    assert len(workers) == WORKERS
    owned = [listening & _socket_inodes(pid) for pid in workers]
    assert [len(inodes) for inodes in owned] == [1] * WORKERS, (listening, owned)
    assert len(listening) == WORKERS  # the supervisor's socket holds the port but does not listen
    assert not listening & _socket_inodes(server.process.pid)


def _client_connections(tmp: Path) -> list[int]:
    """Each worker's count of client connections, as it publishes it to its siblings."""
    (peer_dir,) = tmp.glob("cnnserve-peers-*")
    return [RECORD.unpack(path.read_bytes())[0] for path in sorted(peer_dir.glob(f"*{COUNT_SUFFIX}"))]


def test_connections_opened_one_after_another_are_shared_evenly(server: Server, tmp: Path) -> None:
    """SO_REUSEPORT hashes connections over the workers' sockets: 16 split 8 and 8 one time in five. A worker ahead
    of its sibling hands a new connection over before reading it, so the split is even every time."""
    deadline = time.monotonic() + TIMEOUT_S
    while _client_connections(tmp) != [0] * WORKERS:  # earlier tests' connections, closing
        assert time.monotonic() < deadline, _client_connections(tmp)
        time.sleep(0.05)
    workers = _sockets(tmp)
    before = [_successes(_fresh(worker, "GET", "/metrics")[1]) for worker in workers]
    connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT_S) for _ in range(16)]
    try:
        for connection in connections + connections:  # one request each as it opens, then one more on each
            connection.request("POST", f"/v1/models/{MODEL}/classify", body=DIGIT)
            answer = connection.getresponse()
            assert answer.status == 200, answer.read()
            answer.read()
        assert _client_connections(tmp) == [8, 8]
    finally:
        for connection in connections:
            connection.close()
    after = [_successes(_fresh(worker, "GET", "/metrics")[1]) for worker in workers]
    assert [later - earlier for later, earlier in zip(after, before, strict=True)] == [16, 16]


def test_a_worker_whose_loop_hangs_is_killed_and_replaced(model_repository: Path, tmp_path: Path) -> None:
    """A stopped worker stands for a hung one: no liveness answer for CNNSERVE_WORKER_TIMEOUT_S, then a new one."""
    command = [sys.executable, "-m", "service", "--port", "{port}", "--grpc-port", "{grpc_port}"]
    command += ["--repository", str(model_repository)]
    env = {"CNNSERVE_WORKERS": "2", "CNNSERVE_MODELS": MODEL, "CNNSERVE_WORKER_TIMEOUT_S": "2", "TMPDIR": str(tmp_path)}
    running = start("watchdog", command, env, "/v2/health/ready", tmp_path / "server.log", cpus=None)
    try:
        hung = _sockets(tmp_path)[0]
        assert answers_liveness(hung)
        os.kill(int(hung.stem), signal.SIGSTOP)
        deadline = time.monotonic() + 4 * TIMEOUT_S
        while hung.exists() or len(_sockets(tmp_path)) < WORKERS or not all(map(answers_liveness, _sockets(tmp_path))):
            assert time.monotonic() < deadline, f"the hung worker was not replaced: {running.log()[-2000:]}"
            time.sleep(0.2)
        log = running.log()
        assert f"worker {hung.stem} has not answered liveness checks for" in log
        assert "(CNNSERVE_WORKER_TIMEOUT_S=2); killing it" in log
        assert f"worker {hung.stem} died" in log
        for _ in range(10):
            assert _fresh(running, "POST", f"/v1/models/{MODEL}/classify", DIGIT)[0] == 200
    finally:
        assert running.stop() == 0, running.log()[-3000:]


def _grpc(server: Server) -> Any:
    """A tritonclient gRPC client on a fresh channel: whichever worker the kernel gives it."""
    return tritonclient.grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


def _digit_tensor() -> Any:
    tensor = tritonclient.grpc.InferInput("input", [1, 1, 32, 32], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 1, 32, 32), np.float32))
    return tensor


def test_grpc_statistics_and_repository_control_speak_for_every_worker(server: Server, tmp: Path) -> None:
    """K gRPC requests on fresh channels: every statistics call shows K; an unload reaches every worker."""

    def inferences(client: Any) -> int:
        return int(client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]["inference_count"])

    def parts() -> list[int]:
        return [_inferences(_fresh(worker, "GET", f"/v2/models/{MODEL}/stats")[1]) for worker in _sockets(tmp)]

    with _grpc(server) as client:
        before = inferences(client)
    parts_before = parts()
    for _ in range(REQUESTS):
        with _grpc(server) as client:
            client.infer(MODEL, [_digit_tensor()])
    added = [after - earlier for after, earlier in zip(parts(), parts_before, strict=True)]
    print(f"\n{REQUESTS} gRPC requests on fresh channels; each worker served {added}")
    assert sum(added) == REQUESTS
    for _ in range(10):
        with _grpc(server) as client:
            assert inferences(client) - before == REQUESTS
    with _grpc(server) as client:
        client.unload_model(MODEL)
    try:
        for _ in range(10):
            with _grpc(server) as client:
                assert not client.is_model_ready(MODEL)
                with pytest.raises(InferenceServerException) as caught:
                    client.infer(MODEL, [_digit_tensor()])
                assert caught.value.status() == "StatusCode.UNAVAILABLE"
    finally:
        with _grpc(server) as client:
            client.load_model(MODEL)
    for _ in range(10):
        with _grpc(server) as client:
            assert client.is_model_ready(MODEL)
