"""Which ONNX Runtime execution providers a model gets, in preference order, with their options.

Order of authority: the ``CNNSERVE_PROVIDERS`` setting, then config.json's ``execution_providers``, then automatic
(CUDA when usable, else CPU). ``instance_group.kind`` KIND_CPU pins to CPU; KIND_GPU demands a GPU provider. ORT
silently falls back to CPU when a GPU provider fails to start, so ``check_active`` compares what actually runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from service.repository import ConfigError, ModelConfig

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
_ALIASES = {"cpu": CPU, "cuda": CUDA, "gpu": CUDA, "tensorrt": TENSORRT, "trt": TENSORRT}


@dataclass(frozen=True)
class ProviderSettings:
    """The operator's provider choices (from ``Settings``)."""

    preference: tuple[str, ...] = ()
    require_gpu: bool = False
    device_id: int = 0
    tensorrt_fp16: bool = True
    tensorrt_cache_path: Path | None = None


def _canonical(name: str, source: str) -> str:
    canonical = _ALIASES.get(name.lower(), name)
    if canonical not in (CPU, CUDA, TENSORRT):
        raise ConfigError(f"{source}: unknown execution provider {name!r}; use one of cpu, cuda, tensorrt")
    return canonical


def choose_providers(config: ModelConfig, prefs: ProviderSettings) -> list[str]:
    """The providers to ask ORT for, best first, always ending with CPU unless a GPU is required.

    Raises:
        ConfigError: an unknown provider name, or a GPU demanded (KIND_GPU / require_gpu) but none installed.
    """
    if prefs.preference:
        wanted = [_canonical(p, "CNNSERVE_PROVIDERS") for p in prefs.preference]
    elif config.execution_providers:
        wanted = [
            _canonical(p, f"model '{config.name}' config.json: execution_providers") for p in config.execution_providers
        ]
    else:
        wanted = [CUDA, CPU]
    if config.instance_group.kind == "KIND_CPU":
        wanted = [CPU]
    available = set(ort.get_available_providers())
    chosen = [p for p in dict.fromkeys(wanted) if p in available]
    for missing in (p for p in wanted if p not in available and (prefs.preference or config.execution_providers)):
        logger.warning("model '%s': execution provider %s is not installed in this onnxruntime", config.name, missing)
    gpu_needed = prefs.require_gpu or config.instance_group.kind == "KIND_GPU"
    if gpu_needed and not any(p in GPU_PROVIDERS for p in chosen):
        raise ConfigError(
            f"model '{config.name}': a GPU is required (CNNSERVE_REQUIRE_GPU or instance_group.kind KIND_GPU) but "
            f"no GPU provider is available (installed: {sorted(available)}); install onnxruntime-gpu or allow CPU"
        )
    if not gpu_needed and CPU not in chosen:
        chosen.append(CPU)
    return chosen


def provider_options(providers: list[str], config: ModelConfig, prefs: ProviderSettings) -> list[Any]:
    """ORT's ``providers=`` argument: names paired with options (device, TensorRT fp16, engine cache, shapes)."""
    result: list[Any] = []
    for name in providers:
        if name == TENSORRT:
            cache = prefs.tensorrt_cache_path or Path(".trt_cache")
            cache.mkdir(parents=True, exist_ok=True)
            result.append(
                (
                    name,
                    {
                        "device_id": prefs.device_id,
                        "trt_fp16_enable": prefs.tensorrt_fp16,
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache),
                        # One optimisation profile covering every batch size the batcher forms: no rebuilds at run time.
                        "trt_profile_min_shapes": _profile(config, 1),
                        "trt_profile_opt_shapes": _profile(config, config.max_batch_size),
                        "trt_profile_max_shapes": _profile(config, config.max_batch_size),
                    },
                )
            )
        elif name == CUDA:
            result.append((name, {"device_id": prefs.device_id, "cudnn_conv_algo_search": "EXHAUSTIVE"}))
        else:
            result.append(name)
    return result


def _profile(config: ModelConfig, rows: int) -> str:
    return ",".join(f"{t.name}:{'x'.join(str(d) for d in (rows, *t.dims))}" for t in config.input)


def check_active(session: ort.InferenceSession, requested: list[str], model: str, require_gpu: bool) -> str:
    """The provider really running the model; logs (or raises, when a GPU is required) if ORT fell back.

    Returns:
        ``"cuda"`` when a GPU provider runs the graph, else ``"cpu"`` (the device for IOBinding buffers).
    """
    active = session.get_providers()
    wanted_gpu = [p for p in requested if p in GPU_PROVIDERS]
    running_gpu = [p for p in active if p in GPU_PROVIDERS]
    if wanted_gpu and not running_gpu:
        message = (
            f"model '{model}': {wanted_gpu[0]} was requested but ONNX Runtime could not start it "
            f"(no usable GPU, or CUDA/cuDNN libraries missing); running on {active}"
        )
        if require_gpu:
            raise ConfigError(message + "; refusing to start because a GPU is required")
        logger.warning("%s; falling back to CPU", message)
    return "cuda" if running_gpu else "cpu"
