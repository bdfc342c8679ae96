"""ONNX Runtime layer on tiny real models: config-vs-graph validation, digests, threads, IOBinding, warm-up."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from tiny_models import cuda_usable, tiny_config, tiny_model_bytes

from service.providers import CPU, CUDA, ProviderSettings, choose_providers
from service.repository import ConfigError, model_config_from_dict
from service.runtime import ModelRunner, available_cpus, create_session, session_options, threads_per_session
from service.validation import validate_graph, verify_digest


def session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, session_options(1, False), providers=[CPU])


def config(**overrides: Any) -> Any:
    return model_config_from_dict(tiny_config("tiny", tiny_model_bytes(), **overrides))


def test_a_matching_config_validates() -> None:
    validate_graph(config(), session(tiny_model_bytes()))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"input": [{"name": "image", "data_type": "TYPE_FP32", "dims": [3, 8, 8]}], "preprocessing": None},
            r"input names are \['image'\] but the ONNX graph's inputs are \['input'\]",
        ),
        (
            {"input": [{"name": "input", "data_type": "TYPE_FP16", "dims": [3, 8, 8]}]},
            r"input\[0\] 'input': data_type is TYPE_FP16 but the ONNX graph has tensor\(float\) \(FP32\)",
        ),
        (
            {"input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 9, 8]}], "preprocessing": None},
            r"input\[0\] 'input': dims\[1\] is 9 but the ONNX graph has 8",
        ),
        (
            {"input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 64]}], "preprocessing": None},
            r"input\[0\] 'input': dims \[3, 64\] plus the batch axis is rank 3, but the ONNX graph's tensor is rank 4",
        ),
        (
            {"output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [5]}], "labels": []},
            r"output\[0\] 'logits': dims\[0\] is 5 but the ONNX graph has 4",
        ),
    ],
)
def test_config_disagreeing_with_the_graph_is_refused_naming_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        validate_graph(config(**overrides), session(tiny_model_bytes()))
    assert "model 'tiny' config.json" in str(caught.value)


def test_a_fixed_batch_axis_smaller_than_max_batch_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="fixes the batch axis to 1 but max_batch_size is 8"):
        validate_graph(config(), session(tiny_model_bytes(batch=1)))


def test_digest_mismatch_names_the_versions_field(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(tiny_model_bytes())
    good = config()
    verify_digest(good, "1", model)
    model.write_bytes(tiny_model_bytes(seed=1))
    with pytest.raises(ConfigError, match=r"versions\.1\.sha256 is [0-9a-f]{64} but .* hashes to"):
        verify_digest(good, "1", model)
    with pytest.raises(ConfigError, match=r"versions has no entry for version folder '2'"):
        verify_digest(good, "2", model)
    assert hashlib.sha256(model.read_bytes()).hexdigest() != good.versions["1"].sha256


def test_threads_are_divided_among_all_sessions_and_workers() -> None:
    cpus = available_cpus()
    assert threads_per_session(1) == cpus
    assert threads_per_session(cpus * 4) == 1  # never below one
    assert threads_per_session(2, workers=2) == max(1, cpus // 4)
    assert threads_per_session(3, configured=5) == 5


def test_iobinding_path_equals_session_run() -> None:
    """The GPU path (fixed buffers bound per batch bucket, batches padded) run on CPU buffers, against session.run."""
    cfg = config()
    model = tiny_model_bytes()
    plain = ModelRunner([session(model)], cfg, "cpu")
    bound = ModelRunner([session(model)], cfg, "cpu", iobinding=True)
    assert not plain.iobinding
    assert bound.iobinding
    rng = np.random.default_rng(0)
    for rows in (1, 3, 8, 3, 5):  # 3 after 8: padded to bucket 4 over stale rows, whose outputs never leak
        x = rng.standard_normal((rows, 3, 8, 8)).astype(np.float32)
        expected = session(model).run(None, {"input": x})[0]
        np.testing.assert_allclose(plain(0, {"input": x})["logits"], expected, rtol=1e-6)
        np.testing.assert_allclose(bound(0, {"input": x})["logits"], expected, rtol=1e-6)


def test_warm_up_runs_every_batch_bucket_on_every_instance() -> None:
    model = tiny_model_bytes()
    runner = ModelRunner([session(model), session(model)], config(max_batch_size=5), "cpu", iobinding=True)
    assert runner.buckets == (1, 2, 4, 5)
    assert runner.warm_up(config(max_batch_size=5)) == 8


def test_provider_choice_follows_settings_then_config_then_auto() -> None:
    available = ort.get_available_providers()
    auto = choose_providers(config(), ProviderSettings())
    assert auto[-1] == CPU
    assert (CUDA in auto) == (CUDA in available)
    assert choose_providers(config(execution_providers=["cpu"]), ProviderSettings()) == [CPU]
    assert choose_providers(config(), ProviderSettings(preference=("CPU",))) == [CPU]
    assert choose_providers(config(instance_group={"kind": "KIND_CPU"}), ProviderSettings(preference=("cuda",))) == [
        CPU
    ]
    with pytest.raises(ConfigError, match="unknown execution provider 'tpu'"):
        choose_providers(config(), ProviderSettings(preference=("tpu",)))


def test_requiring_a_gpu_without_one_refuses_to_start(tmp_path: Path) -> None:
    if cuda_usable():
        pytest.skip("a usable GPU is present")
    path = tmp_path / "model.onnx"
    path.write_bytes(tiny_model_bytes())
    prefs = ProviderSettings(require_gpu=True)
    with pytest.raises(ConfigError, match="a GPU is required"):
        # Refused when choosing (no GPU provider installed) or on creation (installed but unusable).
        create_session(path, config(), choose_providers(config(), prefs), prefs, session_options(1, False))


def test_an_unusable_gpu_falls_back_to_cpu_with_one_clear_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if cuda_usable() or CUDA not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu installed on a machine without a usable GPU")
    path = tmp_path / "model.onnx"
    path.write_bytes(tiny_model_bytes())
    prefs = ProviderSettings()
    _, device = create_session(path, config(), choose_providers(config(), prefs), prefs, session_options(1, False))
    assert device == "cpu"
    assert "CUDAExecutionProvider was requested but ONNX Runtime could not start it" in caplog.text


def test_run_inline_uses_the_inline_sessions_with_the_same_results() -> None:
    model = tiny_model_bytes()
    cfg = config(max_batch_size=3)
    plain = ModelRunner([session(model)], cfg, "cpu")
    inline_session = session(model)
    runner = ModelRunner([session(model)], cfg, "cpu", inline_sessions=[inline_session])
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = inline_session.run(None, {"input": x})[0]
    np.testing.assert_allclose(runner.run_inline(0, {"input": x})["logits"], expected, rtol=1e-6)
    np.testing.assert_allclose(plain.run_inline(0, {"input": x})["logits"], expected, rtol=1e-6)  # falls back
    assert runner.warm_up_inline(cfg) == 3  # buckets 1, 2, 3
    assert plain.warm_up_inline(cfg) == 0
    assert runner.batch_one_s(cfg) > 0
