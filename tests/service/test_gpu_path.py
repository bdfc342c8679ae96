"""The GPU path's decisions, checked where a CPU can see them (issue: the GPU path, made right before a GPU runs it).

onnxruntime-gpu is installed here without CUDA libraries, which is exactly the case of a TensorRT or CUDA provider
that cannot start: the provider fallback is tested for real. Buffers, buckets and bindings run on CPU buffers
through the same ``BoundSession`` a GPU uses; the provider options are checked as ORT receives them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from tiny_models import cuda_usable, tiny_config, tiny_model_bytes

from service.batching.merge import merge_inputs
from service.buckets import batch_buckets, bucket_for
from service.precision import TOLERANCES, running_precision, tolerance
from service.providers import CPU, CUDA, TENSORRT, ProviderSettings, provider_options
from service.repository import ConfigError, model_config_from_dict
from service.runtime import ModelRunner, create_session, session_options
from service.served_model import batch_policy


def config(**overrides: Any) -> Any:
    return model_config_from_dict(tiny_config("tiny", tiny_model_bytes(), **overrides))


def cpu_session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, session_options(1, False), providers=[CPU])


def options_of(providers: list[Any], name: str) -> dict[str, Any]:
    named: dict[str, dict[str, Any]] = dict(entry for entry in providers if isinstance(entry, tuple))
    return dict(named[name])


# ---- buckets and bound buffers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("largest", "buckets"),
    [(1, (1,)), (2, (1, 2)), (8, (1, 2, 4, 8)), (10, (1, 2, 4, 8, 10)), (64, (1, 2, 4, 8, 16, 32, 64))],
)
def test_batch_buckets_are_powers_of_two_up_to_the_largest_batch(largest: int, buckets: tuple[int, ...]) -> None:
    assert batch_buckets(largest) == buckets
    assert [bucket_for(rows, buckets) for rows in range(1, largest + 1)] == [
        min(b for b in buckets if b >= rows) for rows in range(1, largest + 1)
    ]


def test_one_max_size_buffer_set_serves_every_bucket_as_views() -> None:
    """64 sizes would have needed 64 buffer sets; 7 bindings view one set of the largest size."""
    cfg = config(max_batch_size=64)
    runner = ModelRunner([cpu_session(tiny_model_bytes())], cfg, "cpu", iobinding=True)
    bound = runner._bound[0]
    assert sorted(bound._bindings) == [1, 2, 4, 8, 16, 32, 64]
    assert {name: array.shape for name, array in bound._staged_in.items()} == {"input": (64, 3, 8, 8)}
    assert {name: array.shape for name, array in bound._staged_out.items()} == {"logits": (64, 4)}
    assert runner.warm_up(cfg) == 7


def test_a_batch_merged_into_the_staging_buffers_is_run_from_there_without_another_copy() -> None:
    model = tiny_model_bytes()
    cfg = config(max_batch_size=8)
    runner = ModelRunner([cpu_session(model)], cfg, "cpu", iobinding=True)
    rng = np.random.default_rng(2)
    parts = [{"input": rng.standard_normal((rows, 3, 8, 8)).astype(np.float32)} for rows in (2, 1, 2)]
    staging = runner.staging(0, 5)
    assert staging is not None
    merged = merge_inputs(parts, staging)
    assert np.shares_memory(merged["input"], runner._bound[0]._staged_in["input"])
    expected = cpu_session(model).run(None, {"input": np.concatenate([p["input"] for p in parts])})[0]
    result = runner(0, merged)["logits"]
    np.testing.assert_allclose(result, expected, rtol=1e-6)
    assert result.shape == (5, 4)  # the padding row of bucket 8's run is not handed out
    assert not np.shares_memory(result, runner._bound[0]._staged_out["logits"])  # the next batch overwrites those
    assert ModelRunner([cpu_session(model)], cfg, "cpu").staging(0, 5) is None  # unbound: merge into new arrays


def test_gpu_batches_never_run_on_the_event_loop() -> None:
    cfg = config()
    assert batch_policy(cfg, "cpu", inline_batch_us=400).inline_max_s == pytest.approx(400e-6)
    assert batch_policy(cfg, "cuda", inline_batch_us=400).inline_max_s == 0.0


# ---- precision, provider options, instances -------------------------------------------------------------------


def test_precision_decides_tf32_on_cuda_and_fp16_engines_on_tensorrt() -> None:
    prefs = ProviderSettings()
    for precision, tf32, fp16 in (("fp32", "0", "False"), ("tf32", "1", "False"), ("fp16", "1", "True")):
        chosen = provider_options([TENSORRT, CUDA, CPU], config(precision=precision), prefs, device_id=0)
        assert options_of(chosen, CUDA)["use_tf32"] == tf32
        assert options_of(chosen, TENSORRT)["trt_fp16_enable"] == fp16
    assert running_precision("cpu", "fp16") == "fp32"
    assert running_precision("cuda", "fp16") == "tf32"  # CUDA cannot run an fp32 graph in fp16
    assert running_precision("tensorrt", "fp16") == "fp16"
    assert tolerance("cpu", "tf32") == TOLERANCES[("cpu", "fp32")] == 1e-4  # the export's own parity bound
    assert tolerance("tensorrt", "fp16") > tolerance("cuda", "tf32") > tolerance("cuda", "fp32")


def test_tensorrt_profile_spans_the_buckets_and_options_follow_the_config(tmp_path: Path) -> None:
    cfg = config(
        max_batch_size=12,
        instance_group={"count": 2, "gpus": [1, 3], "gpu_memory_limit_mb": 512},
        optimization={"cuda": {"graphs": True}},
    )
    assert cfg.instance_group.instances == 4
    assert cfg.instance_group.devices(default_gpu=0) == [1, 1, 3, 3]
    assert config().instance_group.devices(default_gpu=2) == [2]
    chosen = provider_options([TENSORRT, CUDA, CPU], cfg, ProviderSettings(tensorrt_cache_path=tmp_path), 3)
    trt, cuda = options_of(chosen, TENSORRT), options_of(chosen, CUDA)
    assert trt["device_id"] == cuda["device_id"] == 3
    assert trt["trt_profile_min_shapes"] == "input:1x3x8x8"
    assert trt["trt_profile_opt_shapes"] == trt["trt_profile_max_shapes"] == "input:12x3x8x8"
    assert trt["trt_engine_cache_enable"] == "True"
    assert Path(trt["trt_engine_cache_path"]).is_relative_to(tmp_path)
    assert cuda["gpu_mem_limit"] == str(512 * 2**20)
    assert cuda["enable_cuda_graph"] == "1"
    assert "enable_cuda_graph" not in options_of(provider_options([CUDA], config(), ProviderSettings(), 0), CUDA)
    assert chosen[-1] == CPU


def test_an_unwritable_engine_cache_warns_and_the_model_still_gets_its_options(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        chosen = provider_options([TENSORRT, CPU], config(), ProviderSettings(tensorrt_cache_path=blocker / "c"), 0)
    trt = options_of(chosen, TENSORRT)
    assert trt["trt_engine_cache_enable"] == "False"
    assert trt["trt_profile_max_shapes"] == "input:8x3x8x8"
    assert "CNNSERVE_TENSORRT_CACHE_PATH" in caplog.text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"precision": "int4"}, r'precision is "int4" \(string\), expected one of .fp32., .tf32., .fp16.'),
        ({"instance_group": {"gpus": [0, 0]}}, r"instance_group.gpus is \[0, 0\], which lists a GPU twice"),
        ({"instance_group": {"count": 9, "gpus": [0, 1]}}, r"instance_group.count is 9 per GPU on 2 GPUs: 18"),
        ({"instance_group": {"gpus": [-1]}}, r"instance_group.gpus is \[-1\] \(list\), expected a list of integers"),
        ({"instance_group": {"gpu_memory_limit_mb": -5}}, r"instance_group.gpu_memory_limit_mb is -5"),
        ({"optimization": {"cuda": {"graphs": 1}}}, r"optimization.cuda.graphs is 1 \(integer\), expected a boolean"),
    ],
)
def test_gpu_fields_of_a_config_are_bounded(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**overrides)


# ---- creating sessions without ORT's silent fallback ------------------------------------------------------------


class RecordingSession(ort.InferenceSession):
    """ORT's session, recording the providers (with options) each creation asked for: observation, not a fake."""

    asked: list[list[Any]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        RecordingSession.asked.append(kwargs["providers"])
        super().__init__(*args, **kwargs)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> list[list[Any]]:
    RecordingSession.asked = []
    monkeypatch.setattr(ort, "InferenceSession", RecordingSession)
    return RecordingSession.asked


needs_unstartable_tensorrt = pytest.mark.skipif(
    cuda_usable() or TENSORRT not in ort.get_available_providers(),
    reason="needs onnxruntime-gpu installed where TensorRT cannot start (no GPU libraries)",
)


@needs_unstartable_tensorrt
def test_a_tensorrt_that_cannot_start_is_dropped_in_one_line_and_cuda_keeps_its_options(
    tmp_path: Path, recording: list[list[Any]], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(tiny_model_bytes())
    cfg = config(precision="fp32", instance_group={"gpu_memory_limit_mb": 256})
    prefs = ProviderSettings(preference=("tensorrt", "cuda", "cpu"), tensorrt_cache_path=tmp_path / "trt")
    with caplog.at_level(logging.WARNING):
        session, device = create_session(path, cfg, [TENSORRT, CUDA, CPU], prefs, session_options(1, False), 2)
    assert device == "cpu"
    assert session.get_providers() == [CPU]
    assert capfd.readouterr().out == ""  # ORT's "EP Error" banner would have gone to stdout
    assert [[p if isinstance(p, str) else p[0] for p in asked] for asked in recording] == [
        [TENSORRT, CUDA, CPU],
        [CUDA, CPU],
    ]
    kept = options_of(recording[1], CUDA)
    assert (kept["device_id"], kept["use_tf32"], kept["gpu_mem_limit"]) == (2, "0", str(256 * 2**20))
    dropped = [r for r in caplog.records if "TensorrtExecutionProvider could not start" in r.getMessage()]
    assert len(dropped) == 1
    assert "trying ['CUDAExecutionProvider', 'CPUExecutionProvider']" in dropped[0].getMessage()


@needs_unstartable_tensorrt
def test_with_a_gpu_required_a_tensorrt_that_cannot_start_never_falls_to_the_cpu(
    tmp_path: Path, recording: list[list[Any]], capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(tiny_model_bytes())
    prefs = ProviderSettings(require_gpu=True, tensorrt_cache_path=tmp_path / "trt")
    with pytest.raises(ConfigError, match="TensorrtExecutionProvider could not start .* a GPU is required"):
        create_session(path, config(), [TENSORRT], prefs, session_options(1, False))
    assert all(CPU not in [p if isinstance(p, str) else p[0] for p in asked] for asked in recording)
    assert capfd.readouterr().out == ""
