"""GPU serving (CUDA provider, IOBinding with preallocated buffers); skipped unless CUDA really runs a session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from live_server import Reference, Server, start_server

pytestmark = pytest.mark.gpu


def cuda_runs(model: Path) -> bool:
    """onnxruntime-gpu lists CUDAExecutionProvider even without a GPU: only a created session tells the truth."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    finally:
        ort.set_default_logger_severity(3)
    return "CUDAExecutionProvider" in session.get_providers()


@pytest.fixture(scope="module")
def gpu_server(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not cuda_runs(model_repository / "lenet5_digits" / "1" / "model.onnx"):
        pytest.skip("no usable CUDA device for ONNX Runtime")
    running = start_server(model_repository, tmp_path_factory.mktemp("logs") / "gpu.log", require_gpu="true")
    yield running
    assert running.stop() == 0, running.log()[-3000:]


@pytest.mark.parametrize("rows", [1, 7, 32])
@pytest.mark.parametrize("model", ["lenet5_digits", "small_cnn"])
def test_gpu_results_equal_cpu_onnx_runtime(gpu_server: Server, reference: Reference, model: str, rows: int) -> None:
    th = pytest.importorskip("tritonclient.http")
    channels = 1 if model == "lenet5_digits" else 3
    x = np.random.default_rng(rows).standard_normal((rows, channels, 32, 32)).astype(np.float32)
    tensor = th.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    with th.InferenceServerClient(gpu_server.address) as client:
        result = client.infer(model, [tensor]).as_numpy("logits")
    np.testing.assert_allclose(result, reference(model, x), rtol=1e-3, atol=1e-3)  # cuDNN vs MLAS rounding
    assert (
        "on cuda (CUDAExecutionProvider)" in gpu_server.log()
        or "on cuda (TensorrtExecutionProvider)" in gpu_server.log()
    )
