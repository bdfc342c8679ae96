"""Where the TensorRT provider keeps its engines and timing cache, and the provider options that point it there.

A TensorRT engine takes seconds to minutes to build and is only valid for the GPU model, the ONNX Runtime version
and the TensorRT version that built it, so engines live in one folder per combination,
``<base>/<cache_key(device_id)>``, and an upgrade or a different GPU starts an empty folder instead of loading a
stale plan. ``base`` is ``CNNSERVE_TENSORRT_CACHE_PATH`` or ``default_cache_base()``. A folder the service cannot
write (a read-only root filesystem, a root-owned mount) turns the caches off with one warning instead of failing
the model: the engines are then rebuilt at every start.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
import os
import re
import tempfile
from pathlib import Path

import onnxruntime as ort

logger = logging.getLogger(__name__)

#: The setting that moves the cache; named in the warning so an operator knows what to change.
SETTING = "CNNSERVE_TENSORRT_CACHE_PATH"
UNKNOWN_GPU = "unknown-gpu"
UNKNOWN_TENSORRT = "unknown"
#: Distributions that carry libnvinfer.so.10 as a pip wheel, newest CUDA first (the name's spellings both work).
TENSORRT_DISTRIBUTIONS = ("tensorrt-cu13-libs", "tensorrt_cu13_libs", "tensorrt-cu12-libs", "tensorrt-libs")
NVML_LIBRARY = "libnvidia-ml.so.1"
TENSORRT_LIBRARY = "libnvinfer.so.10"
_NVML_NAME_BUFFER = 96  # NVML_DEVICE_NAME_V2_BUFFER_SIZE: room for any device name


def default_cache_base() -> Path:
    """Where engines are cached when CNNSERVE_TENSORRT_CACHE_PATH is unset.

    Returns:
        ``$XDG_CACHE_HOME/cnnserve/tensorrt``, else ``~/.cache/cnnserve/tensorrt`` (the XDG base-directory rules:
        a relative ``XDG_CACHE_HOME`` is ignored; a process with no home at all gets the temporary folder). A user
        cache, not the model repository, because repositories are often read-only mounts while a cache is written.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        root = Path(xdg)
    else:
        home = os.path.expanduser("~")  # "~" itself when neither HOME nor the password database names one
        root = Path(home) / ".cache" if home != "~" else Path(tempfile.gettempdir())
    return root / "cnnserve" / "tensorrt"


def cache_key(device_id: int) -> str:
    """A folder name that changes whenever a cached engine would be invalid: GPU, ONNX Runtime, TensorRT.

    Flat, lower case, only ``a-z 0-9 . -``, e.g. ``nvidia-h200-sm90-ort-1.31.1-trt-10.16.1.11``. The GPU part is
    NVML's device name and CUDA compute capability (``unknown-gpu`` without NVML), the TensorRT part the version of
    the libs wheel or of the loaded libnvinfer (``trt-unknown`` when neither is found). Never raises.

    Args:
        device_id: The CUDA device the TensorRT provider runs on (``CNNSERVE_CUDA_DEVICE_ID``).
    """
    return _slug(f"{_gpu_identity(device_id)}-ort-{_ort_version()}-trt-{_tensorrt_version()}")


def tensorrt_cache_options(base: Path, device_id: int, model: str) -> dict[str, str]:
    """TensorRT provider options that keep engines and the timing cache under ``base/cache_key(device_id)``.

    The timing cache (kernel timings, reused by any later build on the same GPU and versions) shares the folder.
    Values are strings, as ORT's Python binding expects ("True"/"False").

    Args:
        base: The cache root (``CNNSERVE_TENSORRT_CACHE_PATH`` or ``default_cache_base()``).
        device_id: The CUDA device the provider runs on.
        model: The model's name, for the log line.

    Returns:
        The enabling options with both paths when the folder can be created and written; otherwise, after one
        warning, options that turn both caches off. Never raises: a cache is an optimisation, not a reason to
        refuse a model.
    """
    folder = base / cache_key(device_id)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Write permission on a folder is not enough to know (read-only mounts, ACLs, root squash): try it.
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-probe-"):
            pass
    except (OSError, ValueError) as err:  # ValueError: a path ORT could never use either (an embedded NUL byte)
        logger.warning(
            "model '%s': TensorRT engine cache folder %s is not writable (%s); TensorRT engines will be rebuilt at "
            "every start. Point %s at a writable folder (a volume) to keep them across restarts",
            model,
            folder,
            err,
            SETTING,
        )
        return {"trt_engine_cache_enable": "False", "trt_timing_cache_enable": "False"}
    logger.info("model '%s': TensorRT engines and timing cache in %s", model, folder)
    return {
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(folder),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(folder),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")


def _ort_version() -> str:
    return str(ort.__version__)


def _gpu_identity(device_id: int) -> str:
    """``<NVML name>-sm<major><minor>`` of the GPU CUDA calls ``device_id``, or ``unknown-gpu`` on any failure.

    NVML counts every GPU of the host while CUDA counts those in ``CUDA_VISIBLE_DEVICES``, so a numeric list
    there is followed; with UUIDs there, or a host mixing GPU models in a CUDA order other than NVML's, the name
    may be another GPU's. One GPU per process (the Kubernetes GPU overlay) is always exact.
    """
    try:
        nvml = ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return UNKNOWN_GPU
    try:
        if nvml.nvmlInit_v2() != 0:
            return UNKNOWN_GPU
    except AttributeError:  # a libnvidia-ml too old for the v2 entry points
        return UNKNOWN_GPU
    try:
        handle = ctypes.c_void_p()
        name = ctypes.create_string_buffer(_NVML_NAME_BUFFER)
        major, minor = ctypes.c_int(), ctypes.c_int()
        index = ctypes.c_uint(_nvml_index(device_id))
        if (
            nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0
            or nvml.nvmlDeviceGetName(handle, name, ctypes.c_uint(_NVML_NAME_BUFFER)) != 0
            or nvml.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor)) != 0
        ):
            return UNKNOWN_GPU
        return f"{name.value.decode('utf-8', 'replace')}-sm{major.value}{minor.value}"
    except (AttributeError, OSError):
        return UNKNOWN_GPU
    finally:
        nvml.nvmlShutdown()


def _nvml_index(device_id: int) -> int:
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if device_id < len(visible) and visible[device_id].isdigit():
        return int(visible[device_id])
    return device_id


def _tensorrt_version() -> str:
    """The TensorRT version ORT's provider will load: the libs wheel's, else libnvinfer's own, else ``unknown``."""
    for distribution in TENSORRT_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        version = ctypes.CDLL(TENSORRT_LIBRARY).getInferLibVersion
        version.restype = ctypes.c_int32
        number = int(version())
    except (OSError, AttributeError):
        return UNKNOWN_TENSORRT
    # TensorRT 10 encodes major * 10000 + minor * 100 + patch (NV_TENSORRT_VERSION).
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"
