"""``build --input-dtype uint8``: the graph takes 0-255 pixels and folds /255 and mean/std, and parity proves the fold.

One LeNet-5 (seeded) is exported twice, float32 through the API and uint8 through the CLI, so the two graphs hold
the same weights and may be compared on the same pixels.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export.__main__ import main
from export.errors import ExportError
from export.pipeline import ExportSpec, build, default_preprocessing
from export.uint8_input import GraphInput, pixel_feed
from export.validate import check_parity
from export.zoo import get
from service.preprocess import ImageTransform
from service.repository import load_model_config

INPUT_SIZE = (1, 32, 32)
LABELS = tuple(str(i) for i in range(10))


def _lenet() -> torch.nn.Module:
    torch.manual_seed(0)  # the CLI builds its module after the same seed: the same weights
    return get("lenet5").factory(num_classes=10)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("uint8")
    build(_lenet(), ExportSpec("float", INPUT_SIZE, LABELS), repo, architecture="lenet5")
    torch.manual_seed(0)
    assert main(["build", "lenet5", "--out", str(repo), "--name", "pixels", "--input-dtype", "uint8"]) == 0
    return repo


def _session(repo: Path, name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def test_uint8_build_declares_a_pixel_input_and_records_what_it_folds(repository: Path) -> None:
    pixels, float_ = load_model_config(repository / "pixels"), load_model_config(repository / "float")
    assert pixels.input[0].data_type == "TYPE_UINT8"
    assert float_.input[0].data_type == "TYPE_FP32"
    assert pixels.preprocessing is not None
    assert float_.preprocessing is not None
    assert (pixels.preprocessing.normalize, float_.preprocessing.normalize) == ("graph", "service")
    # The fold's record: the same statistics the float model expects its caller to apply.
    assert replace(pixels.preprocessing, normalize="service") == float_.preprocessing
    report = json.loads((repository / "pixels" / "config.json").read_text())["versions"]["1"]["export_report"]
    assert report["input_dtype"] == "uint8"
    assert report["parity"]["max_abs_error"] <= report["parity"]["tolerance"]
    assert _session(repository, "pixels").get_inputs()[0].type == "tensor(uint8)"


def test_uint8_graph_answers_as_the_float_graph_on_the_service_normalised_pixels(repository: Path) -> None:
    config = load_model_config(repository / "float")
    assert config.preprocessing is not None
    transform = ImageTransform.from_config(config.preprocessing)
    pixels = np.random.default_rng(3).integers(0, 256, (6, *INPUT_SIZE), dtype=np.uint8)
    normalised = pixels.astype(np.float32) * transform.scale + transform.bias  # what the service feeds FP32 models
    from_pixels = _session(repository, "pixels").run(None, {"input": pixels})[0]
    from_floats = _session(repository, "float").run(None, {"input": normalised})[0]
    np.testing.assert_allclose(from_pixels, from_floats, atol=1e-5)
    assert np.ptp(from_floats) > 1e-3  # the inputs differ enough for a wrong fold to show


def test_parity_refuses_a_graph_whose_fold_differs_from_the_config(repository: Path) -> None:
    config = load_model_config(repository / "pixels")
    assert config.preprocessing is not None
    session, network = _session(repository, "pixels"), _lenet()
    check_parity(network, session, INPUT_SIZE, (10,), feed=pixel_feed(config.preprocessing))  # the fold it has
    other = replace(config.preprocessing, mean=(0.45,))  # a graph folding mean 0.5 where the config says 0.45
    with pytest.raises(ExportError, match="ONNX Runtime and PyTorch differ") as caught:
        check_parity(network, session, INPUT_SIZE, (10,), feed=pixel_feed(other))
    assert caught.value.check == "parity"


def test_an_unknown_input_dtype_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "lenet5", "--out", str(tmp_path), "--input-dtype", "int8"]) == 2
    assert "invalid choice: 'int8'" in capsys.readouterr().err
    with pytest.raises(ExportError, match="input dtype 'float16' is not one of float32, uint8"):
        GraphInput.of("float16", default_preprocessing(INPUT_SIZE))
