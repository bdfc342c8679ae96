"""Every bad input gets its own 4xx with a message saying what was wrong and what was expected; never a 500."""

from __future__ import annotations

import gzip
import io
import zlib

import httpx
import numpy as np
import orjson
import pytest
from live_server import MAX_BODY_BYTES, MAX_IMAGE_PIXELS, Server, metric_sum
from PIL import Image


def png(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), 200, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_bomb(side: int) -> bytes:
    """A PNG whose header declares side x side pixels but whose data is a few bytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def v2_body(shape: list[int], datatype: str = "FP32", data: object = None, **extra: object) -> bytes:
    count = int(np.prod(shape))
    tensor = {"name": "input", "shape": shape, "datatype": datatype, "data": [0.0] * count if data is None else data}
    return orjson.dumps({"inputs": [tensor], **extra})


CLASSIFY = "/v1/models/lenet5_digits/classify"
INFER = "/v2/models/lenet5_digits/infer"

CASES = [
    # (id, method, path, body, headers, status, code, message fragment)
    ("corrupt image", "POST", CLASSIFY, b"\x89PNG\r\n\x1a\n" + b"x" * 50, {"Content-Type": "image/png"},
     400, "invalid_image", "corrupt or truncated"),
    ("truncated image", "POST", CLASSIFY, png()[:60], {"Content-Type": "image/png"},
     400, "invalid_image", "send the complete file"),
    ("not an image", "POST", CLASSIFY, b"hello", {"Content-Type": "image/png"},
     400, "invalid_image", "cannot identify an image in 5 bytes; send JPEG, PNG"),
    ("empty body", "POST", CLASSIFY, b"", {"Content-Type": "image/png"},
     400, "invalid_image", "cannot identify an image in 0 bytes"),
    ("wrong media type", "POST", CLASSIFY, b"hello", {"Content-Type": "text/plain"},
     415, "unsupported_media_type", "Content-Type 'text/plain' is not accepted; send one image"),
    ("json to classify", "POST", CLASSIFY, b"{}", {"Content-Type": "application/json"},
     415, "unsupported_media_type", "use POST /v1/models/{model}:predict"),
    ("decompression bomb", "POST", CLASSIFY, png_bomb(3000), {"Content-Type": "image/png"},
     413, "image_too_large", f"3000x3000 = 9000000 pixels, the limit is {MAX_IMAGE_PIXELS}"),
    ("oversize body", "POST", CLASSIFY, b"\0" * (MAX_BODY_BYTES + 1), {"Content-Type": "image/png"},
     413, "body_too_large", f"body is {MAX_BODY_BYTES + 1} bytes, the limit is {MAX_BODY_BYTES}"),
    ("gzip bomb", "POST", INFER, gzip.compress(b" " * (MAX_BODY_BYTES + 10)), {"Content-Encoding": "gzip"},
     413, "body_too_large", f"the limit is {MAX_BODY_BYTES} bytes"),
    ("unknown encoding", "POST", INFER, b"{}", {"Content-Encoding": "br"},
     415, "unsupported_encoding", "Content-Encoding 'br' is not supported; send gzip, deflate or identity"),
    ("broken gzip", "POST", INFER, b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\xff" * 20,
     {"Content-Encoding": "gzip"},
     400, "bad_encoding", "not valid gzip data"),
    ("bad top_k", "POST", CLASSIFY + "?top_k=11", png(), {"Content-Type": "image/png"},
     400, "bad_top_k", "top_k is '11', expected a whole number 1..10 (the model's classes)"),
    ("top_k not a number", "POST", CLASSIFY + "?top_k=many", png(), {"Content-Type": "image/png"},
     400, "bad_top_k", "top_k is 'many', expected a whole number 1..10"),
    ("bad timeout header", "POST", CLASSIFY, png(), {"Content-Type": "image/png", "X-Request-Timeout-Ms": "soon"},
     400, "bad_timeout", "X-Request-Timeout-Ms is 'soon', expected a number of milliseconds"),
    ("malformed multipart", "POST", CLASSIFY, b"--x\r\nnonsense", {"Content-Type": "multipart/form-data"},
     400, "bad_multipart", "malformed multipart/form-data body: Missing boundary"),
    ("truncated gzip", "POST", INFER, gzip.compress(v2_body([1, 1, 32, 32]))[:-30], {"Content-Encoding": "gzip"},
     400, "bad_encoding", "gzip body is truncated"),
    ("no image in multipart", "POST", CLASSIFY,
     b'--x\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--x--\r\n',
     {"Content-Type": "multipart/form-data; boundary=x"}, 400, "bad_request", "no image in the request"),
    ("malformed v2 JSON", "POST", INFER, b"{oops", {},
     400, "bad_request", "inference request header is not valid JSON"),
    ("wrong shape", "POST", INFER, v2_body([1, 1, 28, 28]), {},
     400, "bad_request", "has shape [1, 1, 28, 28], expected [N, 1, 32, 32] with 1 <= N <= 64"),
    ("wrong datatype", "POST", INFER, v2_body([1, 1, 32, 32], "INT32"), {},
     400, "bad_request", "has datatype INT32, model 'lenet5_digits' expects FP32"),
    ("wrong value count", "POST", INFER, v2_body([1, 1, 32, 32], data=[0.0] * 10), {},
     400, "bad_request", "has 10 values in 'data', but shape [1, 1, 32, 32] needs 1024"),
    ("batch above max", "POST", INFER, v2_body([65, 1, 32, 32]), {},
     400, "batch_too_large", "request carries 65 rows but model 'lenet5_digits' batches at most 64; split it"),
    ("bad header length", "POST", INFER, v2_body([1, 1, 32, 32]), {"Inference-Header-Content-Length": "99999999"},
     400, "bad_request", "Inference-Header-Content-Length is 99999999, but the body has"),
    ("non-numeric header length", "POST", INFER, v2_body([1, 1, 32, 32]), {"Inference-Header-Content-Length": "x"},
     400, "bad_request", "Inference-Header-Content-Length is 'x', expected the JSON header's length"),
    ("unknown model", "POST", "/v2/models/nope/infer", v2_body([1, 1, 32, 32]), {},
     404, "model_not_found", "unknown model 'nope'; the repository holds ['lenet5_digits', 'small_cnn']"),
    ("unknown version", "POST", "/v2/models/lenet5_digits/versions/9/infer", v2_body([1, 1, 32, 32]), {},
     404, "version_not_found", "model 'lenet5_digits' has no version '9' being served; served: ['1']"),
    ("unknown version rest", "POST", "/v1/models/lenet5_digits/versions/9/classify", png(),
     {"Content-Type": "image/png"}, 404, "version_not_found", "no version '9'"),
    ("unknown route", "GET", "/v3/things", b"", {}, 404, "not_found", "no route GET /v3/things"),
    ("wrong method", "GET", INFER, b"", {}, 405, "method_not_allowed", "Method Not Allowed"),
    ("predict without instances", "POST", "/v1/models/lenet5_digits:predict", b'{"inputs": []}', {},
     400, "bad_request", 'expected {"instances": [{"b64": "<base64 image>"}'),
    ("predict bad base64", "POST", "/v1/models/lenet5_digits:predict", b'{"instances": [{"b64": "@@@"}]}', {},
     400, "bad_request", "instances[0].b64 is not valid base64"),
    ("load with files", "POST", "/v2/repository/models/lenet5_digits/load",
     b'{"parameters": {"file:1/model.onnx": "AAAA"}}', {}, 400, "bad_request", "not supported"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code", "message"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_error_paths_answer_their_status_code_and_message(
    server: Server, method: str, path: str, body: bytes, headers: dict[str, str], status: int, code: str, message: str
) -> None:
    response = httpx.request(method, server.url + path, content=body, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error["code"] == code
    assert message in error["error"]


def test_too_many_images_names_both_numbers(server: Server) -> None:
    files = [("images", (f"{i}.png", png(), "image/png")) for i in range(65)]
    response = httpx.post(server.url + CLASSIFY, files=files)
    assert response.status_code == 400
    assert response.json()["error"] == (
        "request carries 65 images but model 'lenet5_digits' batches at most 64; split it into smaller requests"
    )


def test_second_of_several_images_is_named_when_it_is_corrupt(server: Server) -> None:
    files = [("images", ("good.png", png(), "image/png")), ("images", ("bad.png", b"junk", "image/png"))]
    response = httpx.post(server.url + CLASSIFY, files=files)
    assert response.status_code == 400
    assert response.json()["error"].startswith("image 2 of 2 ('bad.png'): cannot identify an image")


def test_errors_never_disturb_the_server_or_other_requests(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _, method, path, body, headers, *_ in CASES:
            client.request(method, path, content=body, headers=headers)
        response = client.post(CLASSIFY, content=png(), headers={"Content-Type": "image/png"})
        assert response.status_code == 200
        metrics = client.get("/metrics").text
    assert metric_sum(metrics, "cnnserve_requests_total", outcome="server_error") == 0
    assert "Traceback" not in server.log()
