"""Which ONNX Runtime execution providers a model gets, in preference order, with their options.

Order of authority: the ``CNNSERVE_PROVIDERS`` setting, then config.json's ``execution_providers``, then automatic
(CUDA when usable, else CPU; TensorRT only when asked for, since building its engines takes minutes on a first
start). ``instance_group.kind`` KIND_CPU pins to CPU; KIND_GPU demands a GPU provider. ORT skips a GPU provider whose
libraries are missing without an error, so ``check_active`` compares what actually runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from service.buckets import batch_buckets
from service.precision import running_precision
from service.repository import ConfigError, ModelConfig
from service.trt_cache import default_cache_base, tensorrt_cache_options

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
    tensorrt_cache_path: Path | None = None  # None: ``trt_cache.default_cache_base()``


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


def provider_options(providers: list[str], config: ModelConfig, prefs: ProviderSettings, device_id: int) -> list[Any]:
    """ORT's ``providers=`` argument for one session on GPU ``device_id``: names paired with their options.

    The model's ``precision`` decides TF32 on CUDA and fp16 engines on TensorRT (``service/precision.py``);
    ``instance_group.gpu_memory_limit_mb`` caps the CUDA arena; ``optimization.cuda.graphs`` turns on CUDA graphs.
    """
    cuda: dict[str, Any] = {
        "device_id": device_id,
        # Exhaustive search is run once per shape, and the bound runner only ever runs the batch buckets' shapes.
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "use_tf32": "0" if config.precision == "fp32" else "1",
    }
    if limit_mb := config.instance_group.gpu_memory_limit_mb:
        cuda["gpu_mem_limit"] = str(limit_mb << 20)
    if config.optimization.cuda.graphs:
        cuda["enable_cuda_graph"] = "1"
    result: list[Any] = []
    for name in providers:
        if name == TENSORRT:
            buckets = batch_buckets(config.max_batch_size)
            cache = prefs.tensorrt_cache_path or default_cache_base()
            tensorrt = {
                "device_id": device_id,
                "trt_fp16_enable": "True" if config.precision == "fp16" else "False",
                **tensorrt_cache_options(cache, device_id, config.name),
                # One profile over the buckets, the only batch sizes the bound runner runs; tuned for the largest,
                # where throughput matters.
                "trt_profile_min_shapes": _profile(config, buckets[0]),
                "trt_profile_opt_shapes": _profile(config, buckets[-1]),
                "trt_profile_max_shapes": _profile(config, buckets[-1]),
            }
            if limit_mb:
                tensorrt["trt_max_workspace_size"] = str(limit_mb << 20)
            result.append((name, tensorrt))
        elif name == CUDA:
            result.append((name, cuda))
        else:
            result.append(name)
    return result


def _profile(config: ModelConfig, rows: int) -> str:
    return ",".join(f"{t.name}:{'x'.join(str(d) for d in (rows, *t.dims))}" for t in config.input)


def check_active(session: ort.InferenceSession, requested: list[str], config: ModelConfig, require_gpu: bool) -> str:
    """The device really running the model; says once, in one line, when it is not the provider asked for first.

    Returns:
        ``"cuda"`` when a GPU provider runs the graph, else ``"cpu"`` (where the bound runner keeps its buffers).

    Raises:
        ConfigError: a GPU is required and none runs.
    """
    active = session.get_providers()
    running = next((p for p in active if p in GPU_PROVIDERS), CPU)
    wanted_gpu = [p for p in requested if p in GPU_PROVIDERS]
    if wanted_gpu and running == CPU:
        message = (
            f"model '{config.name}': {wanted_gpu[0]} was requested but ONNX Runtime could not start it "
            f"(no usable GPU, or CUDA/cuDNN libraries missing); running on {active}"
        )
        if require_gpu:
            raise ConfigError(message + "; refusing to start because a GPU is required")
        logger.warning("%s; falling back to CPU", message)
    elif requested and running != requested[0]:
        logger.warning(
            "model '%s': asked for %s (precision %s), running on %s at %s",
            config.name, requested, config.precision, running, running_precision(short_name(running), config.precision),
        )  # fmt: skip
    return "cpu" if running == CPU else "cuda"


def short_name(provider: str) -> str:
    """``cpu``, ``cuda`` or ``tensorrt`` for an execution provider's full name."""
    return {CPU: "cpu", CUDA: "cuda", TENSORRT: "tensorrt"}.get(provider, provider)
