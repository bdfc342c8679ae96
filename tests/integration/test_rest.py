"""REST classification over real HTTP: held-out accuracy, parity with ORT, multipart, :predict, model listing."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from live_server import Reference, Server
from PIL import Image

from service.preprocess import ImageTransform, preprocess, softmax
from service.repository import load_model_config

BATCH = 32  # images per multipart request when sweeping the held-out set


def classify(server: Server, model: str, files: list[tuple[str, bytes]], top_k: int = 1) -> list[dict]:
    multipart = [("images", (name, data, "image/png")) for name, data in files]
    response = httpx.post(f"{server.url}/v1/models/{model}/classify", params={"top_k": top_k}, files=multipart)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_held_out_digits_reach_the_accuracy_the_export_recorded(
    server: Server, digits_holdout: list[tuple[bytes, int]], model_repository: Path
) -> None:
    recorded = load_model_config(model_repository / "lenet5_digits").versions["1"].export_report["holdout_accuracy"]
    predicted: list[int] = []
    for start in range(0, len(digits_holdout), BATCH):
        chunk = digits_holdout[start : start + BATCH]
        results = classify(server, "lenet5_digits", [(f"{start + i}.png", png) for i, (png, _) in enumerate(chunk)])
        assert [r["filename"] for r in results] == [f"{start + i}.png" for i in range(len(chunk))]
        predicted += [int(r["predictions"][0]["label"]) for r in results]
    labels = [label for _, label in digits_holdout]
    accuracy = float(np.mean(np.array(predicted) == np.array(labels)))
    assert round(accuracy, 4) >= recorded, f"served accuracy {accuracy:.4f} below the export's {recorded}"


def test_raw_body_classification_equals_onnx_runtime_on_the_same_preprocessing(
    server: Server, digits_holdout: list[tuple[bytes, int]], model_repository: Path, reference: Reference
) -> None:
    config = load_model_config(model_repository / "lenet5_digits")
    assert config.preprocessing is not None
    pipe = ImageTransform.from_config(config.preprocessing)
    for png, _ in digits_holdout[:5]:
        response = httpx.post(
            f"{server.url}/v1/models/lenet5_digits/classify?top_k=10",
            content=png,
            headers={"Content-Type": "image/png"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model"], body["version"]) == ("lenet5_digits", "1")
        served = {p["index"]: p["score"] for p in body["results"][0]["predictions"]}
        expected = softmax(reference("lenet5_digits", preprocess(png, pipe, 10**6)[None]))[0]
        np.testing.assert_allclose([served[i] for i in range(10)], expected, atol=1e-6)
        assert [p["score"] for p in body["results"][0]["predictions"]] == sorted(served.values(), reverse=True)


def test_curl_style_body_without_an_image_content_type_is_accepted(
    server: Server, digits_holdout: list[tuple[bytes, int]]
) -> None:
    png, label = digits_holdout[0]
    response = httpx.post(  # what `curl --data-binary @digit.png` sends
        f"{server.url}/v1/models/lenet5_digits/classify",
        content=png,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["results"][0]["predictions"]) == 5  # default top_k


def test_rgb_model_classifies_a_jpeg_photo(server: Server, model_repository: Path, reference: Reference) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.chelsea()).save(buffer, format="JPEG")
    response = httpx.post(
        f"{server.url}/v1/models/small_cnn/versions/1/classify?top_k=3",
        content=buffer.getvalue(),
        headers={"Content-Type": "image/jpeg"},
    )
    assert response.status_code == 200, response.text
    config = load_model_config(model_repository / "small_cnn")
    assert config.preprocessing is not None
    x = preprocess(buffer.getvalue(), ImageTransform.from_config(config.preprocessing), 10**7)[None]
    best = int(np.argmax(reference("small_cnn", x)))
    top = response.json()["results"][0]["predictions"][0]
    assert (top["index"], top["label"]) == (best, config.labels[best])


def test_predict_takes_base64_instances_and_answers_as_classify(
    server: Server, digits_holdout: list[tuple[bytes, int]]
) -> None:
    pngs = [png for png, _ in digits_holdout[:3]]
    instances = [{"b64": base64.b64encode(pngs[0]).decode()}] + [
        {"image_bytes": {"b64": base64.b64encode(png).decode()}} for png in pngs[1:]
    ]
    response = httpx.post(f"{server.url}/v1/models/lenet5_digits:predict?top_k=10", json={"instances": instances})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == ("lenet5_digits", "1")
    via_classify = classify(server, "lenet5_digits", [(f"{i}.png", png) for i, png in enumerate(pngs)], top_k=10)
    assert body["predictions"] == [result["predictions"] for result in via_classify]
    np.testing.assert_allclose([sum(p["score"] for p in ps) for ps in body["predictions"]], 1.0, atol=1e-5)


def test_models_are_listed_with_input_spec_preprocessing_and_labels(server: Server) -> None:
    response = httpx.get(f"{server.url}/v1/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    assert set(models) == {"lenet5_digits", "small_cnn"}
    lenet = models["lenet5_digits"]
    assert lenet["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 32, 32]}]
    assert lenet["labels"] == [str(i) for i in range(10)]
    assert lenet["preprocessing"]["color_mode"] == "L"


def test_request_id_is_echoed_or_minted(server: Server) -> None:
    echoed = httpx.get(f"{server.url}/v1/models", headers={"X-Request-ID": "trace-42"})
    assert echoed.headers["x-request-id"] == "trace-42"
    minted = {httpx.get(f"{server.url}/v1/models").headers["x-request-id"] for _ in range(3)}
    assert len(minted) == 3  # a fresh id each time
    assert all(value.isascii() and value.isalnum() for value in minted)


def test_openapi_documents_every_route(server: Server) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/models/{model}/classify",
        "/v1/models/{model}:predict",
        "/v2/models/{model}/infer",
        "/v2/models/{model}/versions/{version}/infer",
        "/v2/repository/models/{model}/load",
        "/v2/health/ready",
        "/metrics",
    ):
        assert path in paths, f"{path} missing from OpenAPI"
    infer = paths["/v2/models/{model}/versions/{version}/infer"]["post"]
    assert {"400", "404", "429", "503", "504"} <= set(infer["responses"])
    assert [p["name"] for p in infer["parameters"] if p["in"] == "path"] == ["model", "version"]
    assert "version" not in json.dumps(paths["/v2/models/{model}/infer"]["post"].get("parameters", []))
