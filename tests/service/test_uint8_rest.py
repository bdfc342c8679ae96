"""Models whose input is not FP32 on the image routes: uint8 pixel inputs work everywhere, the rest are refused.

The uint8 model is the committed digits model re-exported with ``--input-dtype uint8`` (its ONNX initializers are
LeNet-5's state_dict), served beside the same weights exported as float32: every answer must agree.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tiny_models import tiny_config, tiny_model_bytes, write_model

from service.errors import ModelLoadError
from service.preprocess import ImageTransform, preprocess, softmax
from service.repository import ConfigError, Preprocessing, load_model_config, model_config_from_dict
from tests.app_client import serving

torch = pytest.importorskip("torch")
DIGITS = sorted((Path(__file__).parents[2] / "samples" / "digits").glob("digit-*.png"))


@pytest.fixture(scope="module")
def digits_repository(tmp_path_factory: pytest.TempPathFactory, committed_models: Path) -> Path:
    from export.pipeline import ExportSpec, build
    from export.zoo import get

    committed = committed_models / "lenet5_digits"
    network = get("lenet5").factory(num_classes=10)
    graph = onnx.load(str(committed / "1" / "model.onnx")).graph
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    network.load_state_dict({name: weights[name] for name in network.state_dict()})
    config = load_model_config(committed)
    repo = tmp_path_factory.mktemp("digits")
    for dtype in ("float32", "uint8"):
        spec = ExportSpec(dtype, (1, 32, 32), config.labels, preprocessing=config.preprocessing, input_dtype=dtype)
        build(network, spec, repo, architecture="lenet5")
    return repo


@pytest.fixture
async def client(digits_repository: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(digits_repository) as c:
        yield c


async def _classify(client: httpx.AsyncClient, model: str, top_k: int = 10, **request: Any) -> list[dict[str, Any]]:
    response = await client.post(f"/v1/models/{model}/classify", params={"top_k": top_k}, **request)
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def _same_answers(pixels: list[dict[str, Any]], floats: list[dict[str, Any]]) -> None:
    for got, expected in zip(pixels, floats, strict=True):
        assert got["predictions"][0]["label"] == expected["predictions"][0]["label"]
        scores = {p["index"]: p["score"] for p in expected["predictions"]}
        served = [(p["score"], scores[p["index"]]) for p in got["predictions"]]
        np.testing.assert_allclose(*zip(*served, strict=True), atol=1e-5)


async def test_classify_on_the_uint8_model_answers_as_the_float_model(client: httpx.AsyncClient) -> None:
    for digit, path in enumerate(DIGITS):  # one small PNG: decoded on the event loop (the inline path)
        raw = {"content": path.read_bytes(), "headers": {"Content-Type": "image/png"}}
        pixels, floats = await _classify(client, "uint8", **raw), await _classify(client, "float32", **raw)
        _same_answers(pixels, floats)
        assert pixels[0]["predictions"][0]["label"] == str(digit)
    files = [("images", (p.name, p.read_bytes(), "image/png")) for p in DIGITS]  # several: the preprocessing pool
    pixels, floats = await _classify(client, "uint8", files=files), await _classify(client, "float32", files=files)
    _same_answers(pixels, floats)
    assert [r["filename"] for r in pixels] == [p.name for p in DIGITS]


async def test_predict_and_v2_feed_the_uint8_model_too(client: httpx.AsyncClient, digits_repository: Path) -> None:
    png = DIGITS[7].read_bytes()
    body = {"instances": [{"b64": base64.b64encode(png).decode()}]}
    predicted = (await client.post("/v1/models/uint8:predict?top_k=10", json=body)).json()["predictions"][0]
    classified = (await _classify(client, "uint8", content=png))[0]["predictions"]
    assert predicted == classified
    pre = load_model_config(digits_repository / "uint8").preprocessing
    assert pre is not None
    pixels = preprocess(png, ImageTransform.from_config(pre), 10**6)
    assert pixels.dtype == np.uint8
    tensor = {"name": "input", "shape": [1, *pixels.shape], "datatype": "UINT8", "data": pixels.ravel().tolist()}
    response = await client.post("/v2/models/uint8/infer", json={"inputs": [tensor]})
    assert response.status_code == 200, response.text
    scores = softmax(np.array(response.json()["outputs"][0]["data"], np.float32).reshape(1, -1))[0]
    np.testing.assert_allclose([scores[p["index"]] for p in classified], [p["score"] for p in classified], atol=1e-6)


def _taking(elem_type: int) -> bytes:
    """tiny_model_bytes()'s classifier behind a Cast from ``elem_type`` to float: the same answers, another input."""
    model = onnx.load_from_string(tiny_model_bytes())
    for node in model.graph.node:
        node.input[:] = ["as_float" if name == "input" else name for name in node.input]
    model.graph.node.insert(0, helper.make_node("Cast", ["input"], ["as_float"], to=TensorProto.FLOAT))
    model.graph.input[0].type.tensor_type.elem_type = elem_type
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _tiny(repository: Path, name: str, model: bytes, data_type: str, **overrides: Any) -> None:
    tensor = {"name": "input", "data_type": data_type, "dims": [3, 8, 8]}
    write_model(repository, name, model, tiny_config(name, model, input=[tensor], **overrides))


async def test_a_float16_input_gets_the_normalised_image_cast(tmp_path: Path) -> None:
    _tiny(tmp_path, "fp32", tiny_model_bytes(), "TYPE_FP32")
    _tiny(tmp_path, "fp16", _taking(TensorProto.FLOAT16), "TYPE_FP16")
    image = BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 3), np.uint8)).save(image, format="PNG")
    async with serving(tmp_path) as client:
        (half,) = await _classify(client, "fp16", top_k=4, content=image.getvalue())
        (full,) = await _classify(client, "fp32", top_k=4, content=image.getvalue())
    assert [p["index"] for p in half["predictions"]] == [p["index"] for p in full["predictions"]]
    scores = [(h["score"], f["score"]) for h, f in zip(half["predictions"], full["predictions"], strict=True)]
    np.testing.assert_allclose(*zip(*scores, strict=True), atol=2e-3)  # float16 keeps about 3 decimal digits


async def test_an_input_images_cannot_feed_stops_startup_naming_the_fix(tmp_path: Path) -> None:
    """Refused when the config is read, not per request: its preprocessing section promises images it cannot take."""
    _tiny(tmp_path / "a", "ids", _taking(TensorProto.INT64), "TYPE_INT64")  # with tiny_config's preprocessing
    with pytest.raises(ModelLoadError, match="input 'input' is TYPE_INT64, which preprocessing.normalize") as caught:
        async with serving(tmp_path / "a"):
            pass
    assert "leave preprocessing out to serve the model over v2 tensors only" in str(caught.value)
    _tiny(tmp_path / "b", "ids", _taking(TensorProto.INT64), "TYPE_INT64", preprocessing=None)
    async with serving(tmp_path / "b") as client:
        assert (await client.get("/v2/models/ids/ready")).status_code == 200
        refused = await client.post("/v1/models/ids/classify", content=DIGITS[0].read_bytes())
    assert (refused.status_code, refused.json()["code"]) == (400, "no_preprocessing")


@pytest.mark.parametrize(
    ("data_type", "normalize", "outcome"),
    [
        ("TYPE_UINT8", None, "graph"),  # left out: it follows the input's type
        ("TYPE_FP32", None, "service"),
        ("TYPE_UINT8", "graph", "graph"),
        ("TYPE_FP16", "service", "service"),
        ("TYPE_UINT8", "service", "is TYPE_UINT8, which preprocessing.normalize 'service' cannot feed"),
        ("TYPE_FP32", "graph", "is TYPE_FP32, which preprocessing.normalize 'graph' cannot feed"),
        ("TYPE_INT64", None, "is TYPE_INT64, which preprocessing.normalize 'service' cannot feed"),
    ],
)
def test_the_parser_holds_the_input_type_to_who_normalises(data_type: str, normalize: str | None, outcome: str) -> None:
    pre = {"resize": 8, "crop": [8, 8]} | ({"normalize": normalize} if normalize else {})
    raw = tiny_config("m", b"", input=[{"name": "input", "data_type": data_type, "dims": [3, 8, 8]}], preprocessing=pre)
    if outcome in ("graph", "service"):
        parsed = model_config_from_dict(raw).preprocessing
        assert parsed is not None
        assert parsed.normalize == outcome
    else:
        with pytest.raises(ConfigError, match=outcome):
            model_config_from_dict(raw)


def test_a_graph_that_normalises_gets_the_pixels_inverted_as_configured() -> None:
    grey = np.random.default_rng(2).integers(0, 256, (8, 8), np.uint8)
    image = BytesIO()
    Image.fromarray(grey, "L").save(image, format="PNG")
    pre = Preprocessing(resize=8, crop=(8, 8), color_mode="L", mean=(0.4,), std=(0.2,), invert=True)
    pixels = preprocess(image.getvalue(), ImageTransform.from_config(replace(pre, normalize="graph")), 10**4)
    np.testing.assert_array_equal(pixels, 255 - grey[None])
    normalised = preprocess(image.getvalue(), ImageTransform.from_config(pre), 10**4)
    np.testing.assert_allclose(normalised, (pixels / 255 - 0.4) / 0.2, atol=1e-5)
