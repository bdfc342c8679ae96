"""KServe v2 over gRPC through the unmodified ``tritonclient.grpc`` (sync, asyncio, streaming) against a real server.

The shared server answers both protocols from one process: every gRPC answer is compared with the HTTP answer to the
same request (tensors, metadata, configuration, statistics, error messages) and with ONNX Runtime run directly.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from live_server import Reference, Server, metric_value

tg = pytest.importorskip("tritonclient.grpc")
import tritonclient.grpc.aio as tga  # noqa: E402
import tritonclient.http as th  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MODELS = {"lenet5_digits": (1, 32, 32), "small_cnn": (3, 32, 32)}
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[tg.InferenceServerClient]:
    with tg.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as c:
        yield c


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[th.InferenceServerClient]:
    with th.InferenceServerClient(server.address) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """The raw generated stub, for what tritonclient never sends (typed contents, malformed messages)."""
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def grpc_input(x: np.ndarray, name: str = "input", datatype: str = "FP32") -> tg.InferInput:
    tensor = tg.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def http_input(x: np.ndarray) -> th.InferInput:
    tensor = th.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    return tensor


def rows(model: str, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *MODELS[model])).astype(np.float32)


def grpc_error(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def http_error(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_health_metadata_and_config_are_the_http_answers(
    client: tg.InferenceServerClient, http: th.InferenceServerClient
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("small_cnn")
    assert client.is_model_ready("small_cnn", "1")
    assert not client.is_model_ready("small_cnn", "7")
    assert not client.is_model_ready("no_such_model")
    assert client.get_server_metadata(as_json=True) == http.get_server_metadata()
    for model in MODELS:
        metadata = client.get_model_metadata(model, as_json=True)
        expected = http.get_model_metadata(model)
        for tensor in expected["inputs"] + expected["outputs"]:
            tensor["shape"] = [str(d) for d in tensor["shape"]]  # protobuf's JSON writes int64 as strings
        assert metadata == expected
        config = client.get_model_config(model, as_json=True)["config"]
        http_config = http.get_model_config(model)
        assert config["name"] == model
        assert config["max_batch_size"] == http_config["max_batch_size"]
        assert [t["name"] for t in config["input"]] == [t["name"] for t in http_config["input"]]
        assert config["input"][0]["dims"] == [str(d) for d in http_config["input"][0]["dims"]]


@pytest.mark.parametrize("n", [1, 5, 16])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_infer_equals_http_and_onnx_runtime(
    client: tg.InferenceServerClient, http: th.InferenceServerClient, reference: Reference, model: str, n: int
) -> None:
    x = rows(model, n, seed=n)
    result = client.infer(model, [grpc_input(x)], request_id=f"g{n}")
    over_http = http.infer(model, [http_input(x)]).as_numpy("logits")
    np.testing.assert_array_equal(result.as_numpy("logits"), over_http)  # same data plane: bit for bit
    np.testing.assert_allclose(result.as_numpy("logits"), reference(model, x), rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == (f"g{n}", model, "1")


def test_classification_is_the_http_classification(
    client: tg.InferenceServerClient, http: th.InferenceServerClient
) -> None:
    x = rows("small_cnn", 3, seed=7)
    over_grpc = client.infer("small_cnn", [grpc_input(x)], outputs=[tg.InferRequestedOutput("logits", class_count=4)])
    wanted = [th.InferRequestedOutput("logits", class_count=4)]
    over_http = http.infer("small_cnn", [http_input(x)], outputs=wanted)
    assert over_grpc.as_numpy("logits").shape == (3, 4)
    np.testing.assert_array_equal(over_grpc.as_numpy("logits"), over_http.as_numpy("logits"))
    assert over_grpc.as_numpy("logits")[0, 0].decode().count(":") == 2  # value:index:label


def test_typed_contents_equal_raw_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    x = rows("lenet5_digits", 2, seed=3)
    typed = service_pb2.ModelInferRequest(model_name="lenet5_digits")
    tensor = typed.inputs.add(name="input", datatype="FP32", shape=x.shape)
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    raw = service_pb2.ModelInferRequest(model_name="lenet5_digits", raw_input_contents=[x.tobytes()])
    raw.inputs.add(name="input", datatype="FP32", shape=x.shape)
    answers = [stub.ModelInfer(request, timeout=TIMEOUT_S) for request in (typed, raw)]
    outputs = [np.frombuffer(a.raw_output_contents[0], np.float32).reshape(2, 10) for a in answers]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert [tuple(a.outputs[0].shape) for a in answers] == [(2, 10)] * 2


def test_bad_requests_are_refused_with_the_http_status_and_message(
    client: tg.InferenceServerClient, http: th.InferenceServerClient
) -> None:
    wrong_shape = np.zeros((1, 1, 28, 28), np.float32)
    cases = [
        ("unknown model", lambda c, i: c.infer("no_such_model", i(rows("lenet5_digits", 1))), "NOT_FOUND"),
        ("unknown version", lambda c, i: c.infer("lenet5_digits", i(rows("lenet5_digits", 1)), "9"), "NOT_FOUND"),
        ("shape", lambda c, i: c.infer("lenet5_digits", i(wrong_shape)), "INVALID_ARGUMENT"),
        ("too many rows", lambda c, i: c.infer("small_cnn", i(rows("small_cnn", 33))), "INVALID_ARGUMENT"),
    ]
    for what, call, status in cases:
        over_grpc = grpc_error(lambda call=call: call(client, lambda x: [grpc_input(x)]))
        over_http = http_error(lambda call=call: call(http, lambda x: [http_input(x)]))
        assert over_grpc.status() == f"StatusCode.{status}", what
        assert over_grpc.message() == over_http.message(), what
    err = grpc_error(
        lambda: client.infer(
            "lenet5_digits", [grpc_input(rows("lenet5_digits", 1).astype(np.float64), datatype="FP64")]
        )
    )
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert "has datatype FP64, model 'lenet5_digits' expects FP32" in err.message()
    err = grpc_error(
        lambda: client.infer(
            "lenet5_digits", [grpc_input(rows("lenet5_digits", 1))], outputs=[tg.InferRequestedOutput("nope")]
        )
    )
    assert (err.status(), err.message()) == (
        "StatusCode.INVALID_ARGUMENT",
        "unknown output 'nope' for model 'lenet5_digits'; it has ['logits']",
    )


def test_malformed_messages_are_invalid_argument(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    x = rows("lenet5_digits", 1)
    short = service_pb2.ModelInferRequest(model_name="lenet5_digits", raw_input_contents=[x.tobytes()[:-4]])
    short.inputs.add(name="input", datatype="FP32", shape=x.shape)
    too_few = service_pb2.ModelInferRequest(model_name="lenet5_digits")
    too_few.inputs.add(name="input", datatype="FP32", shape=x.shape).contents.fp32_contents.extend([1.0, 2.0])
    half_raw = service_pb2.ModelInferRequest(model_name="lenet5_digits", raw_input_contents=[x.tobytes(), b""])
    half_raw.inputs.add(name="input", datatype="FP32", shape=x.shape)
    bad_timeout = service_pb2.ModelInferRequest(model_name="lenet5_digits", raw_input_contents=[x.tobytes()])
    bad_timeout.inputs.add(name="input", datatype="FP32", shape=x.shape)
    bad_timeout.parameters["timeout"].string_param = "soon"
    expected = {
        "short": (short, "input 'input' has 4092 bytes of raw contents, but shape [1, 1, 32, 32] of FP32 needs 4096"),
        "too few": (too_few, "input 'input' has 2 values in contents.fp32_contents, but shape [1, 1, 32, 32] needs"),
        "half raw": (half_raw, "the request has 1 inputs but 2 raw_input_contents"),
        "timeout": (bad_timeout, "parameters.timeout must be a whole number of microseconds"),
    }
    for what, (request, message) in expected.items():
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
        assert caught.value.details().startswith(message), (what, caught.value.details())
        trailers = dict(caught.value.trailing_metadata())
        assert trailers["cnnserve-error-code"] in ("bad_request", "bad_timeout"), what


def test_statistics_count_grpc_requests_as_http_reports_them(
    client: tg.InferenceServerClient, http: th.InferenceServerClient
) -> None:
    def count() -> int:
        return int(client.get_inference_statistics("small_cnn", as_json=True)["model_stats"][0]["inference_count"])

    before = count()
    for _ in range(5):
        client.infer("small_cnn", [grpc_input(rows("small_cnn", 2))])
    assert count() == before + 10
    over_http = http.get_inference_statistics("small_cnn")["model_stats"][0]
    assert int(over_http["inference_count"]) == before + 10
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {entry["name"] for entry in everything} == set(MODELS)
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["state"]) for m in index} == {(m, "READY") for m in MODELS}


def test_streaming_answers_every_request_with_its_id_and_errors_in_band(
    client: tg.InferenceServerClient, reference: Reference
) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    x = rows("small_cnn", 2, seed=11)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(8):
            client.async_stream_infer("small_cnn", [grpc_input(x)], request_id=f"s{i}")
        client.async_stream_infer("small_cnn", [grpc_input(np.zeros((1, 3, 8, 8), np.float32))], request_id="bad")
        received = [answers.get(timeout=TIMEOUT_S) for _ in range(9)]
    finally:
        client.stop_stream()
    results = {r.get_response().id: r for r, e in received if e is None}
    errors = [e for r, e in received if e is not None]
    assert sorted(results) == [f"s{i}" for i in range(8)]
    for result in results.values():
        np.testing.assert_allclose(result.as_numpy("logits"), reference("small_cnn", x), rtol=1e-5, atol=1e-5)
    assert [e.message() for e in errors] == [
        "input 'input' has shape [1, 3, 8, 8], expected [N, 3, 32, 32] with 1 <= N <= 32"
    ]


def test_asyncio_client_runs_concurrent_requests(server: Server, reference: Reference) -> None:
    async def run() -> list[Any]:
        async with tga.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as aio:
            xs = [rows("lenet5_digits", 1, seed=s) for s in range(24)]
            results = await asyncio.gather(*(aio.infer("lenet5_digits", [grpc_input(x)]) for x in xs))
            return list(zip(xs, results, strict=True))

    for x, result in asyncio.run(run()):
        np.testing.assert_allclose(result.as_numpy("logits"), reference("lenet5_digits", x), rtol=1e-5, atol=1e-5)


def test_health_service_answers_for_probes(server: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_unimplemented_extensions_say_so(client: tg.InferenceServerClient) -> None:
    calls = {
        "shared memory": client.get_system_shared_memory_status,
        "CUDA shared memory": client.get_cuda_shared_memory_status,
        "tracing": client.get_trace_settings,
        "log settings": client.get_log_settings,
    }
    for what, call in calls.items():
        err = grpc_error(call)
        assert err.status() == "StatusCode.UNIMPLEMENTED", what
        assert "is not offered by cnnserve" in err.message(), what


def test_grpc_requests_show_in_the_metrics(server: Server, client: tg.InferenceServerClient) -> None:
    def succeeded() -> float:
        text = httpx.get(f"{server.url}/metrics", timeout=TIMEOUT_S).text
        return metric_value(text, "cnnserve_requests_total", model="lenet5_digits", outcome="success")

    before = succeeded()
    for _ in range(3):
        client.infer("lenet5_digits", [grpc_input(rows("lenet5_digits", 1))])
    assert succeeded() == before + 3


def _request(**fields: Any) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=fields.pop("model", "lenet5_digits"))
    request.inputs.add(
        name=fields.pop("name", "input"),
        datatype=fields.pop("datatype", "FP32"),
        shape=fields.pop("shape", [1, 1, 32, 32]),
    )
    for key, value in fields.items():
        if key == "raw":
            request.raw_input_contents.extend(value)
        else:
            setattr(request, key, value)
    return request


def _with_parameter(request: service_pb2.ModelInferRequest, key: str, **value: Any) -> Any:
    for field, v in value.items():
        setattr(request.parameters[key], field, v)
    return request


def test_hostile_messages_get_a_client_error_and_the_server_stays_ready(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, client: tg.InferenceServerClient
) -> None:
    digit = bytes(4 * 32 * 32)
    cases = {
        "no inputs": service_pb2.ModelInferRequest(model_name="lenet5_digits"),
        "empty model name": _request(model="", raw=[digit]),
        "model name of 10,000 bytes": _request(model="m" * 10_000, raw=[digit]),
        "model name with a slash": _request(model="../lenet5_digits", raw=[digit]),
        "unicode digits in the version": _request(model_version="²", raw=[digit]),
        "huge batch axis": _request(shape=[2**62, 1, 32, 32], raw=[digit]),
        "negative batch axis": _request(shape=[-1, 1, 32, 32], raw=[digit]),
        "rank 1": _request(shape=[4096], raw=[digit]),
        "BYTES input": _request(datatype="BYTES", raw=[digit]),
        "unknown datatype": _request(datatype="FP8", raw=[digit]),
        "timeout as a boolean": _with_parameter(_request(raw=[digit]), "timeout", bool_param=True),
        "timeout beyond an hour": _with_parameter(_request(raw=[digit]), "timeout", int64_param=2**62),
        "negative timeout": _with_parameter(_request(raw=[digit]), "timeout", int64_param=-5),
    }
    cases["shared memory"] = _request(raw=[digit])
    cases["shared memory"].inputs[0].parameters["shared_memory_region"].string_param = "r"
    classification = _request(raw=[digit])
    classification.outputs.add(name="logits").parameters["classification"].string_param = "three"
    cases["classification as text"] = classification
    client_errors = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    for what, request in cases.items():
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=TIMEOUT_S)
        assert caught.value.code() in client_errors, (what, caught.value.code(), caught.value.details())
        assert caught.value.details(), what
    assert client.is_server_ready()
