"""The model repository contract: ``models/<name>/config.json`` + ``models/<name>/<version>/model.onnx``.

export/ writes this file through :meth:`ModelConfig.to_dict`; service/ reads it through
:func:`load_model_config`. Keys follow Triton's model-configuration vocabulary wherever one exists
(``max_batch_size``, ``input``/``output`` with ``data_type`` and ``dims`` without the batch axis,
``dynamic_batching``, ``instance_group``), so ``/v2/models/{m}/config`` can hand them back unchanged.
This module imports neither torch nor onnxruntime: it is pure data and validation.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILENAME = "config.json"
MODEL_FILENAME = "model.onnx"
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
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


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
    """Triton's ``instance_group``: how many sessions, and on which kind of device."""

    count: int = 1
    kind: str = "KIND_AUTO"  # KIND_AUTO | KIND_CPU | KIND_GPU


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the input tensor; mirrors torchvision's Resize → CenterCrop → ToTensor → Normalize.

    ``resize`` is the length of the shorter side after resizing (torchvision's ``Resize(int)``);
    ``crop`` is the (height, width) centre crop; ``color_mode`` is a PIL mode, ``L`` or ``RGB``.
    ``invert`` flips intensities (1 - x) before normalising, for models trained on light-on-dark digits.
    """

    resize: int
    crop: tuple[int, int]
    color_mode: str = "RGB"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    invert: bool = False
    layout: str = "NCHW"


@dataclass(frozen=True)
class VersionInfo:
    """Facts about one exported version: the artefact's digest and the export pipeline's report."""

    sha256: str
    export_report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    """Everything the service needs to serve one model; see the module docstring for the file layout."""

    name: str
    max_batch_size: int
    input: tuple[TensorSpec, ...]
    output: tuple[TensorSpec, ...]
    preprocessing: Preprocessing | None
    labels: tuple[str, ...]
    versions: dict[str, VersionInfo]
    dynamic_batching: DynamicBatching = field(default_factory=DynamicBatching)
    instance_group: InstanceGroup = field(default_factory=InstanceGroup)
    execution_providers: tuple[str, ...] = ()
    platform: str = PLATFORM

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form written to config.json (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

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
            "version_policy": {"latest": {"num_versions": 1}},
        }


def _require(raw: dict[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise ConfigError(f"{where}: missing required field '{key}'")
    return raw[key]


def _tensor(raw: dict[str, Any], where: str) -> TensorSpec:
    name = _require(raw, "name", where)
    data_type = _require(raw, "data_type", f"{where} '{name}'")
    if data_type not in TRITON_TO_V2_DATATYPE:
        raise ConfigError(f"{where} '{name}': data_type {data_type!r} is not one of {sorted(TRITON_TO_V2_DATATYPE)}")
    dims = tuple(int(d) for d in _require(raw, "dims", f"{where} '{name}'"))
    if any(d < 1 for d in dims):
        raise ConfigError(f"{where} '{name}': dims {list(dims)} must be positive (leave out the batch axis)")
    return TensorSpec(name=name, data_type=data_type, dims=dims)


def model_config_from_dict(raw: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """Parse and validate one config.json document.

    Raises:
        ConfigError: naming the model, the field, and what was expected.
    """
    name = _require(raw, "name", source)
    where = f"{source} (model '{name}')"
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"{where}: name must match {_NAME_RE.pattern}")
    platform = raw.get("platform", PLATFORM)
    if platform != PLATFORM:
        raise ConfigError(f"{where}: platform is {platform!r}, expected {PLATFORM!r}")
    max_batch_size = int(_require(raw, "max_batch_size", where))
    if max_batch_size < 1:
        raise ConfigError(f"{where}: max_batch_size is {max_batch_size}, expected >= 1")
    inputs = tuple(_tensor(t, f"{where}: input") for t in _require(raw, "input", where))
    outputs = tuple(_tensor(t, f"{where}: output") for t in _require(raw, "output", where))
    if not inputs or not outputs:
        raise ConfigError(f"{where}: needs at least one input and one output")

    db_raw = raw.get("dynamic_batching", {})
    qp_raw = db_raw.get("default_queue_policy", {})
    batching = DynamicBatching(
        max_queue_delay_microseconds=int(db_raw.get("max_queue_delay_microseconds", 500)),
        preferred_batch_size=tuple(int(b) for b in db_raw.get("preferred_batch_size", ())),
        default_queue_policy=QueuePolicy(
            max_queue_size=int(qp_raw.get("max_queue_size", 256)),
            default_timeout_microseconds=int(qp_raw.get("default_timeout_microseconds", 0)),
        ),
    )
    if batching.max_queue_delay_microseconds < 0:
        raise ConfigError(f"{where}: dynamic_batching.max_queue_delay_microseconds must be >= 0")
    if batching.default_queue_policy.max_queue_size < 1:
        raise ConfigError(f"{where}: dynamic_batching.default_queue_policy.max_queue_size must be >= 1")
    bad = [b for b in batching.preferred_batch_size if not 1 <= b <= max_batch_size]
    if bad:
        raise ConfigError(
            f"{where}: dynamic_batching.preferred_batch_size {bad} outside 1..max_batch_size={max_batch_size}"
        )

    ig_raw = raw.get("instance_group", {})
    if isinstance(ig_raw, list):  # Triton writes a list of groups; one group is all we serve
        ig_raw = ig_raw[0] if ig_raw else {}
    group = InstanceGroup(count=int(ig_raw.get("count", 1)), kind=ig_raw.get("kind", "KIND_AUTO"))
    if group.count < 1 or group.kind not in ("KIND_AUTO", "KIND_CPU", "KIND_GPU"):
        raise ConfigError(
            f"{where}: instance_group is {ig_raw}, expected count >= 1 and kind KIND_AUTO|KIND_CPU|KIND_GPU"
        )

    pre_raw = raw.get("preprocessing")
    pre = None
    if pre_raw is not None:
        crop = pre_raw.get("crop", [pre_raw.get("resize"), pre_raw.get("resize")])
        pre = Preprocessing(
            resize=int(_require(pre_raw, "resize", f"{where}: preprocessing")),
            crop=(int(crop[0]), int(crop[1])),
            color_mode=pre_raw.get("color_mode", "RGB"),
            mean=tuple(float(m) for m in pre_raw.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(float(s) for s in pre_raw.get("std", (0.229, 0.224, 0.225))),
            interpolation=pre_raw.get("interpolation", "bilinear"),
            invert=bool(pre_raw.get("invert", False)),
            layout=pre_raw.get("layout", "NCHW"),
        )
        _check_preprocessing(pre, inputs[0], where)

    labels = tuple(str(x) for x in raw.get("labels", ()))
    n_classes = outputs[0].dims[-1]
    if labels and len(labels) != n_classes:
        raise ConfigError(
            f"{where}: labels has {len(labels)} entries but output '{outputs[0].name}' has {n_classes} classes"
        )
    versions = {
        str(v): VersionInfo(
            sha256=_require(info, "sha256", f"{where}: versions.{v}"), export_report=info.get("export_report", {})
        )
        for v, info in raw.get("versions", {}).items()
    }
    return ModelConfig(
        name=name,
        max_batch_size=max_batch_size,
        input=inputs,
        output=outputs,
        preprocessing=pre,
        labels=labels,
        versions=versions,
        dynamic_batching=batching,
        instance_group=group,
        execution_providers=tuple(raw.get("execution_providers", ())),
        platform=platform,
    )


def _check_preprocessing(pre: Preprocessing, first_input: TensorSpec, where: str) -> None:
    channels = {"L": 1, "RGB": 3}.get(pre.color_mode)
    if channels is None:
        raise ConfigError(f"{where}: preprocessing.color_mode is {pre.color_mode!r}, expected 'L' or 'RGB'")
    if pre.layout != "NCHW":
        raise ConfigError(f"{where}: preprocessing.layout is {pre.layout!r}, only 'NCHW' is supported")
    if pre.interpolation not in ("bilinear", "bicubic", "nearest"):
        raise ConfigError(f"{where}: preprocessing.interpolation {pre.interpolation!r} is not supported")
    expected = (channels, *pre.crop)
    if first_input.dims != expected:
        raise ConfigError(
            f"{where}: preprocessing (color_mode {pre.color_mode}, crop {list(pre.crop)}) yields "
            f"{list(expected)} but input '{first_input.name}' has dims {list(first_input.dims)}"
        )
    if len(pre.mean) != channels or len(pre.std) != channels or any(s <= 0 for s in pre.std):
        raise ConfigError(
            f"{where}: preprocessing.mean/std need {channels} entries (std > 0), got {pre.mean} / {pre.std}"
        )
    if pre.resize < min(pre.crop):
        raise ConfigError(f"{where}: preprocessing.resize {pre.resize} is smaller than crop {list(pre.crop)}")


def load_model_config(model_dir: Path) -> ModelConfig:
    """Read ``model_dir/config.json``; the folder name must equal the config's ``name``."""
    path = model_dir / CONFIG_FILENAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no config.json in model folder") from err
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from err
    config = model_config_from_dict(raw, source=str(path))
    if config.name != model_dir.name:
        raise ConfigError(f"{path}: name is {config.name!r} but the folder is {model_dir.name!r}")
    return config


def version_dirs(model_dir: Path) -> dict[str, Path]:
    """Numbered version folders holding a model.onnx, keyed by version string, lowest first."""
    found = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and (p / MODEL_FILENAME).is_file()]
    return {p.name: p / MODEL_FILENAME for p in sorted(found, key=lambda p: int(p.name))}


def list_models(repository: Path) -> list[str]:
    """Names of the model folders (those holding a config.json) in a repository, sorted."""
    return sorted(p.name for p in repository.iterdir() if (p / CONFIG_FILENAME).is_file())
