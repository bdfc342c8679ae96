"""Pinned host memory and host<->device copies through the CUDA runtime that ONNX Runtime's CUDA provider loaded.

onnxruntime's Python API can allocate device buffers but not page-locked host memory, and its ``update_inplace``
copies from pageable numpy memory, which the driver stages through a bounce buffer at a fraction of the bus's
speed. The CUDA runtime (``libcudart``) is already in the process once a CUDA session exists (the CUDA provider
links it), so ``ctypes`` reaches ``cudaHostAlloc`` and ``cudaMemcpy`` without another dependency.

Only the bound runner (``service/bound_runner.py``) uses this, and only for sessions that run on a GPU.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

#: Sonames tried in turn: onnxruntime-gpu 1.31 is built against CUDA 13; 12 for builds against that.
CUDART_SONAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so")
HOST_TO_DEVICE = 1  # cudaMemcpyHostToDevice
DEVICE_TO_HOST = 2  # cudaMemcpyDeviceToHost
HOST_ALLOC_PORTABLE = 1  # cudaHostAllocPortable: pinned for every GPU's context, as instances may sit on several


class CudaError(RuntimeError):
    """A CUDA runtime call failed; the message names the call and CUDA's error code."""


@functools.cache
def cudart() -> Any | None:
    """The CUDA runtime library, or None where there is none (CPU machines)."""
    for soname in CUDART_SONAMES:
        try:
            return ctypes.CDLL(soname)
        except OSError:
            continue
    return None


def _check(code: int, call: str) -> None:
    if code != 0:
        raise CudaError(f"{call} failed with CUDA error {code}")


def pinned_empty(shape: tuple[int, ...], dtype: npt.DTypeLike) -> npt.NDArray[Any] | None:
    """A numpy array in page-locked host memory (freed with the array), or None when CUDA is unavailable."""
    lib = cudart()
    if lib is None:
        return None
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    pointer = ctypes.c_void_p()
    if (
        lib.cudaHostAlloc(ctypes.byref(pointer), ctypes.c_size_t(max(nbytes, 1)), HOST_ALLOC_PORTABLE) != 0
        or not pointer.value
    ):
        return None
    raw = (ctypes.c_byte * max(nbytes, 1)).from_address(pointer.value)
    array: npt.NDArray[Any] = np.frombuffer(memoryview(raw).cast("B"), dtype=np.uint8, count=nbytes)
    array = array.view(dtype).reshape(shape)
    weakref.finalize(raw, lib.cudaFreeHost, ctypes.c_void_p(pointer.value))
    return array


def copy(destination: int, source: int, nbytes: int, kind: int) -> None:
    """``cudaMemcpy`` between raw addresses; returns when the copy is done (ordered before the next run).

    Raises:
        CudaError: the runtime is missing or the copy failed.
    """
    lib = cudart()
    if lib is None:
        raise CudaError("cudaMemcpy: no CUDA runtime library in this process")
    code = lib.cudaMemcpy(ctypes.c_void_p(destination), ctypes.c_void_p(source), ctypes.c_size_t(nbytes), kind)
    _check(code, "cudaMemcpy")
