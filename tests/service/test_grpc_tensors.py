"""The gRPC codec against the messages tritonclient.grpc really builds: round trips, typed contents, every refusal
worded as the HTTP codec words it, and the gRPC status of every service error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import orjson
import pytest
from v2_model import CONFIG, SIG

from service import errors
from service.api import v2_codec
from service.api.v2_tensors import RequestedOutput
from service.errors import BadRequest
from service.grpc_api.status import grpc_status, trailers
from service.grpc_api.tensors import encode_infer_response, parse_infer_request
from service.signature import InputSpec, Signature

tg = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2  # noqa: E402
from tritonclient.grpc._utils import _get_inference_request  # noqa: E402


def client_request(x: np.ndarray, datatype: str = "FP32", outputs: list[Any] | None = None, **kw: Any) -> Any:
    """Exactly the ``ModelInferRequest`` that ``tritonclient.grpc.InferenceServerClient.infer`` sends."""
    tensor = tg.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return _get_inference_request(
        "m", [tensor], "", kw.get("request_id", ""), outputs, False, 0, False, 0, kw.get("timeout"), None
    )


def http_body(x: np.ndarray, datatype: str = "FP32", **header: Any) -> bytes:
    tensor = {"name": "input", "datatype": datatype, "shape": list(x.shape), "data": x.reshape(-1).tolist()}
    return orjson.dumps({"inputs": [tensor], **header})


def refusal(parse: Callable[[], object]) -> str:
    with pytest.raises(BadRequest) as caught:
        parse()
    return caught.value.message


@pytest.mark.parametrize("rows", [1, 5])
def test_tritonclient_requests_parse_to_the_sent_array_and_options(rows: int) -> None:
    x = np.random.default_rng(rows).standard_normal((rows, 1, 4, 4)).astype(np.float32)
    wanted = [tg.InferRequestedOutput("logits", class_count=2)]
    parsed = parse_infer_request(client_request(x, outputs=wanted, request_id="r7", timeout=2500), SIG)
    np.testing.assert_array_equal(parsed.inputs["input"], x)
    assert (parsed.id, parsed.rows, parsed.timeout_us) == ("r7", rows, 2500)
    assert parsed.outputs == (RequestedOutput("logits", True, 2),)
    everything = parse_infer_request(client_request(x), SIG).outputs
    assert [o.name for o in everything] == ["logits", "extra"]


def test_typed_contents_parse_to_the_same_array_as_raw_bytes() -> None:
    x = np.arange(2 * 16, dtype=np.float32).reshape(2, 1, 4, 4)
    typed = service_pb2.ModelInferRequest(model_name="m")
    typed.inputs.add(name="input", datatype="FP32", shape=x.shape).contents.fp32_contents.extend(x.reshape(-1))
    np.testing.assert_array_equal(parse_infer_request(typed, SIG).inputs["input"], x)


def test_fp16_has_no_typed_field_and_says_to_send_raw_bytes() -> None:
    fp16 = Signature("h", 4, {"x": InputSpec("FP16", np.dtype("<f2"), (2,), 2)}, ("y",))
    typed = service_pb2.ModelInferRequest(model_name="h")
    typed.inputs.add(name="x", datatype="FP16", shape=[1, 2])
    assert "send the bytes in raw_input_contents" in refusal(lambda: parse_infer_request(typed, fp16))


@pytest.mark.parametrize(
    ("case", "array", "datatype", "header"),
    [
        ("datatype", np.zeros((1, 1, 4, 4), np.float64), "FP64", {}),
        ("shape", np.zeros((1, 1, 4, 5), np.float32), "FP32", {}),
        ("timeout", np.zeros((1, 1, 4, 4), np.float32), "FP32", {"parameters": {"timeout": -1}}),
    ],
)
def test_refusals_are_worded_as_over_http(case: str, array: np.ndarray, datatype: str, header: dict[str, Any]) -> None:
    request = client_request(array, datatype, timeout=header.get("parameters", {}).get("timeout"))
    over_grpc = refusal(lambda: parse_infer_request(request, SIG))
    over_http = refusal(lambda: v2_codec.parse_infer_request(http_body(array, datatype, **header), None, SIG))
    assert over_grpc == over_http


def test_unknown_input_and_output_are_worded_as_over_http() -> None:
    x = np.zeros((1, 1, 4, 4), np.float32)
    wrong_name = client_request(x)
    wrong_name.inputs[0].name = "image"
    header = orjson.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 4, 4], "data": [0] * 16}]})
    assert refusal(lambda: parse_infer_request(wrong_name, SIG)) == refusal(
        lambda: v2_codec.parse_infer_request(header, None, SIG)
    )
    no_output = client_request(x, outputs=[tg.InferRequestedOutput("nope")])
    over_http = http_body(x, outputs=[{"name": "nope"}])
    assert refusal(lambda: parse_infer_request(no_output, SIG)) == refusal(
        lambda: v2_codec.parse_infer_request(over_http, None, SIG)
    )


def test_responses_read_back_through_tritonclient() -> None:
    outputs = {"logits": np.array([[0.1, 0.7, 0.2]], np.float32), "extra": np.array([[4, 5]], np.int64)}
    wanted = (RequestedOutput("logits", True, 2), RequestedOutput("extra", True))
    response = encode_infer_response("m", "1", "r1", outputs, wanted, CONFIG.labels)
    result = tg.InferResult(response)
    assert result.as_numpy("logits").tolist() == [[b"0.700000:1:dog", b"0.200000:2:eel"]]
    np.testing.assert_array_equal(result.as_numpy("extra"), outputs["extra"])
    assert (response.id, response.model_name, response.model_version) == ("r1", "m", "1")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.BadRequest("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.Unauthorized("x"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.Forbidden("x"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.PayloadTooLarge("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.TooManyRequests("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.ClientClosedRequest("x"), grpc.StatusCode.CANCELLED),
        (errors.ServiceUnavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.InternalError("x"), grpc.StatusCode.INTERNAL),
        (errors.ModelLoadError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_every_service_error_has_the_grpc_status_a_client_expects(error: errors.ServiceError, status: Any) -> None:
    assert grpc_status(error) == status
    assert trailers(error)[0] == ("cnnserve-error-code", error.code)


def test_retry_after_travels_as_a_trailer() -> None:
    full = errors.TooManyRequests("full", headers={"Retry-After": "2"})
    assert trailers(full) == (("cnnserve-error-code", "queue_full"), ("retry-after", "2"))
