"""KServe v2 through the unmodified tritonclient: infer (binary, JSON, classification), config, stats, repository."""

from __future__ import annotations

import numpy as np
import pytest
from live_server import Reference, Server

th = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODELS = {"lenet5_digits": (1, 32, 32), "small_cnn": (3, 32, 32)}


@pytest.fixture(scope="module")
def client(server: Server) -> th.InferenceServerClient:
    with th.InferenceServerClient(server.address) as c:
        yield c


def tensor(x: np.ndarray, binary: bool) -> th.InferInput:
    t = th.InferInput("input", list(x.shape), "FP32")
    t.set_data_from_numpy(x, binary_data=binary)
    return t


def test_health_and_metadata(client: th.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("lenet5_digits")
    assert client.is_model_ready("small_cnn", "1")
    assert not client.is_model_ready("small_cnn", "7")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "cnnserve"
    assert "binary_tensor_data" in metadata["extensions"]
    model = client.get_model_metadata("small_cnn")
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert model["versions"] == ["1"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_infer_equals_onnx_runtime_run_directly(
    client: th.InferenceServerClient, reference: Reference, model: str, rows: int, binary: bool
) -> None:
    x = np.random.default_rng(rows).standard_normal((rows, *MODELS[model])).astype(np.float32)
    outputs = [th.InferRequestedOutput("logits", binary_data=binary)]
    result = client.infer(model, [tensor(x, binary)], outputs=outputs, request_id=f"r{rows}")
    np.testing.assert_allclose(result.as_numpy("logits"), reference(model, x), rtol=1e-5, atol=1e-5)
    assert result.get_response()["id"] == f"r{rows}"
    assert result.get_response()["model_version"] == "1"


def test_default_outputs_come_back_binary_and_compressed_requests_work(
    client: th.InferenceServerClient, reference: Reference
) -> None:
    x = np.random.default_rng(5).standard_normal((4, 1, 32, 32)).astype(np.float32)
    for algorithm in (None, "gzip", "deflate"):
        result = client.infer("lenet5_digits", [tensor(x, True)], request_compression_algorithm=algorithm)
        assert "binary_data_size" in result.get_output("logits")["parameters"]
        np.testing.assert_allclose(result.as_numpy("logits"), reference("lenet5_digits", x), rtol=1e-5, atol=1e-5)


def test_classification_extension_returns_the_top_k(client: th.InferenceServerClient, reference: Reference) -> None:
    x = np.random.default_rng(9).standard_normal((2, 3, 32, 32)).astype(np.float32)
    outputs = [th.InferRequestedOutput("logits", class_count=3)]
    classes = client.infer("small_cnn", [tensor(x, True)], outputs=outputs).as_numpy("logits")
    logits = reference("small_cnn", x)
    assert classes.shape == (2, 3)
    for row, expected in zip(classes, logits, strict=True):
        value, index, label = row[0].decode().split(":")
        assert int(index) == int(np.argmax(expected))
        assert label == f"class_{index}"
        assert float(value) == pytest.approx(float(expected.max()), abs=1e-5)


def test_model_config_parses_with_triton_fields(client: th.InferenceServerClient) -> None:
    config = client.get_model_config("lenet5_digits")
    assert config["max_batch_size"] == 64
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [1, 32, 32]}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    assert config["platform"] == "onnxruntime_onnx"


def test_statistics_count_requests_batches_and_rows(client: th.InferenceServerClient) -> None:
    before = client.get_inference_statistics("small_cnn")["model_stats"][0]
    x = np.zeros((5, 3, 32, 32), np.float32)
    client.infer("small_cnn", [tensor(x, True)])
    stats = client.get_inference_statistics("small_cnn", "1")["model_stats"][0]
    assert (stats["name"], stats["version"]) == ("small_cnn", "1")
    assert stats["inference_count"] - before["inference_count"] == 5
    assert stats["execution_count"] - before["execution_count"] == 1
    success = stats["inference_stats"]["success"]
    assert success["count"] - before["inference_stats"]["success"]["count"] == 1
    assert success["ns"] > before["inference_stats"]["success"]["ns"]
    assert set(stats["inference_stats"]) >= {"queue", "compute_input", "compute_infer", "compute_output", "cache_hit"}
    assert 5 in [b["batch_size"] for b in stats["batch_stats"]]
    every = client.get_inference_statistics()["model_stats"]
    assert sorted(s["name"] for s in every) == ["lenet5_digits", "small_cnn"]


def test_unload_and_load_leave_other_models_serving(client: th.InferenceServerClient, reference: Reference) -> None:
    x = np.ones((2, 3, 32, 32), np.float32)
    digits = np.ones((1, 1, 32, 32), np.float32)
    client.unload_model("lenet5_digits")
    try:
        assert not client.is_model_ready("lenet5_digits")
        index = {m["name"]: m for m in client.get_model_repository_index()}
        assert index["lenet5_digits"]["state"] == "UNAVAILABLE"
        assert index["small_cnn"]["state"] == "READY"
        with pytest.raises(InferenceServerException, match=r"not ready: UNAVAILABLE \(unloaded\)") as caught:
            client.infer("lenet5_digits", [tensor(digits, True)])
        assert caught.value.status() == "503"
        np.testing.assert_allclose(
            client.infer("small_cnn", [tensor(x, True)]).as_numpy("logits"), reference("small_cnn", x), atol=1e-5
        )
    finally:
        client.load_model("lenet5_digits")
    assert client.is_model_ready("lenet5_digits")
    result = client.infer("lenet5_digits", [tensor(digits, True)])
    np.testing.assert_allclose(result.as_numpy("logits"), reference("lenet5_digits", digits), atol=1e-5)


def test_loading_an_unknown_model_is_404(client: th.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="unknown model 'resnet9000'") as caught:
        client.load_model("resnet9000")
    assert caught.value.status() == "404"
