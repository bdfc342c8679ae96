"""The v2 codec against the bodies tritonclient really builds and parses: round trips and every malformed case."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pytest
from v2_model import CONFIG, SIG

from service.api.v2_codec import RequestedOutput, encode_infer_response, parse_infer_request
from service.config_model import TensorSpec
from service.errors import BadRequest
from service.signature import Signature

th = pytest.importorskip("tritonclient.http")
from tritonclient.http._utils import _get_inference_request  # noqa: E402


def client_body(
    array: np.ndarray, binary: bool, outputs: list[Any] | None = None, **kw: Any
) -> tuple[bytes, int | None]:
    """Exactly what ``InferenceServerClient.infer`` sends."""
    tensor = th.InferInput("input", list(array.shape), th.np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array, binary_data=binary)
    body, header_length = _get_inference_request([tensor], kw.get("request_id", ""), outputs, 0, False, False, 0,
                                                  kw.get("timeout"), None)  # fmt: skip
    return (body.encode() if isinstance(body, str) else body), header_length


def result(body: bytes, header_length: int | None) -> Any:
    return th.InferResult.from_response_body(body, header_length=header_length)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_tritonclient_requests_parse_to_the_sent_array(binary: bool, rows: int) -> None:
    x = np.random.default_rng(rows).standard_normal((rows, 1, 4, 4)).astype(np.float32)
    body, header_length = client_body(x, binary, request_id="r1", timeout=2500)
    parsed = parse_infer_request(body, header_length, SIG)
    np.testing.assert_array_equal(parsed.inputs["input"], x)
    assert parsed.rows == rows
    assert parsed.id == "r1"
    assert parsed.timeout_us == 2500
    # No outputs named: tritonclient asks for every output in binary.
    assert parsed.outputs == (RequestedOutput("logits", True), RequestedOutput("extra", True))


def test_binary_inputs_are_zero_copy_views_of_the_body() -> None:
    body, header_length = client_body(np.ones((2, 1, 4, 4), np.float32), binary=True)
    parsed = parse_infer_request(body, header_length, SIG)
    assert not parsed.inputs["input"].flags.owndata


@pytest.mark.parametrize("binary", [True, False])
def test_responses_round_trip_through_tritonclient(binary: bool) -> None:
    logits = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    extra = np.arange(4, dtype=np.int64).reshape(2, 2)
    wanted = (RequestedOutput("logits", binary), RequestedOutput("extra", binary))
    body, header_length = encode_infer_response("m", "1", "id-7", {"logits": logits, "extra": extra}, wanted, ())
    assert (header_length is not None) == binary
    parsed = result(body, header_length)
    np.testing.assert_array_equal(parsed.as_numpy("logits"), logits)
    np.testing.assert_array_equal(parsed.as_numpy("extra"), extra)
    assert parsed.get_response()["model_name"] == "m"
    assert parsed.get_response()["id"] == "id-7"


@pytest.mark.parametrize("binary", [True, False])
def test_classification_extension_matches_tritons_format(binary: bool) -> None:
    logits = np.array([[0.5, 2.0, 1.0], [3.0, -1.0, 0.0]], dtype=np.float32)
    wanted = (RequestedOutput("logits", binary, classification=2),)
    body, header_length = encode_infer_response("m", "1", None, {"logits": logits}, wanted, CONFIG.labels)
    classes = result(body, header_length).as_numpy("logits")
    assert classes.shape == (2, 2)
    decoded = [[c.decode() if isinstance(c, bytes) else c for c in row] for row in classes.tolist()]
    assert decoded == [["2.000000:1:dog", "1.000000:2:eel"], ["3.000000:0:cat", "0.000000:2:eel"]]


def test_requested_outputs_and_per_output_binary_flags_are_honoured() -> None:
    outputs = [th.InferRequestedOutput("extra", binary_data=False), th.InferRequestedOutput("logits", class_count=1)]
    body, header_length = client_body(np.zeros((1, 1, 4, 4), np.float32), True, outputs)
    parsed = parse_infer_request(body, header_length, SIG)
    assert parsed.outputs == (RequestedOutput("extra", False), RequestedOutput("logits", True, 1))


def header_only(document: Any) -> bytes:
    return orjson.dumps(document)


def good_input(**changes: Any) -> dict[str, Any]:
    tensor = {"name": "input", "shape": [1, 1, 4, 4], "datatype": "FP32", "data": [0.0] * 16}
    tensor.update(changes)
    return tensor


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object, got list"),
        (header_only({"inputs": []}), None, r"'inputs' must be a non-empty list; model 'm' expects \['input'\]"),
        (header_only({"inputs": [good_input(name="x")]}), None, r"unknown input 'x' for model 'm'; it expects"),
        (header_only({"inputs": [good_input(datatype="FP64")]}), None, "has datatype FP64, model 'm' expects FP32"),
        (
            header_only({"inputs": [good_input(shape=[1, 4, 4])]}),
            None,
            r"has shape \[1, 4, 4\], expected \[N, 1, 4, 4\] with 1 <= N <= 8",
        ),
        (header_only({"inputs": [good_input(shape=[0, 1, 4, 4], data=[])]}), None, "expected"),
        (header_only({"inputs": [good_input(data=[0.0] * 15)]}), None, "has 15 values in 'data', but shape"),
        (header_only({"inputs": [good_input(data=["a"] * 16)]}), None, "is not a \\(nested\\) list of FP32"),
        (header_only({"inputs": [good_input(data=None) | {"data": None}]}), None, "not a \\(nested\\) list"),
        (header_only({"inputs": [{"name": "input", "shape": [1, 1, 4, 4], "datatype": "FP32"}]}), None, "neither"),
        (header_only({"inputs": [good_input(), good_input()]}), None, "appears twice"),
        (header_only({"inputs": [good_input()], "parameters": {"timeout": -5}}), None, "timeout must be a whole"),
        (header_only({"inputs": [good_input()], "outputs": [{"name": "nope"}]}), None, "unknown output 'nope'"),
        (header_only({"inputs": [good_input(data=["NaN"] * 16)]}), None, "numbers \\(it holds strings or nulls\\)"),
        (header_only({"inputs": [good_input(data=["1.5"] * 16)]}), None, "numbers \\(it holds strings"),
        (header_only({"inputs": [good_input(data=[None] * 16)]}), None, "numbers \\(it holds strings or nulls\\)"),
        (header_only({"inputs": [good_input(data=[[0.0] * 15, [0.0]])]}), None, "not a \\(nested\\) list"),
        (header_only({"inputs": [good_input()]}), 10**6, "Inference-Header-Content-Length is 1000000, but the body"),
    ],
)
def test_malformed_requests_say_what_was_wrong_and_what_was_expected(
    body: bytes, header_length: int | None, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_infer_request(body, header_length, SIG)


@pytest.mark.parametrize("data", [[7.5] + [0] * 15, [-1.0] + [0] * 15, [256.0] + [0] * 15, [float("nan")] + [0] * 15])
def test_an_integer_tensor_refuses_numbers_it_cannot_hold_exactly(data: list[float]) -> None:
    """A uint8-input model (``export build --input-dtype uint8``) must not see 7.5 as 7 or -1.0 as 255."""
    sig = Signature.from_config(replace(CONFIG, input=(TensorSpec("input", "TYPE_UINT8", (1, 4, 4)),)))
    tensor = {"name": "input", "shape": [1, 1, 4, 4], "datatype": "UINT8", "data": data}
    with pytest.raises(BadRequest, match=r"list of UINT8 numbers|not UINT8 values"):
        parse_infer_request(orjson.dumps({"inputs": [tensor]}), None, sig)
    tensor["data"] = [7.0, 255] + [0] * 14  # whole numbers in range are the values they name
    parsed = parse_infer_request(orjson.dumps({"inputs": [tensor]}), None, sig).inputs["input"]
    assert parsed.dtype == np.uint8
    assert parsed.reshape(-1)[:2].tolist() == [7, 255]


@pytest.mark.parametrize("timeout", [-5, 3_600_000_001, 2**63 - 1, 1.5, "100", True])
def test_a_timeout_outside_zero_to_one_hour_is_a_bad_timeout_naming_the_range(timeout: object) -> None:
    body = header_only({"inputs": [good_input()], "parameters": {"timeout": timeout}})
    with pytest.raises(
        BadRequest, match="parameters.timeout must be a whole number of microseconds from 0 to 3600000000"
    ) as err:
        parse_infer_request(body, None, SIG)
    assert err.value.code == "bad_timeout"


def test_a_timeout_of_one_hour_is_accepted() -> None:
    body = header_only({"inputs": [good_input()], "parameters": {"timeout": 3_600_000_000}})
    assert parse_infer_request(body, None, SIG).timeout_us == 3_600_000_000


def test_binary_size_must_match_the_shape() -> None:
    tensor = good_input(parameters={"binary_data_size": 60})
    del tensor["data"]
    header = header_only({"inputs": [tensor]})
    with pytest.raises(BadRequest, match="binary_data_size 60, but shape \\[1, 1, 4, 4\\] of FP32 needs 64 bytes"):
        parse_infer_request(header + bytes(60), len(header), SIG)


def test_binary_data_shorter_than_declared_is_refused() -> None:
    body, header_length = client_body(np.zeros((2, 1, 4, 4), np.float32), binary=True)
    with pytest.raises(BadRequest, match="needs bytes 0..128 of the binary data, which holds only 100"):
        parse_infer_request(body[: header_length + 100], header_length, SIG)


def test_trailing_binary_bytes_are_refused() -> None:
    body, header_length = client_body(np.zeros((1, 1, 4, 4), np.float32), binary=True)
    with pytest.raises(
        BadRequest, match="carries 68 bytes of binary data but the inputs' binary_data_size add up to 64"
    ):
        parse_infer_request(body + b"junk", header_length, SIG)
