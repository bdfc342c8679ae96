"""An fp16 graph (``export build --precision fp16``) is served on GPU providers only: the contract and the refusal.

The repository holds LeNet-5 exported twice by the real pipeline, in fp32 (``net32``) and in fp16 (``net16``); the
real model loader refuses ``net16`` on this CPU-only machine, naming the model, the graph precision and the remedy,
while ``net32`` keeps serving beside it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client import CollectorRegistry

from service import model_loader
from service.errors import ModelLoadError, ServiceUnavailable
from service.metrics import Metrics
from service.model_manager import ModelManager
from service.precision import TOLERANCES, running_precision, tolerance
from service.repository import ConfigError, model_config_from_dict
from service.settings import Settings

REFUSAL = (
    r"model 'net16' version 1: the graph is stored in fp16 \(config.json versions.1.graph_precision\) for GPU "
    r"providers, but it would run on the CPU provider; serve it with a GPU provider \(CNNSERVE_PROVIDERS=cuda"
)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``net32`` and ``net16``: untrained LeNet-5, exported by the real pipeline in fp32 and in fp16."""
    pytest.importorskip("torch")
    from export.pipeline import ExportSpec, build
    from export.zoo import get

    out = tmp_path_factory.mktemp("fp16_repository")
    entry = get("lenet5")
    for name, precision in (("net32", "fp32"), ("net16", "fp16")):
        spec = ExportSpec(name, entry.input_size, tuple("0123456789"), max_batch_size=4, precision=precision)
        build(entry.factory(num_classes=10, width_mult=1.0), spec, out, architecture="lenet5")
    return out


def manager(repository: Path, **settings: Any) -> ModelManager:
    return ModelManager(
        Settings(repository_path=repository, models=["net32"], **settings), Metrics(CollectorRegistry())
    )


def gpu_runs(repository: Path) -> bool:
    """Whether CUDA really runs a session here (onnxruntime-gpu lists it even without a GPU)."""
    chain = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    session = ort.InferenceSession(str(repository / "net32" / "1" / "model.onnx"), providers=chain)
    return session.get_providers()[0] != "CPUExecutionProvider"


@pytest.mark.parametrize("providers", [[], ["cpu"]], ids=["auto", "cpu"])
async def test_an_fp16_graph_is_refused_on_cpu_while_the_fp32_model_serves(
    repository: Path, providers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not providers and gpu_runs(repository):
        pytest.skip("a GPU runs the fp16 graph here: tests/gpu/test_fp16_gpu.py checks it")
    sessions_made: list[str] = []
    real_create = model_loader.create_session

    def counting_create(*args: Any, **kwargs: Any) -> Any:
        sessions_made.append(args[0].parent.parent.name)
        return real_create(*args, **kwargs)

    monkeypatch.setattr(model_loader, "create_session", counting_create)
    models = manager(repository, providers=providers)
    await models.load_startup()
    with pytest.raises(ModelLoadError, match=REFUSAL):
        await models.load("net16")
    # auto with CUDA listed: a session is tried and found on the CPU; otherwise refused before any session.
    cuda_listed = "CUDAExecutionProvider" in ort.get_available_providers()
    assert sessions_made.count("net16") == (1 if cuda_listed and not providers else 0)
    states = {row["name"]: row for row in models.index()}
    assert states["net16"]["state"] == "UNAVAILABLE"
    assert "versions.1.graph_precision" in states["net16"]["reason"]
    with pytest.raises(ServiceUnavailable, match="not ready: UNAVAILABLE"):
        models.get("net16")
    assert states["net32"]["state"] == "READY"
    x = np.zeros((2, 1, 32, 32), np.float32)
    assert (await models.get("net32").batcher.infer({"input": x}, 2))["logits"].shape == (2, 10)
    await models.close()


def test_the_export_marks_the_graph_and_keeps_the_fp32_interface(repository: Path) -> None:
    document = json.loads((repository / "net16" / "config.json").read_text())
    assert document["precision"] == "fp16"
    assert document["versions"]["1"]["graph_precision"] == "fp16"
    assert document["input"][0]["data_type"] == document["output"][0]["data_type"] == "TYPE_FP32"
    assert json.loads((repository / "net32" / "config.json").read_text())["versions"]["1"]["graph_precision"] == "fp32"


def test_the_parser_refuses_a_bad_graph_precision_and_an_fp16_graph_without_fp16(repository: Path) -> None:
    document = json.loads((repository / "net16" / "config.json").read_text())
    assert model_config_from_dict(document).versions["1"].graph_precision == "fp16"
    bad = copy.deepcopy(document)
    bad["versions"]["1"]["graph_precision"] = "fp8"
    with pytest.raises(ConfigError, match=r"model 'net16'\): versions.1.graph_precision is \"fp8\" \(string\), expe"):
        model_config_from_dict(bad)
    mismatched = {**document, "precision": "tf32"}
    with pytest.raises(
        ConfigError, match=r"precision is 'tf32' but versions \['1'\] hold fp16 graphs .* set precision to 'fp16'"
    ):
        model_config_from_dict(mismatched)
    legacy = copy.deepcopy(document)
    del legacy["versions"]["1"]["graph_precision"]  # configs written before the field hold fp32 graphs
    assert model_config_from_dict(legacy).versions["1"].graph_precision == "fp32"


def test_an_fp16_graph_runs_in_fp16_on_either_gpu_provider() -> None:
    assert running_precision("cuda", "fp16", graph="fp16") == "fp16"  # an fp32 graph asking fp16 gets tf32 there
    assert running_precision("tensorrt", "fp16", graph="fp16") == "fp16"
    assert running_precision("cpu", "fp16", graph="fp16") == "fp32"
    assert tolerance("cuda", "fp16", graph="fp16") == TOLERANCES[("tensorrt", "fp16")] == 5e-2
