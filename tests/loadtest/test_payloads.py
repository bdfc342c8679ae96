"""Request bodies: v2 binary/JSON bodies decode back to the tensors' shapes and types; REST images are real images."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loadtest.http import Endpoint
from loadtest.payloads import MAX_WORKLOAD_BYTES, generate_images, load_images, rest_workload, v2_body, v2_workload

METADATA = {
    "name": "m",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 32, 32]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
}
ENDPOINT = Endpoint("127.0.0.1", 8000, token="secret")


def _split(request: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers["_line"] = lines[0]
    return headers, body


def test_binary_body_carries_the_tensor_after_the_json_header() -> None:
    body, header_length = v2_body(METADATA, 3, True, np.random.default_rng(0))
    assert header_length is not None
    header = json.loads(body[:header_length])
    (entry,) = header["inputs"]
    assert entry["shape"] == [3, 1, 32, 32]
    assert entry["parameters"]["binary_data_size"] == 3 * 32 * 32 * 4 == len(body) - header_length
    assert header["outputs"] == [{"name": "logits", "parameters": {"binary_data": True}}]
    tensor = np.frombuffer(body[header_length:], np.float32)
    assert np.isfinite(tensor).all()
    assert tensor.std() > 0.5  # random data, not zeros


def test_json_body_lists_the_values() -> None:
    body, header_length = v2_body(METADATA, 2, False, np.random.default_rng(0))
    assert header_length is None
    (entry,) = json.loads(body)["inputs"]
    assert len(entry["data"]) == 2 * 32 * 32


def test_v2_workload_requests_are_complete_http_messages() -> None:
    workload = v2_workload(ENDPOINT, "m", METADATA, batch=2)
    assert workload.images_per_request == 2
    assert 1 < len(workload.requests) <= 8
    headers, body = _split(workload.requests[0])
    assert headers["_line"] == "POST /v2/models/m/infer HTTP/1.1"
    assert headers["Authorization"] == "Bearer secret"
    assert int(headers["Content-Length"]) == len(body) == workload.body_bytes
    assert int(headers["Inference-Header-Content-Length"]) < len(body)
    assert workload.requests[0] != workload.requests[1]  # distinct tensors


def test_large_tensors_are_capped_in_total_bytes() -> None:
    big = {**METADATA, "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]}
    workload = v2_workload(ENDPOINT, "m", big, batch=32)
    assert sum(len(r) for r in workload.requests) <= MAX_WORKLOAD_BYTES + 8192
    assert len(workload.requests) >= 1


def test_unsupported_inputs_are_refused_with_the_reason() -> None:
    rng = np.random.default_rng()
    with pytest.raises(ValueError, match="variable dims"):
        v2_body({**METADATA, "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]}, 1, True, rng)
    with pytest.raises(ValueError, match="BYTES is not supported"):
        v2_body({**METADATA, "inputs": [{"name": "x", "datatype": "BYTES", "shape": [-1, 1]}]}, 1, True, rng)
    with pytest.raises(ValueError, match="batch is 0"):
        v2_workload(ENDPOINT, "m", METADATA, batch=0)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_generated_images_decode_at_the_requested_size(fmt: str) -> None:
    images = generate_images(64, 48, fmt, count=3, seed=1)
    assert len({data for _, data in images}) == 3
    for kind, data in images:
        assert kind == f"image/{fmt}"
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == (64, 48)
            assert image.format == fmt.upper()


def test_rest_workload_from_a_folder(tmp_path: Path) -> None:
    for i, (_, data) in enumerate(generate_images(32, 32, "png", count=2)):
        (tmp_path / f"img{i}.PNG").write_bytes(data)
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_images(tmp_path)
    assert [kind for kind, _ in images] == ["image/png", "image/png"]
    workload = rest_workload(ENDPOINT, "m", images, top_k=3)
    headers, body = _split(workload.requests[1])
    assert headers["_line"] == "POST /v1/models/m/classify?top_k=3 HTTP/1.1"
    assert headers["Content-Type"] == "image/png"
    assert body == images[1][1]


def test_empty_image_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no image files"):
        load_images(tmp_path)


def test_endpoint_urls() -> None:
    assert Endpoint.from_url("http://10.0.0.1:9000").port == 9000
    assert Endpoint.from_url("https://example.org").port == 443
    assert Endpoint.from_url("127.0.0.1:8000").url == "http://127.0.0.1:8000"
    with pytest.raises(ValueError, match="has a path"):
        Endpoint.from_url("http://h:1/v2")
    with pytest.raises(ValueError, match="not http"):
        Endpoint.from_url("ftp://h:1")
