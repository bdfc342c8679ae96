"""The config.json parser: refuses, naming the model and the field's path, a document that breaks the contract.

Keys follow Triton's model-configuration vocabulary wherever one exists; the typed form it builds lives in
:mod:`service.config_model`, and the file layout around it in :mod:`service.repository`, the one door both export/
and service/ go through. Pure data and validation: no file access, no torch, no onnxruntime.
"""

from __future__ import annotations

import math
import re
from typing import Any

from service import config_model as limits
from service.config_fields import Fields
from service.config_model import (
    PLATFORM,
    TRITON_TO_V2_DATATYPE,
    ConfigError,
    CudaOptimization,
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    Optimization,
    Preprocessing,
    QueuePolicy,
    TensorSpec,
    VersionInfo,
    VersionPolicy,
)

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
#: Longest model name, in bytes: one folder name on every common file system.
MAX_NAME_BYTES = 255
NAME_RULE = f"1 to {MAX_NAME_BYTES} characters from A-Z a-z 0-9 _ . -, and not '.' or '..'"
_KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU")
_CHANNELS = {"L": 1, "RGB": 3}
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
#: The input types images can fill, by who normalises (``preprocessing.normalize``): the service's float arithmetic
#: is cast to any float type; a graph that normalises itself takes the uint8 pixels.
_IMAGE_INPUT_TYPES = {"service": ("TYPE_FP16", "TYPE_FP32", "TYPE_FP64"), "graph": ("TYPE_UINT8",)}


def is_model_name(name: str) -> bool:
    """Whether ``name`` can name a model folder: checked before any file is touched, for URLs and configs alike."""
    return name not in (".", "..") and len(name) <= MAX_NAME_BYTES and _NAME_RE.fullmatch(name) is not None


def _tensor(fields: Fields) -> TensorSpec:
    dims = fields.integers("dims")
    if not dims or min(dims) < 1:
        raise fields.error("dims", f"is {list(dims)}, expected positive sizes with the batch axis left out")
    if (elements := math.prod(dims)) > limits.MAX_TENSOR_ELEMENTS:
        raise fields.error("dims", f"is {list(dims)}: {elements} elements, at most {limits.MAX_TENSOR_ELEMENTS}")
    data_type = fields.text("data_type", choices=sorted(TRITON_TO_V2_DATATYPE))
    return TensorSpec(name=fields.text("name"), data_type=data_type, dims=dims)


def _batching(fields: Fields, max_batch_size: int) -> DynamicBatching:
    policy = fields.child("default_queue_policy", QueuePolicy)
    batching = DynamicBatching(
        max_queue_delay_microseconds=fields.integer(
            "max_queue_delay_microseconds", minimum=0, maximum=limits.MAX_QUEUE_DELAY_MICROSECONDS
        ),
        preferred_batch_size=fields.integers("preferred_batch_size"),
        default_queue_policy=QueuePolicy(
            max_queue_size=policy.integer("max_queue_size", minimum=1, maximum=limits.MAX_QUEUE_SIZE),
            default_timeout_microseconds=policy.integer(
                "default_timeout_microseconds", minimum=0, maximum=limits.MAX_TIMEOUT_MICROSECONDS
            ),
        ),
    )
    preferred = batching.preferred_batch_size
    bad = [b for b in preferred if not 1 <= b <= max_batch_size]
    if bad:
        raise fields.error("preferred_batch_size", f"{bad} outside 1..max_batch_size={max_batch_size}")
    if (n := len(preferred)) > limits.MAX_PREFERRED_BATCH_SIZES:
        raise fields.error("preferred_batch_size", f"has {n} sizes, at most {limits.MAX_PREFERRED_BATCH_SIZES}")
    return batching


def _instance_group(top: Fields) -> InstanceGroup:
    raw = top.raw.get("instance_group", {})
    path = "instance_group"
    if isinstance(raw, list):  # Triton writes a list of groups; one group is all we serve
        raw, path = (raw[0] if raw else {}), "instance_group[0]"
    fields = Fields(raw, top.where, path, InstanceGroup)
    count = fields.integer("count", minimum=1, maximum=limits.MAX_INSTANCE_COUNT)
    gpus = fields.integers("gpus", minimum=0, maximum=limits.MAX_GPU_ID)
    if len(set(gpus)) != len(gpus):
        raise fields.error("gpus", f"is {list(gpus)}, which lists a GPU twice; raise count for more instances on it")
    if (instances := count * max(1, len(gpus))) > limits.MAX_INSTANCE_COUNT:
        raise fields.error(
            "count",
            f"is {count} per GPU on {len(gpus)} GPUs: {instances} sessions, at most {limits.MAX_INSTANCE_COUNT}",
        )
    return InstanceGroup(
        count=count,
        kind=fields.text("kind", choices=_KINDS),
        gpus=tuple(gpus),
        gpu_memory_limit_mb=fields.integer("gpu_memory_limit_mb", minimum=0, maximum=limits.MAX_GPU_MEMORY_LIMIT_MB),
    )


def _optimization(top: Fields) -> Optimization:
    """Triton's ``optimization.cuda.graphs``, the one part of that section served."""
    fields = top.child("optimization", Optimization)
    cuda = fields.child("cuda", CudaOptimization)
    return Optimization(cuda=CudaOptimization(graphs=cuda.flag("graphs")))


def _version_policy(top: Fields) -> VersionPolicy:
    """Triton's ``version_policy``: exactly one of ``latest``, ``specific`` or ``all``; left out, the latest one."""
    fields = top.child("version_policy", VersionPolicy)
    if not fields.raw:
        return VersionPolicy()
    kinds = sorted(fields.raw)
    if len(kinds) != 1 or kinds[0] not in ("latest", "specific", "all"):
        raise top.error("version_policy", f"has keys {kinds}, expected exactly one of 'latest', 'specific', 'all'")
    kind = kinds[0]
    policy = fields.child(kind, VersionPolicy)  # refuses a non-object, naming version_policy.<kind>
    most = limits.MAX_SERVED_VERSIONS
    if kind == "latest":
        return VersionPolicy(kind, num_versions=policy.integer("num_versions", minimum=1, maximum=most))
    if kind == "all":
        return VersionPolicy(kind)
    versions = policy.integers("versions", minimum=1)
    if not 1 <= len(versions) <= most:
        raise policy.error("versions", f"lists {len(versions)} versions, expected 1 to {most}")
    return VersionPolicy(kind, versions=tuple(sorted(set(versions))))


def _fidelity(fields: Fields) -> str:
    """``fidelity``; a config written before it was named says ``jpeg_decode`` (``scaled`` meant the fast path)."""
    if "jpeg_decode" in fields.raw and "fidelity" not in fields.raw:
        return "fast" if fields.text("jpeg_decode", choices=("scaled", "exact")) == "scaled" else "exact"
    return fields.text("fidelity", choices=("fast", "exact"))


def _preprocessing(fields: Fields, first_input: TensorSpec) -> Preprocessing:
    side = limits.MAX_IMAGE_SIDE
    resize = fields.integer("resize", minimum=1, maximum=side)
    # No crop given: the centre square of side ``resize``, as torchvision's Resize(n) + CenterCrop(n).
    crop = fields.integers("crop", minimum=1, length=2, maximum=side) if "crop" in fields.raw else (resize, resize)
    pre = Preprocessing(
        resize=resize,
        crop=(crop[0], crop[1]),
        color_mode=fields.text("color_mode", choices=tuple(_CHANNELS)),
        mean=fields.numbers("mean"),
        std=fields.numbers("std"),
        interpolation=fields.text("interpolation", choices=_INTERPOLATIONS),
        invert=fields.flag("invert"),
        layout=fields.text("layout", choices=("NCHW",)),
        fidelity=_fidelity(fields),
        normalize=fields.text("normalize", choices=tuple(_IMAGE_INPUT_TYPES))
        if "normalize" in fields.raw
        else ("graph" if first_input.data_type == "TYPE_UINT8" else "service"),
    )
    if first_input.data_type not in _IMAGE_INPUT_TYPES[pre.normalize]:
        raise ConfigError(
            f"{fields.where}: input '{first_input.name}' is {first_input.data_type}, which preprocessing.normalize "
            f"'{pre.normalize}' cannot feed: 'service' feeds normalised TYPE_FP16/FP32/FP64, 'graph' feeds the 0-255 "
            "pixels to a TYPE_UINT8 input that normalises itself. Fix either, or leave preprocessing out to serve "
            "the model over v2 tensors only"
        )
    channels = _CHANNELS[pre.color_mode]
    expected = (channels, *pre.crop)
    if first_input.dims != expected:
        raise ConfigError(
            f"{fields.where}: preprocessing (color_mode {pre.color_mode}, crop {list(pre.crop)}) yields "
            f"{list(expected)} but input '{first_input.name}' has dims {list(first_input.dims)}"
        )
    if len(pre.mean) != channels or len(pre.std) != channels or any(s <= 0 for s in pre.std):
        raise ConfigError(
            f"{fields.where}: preprocessing.mean/std need {channels} entries (std > 0), got {pre.mean} / {pre.std}"
        )
    if pre.resize < min(pre.crop):
        raise fields.error("resize", f"{pre.resize} is smaller than crop {list(pre.crop)}")
    return pre


def model_config_from_dict(raw: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Parse and validate one config.json document.

    Raises:
        ConfigError: naming the model, the field's path, what was expected and what the document holds.
    """
    name = Fields(raw, source, schema=ModelConfig).text("name")
    top = Fields(raw, f"{source} (model '{name}')", schema=ModelConfig)
    if not is_model_name(name):
        raise top.error("name", f"is {name[:64]!r}, expected {NAME_RULE}")
    max_batch_size = top.integer("max_batch_size", minimum=1, maximum=limits.MAX_BATCH_SIZE)
    inputs = tuple(_tensor(t) for t in top.items("input", TensorSpec))
    outputs = tuple(_tensor(t) for t in top.items("output", TensorSpec))
    if not inputs or not outputs:
        raise ConfigError(f"{top.where}: needs at least one input and one output")
    pre_fields = top.optional_child("preprocessing", Preprocessing)
    labels = top.texts("labels")
    n_classes = outputs[0].dims[-1]
    if labels and len(labels) != n_classes:
        raise top.error("labels", f"has {len(labels)} entries but output '{outputs[0].name}' has {n_classes} classes")
    versions = {
        version: VersionInfo(
            sha256=info.text("sha256"),
            export_report=info.json_object("export_report"),
            graph_precision=info.text("graph_precision", choices=limits.GRAPH_PRECISIONS),
        )
        for version, info in top.entries("versions", VersionInfo).items()
    }
    precision = top.text("precision", choices=limits.PRECISIONS)
    fp16_graphs = sorted(v for v, info in versions.items() if info.graph_precision == "fp16")
    if fp16_graphs and precision != "fp16":  # a GPU runs an fp16 graph in fp16 whatever precision says
        raise top.error(
            "precision",
            f"is {precision!r} but versions {fp16_graphs} hold fp16 graphs (graph_precision 'fp16'), which run in "
            "fp16 on every GPU provider: set precision to 'fp16'",
        )
    return ModelConfig(
        name=name,
        max_batch_size=max_batch_size,
        input=inputs,
        output=outputs,
        preprocessing=None if pre_fields is None else _preprocessing(pre_fields, inputs[0]),
        labels=labels,
        versions=versions,
        dynamic_batching=_batching(top.child("dynamic_batching", DynamicBatching), max_batch_size),
        instance_group=_instance_group(top),
        execution_providers=top.texts("execution_providers"),
        platform=top.text("platform", choices=(PLATFORM,)),
        version_policy=_version_policy(top),
        precision=precision,
        optimization=_optimization(top),
    )
