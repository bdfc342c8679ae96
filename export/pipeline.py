"""The export pipeline: shape check → ONNX export → checker → ORT load → parity → repository write.

Each step reports progress on stderr. The model is staged in a hidden folder beside the repository and moved
into ``<out>/<name>/<version>/`` only after every check passed, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from export.errors import ExportError
from export.fp16 import convert_to_fp16, fp16_report, parity_tolerance, refuse_mixed_versions
from export.onnx_export import OPSET, export_onnx
from export.shapes import analyse, enforce_strict
from export.uint8_input import INPUT_DTYPES, GraphInput
from export.validate import check_parity, load_session
from service.repository import (
    CONFIG_FILENAME,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MODEL_FILENAME,
    ConfigError,
    DynamicBatching,
    ModelConfig,
    Preprocessing,
    TensorSpec,
    VersionInfo,
    file_sha256,
    load_model_config,
    model_config_from_dict,
)


@dataclass(frozen=True)
class ExportSpec:
    """What to export and how the service should serve it."""

    name: str
    input_size: tuple[int, int, int]  # (C, H, W)
    labels: tuple[str, ...]
    version: str | None = None  # None: one more than the highest existing version
    rounding: str = "strict"  # "strict" fails on a non-integral layer; "floor" accepts PyTorch's rounding
    max_batch_size: int = 32
    dynamic_batching: DynamicBatching = field(default_factory=DynamicBatching)
    preprocessing: Preprocessing | None = None  # None: derived from input_size (ImageNet statistics)
    tolerance: float | None = None  # None: the graph precision's own, 1e-4 (fp32) or 5e-2 (fp16; export.fp16)
    precision: str = "fp32"  # "fp16": the graph is stored in fp16 for GPU providers (export.fp16)
    input_dtype: str = "float32"  # "uint8": the graph takes 0-255 pixels and normalises them (export.uint8_input)
    extra_report: dict[str, Any] = field(default_factory=dict)  # e.g. training and held-out accuracy


@dataclass(frozen=True)
class ExportResult:
    """Where the model landed and what the report says."""

    model_path: Path
    config: ModelConfig
    report: dict[str, Any]


def default_preprocessing(input_size: tuple[int, int, int]) -> Preprocessing:
    """torchvision's ImageNet evaluation transform scaled to the input: resize to crop/0.875, centre crop."""
    channels, height, width = input_size
    if channels not in (1, 3):
        raise ExportError("preprocessing", f"input has {channels} channels; images need 1 (L) or 3 (RGB)")
    rgb = channels == 3
    return Preprocessing(
        resize=round(min(height, width) / 0.875) if rgb else min(height, width),
        crop=(height, width),
        color_mode="RGB" if rgb else "L",
        mean=IMAGENET_MEAN if rgb else (0.5,),
        std=IMAGENET_STD if rgb else (0.5,),
    )


@contextmanager
def step(number: int, total: int, what: str) -> Iterator[None]:
    """Report step ``number`` of ``total`` on stderr as it starts and, with its duration, as it ends."""
    print(f"[{number}/{total}] {what} …", file=sys.stderr, flush=True)
    started = time.perf_counter()
    yield
    print(f"[{number}/{total}] {what}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def _existing_config(model_dir: Path) -> ModelConfig | None:
    if not (model_dir / CONFIG_FILENAME).exists():
        return None
    try:
        return load_model_config(model_dir)
    except ConfigError as err:
        raise ExportError("repository", f"existing {model_dir / CONFIG_FILENAME} is unreadable: {err}") from err


def next_version(model_dir: Path, existing: ModelConfig | None, requested: str | None) -> str:
    """The version to write: ``requested`` if it is free, else one more than the highest folder or config entry."""
    taken = {p.name for p in model_dir.iterdir() if p.is_dir()} if model_dir.is_dir() else set()
    if existing:
        taken |= set(existing.versions)
    if requested is not None:
        if not requested.isdigit() or int(requested) < 1:
            raise ExportError("repository", f"version {requested!r} must be a positive integer (Triton layout)")
        if requested in taken:
            raise ExportError(
                "repository", f"{model_dir.name} version {requested} exists; versions are immutable, pick another"
            )
        return requested
    numbers = [int(v) for v in taken if v.isdigit()]
    return str(max(numbers, default=0) + 1)


def build(model: nn.Module, spec: ExportSpec, out_dir: Path, *, architecture: str = "custom") -> ExportResult:
    """Run every check and write ``out_dir/<name>/<version>/model.onnx`` and ``out_dir/<name>/config.json``.

    Raises:
        ExportError: naming the failed check, with expected vs actual values. Nothing is left behind.
    """
    model = model.eval()
    graph_input = GraphInput.of(spec.input_dtype, spec.preprocessing or default_preprocessing(spec.input_size))
    spec = replace(spec, preprocessing=graph_input.preprocessing)
    total = 6
    with step(1, total, f"checking every layer's shape ({spec.rounding} arithmetic)"):
        shapes = analyse(model, spec.input_size)
        if spec.rounding == "strict":
            try:
                enforce_strict(shapes)
            except ValueError as err:
                raise ExportError("shape", str(err)) from err
        out_shape = tuple(shapes.layers[-1].output) if shapes.layers else ()
        if len(out_shape) != 1 or out_shape[0] != len(spec.labels):
            raise ExportError(
                "num-classes",
                f"the model outputs {list(out_shape)} per image but {len(spec.labels)} labels were given",
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    model_dir = out_dir / spec.name
    existing = _existing_config(model_dir)
    refuse_mixed_versions(existing, spec.name, spec.precision)
    version = next_version(model_dir, existing, spec.version)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.staging-", dir=out_dir))
    try:
        onnx_path = staging / MODEL_FILENAME
        with step(2, total, "exporting to ONNX (torch.export, dynamic batch axis)"):
            graph = export_onnx(
                graph_input.exported(model),
                spec.input_size,
                onnx_path,
                max_batch_size=max(spec.max_batch_size, 2),
                input_dtype=graph_input.torch_dtype,
            )
            conversion = convert_to_fp16(onnx_path) if spec.precision == "fp16" else None
        with step(3, total, "loading in ONNX Runtime"):
            session = load_session(onnx_path)
        with step(4, total, "comparing ONNX Runtime with PyTorch"):
            tolerance = parity_tolerance(spec.precision, spec.tolerance)
            parity = check_parity(
                model, session, spec.input_size, out_shape, tolerance=tolerance, feed=graph_input.feed()
            )
            fp16 = fp16_report(conversion, model, spec.input_size, parity.tolerance) if conversion else {}
        with step(5, total, "writing the config"):
            report = {
                "architecture": architecture,
                "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "torch_version": torch.__version__,
                "onnx_version": onnx.__version__,
                "onnxruntime_version": parity.onnxruntime_version,
                "opset": OPSET,
                "ir_version": graph.ir_version,
                "rounding": spec.rounding,
                "input_dtype": spec.input_dtype,
                "precision": spec.precision,
                "shape_check": shapes.to_dict(),
                "parity": {
                    "batch_sizes": list(parity.batch_sizes),
                    "max_abs_error": parity.max_abs_error,
                    "max_output_magnitude": parity.max_output_magnitude,
                    "tolerance": parity.tolerance,
                },
                **fp16,
                **spec.extra_report,
            }
            info = VersionInfo(file_sha256(onnx_path), report, graph_precision=spec.precision)
            config = _merged_config(spec, existing, version, info)
        with step(6, total, f"moving into {model_dir}/{version}"):
            publish(staging, model_dir, version, config)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(model_dir / version / MODEL_FILENAME, config, report)


def _merged_config(spec: ExportSpec, existing: ModelConfig | None, version: str, info: VersionInfo) -> ModelConfig:
    """The new config: this version added to any earlier ones, which must share the same interface."""
    config = ModelConfig(
        name=spec.name,
        max_batch_size=spec.max_batch_size,
        input=(TensorSpec("input", INPUT_DTYPES[spec.input_dtype], spec.input_size),),
        output=(TensorSpec("logits", "TYPE_FP32", (len(spec.labels),)),),
        preprocessing=spec.preprocessing or default_preprocessing(spec.input_size),
        labels=spec.labels,
        versions={version: info},
        dynamic_batching=spec.dynamic_batching,
    )
    if existing is not None:
        if (existing.input, existing.output) != (config.input, config.output):
            raise ExportError(
                "repository",
                f"{spec.name} already serves inputs {existing.input} / outputs {existing.output}; this export has "
                f"{config.input} / {config.output}. Versions of one model share one interface: use another --name",
            )
        config = replace(config, versions={**existing.versions, version: info})
    if spec.precision == "fp16":  # every version is an fp16 graph (refuse_mixed_versions), which runs in fp16
        config = replace(config, precision="fp16")
    try:  # the written file must satisfy the same contract the service reads
        return model_config_from_dict(config.to_dict(), source=f"export of {spec.name}")
    except ConfigError as err:
        raise ExportError("config", str(err)) from err


def publish(staging: Path, model_dir: Path, version: str, config: ModelConfig) -> None:
    """Move a checked staging folder into place as ``model_dir/version``, then replace config.json atomically.

    The version folder appears whole (one rename) before the config names it, so a service polling the repository
    never sees a config pointing at a half-written model.
    """
    model_dir.mkdir(exist_ok=True)
    staging.chmod(0o755)  # mkdtemp makes it private; the service may run as another user
    os.rename(staging, model_dir / version)
    _write_json_atomically(model_dir / CONFIG_FILENAME, config.to_dict())


def _write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)
