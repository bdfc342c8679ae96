"""The typed form of ``config.json``: one frozen dataclass per section, in Triton's vocabulary.

Every default of the contract is written here once, as a dataclass field default: export/ builds these objects,
and the parser (:mod:`service.repository`) falls back to the same field defaults for keys a file leaves out.
Pure data: no file access, no torch, no onnxruntime.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

PLATFORM = "onnxruntime_onnx"

#: Triton model-config data types and their KServe v2 / numpy equivalents.
TRITON_TO_V2_DATATYPE: dict[str, str] = {
    "TYPE_FP32": "FP32",
    "TYPE_FP16": "FP16",
    "TYPE_FP64": "FP64",
    "TYPE_INT64": "INT64",
    "TYPE_INT32": "INT32",
    "TYPE_INT8": "INT8",
    "TYPE_UINT8": "UINT8",
    "TYPE_BOOL": "BOOL",
}

#: Upper bounds on what a config may ask of one server process, whether it comes from a config.json file or from a
#: load request's ``parameters.config``: a value beyond its bound is refused, naming the field, the value and the
#: bound. Warm-up runs every batch bucket up to ``max_batch_size`` on every instance of every served version, and each
#: queued request may hold a whole body, so these cap the sessions, memory and start-up time a config can demand.
MAX_BATCH_SIZE = 1024
MAX_INSTANCE_COUNT = 16
MAX_SERVED_VERSIONS = 16
MAX_QUEUE_SIZE = 16_384
MAX_QUEUE_DELAY_MICROSECONDS = 1_000_000  # 1 s: longer makes no sense for an online service
MAX_TIMEOUT_MICROSECONDS = 600_000_000  # 10 minutes
MAX_PREFERRED_BATCH_SIZES = 16
MAX_TENSOR_ELEMENTS = 2**24  # per row: 64 MiB of FP32
MAX_IMAGE_SIDE = 8192  # preprocessing.resize and crop, in pixels
MAX_GPU_ID = 63
MAX_GPU_MEMORY_LIMIT_MB = 1 << 24  # 16 TiB: a bound on the number, not on any real GPU

#: A model's numeric precision on GPUs: ``fp32`` (CUDA with TF32 off: the arithmetic the export's parity check
#: ran), ``tf32`` (CUDA's TensorFloat-32 convolutions and matmuls, ORT's own default), ``fp16`` (TensorRT builds
#: fp16 engines). The CPU always computes in fp32.
PRECISIONS = ("fp32", "tf32", "fp16")
#: What one version's graph stores its weights and activations in (``versions.<v>.graph_precision``): ``fp16`` is
#: for GPU providers only (``service/precision.py``) and requires the model's ``precision`` to be ``fp16``.
GRAPH_PRECISIONS = ("fp32", "fp16")

#: torchvision's ImageNet channel statistics, the default normalisation of an RGB model.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConfigError(ValueError):
    """A config.json that cannot be served; the message names the model, the field and the values."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor; ``dims`` leave out the batch axis, as Triton does."""

    name: str
    data_type: str
    dims: tuple[int, ...]

    @property
    def datatype(self) -> str:
        """The KServe v2 spelling of the data type (``FP32`` for ``TYPE_FP32``)."""
        return TRITON_TO_V2_DATATYPE[self.data_type]


@dataclass(frozen=True)
class QueuePolicy:
    """Triton's ``default_queue_policy``: bound on queued requests and default deadline (0 = none)."""

    max_queue_size: int = 256
    default_timeout_microseconds: int = 0


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's ``dynamic_batching``: how long the first request of a batch may wait for company."""

    max_queue_delay_microseconds: int = 500
    preferred_batch_size: tuple[int, ...] = ()
    default_queue_policy: QueuePolicy = field(default_factory=QueuePolicy)


@dataclass(frozen=True)
class InstanceGroup:
    """Triton's ``instance_group``: how many sessions, on which kind of device and which GPUs.

    As in Triton, ``count`` instances run on each GPU ``gpus`` lists (several per GPU overlap one batch's copies
    with another's compute); no list means the server's GPU (``CNNSERVE_CUDA_DEVICE_ID``). ``gpu_memory_limit_mb``
    caps each session's CUDA memory arena (0: no cap).
    """

    count: int = 1
    kind: str = "KIND_AUTO"  # KIND_AUTO | KIND_CPU | KIND_GPU
    gpus: tuple[int, ...] = ()
    gpu_memory_limit_mb: int = 0

    @property
    def instances(self) -> int:
        """Sessions in all: ``count`` per listed GPU (one GPU when none is listed)."""
        return self.count * max(1, len(self.gpus))

    def devices(self, default_gpu: int) -> list[int]:
        """The GPU of each instance, in instance order (``default_gpu`` where ``gpus`` lists none)."""
        return [gpu for gpu in (self.gpus or (default_gpu,)) for _ in range(self.count)]


@dataclass(frozen=True)
class CudaOptimization:
    """Triton's ``optimization.cuda``: ``graphs`` captures one CUDA graph per batch bucket and replays it."""

    graphs: bool = False


@dataclass(frozen=True)
class Optimization:
    """Triton's ``optimization`` section (the CUDA part)."""

    cuda: CudaOptimization = field(default_factory=CudaOptimization)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the input tensor; mirrors torchvision's Resize → CenterCrop → ToTensor → Normalize.

    ``resize`` is the length of the shorter side after resizing (torchvision's ``Resize(int)``);
    ``crop`` is the (height, width) centre crop; ``color_mode`` is a PIL mode, ``L`` or ``RGB``.
    ``invert`` flips intensities (1 - x) before normalising, for models trained on light-on-dark digits.
    ``fidelity`` ``fast`` lets a JPEG decode at a reduced DCT scale that keeps both sides at least ``resize``
    (much less work for photographs larger than the model needs) and a bilinear resize run in OpenCV, within a
    stated budget (``service.preprocess.FAST_BUDGET``); ``exact`` decodes every pixel and resizes with Pillow, as
    torchvision does. (Configs written before this field was named say ``jpeg_decode``: ``scaled`` or ``exact``.)
    ``normalize`` says who does ToTensor + Normalize: ``service`` feeds a float input ``(x / 255 - mean) / std``;
    ``graph`` feeds a TYPE_UINT8 input the 0-255 pixels (resized, cropped, inverted) and the graph divides and
    normalises itself, with ``mean``/``std`` kept as the record of what it folds (``export build --input-dtype
    uint8``). Left out, it follows the input's type; the parser refuses a type the choice cannot feed.
    """

    resize: int
    crop: tuple[int, int]
    color_mode: str = "RGB"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    invert: bool = False
    layout: str = "NCHW"
    fidelity: str = "fast"  # fast | exact
    normalize: str = "service"  # service | graph


@dataclass(frozen=True)
class VersionInfo:
    """Facts about one exported version: the artefact's digest, the export pipeline's report, its graph precision."""

    sha256: str
    export_report: dict[str, Any] = field(default_factory=dict)
    graph_precision: str = "fp32"  # one of GRAPH_PRECISIONS


@dataclass(frozen=True)
class VersionPolicy:
    """Triton's ``version_policy``: which numbered version folders are served.

    ``latest`` serves the ``num_versions`` highest, ``specific`` those listed that exist, ``all`` every one.
    """

    kind: str = "latest"  # latest | specific | all
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[str]) -> list[str]:
        """The versions to serve out of ``available`` (folder names, lowest first), in the same order."""
        if self.kind == "all":
            return list(available)
        if self.kind == "specific":
            return [v for v in available if int(v) in self.versions]
        return list(available[-self.num_versions :])

    def to_json(self) -> dict[str, Any]:
        """The policy as Triton spells it (``{"latest": {"num_versions": n}}``, ``{"all": {}}``, …)."""
        if self.kind == "all":
            return {"all": {}}
        if self.kind == "specific":
            return {"specific": {"versions": list(self.versions)}}
        return {"latest": {"num_versions": self.num_versions}}


@dataclass(frozen=True)
class ModelConfig:
    """Everything the service needs to serve one model; see :mod:`service.repository` for the file layout."""

    name: str
    max_batch_size: int
    input: tuple[TensorSpec, ...]
    output: tuple[TensorSpec, ...]
    preprocessing: Preprocessing | None = None  # None: the model takes tensors only, no images
    labels: tuple[str, ...] = ()
    versions: dict[str, VersionInfo] = field(default_factory=dict)
    dynamic_batching: DynamicBatching = field(default_factory=DynamicBatching)
    instance_group: InstanceGroup = field(default_factory=InstanceGroup)
    execution_providers: tuple[str, ...] = ()
    platform: str = PLATFORM
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    precision: str = "fp32"
    optimization: Optimization = field(default_factory=Optimization)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form written to config.json (tuples become lists; the version policy as Triton spells it)."""
        document: dict[str, Any] = json.loads(json.dumps(asdict(self)))
        document["version_policy"] = self.version_policy.to_json()
        return document

    def tensor_metadata(self) -> dict[str, list[dict[str, Any]]]:
        """``inputs`` and ``outputs`` as KServe v2 metadata describes tensors: the batch axis is ``-1``."""

        def describe(specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": [-1, *t.dims]} for t in specs]

        return {"inputs": describe(self.input), "outputs": describe(self.output)}

    def triton_config(self) -> dict[str, Any]:
        """Triton's model-configuration JSON, as served by ``/v2/models/{m}/config``."""
        d = self.to_dict()
        return {
            "name": d["name"],
            "platform": d["platform"],
            "backend": "onnxruntime",
            "max_batch_size": d["max_batch_size"],
            "input": d["input"],
            "output": d["output"],
            "dynamic_batching": d["dynamic_batching"],
            "instance_group": [d["instance_group"]],
            "version_policy": d["version_policy"],
            "optimization": d["optimization"],
        }
