"""gRPC under pressure and guard: deadlines, cancellation, admission, draining, bearer tokens, message limits.

The model is held by the file gate of ``gated_service`` so that every request is in a known state (running, queued)
before the test acts; nothing here races the machine's speed.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from gated_service import start_gated_server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from live_server import metric_value, start_server

from bench.servers import Server

tg = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "small_cnn"
TIMEOUT_S = 30.0
MAX_INFLIGHT = 3
TOKEN = "grpc-s3cret"
MAX_MESSAGE_BYTES = 64 * 2**10


def tensor(n: int = 1) -> tg.InferInput:
    t = tg.InferInput("input", [n, 3, 32, 32], "FP32")
    t.set_data_from_numpy(np.zeros((n, 3, 32, 32), np.float32))
    return t


def wait_until(what: str, condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (bounded): the server reaches the state a test needs in its own time."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.005)
    pytest.fail(f"never happened: {what}")


def metric(server: Server, name: str, **labels: str) -> float:
    return metric_value(httpx.get(f"{server.url}/metrics", timeout=TIMEOUT_S).text, name, model=MODEL, **labels)


def executed(client: tg.InferenceServerClient) -> int:
    """Rows the model has run (Triton's inference_count)."""
    return int(client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0].get("inference_count", 0))


class Held:
    """Requests sent with ``async_infer``, their results collected as they come."""

    def __init__(self, client: tg.InferenceServerClient) -> None:
        self.client = client
        self.answers: queue.Queue[tuple[Any, Any]] = queue.Queue()

    def send(self, **options: Any) -> Any:
        return self.client.async_infer(
            MODEL, [tensor()], lambda result, error: self.answers.put((result, error)), **options
        )

    def results(self, count: int) -> list[tuple[Any, Any]]:
        return [self.answers.get(timeout=TIMEOUT_S) for _ in range(count)]


@pytest.fixture
def gated(model_repository: Path, tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    gate = tmp_path / "gate"
    server = start_gated_server(
        model_repository,
        tmp_path / "server.log",
        gate,
        models=MODEL,
        intra_op_threads="1",
        inline_batch_us="0",
        max_inflight_requests=str(MAX_INFLIGHT),
        max_queue_delay_us="0",
    )
    yield server, gate
    gate.unlink(missing_ok=True)
    server.stop()


@pytest.fixture
def client(gated: tuple[Server, Path]) -> Iterator[tg.InferenceServerClient]:
    with tg.InferenceServerClient(f"127.0.0.1:{gated[0].grpc_port}") as c:
        yield c


def hold_one(server: Server, gate: Path, client: tg.InferenceServerClient) -> Held:
    """Close the gate and have one request running at it, none queued; returns the requests, that one sent."""
    held = Held(client)
    gate.touch()
    held.send()
    wait_until("one request held at the gate", lambda: metric(server, "cnnserve_inflight_requests") == 1)
    wait_until("the queue empty behind it", lambda: metric(server, "cnnserve_queue_depth") == 0)
    return held


def test_deadlines_drop_queued_work_before_it_runs(
    gated: tuple[Server, Path], client: tg.InferenceServerClient
) -> None:
    server, gate = gated
    before = executed(client)
    held = hold_one(server, gate, client)
    # The request's timeout parameter (Triton's): the queue drops it and says why, with the gRPC status.
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [tensor()], timeout=200_000)
    assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert "deadline" in caught.value.message()
    # The gRPC deadline: the queue deadline too, so the work never runs after the client stopped waiting.
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [tensor()], client_timeout=0.3)
    assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    gate.unlink()
    ((result, error),) = held.results(1)
    assert error is None
    assert executed(client) == before + 1  # the held request only: both others were dropped unrun
    dropped = sum(
        metric(server, "cnnserve_requests_total", reason=r) for r in ("deadline_exceeded", "client_disconnected")
    )
    assert dropped == 2


def test_a_cancelled_call_is_dropped_from_the_queue(
    gated: tuple[Server, Path], client: tg.InferenceServerClient
) -> None:
    server, gate = gated
    before = executed(client)
    held = hold_one(server, gate, client)
    queued = held.send()
    wait_until("the second request queued", lambda: metric(server, "cnnserve_queue_depth") == 1)
    queued.cancel()
    wait_until("the queue empty again", lambda: metric(server, "cnnserve_queue_depth") == 0)
    wait_until(
        "the cancellation counted",
        lambda: metric(server, "cnnserve_requests_total", reason="client_disconnected") == 1,
    )
    gate.unlink()
    results = held.results(2)
    assert sorted(str(e.status()) if e else "ok" for _, e in results) == ["StatusCode.CANCELLED", "ok"]
    assert executed(client) == before + 1


def test_past_the_in_flight_bound_calls_are_refused_with_resource_exhausted(
    gated: tuple[Server, Path], client: tg.InferenceServerClient
) -> None:
    server, gate = gated
    held = hold_one(server, gate, client)
    for _ in range(MAX_INFLIGHT - 1):
        held.send()
    wait_until("the bound reached", lambda: metric(server, "cnnserve_inflight_requests") == MAX_INFLIGHT)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        request = service_pb2.ModelInferRequest(model_name=MODEL, raw_input_contents=[bytes(3 * 32 * 32 * 4)])
        request.inputs.add(name="input", datatype="FP32", shape=[1, 3, 32, 32])
        with pytest.raises(grpc.RpcError) as caught:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "CNNSERVE_MAX_INFLIGHT_REQUESTS" in caught.value.details()
    assert dict(caught.value.trailing_metadata()) == {"cnnserve-error-code": "overloaded", "retry-after": "1"}
    streamed: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: streamed.put((result, error)))
    try:
        client.async_stream_infer(MODEL, [tensor()], request_id="over")
        _, error = streamed.get(timeout=TIMEOUT_S)
    finally:
        client.stop_stream(cancel_requests=True)
    assert "CNNSERVE_MAX_INFLIGHT_REQUESTS" in error.message()
    gate.unlink()
    assert all(error is None for _, error in held.results(MAX_INFLIGHT))


def test_draining_refuses_new_calls_and_finishes_the_running_one(
    gated: tuple[Server, Path], client: tg.InferenceServerClient
) -> None:
    server, gate = gated
    held = hold_one(server, gate, client)
    server.process.send_signal(signal.SIGTERM)
    address = f"127.0.0.1:{server.grpc_port}"

    def refused() -> bool:
        with grpc.insecure_channel(address) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.RpcError as err:
                return err.code() == grpc.StatusCode.UNAVAILABLE
            return answer.status == health_pb2.HealthCheckResponse.NOT_SERVING

    wait_until("the health service reports the drain", refused)
    with tg.InferenceServerClient(address) as fresh, pytest.raises(InferenceServerException) as caught:
        fresh.infer(MODEL, [tensor()], client_timeout=5.0)
    assert caught.value.status() == "StatusCode.UNAVAILABLE"
    gate.unlink()
    ((result, error),) = held.results(1)
    assert error is None
    assert result.as_numpy("logits").shape == (1, 10)
    assert server.process.wait(TIMEOUT_S) == 0


@pytest.fixture(scope="module")
def guarded(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        model_repository,
        tmp_path_factory.mktemp("guarded") / "server.log",
        models=MODEL,
        workers="1",
        auth_token=TOKEN,
        grpc_max_message_bytes=str(MAX_MESSAGE_BYTES),
        access_log="true",
    )
    yield running
    assert running.stop() == 0


def test_a_missing_or_wrong_token_is_unauthenticated_and_probes_need_none(guarded: Server) -> None:
    address = f"127.0.0.1:{guarded.grpc_port}"
    with tg.InferenceServerClient(address) as client:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
        for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            for call in (
                lambda h: client.infer(MODEL, [tensor()], headers=h),
                lambda h: client.get_model_metadata(MODEL, headers=h),
                lambda h: client.get_inference_statistics(MODEL, headers=h),
            ):
                with pytest.raises(InferenceServerException) as caught:
                    call(headers)
                assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
                assert "bearer token" in caught.value.message()
        good = {"authorization": f"Bearer {TOKEN}"}
        assert client.infer(MODEL, [tensor()], headers=good).as_numpy("logits").shape == (1, 10)
        assert client.get_model_metadata(MODEL, headers=good).name == MODEL
        streamed: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(callback=lambda result, error: streamed.put((result, error)))
        with contextlib.suppress(InferenceServerException):  # the refusal may end the stream before this is sent
            client.async_stream_infer(MODEL, [tensor()])
        _, error = streamed.get(timeout=TIMEOUT_S)  # the refusal always reaches the callback
        client.stop_stream()
        assert "StatusCode.UNAUTHENTICATED" in str(error.status())
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_a_message_over_the_limit_is_resource_exhausted(guarded: Server) -> None:
    good = {"authorization": f"Bearer {TOKEN}"}
    rows = MAX_MESSAGE_BYTES // (3 * 32 * 32 * 4) + 1
    with tg.InferenceServerClient(f"127.0.0.1:{guarded.grpc_port}") as client:
        with pytest.raises(InferenceServerException) as caught:
            client.infer(MODEL, [tensor(rows)], headers=good)
        assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert client.infer(MODEL, [tensor(rows - 1)], headers=good).as_numpy("logits").shape == (rows - 1, 10)


def test_calls_carry_their_request_id_into_the_log_and_the_access_log(guarded: Server) -> None:
    with tg.InferenceServerClient(f"127.0.0.1:{guarded.grpc_port}") as client:
        good = {"authorization": f"Bearer {TOKEN}", "x-request-id": "trace-42"}
        client.infer(MODEL, [tensor()], headers=good)
        with pytest.raises(InferenceServerException):
            client.infer(MODEL, [tensor()], headers={"x-request-id": "trace-43"})
    wait_until("both calls logged", lambda: "[trace-43]" in guarded.log())
    lines = guarded.log().splitlines()
    assert any("[trace-42] gRPC /inference.GRPCInferenceService/ModelInfer OK" in line for line in lines)
    assert any("[trace-43] gRPC /inference.GRPCInferenceService/ModelInfer UNAUTHENTICATED" in line for line in lines)
