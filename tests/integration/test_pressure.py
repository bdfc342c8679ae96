"""Behaviour under pressure on a deliberately slow server: queue full, deadlines, disconnects, SIGTERM, auth.

The server runs small_cnn on one ORT thread (a 32-row batch takes tens of milliseconds) with a queue of 4, so a
few large requests make a backlog the tests can put other requests behind.
"""

from __future__ import annotations

import asyncio
import io
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from live_server import Server, metric_value, start_server
from PIL import Image

TOKEN = "pressure-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUEUE = 4
ROWS = 32  # small_cnn's max_batch_size: each such request is a batch of its own
DRAINED = 8  # requests in flight when SIGTERM arrives: several batches' worth of draining


@pytest.fixture(scope="module")
def slow(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        model_repository,
        tmp_path_factory.mktemp("logs") / "slow.log",
        models="small_cnn",
        intra_op_threads="1",
        max_queue_size=str(QUEUE),
        auth_token=TOKEN,
    )
    yield running
    assert running.stop() == 0, running.log()[-3000:]


def infer_body(rows: int, timeout_us: int | None = None) -> tuple[bytes, dict[str, str]]:
    x = np.zeros((rows, 3, 32, 32), np.float32)
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
    parameters = {"binary_data_output": True} | ({"timeout": timeout_us} if timeout_us else {})
    header = orjson.dumps({"inputs": [tensor], "parameters": parameters})
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header)), **AUTH}


async def infer(client: httpx.AsyncClient, rows: int, timeout_us: int | None = None) -> httpx.Response:
    body, headers = infer_body(rows, timeout_us)
    return await client.post("/v2/models/small_cnn/infer", content=body, headers=headers)


def stats(server: Server) -> dict:
    response = httpx.get(f"{server.url}/v2/models/small_cnn/stats", headers=AUTH)
    return response.json()["model_stats"][0]


async def in_flight(
    client: httpx.AsyncClient, count: int, gauge: str = "cnnserve_inflight_requests", timeout_s: float = 20.0
) -> None:
    """Wait (bounded) until the server's ``gauge`` for small_cnn reads at least ``count`` (in flight, or queued)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = (await client.get("/metrics")).text
        if metric_value(text, gauge, model="small_cnn") >= count:
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"{gauge} never reached {count}")


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_full_queue_answers_429_with_retry_after(slow: Server) -> None:
    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=slow.url, timeout=60) as client:
            return await asyncio.gather(*(infer(client, ROWS) for _ in range(12)))

    responses = asyncio.run(flood())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 429}, statuses
    assert statuses.count(200) >= QUEUE  # at least a full queue's worth was served
    for rejected in (r for r in responses if r.status_code == 429):
        assert int(rejected.headers["retry-after"]) >= 1
        assert rejected.json()["code"] == "queue_full"
        assert f"queue holds {QUEUE} requests, the limit is {QUEUE}" in rejected.json()["error"]


def test_deadline_passed_in_the_queue_answers_504_and_never_runs(slow: Server) -> None:
    before = stats(slow)

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=slow.url, timeout=60) as client:
            backlog = [asyncio.ensure_future(infer(client, ROWS)) for _ in range(3)]
            await in_flight(client, 3)
            v2 = asyncio.ensure_future(infer(client, 1, timeout_us=20_000))
            rest = asyncio.ensure_future(
                client.post(
                    "/v1/models/small_cnn/classify",
                    content=jpeg(),
                    headers={"Content-Type": "image/jpeg", "X-Request-Timeout-Ms": "20", **AUTH},
                )
            )
            return list(await asyncio.gather(*backlog)), await v2, await rest

    backlog, v2, rest = asyncio.run(scenario())
    assert [r.status_code for r in backlog] == [200, 200, 200]
    for expired in (v2, rest):
        assert expired.status_code == 504, expired.text
        assert expired.json()["code"] == "deadline_exceeded"
        # Normally it expires in the queue; on a starved machine it may expire before reaching it. Either way
        # it is answered 504 and never runs.
        error = expired.json()["error"]
        assert "deadline passed while queued; the request did not run" in error or "already passed" in error
    after = stats(slow)
    assert after["inference_count"] - before["inference_count"] == 3 * ROWS  # the expired requests never ran


def test_queued_work_of_a_disconnected_client_is_dropped(slow: Server) -> None:
    before, metrics_before = stats(slow), httpx.get(f"{slow.url}/metrics").text

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=slow.url, timeout=60) as client:
            backlog = [asyncio.ensure_future(infer(client, ROWS)) for _ in range(3)]
            await in_flight(client, 3)
            await in_flight(client, 2, gauge="cnnserve_queue_depth")  # one backlog batch runs, two wait
            with raw_request(slow.port, 5):
                await in_flight(client, 3, gauge="cnnserve_queue_depth")  # queued behind the backlog: now hang up
            return list(await asyncio.gather(*backlog))

    assert [r.status_code for r in asyncio.run(scenario())] == [200, 200, 200]
    time.sleep(0.2)
    after, metrics_after = stats(slow), httpx.get(f"{slow.url}/metrics").text
    assert after["inference_count"] - before["inference_count"] == 3 * ROWS  # the 5 rows never ran
    labels = {"model": "small_cnn", "reason": "client_disconnected"}
    dropped = metric_value(metrics_after, "cnnserve_requests_total", **labels) - metric_value(
        metrics_before, "cnnserve_requests_total", **labels
    )
    assert dropped == 1


def test_auth_guards_everything_but_health_and_metrics(slow: Server) -> None:
    body, headers = infer_body(1)
    del headers["Authorization"]
    missing = httpx.post(f"{slow.url}/v2/models/small_cnn/infer", content=body, headers=headers)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json() == {
        "error": "bearer token missing; send 'Authorization: Bearer <token>' (health and /metrics need none)",
        "code": "unauthorized",
    }
    wrong = httpx.get(f"{slow.url}/v2/models/small_cnn", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "bearer token invalid" in wrong.json()["error"]
    assert httpx.get(f"{slow.url}/v1/models").status_code == 401
    assert httpx.get(f"{slow.url}/docs").status_code == 401
    for open_path in ("/v2/health/live", "/v2/health/ready", "/v2/models/small_cnn/ready", "/metrics"):
        assert httpx.get(slow.url + open_path).status_code == 200, open_path
    assert httpx.post(f"{slow.url}/v2/models/small_cnn/infer", content=body, headers=headers | AUTH).status_code == 200


def test_tritonclient_sends_the_token_through_headers(slow: Server) -> None:
    th = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    with th.InferenceServerClient(slow.address) as client:
        assert client.get_model_metadata("small_cnn", headers=AUTH)["name"] == "small_cnn"
        with pytest.raises(InferenceServerException, match="bearer token missing") as caught:
            client.get_model_metadata("small_cnn")
        assert caught.value.status() == "401"


def wait_until_accepted(server: Server, total: int, in_flight: int, timeout_s: float = 20.0) -> None:
    """Wait (bounded) until the server has taken ``total`` requests, ``in_flight`` of them still unanswered."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=server.url) as client:
        while time.monotonic() < deadline:
            text = client.get("/metrics").text
            running = metric_value(text, "cnnserve_inflight_requests", model="small_cnn")
            done = metric_value(text, "nv_inference_request_success", model="small_cnn")
            if running >= in_flight and running + done >= total:
                return
            time.sleep(0.005)
    pytest.fail(f"the server never held {in_flight} of {total} requests at once")


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
    server = start_server(
        model_repository, tmp_path_factory.mktemp("logs") / "drain.log", models="small_cnn", intra_op_threads="1"
    )
    try:
        connections = [raw_request(server.port, ROWS) for _ in range(DRAINED)]
        wait_until_accepted(server, total=DRAINED, in_flight=DRAINED // 2)  # all taken, work still queued
        server.process.send_signal(signal.SIGTERM)
        assert refuses_connections_while_running(server), "kept accepting connections after SIGTERM"
        assert [status_of(c) for c in connections] == [200] * DRAINED
        assert server.process.wait(timeout=60) == 0, server.log()[-3000:]
    finally:
        server.stop()
    log = server.log()
    assert "Finished server process" in log
    assert "stopped" in log
