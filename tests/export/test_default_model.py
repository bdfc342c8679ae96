"""The trained default model: training reaches the bar, and the committed artefact is what its config says."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export import digits
from export.train import to_tensors, train_digits
from service.repository import load_model_config

ACCURACY_BAR = 0.95


def test_train_digits_reaches_the_bar_and_records_it(tmp_path: Path) -> None:
    result = train_digits(tmp_path, epochs=30)
    training = result.report["training"]
    assert result.report["holdout_accuracy"] >= ACCURACY_BAR
    assert training["holdout_size"] == 360  # 20 % of 1,797, stratified
    assert training["train_size"] + training["holdout_size"] == 1797
    assert load_model_config(tmp_path / "lenet5_digits").labels == tuple("0123456789")


def test_committed_default_model_matches_its_config(committed_models: Path) -> None:
    model_dir = committed_models / "lenet5_digits"
    config = load_model_config(model_dir)
    onnx_path = model_dir / "1" / "model.onnx"
    assert hashlib.sha256(onnx_path.read_bytes()).hexdigest() == config.versions["1"].sha256
    assert config.preprocessing is not None
    # Re-measure the held-out accuracy with ONNX Runtime on the committed artefact.
    _, _, images, labels = digits.split()
    x = to_tensors(images, config.preprocessing).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x})
    accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    assert accuracy == pytest.approx(config.versions["1"].export_report["holdout_accuracy"], abs=1e-4)
    assert accuracy >= ACCURACY_BAR


def test_holdout_pngs_decode_to_the_training_pixels() -> None:
    import io

    from PIL import Image

    _, _, images, _ = digits.split()
    decoded = np.asarray(Image.open(io.BytesIO(digits.to_png(images[0]))))
    np.testing.assert_array_equal(decoded, images[0])
