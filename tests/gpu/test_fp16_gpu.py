"""An fp16 graph (``export build --precision fp16``) served on a GPU provider matches the fp32 export of the same
weights within the fp16 tolerance (``service/precision.py``): the proof a CPU-only machine cannot give, since ONNX
Runtime's CPU provider computes fp16 graphs in fp32. Skipped unless CUDA or TensorRT really runs a session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.model_loader import ModelLoader
from service.precision import tolerance
from service.settings import Settings

pytestmark = pytest.mark.gpu
REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE_MODEL = REPO_ROOT / "models" / "lenet5_digits" / "1" / "model.onnx"
PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def runs_on(provider: str) -> bool:
    """onnxruntime-gpu lists GPU providers even without a GPU: only a created session tells the truth."""
    if PROVIDERS[provider] not in ort.get_available_providers():
        return False
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(str(PROBE_MODEL), providers=[PROVIDERS[provider], "CPUExecutionProvider"])
    finally:
        ort.set_default_logger_severity(3)
    return session.get_providers()[0] == PROVIDERS[provider]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``net32`` and ``net16``: one untrained tiny_cnn exported in fp32 and in fp16 (the same weights)."""
    if not any(runs_on(p) for p in PROVIDERS):
        pytest.skip("no GPU provider of ONNX Runtime runs a session here")
    pytest.importorskip("torch")
    from export.pipeline import ExportSpec, build
    from export.zoo import get

    out = tmp_path_factory.mktemp("fp16_gpu")
    entry = get("tiny_cnn")
    model = entry.factory(num_classes=10, width_mult=1.0)
    labels = tuple(f"class_{i}" for i in range(10))
    for name, precision in (("net32", "fp32"), ("net16", "fp16")):
        spec = ExportSpec(name, entry.input_size, labels, max_batch_size=8, precision=precision)
        build(model, spec, out, architecture="tiny_cnn")
    return out


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_the_fp16_graph_on_a_gpu_matches_the_fp32_export(repository: Path, provider: str, tmp_path: Path) -> None:
    if not runs_on(provider):
        pytest.skip(f"{PROVIDERS[provider]} does not run a session here")
    settings = Settings(
        repository_path=repository, providers=[provider], require_gpu=True, tensorrt_cache_path=tmp_path / "trt"
    )
    [loaded] = ModelLoader(settings).load("net16", None, 0)
    assert loaded.runner.device == "cuda"
    assert loaded.runner.sessions[0].get_providers()[0] == PROVIDERS[provider]

    x = np.random.default_rng(3).standard_normal((8, 3, 32, 32)).astype(np.float32)
    fp32 = ort.InferenceSession(str(repository / "net32" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = fp32.run(None, {"input": x})[0]
    actual = loaded.runner(0, {"input": x})["logits"]
    relative = float(np.max(np.abs(actual - expected))) / max(1.0, float(np.max(np.abs(expected))))
    assert relative <= tolerance(provider, "fp16", graph="fp16") == 5e-2
