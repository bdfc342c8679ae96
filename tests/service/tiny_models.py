"""Tiny real ONNX models (Conv → GlobalAveragePool → Flatten) and repositories around them.

For unit tests that need a real ONNX Runtime session without the export pipeline (onnx is a dev dependency).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper


def tiny_model_bytes(
    channels: int = 3,
    size: int = 8,
    classes: int = 4,
    batch: int | str = "batch",
    input_name: str = "input",
    output_name: str = "logits",
    seed: int = 0,
) -> bytes:
    """A Conv(3x3, pad 1) → GlobalAveragePool → Flatten classifier with fixed random weights, as ONNX bytes."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((classes, channels, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", [input_name, "w"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], [output_name]),
        ],
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, classes])],
        [helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tiny_config(name: str, model: bytes, **overrides: Any) -> dict[str, Any]:
    """A config.json document for ``tiny_model_bytes()`` defaults, with the model's real sha256."""
    config: dict[str, Any] = {
        "name": name,
        "max_batch_size": 8,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 8, 8]}],
        "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [4]}],
        "preprocessing": {"resize": 8, "crop": [8, 8], "color_mode": "RGB"},
        "labels": ["a", "b", "c", "d"],
        "versions": {"1": {"sha256": hashlib.sha256(model).hexdigest()}},
        "dynamic_batching": {"max_queue_delay_microseconds": 0},
    }
    config.update(overrides)
    return config


def write_model(repository: Path, name: str, model: bytes, config: dict[str, Any], version: str = "1") -> Path:
    """Write ``repository/name/config.json`` and ``repository/name/<version>/model.onnx``."""
    folder = repository / name
    (folder / version).mkdir(parents=True, exist_ok=True)
    (folder / version / "model.onnx").write_bytes(model)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def cuda_usable() -> bool:
    """True only when ONNX Runtime really runs a session on CUDA (onnxruntime-gpu lists it even without a GPU)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(tiny_model_bytes(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    finally:
        ort.set_default_logger_severity(3)
    return "CUDAExecutionProvider" in session.get_providers()
