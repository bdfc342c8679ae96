"""Behaviour under pressure: queue full, deadlines, disconnects, SIGTERM, auth.

The tests that need a backlog hold the model rather than count on it being slow. ``held`` is a real uvicorn
serving small_cnn in this process (``inprocess_server``) with a ``ModelGate`` in front of the model, a queue of 4
and no inline runs; the SIGTERM test runs ``python -m service`` behind a file gate (``gated_service``). With the gate
closed, the first 32-row request is taken and held and the next ones wait in the queue behind it for as long as
the test needs, whatever the machine's speed. ``guarded``, a subprocess with a bearer token, serves the auth tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from gated_service import start_gated_server
from inprocess_server import REQUEST_TIMEOUT_S, InProcessServer, ModelGate, serving
from live_server import Server, metric_value, start_server
from PIL import Image
from pydantic import SecretStr

from service.settings import Settings

TOKEN = "pressure-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUEUE = 4
ROWS = 32  # small_cnn's max_batch_size: each such request is a batch of its own
FLOOD = 12  # requests sent at a full server: one runs, QUEUE wait, the rest are refused
DEADLINE_MS = 100  # the queue deadline of requests that must expire behind a held batch
DRAINED = 8  # requests in flight when SIGTERM arrives: several batches' worth of draining


@pytest.fixture(scope="module")
def guarded(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``python -m service`` serving small_cnn behind a bearer token (from ``CNNSERVE_AUTH_TOKEN``)."""
    running = start_server(
        model_repository, tmp_path_factory.mktemp("logs") / "guarded.log", models="small_cnn", auth_token=TOKEN
    )
    yield running
    assert running.stop() == 0, running.log()[-3000:]


@dataclass(frozen=True)
class Held:
    """An in-process server of small_cnn whose batches wait while ``gate`` is closed."""

    server: InProcessServer
    gate: ModelGate

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def held(model_repository: Path) -> Iterator[Held]:
    gate = ModelGate()
    with pytest.MonkeyPatch.context() as patch:
        for key in [key for key in os.environ if key.startswith("CNNSERVE_")]:
            patch.delenv(key)  # only the settings given here
        gate.install(patch)
        settings = Settings(
            repository_path=model_repository,
            models=("small_cnn",),
            intra_op_threads=1,
            max_queue_size=QUEUE,
            inline_batch_us=0,  # every batch runs on a worker thread, through the gate
            auth_token=SecretStr(TOKEN),
        )
        with serving(settings) as server:
            yield Held(server, gate)
    assert not gate.failures, gate.failures


def infer_body(rows: int, timeout_us: int | None = None) -> tuple[bytes, dict[str, str]]:
    x = np.zeros((rows, 3, 32, 32), np.float32)
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
    parameters = {"binary_data_output": True} | ({"timeout": timeout_us} if timeout_us else {})
    header = orjson.dumps({"inputs": [tensor], "parameters": parameters})
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header)), **AUTH}


async def infer(client: httpx.AsyncClient, rows: int, timeout_us: int | None = None) -> httpx.Response:
    body, headers = infer_body(rows, timeout_us)
    return await client.post("/v2/models/small_cnn/infer", content=body, headers=headers)


def stats(url: str) -> dict:
    response = httpx.get(f"{url}/v2/models/small_cnn/stats", headers=AUTH, timeout=REQUEST_TIMEOUT_S)
    return response.json()["model_stats"][0]


def wait_for_metric(url: str, name: str, count: float, timeout_s: float = 20.0, **labels: str) -> None:
    """Wait (bounded) until the server's metric ``name`` for small_cnn reads at least ``count``."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        while time.monotonic() < deadline:
            if metric_value(client.get("/metrics").text, name, model="small_cnn", **labels) >= count:
                return
            time.sleep(0.005)
    pytest.fail(f"{name} {labels} never reached {count}")


async def gauge_reaches(url: str, gauge: str, count: int) -> None:
    """``wait_for_metric`` from a coroutine: the caller's event loop keeps sending its requests meanwhile."""
    await asyncio.to_thread(wait_for_metric, url, gauge, count)


async def answered(requests: Sequence[asyncio.Future[httpx.Response]], count: int, timeout_s: float = 20.0) -> None:
    """Wait (bounded) until ``count`` of ``requests`` have their answer."""
    deadline = time.monotonic() + timeout_s
    while sum(request.done() for request in requests) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{sum(r.done() for r in requests)} of {len(requests)} requests answered, expected {count}")
        await asyncio.sleep(0.005)


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_full_queue_answers_429_with_retry_after(held: Held) -> None:
    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=held.url, timeout=60) as client:
            with held.gate.closed():
                first = asyncio.ensure_future(infer(client, ROWS))
                await held.gate.wait_held(1)  # taken from the queue and running: the queue is empty again
                rest = [asyncio.ensure_future(infer(client, ROWS)) for _ in range(FLOOD - 1)]
                await answered(rest, FLOOD - 1 - QUEUE)  # refused at once, while QUEUE of them wait
                await gauge_reaches(held.url, "cnnserve_queue_depth", QUEUE)
            return [await first, *await asyncio.gather(*rest)]

    responses = asyncio.run(flood())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (1 + QUEUE) + [429] * (FLOOD - 1 - QUEUE), statuses  # the held one and a full queue
    for rejected in (r for r in responses if r.status_code == 429):
        assert int(rejected.headers["retry-after"]) >= 1
        assert rejected.json()["code"] == "queue_full"
        assert f"queue holds {QUEUE} requests, the limit is {QUEUE}" in rejected.json()["error"]


def test_deadline_passed_in_the_queue_answers_504_and_never_runs(held: Held) -> None:
    before = stats(held.url)

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=held.url, timeout=60) as client:
            with held.gate.closed():
                backlog = [asyncio.ensure_future(infer(client, ROWS)) for _ in range(3)]
                await held.gate.wait_held(1)
                await gauge_reaches(held.url, "cnnserve_queue_depth", 2)  # one backlog batch held, two wait
                v2 = infer(client, 1, timeout_us=DEADLINE_MS * 1000)
                rest = client.post(
                    "/v1/models/small_cnn/classify",
                    content=jpeg(),
                    headers={"Content-Type": "image/jpeg", "X-Request-Timeout-Ms": str(DEADLINE_MS), **AUTH},
                )
                # Answered while the model is held: they can only expire.
                expired = await asyncio.wait_for(asyncio.gather(v2, rest), timeout=20)
            return list(await asyncio.gather(*backlog)), *expired

    backlog, v2, rest = asyncio.run(scenario())
    assert [r.status_code for r in backlog] == [200, 200, 200]
    for expired in (v2, rest):
        assert expired.status_code == 504, expired.text
        assert expired.json()["code"] == "deadline_exceeded"
        # Normally it expires in the queue; on a starved machine it may expire before reaching it. Either way
        # it is answered 504 and never runs.
        error = expired.json()["error"]
        assert "deadline passed while queued; the request did not run" in error or "already passed" in error
    after = stats(held.url)
    assert after["inference_count"] - before["inference_count"] == 3 * ROWS  # the expired requests never ran


def test_queued_work_of_a_disconnected_client_is_dropped(held: Held) -> None:
    before, metrics_before = stats(held.url), httpx.get(f"{held.url}/metrics", timeout=REQUEST_TIMEOUT_S).text
    labels = {"model": "small_cnn", "reason": "client_disconnected"}
    dropped_before = metric_value(metrics_before, "cnnserve_requests_total", **labels)

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=held.url, timeout=60) as client:
            with held.gate.closed():
                backlog = [asyncio.ensure_future(infer(client, ROWS)) for _ in range(3)]
                await held.gate.wait_held(1)
                await gauge_reaches(held.url, "cnnserve_queue_depth", 2)  # one backlog batch held, two wait
                with raw_request(held.server.port, 5) as hung_up:
                    await gauge_reaches(held.url, "cnnserve_queue_depth", 3)  # queued behind the backlog
                    client_port = hung_up.getsockname()[1]
                await server_forgets(held.server, client_port)  # hung up, and the server knows it
            return list(await asyncio.gather(*backlog))

    assert [r.status_code for r in asyncio.run(scenario())] == [200, 200, 200]
    # The hung-up request is dropped when the collector reaches it, before the last backlog batch runs.
    wait_for_metric(held.url, "cnnserve_requests_total", dropped_before + 1, reason="client_disconnected")
    after, metrics_after = stats(held.url), httpx.get(f"{held.url}/metrics", timeout=REQUEST_TIMEOUT_S).text
    assert after["inference_count"] - before["inference_count"] == 3 * ROWS  # the 5 rows never ran
    assert metric_value(metrics_after, "cnnserve_requests_total", **labels) - dropped_before == 1


async def server_forgets(server: InProcessServer, client_port: int, timeout_s: float = 20.0) -> None:
    """Wait (bounded) until ``server`` no longer holds the connection from ``client_port``."""
    deadline = time.monotonic() + timeout_s
    while await asyncio.to_thread(server.has_client, client_port):
        if time.monotonic() > deadline:
            pytest.fail(f"the server never noticed that the client on port {client_port} hung up")
        await asyncio.sleep(0.005)


def test_auth_guards_everything_but_health_and_metrics(guarded: Server) -> None:
    body, headers = infer_body(1)
    del headers["Authorization"]
    missing = httpx.post(f"{guarded.url}/v2/models/small_cnn/infer", content=body, headers=headers)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json() == {
        "error": "bearer token missing; send 'Authorization: Bearer <token>' (health and /metrics need none)",
        "code": "unauthorized",
    }
    wrong = httpx.get(f"{guarded.url}/v2/models/small_cnn", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "bearer token invalid" in wrong.json()["error"]
    assert httpx.get(f"{guarded.url}/v1/models").status_code == 401
    assert httpx.get(f"{guarded.url}/docs").status_code == 401
    for open_path in ("/v2/health/live", "/v2/health/ready", "/v2/models/small_cnn/ready", "/metrics"):
        assert httpx.get(guarded.url + open_path).status_code == 200, open_path
    assert (
        httpx.post(f"{guarded.url}/v2/models/small_cnn/infer", content=body, headers=headers | AUTH).status_code == 200
    )


def test_tritonclient_sends_the_token_through_headers(guarded: Server) -> None:
    th = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    with th.InferenceServerClient(guarded.address) as client:
        assert client.get_model_metadata("small_cnn", headers=AUTH)["name"] == "small_cnn"
        with pytest.raises(InferenceServerException, match="bearer token missing") as caught:
            client.get_model_metadata("small_cnn")
        assert caught.value.status() == "401"


def raw_request(port: int, rows: int) -> socket.socket:
    """Send one complete v2 infer request on a fresh socket and return the socket, to read the answer later."""
    body, headers = infer_body(rows)
    head = f"POST /v2/models/small_cnn/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    connection = socket.create_connection(("127.0.0.1", port), timeout=60)
    connection.sendall(head.encode() + body)
    return connection


def status_of(connection: socket.socket) -> int:
    """Read an HTTP response's status line."""
    with connection:
        first = connection.makefile("rb").readline()
    return int(first.split()[1])


def refuses_connections_while_running(server: Server, timeout_s: float = 10.0) -> bool:
    """True once a new connection is refused while the process is still alive (draining)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
        except OSError:
            return server.process.poll() is None
        time.sleep(0.01)
    return False


def test_sigterm_drains_in_flight_requests_and_exits_0(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    logs = tmp_path_factory.mktemp("logs")
    gate = logs / "gate"
    server = start_gated_server(
        model_repository, logs / "drain.log", gate, models="small_cnn", intra_op_threads="1", inline_batch_us="0"
    )
    with contextlib.ExitStack() as sockets:
        try:
            gate.touch()  # from now on every batch waits at the gate
            connections = [sockets.enter_context(raw_request(server.port, ROWS)) for _ in range(DRAINED)]
            wait_for_metric(server.url, "cnnserve_inflight_requests", DRAINED)  # one batch held, the rest queued
            server.process.send_signal(signal.SIGTERM)
            assert refuses_connections_while_running(server), "kept accepting connections after SIGTERM"
            gate.unlink()  # the drain may finish now
            assert [status_of(c) for c in connections] == [200] * DRAINED
            assert server.process.wait(timeout=60) == 0, server.log()[-3000:]
        finally:
            gate.unlink(missing_ok=True)
            server.stop()
    log = server.log()
    assert "Finished server process" in log
    assert "stopped" in log
