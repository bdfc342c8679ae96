"""Request bodies for each target, serialised once before the run: v2 tensors (binary or JSON) and REST images.

A workload is a handful of distinct complete HTTP requests that the generator cycles through, so the hot loop
never builds a request (``loadtest.grpc_payloads`` builds gRPC ones from the same tensors, within the same
bounds). Tensor shapes and data types come from the model's v2 metadata, images from a folder of real files or
are generated (smooth random colour fields, which compress like photographs, not like noise).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from PIL import Image

from loadtest.http import Endpoint, get

_V2_NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".gif": "image/gif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}
#: Distinct request variants are capped by count and by total bytes (ResNet batch-32 tensors are 19 MB each).
MAX_VARIANTS = 8
MAX_WORKLOAD_BYTES = 64 * 2**20

EncodedImage = tuple[str, bytes]  # (content type, file bytes)


@dataclass(frozen=True)
class Workload:
    """Complete requests cycled by the generator (HTTP requests, or serialised gRPC messages), and what one of them
    carries."""

    description: str
    requests: tuple[bytes, ...]
    images_per_request: int
    body_bytes: int


def _tensor(datatype: str, shape: list[int], rng: np.random.Generator) -> npt.NDArray[Any]:
    dtype = _V2_NUMPY.get(datatype)
    if dtype is None:
        raise ValueError(
            f"datatype {datatype} is not supported by the load generator; expected one of {list(_V2_NUMPY)}"
        )
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype is np.bool_:
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.integers(0, 100, shape).astype(dtype)


@dataclass(frozen=True)
class Tensor:
    """One input of a request: its v2 name, datatype and shape, and random data of that shape."""

    name: str
    datatype: str
    shape: list[int]
    array: npt.NDArray[Any]


def input_tensors(metadata: dict[str, Any], batch: int, rng: np.random.Generator) -> list[Tensor]:
    """Random tensors of ``batch`` rows for every input in a model's v2 metadata (the HTTP JSON layout).

    Raises:
        ValueError: a non-batch dimension is variable (-1), or an unsupported datatype.
    """
    tensors = []
    for spec in metadata["inputs"]:
        dims = spec["shape"][1:]
        if any(d < 0 for d in dims):
            raise ValueError(f"input '{spec['name']}' has variable dims {spec['shape']}; only the batch axis may be -1")
        shape = [batch, *dims]
        tensors.append(Tensor(spec["name"], spec["datatype"], shape, _tensor(spec["datatype"], shape, rng)))
    return tensors


def v2_body(metadata: dict[str, Any], batch: int, binary: bool, rng: np.random.Generator) -> tuple[bytes, int | None]:
    """One v2 infer body for a model's metadata: (body, JSON header length or None for a pure JSON body).

    Raises:
        ValueError: a non-batch dimension is variable (-1), or an unsupported datatype.
    """
    inputs, chunks = [], []
    for tensor in input_tensors(metadata, batch, rng):
        entry: dict[str, Any] = {"name": tensor.name, "shape": tensor.shape, "datatype": tensor.datatype}
        if binary:
            entry["parameters"] = {"binary_data_size": tensor.array.nbytes}
            chunks.append(tensor.array.tobytes())
        else:
            entry["data"] = tensor.array.ravel().tolist()
        inputs.append(entry)
    outputs = [{"name": o["name"], "parameters": {"binary_data": binary}} for o in metadata["outputs"]]
    header = orjson.dumps({"inputs": inputs, "outputs": outputs})
    return (header + b"".join(chunks), len(header)) if binary else (header, None)


def variants(make: Callable[[], tuple[bytes, int]]) -> tuple[tuple[bytes, ...], int]:
    """Distinct requests from ``make`` (each: the request, its body's size), within ``MAX_VARIANTS`` and
    ``MAX_WORKLOAD_BYTES``; returns them with the body size of one."""
    requests: list[bytes] = []
    size = 0
    while len(requests) < MAX_VARIANTS and (not requests or size * (len(requests) + 1) <= MAX_WORKLOAD_BYTES):
        request, size = make()
        requests.append(request)
    return tuple(requests), size


async def fetch_metadata(endpoint: Endpoint, model: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The model's v2 metadata (``GET /v2/models/{model}``): input and output names, shapes, datatypes.

    Raises:
        RuntimeError: the server does not know the model, or answered something that is not v2 metadata.
    """
    status, body = await get(endpoint, f"/v2/models/{model}", timeout_s)
    if status != 200:
        raise RuntimeError(
            f"GET /v2/models/{model} answered {status}, expected 200 with the model's metadata: "
            f"{body[:300].decode(errors='replace')}"
        )
    metadata = orjson.loads(body)
    if not isinstance(metadata, dict) or "inputs" not in metadata or "outputs" not in metadata:
        raise RuntimeError(f"GET /v2/models/{model} did not return v2 model metadata: {body[:300]!r}")
    return metadata


def v2_workload(
    endpoint: Endpoint, model: str, metadata: dict[str, Any], *, batch: int = 1, binary: bool = True, seed: int = 0
) -> Workload:
    """v2 ``/infer`` requests with random tensors of the model's input shapes, ``batch`` rows each."""
    if batch < 1:
        raise ValueError(f"batch is {batch}, expected >= 1 rows per request")
    rng = np.random.default_rng(seed)
    path = f"/v2/models/{model}/infer"
    content_type = "application/octet-stream" if binary else "application/json"

    def make() -> tuple[bytes, int]:
        body, header_length = v2_body(metadata, batch, binary, rng)
        headers = {"Content-Type": content_type}
        if header_length is not None:
            headers["Inference-Header-Content-Length"] = str(header_length)
        return endpoint.request("POST", path, body, headers), len(body)

    requests, size = variants(make)
    kind = "binary" if binary else "JSON"
    return Workload(f"v2 {kind} tensors, {batch} row(s)/request", requests, batch, size)


def rest_workload(endpoint: Endpoint, model: str, images: list[EncodedImage], top_k: int = 5) -> Workload:
    """REST ``/classify`` requests, one image as the raw body each, cycling through ``images``."""
    if not images:
        raise ValueError("no images for the REST target; give --images DIR with image files, or --generate WxH")
    path = f"/v1/models/{model}/classify?top_k={top_k}"
    requests = tuple(endpoint.request("POST", path, data, {"Content-Type": kind}) for kind, data in images)
    mean = sum(len(data) for _, data in images) // len(images)
    return Workload(f"REST classify, {len(images)} distinct image(s) of {mean} bytes mean", requests, 1, mean)


def load_images(folder: Path, limit: int = 256) -> list[EncodedImage]:
    """Up to ``limit`` image files from ``folder`` (sorted by name), typed by extension.

    Raises:
        ValueError: the folder holds no file with an image extension.
    """
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_TYPES and p.is_file())[:limit]
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(_IMAGE_TYPES))}) in {folder}")
    return [(_IMAGE_TYPES[p.suffix.lower()], p.read_bytes()) for p in files]


def generate_images(width: int, height: int, fmt: str = "jpeg", count: int = 8, seed: int = 0) -> list[EncodedImage]:
    """``count`` synthetic RGB images: smooth random colour fields with a little grain, encoded as ``fmt``."""
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"image format {fmt!r} is not supported for generated images; use jpeg or png")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.int16)
        grain = rng.integers(-8, 9, field.shape, dtype=np.int16)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(field + grain, 0, 255).astype(np.uint8)).save(buffer, fmt, quality=90)
        out.append((f"image/{fmt}", buffer.getvalue()))
    return out
