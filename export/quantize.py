"""``python -m export quantize``: a model's newest version as static INT8, written as its next version if it keeps
its accuracy.

ONNX Runtime's static quantization in QDQ format: the graph keeps float32 input and logits (so config.json's
interface is unchanged and the service serves it like any version), with QuantizeLinear/DequantizeLinear pairs that
ORT fuses into integer kernels. Weights are int8 per output channel; activations uint8 (U8S8), ORT's CPU default: its
x86 integer GEMMs (AVX2, AVX-512 VNNI) take unsigned activations and signed weights. Measured on this project's
AMD EPYC VM, ResNet-18 at batch 8 ran 2.5× faster than FP32 with U8S8 and 0.9× with int8 activations (S8S8), which
agreed with FP32 less. Ranges are MinMax over the calibration images, after ``quant_pre_process`` has inferred every
tensor's shape and fused what ORT fuses (Conv+BatchNorm, Gemm), so what is quantized is what ORT would run.

The gate: on held-out images with labels, INT8 accuracy may fall at most ``max_drop`` (absolute) below FP32's;
without labels, INT8 must agree with FP32's top-1 on at least ``1 - max_drop`` of them. The new version is staged
and moved into place only after the gate passed, so a refusal leaves the repository as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from export import calibration
from export.errors import ExportError
from export.int8_check import Comparison, compare, gate, speed
from service.repository import (
    MODEL_FILENAME,
    ConfigError,
    ModelConfig,
    VersionInfo,
    file_sha256,
    load_model_config,
    model_config_from_dict,
    version_dirs,
)

DEFAULT_MAX_DROP = 0.01
#: What the report records under ``quantization``: the settings ``quantize_onnx`` passes to ORT.
SETTINGS = {
    "method": "onnxruntime.quantization.quantize_static",
    "format": "QDQ",
    "per_channel": True,
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "reduce_range": False,
    "calibrate_method": "MinMax",
    "pre_process": "quant_pre_process",
}


class _Reader(CalibrationDataReader):
    """Feeds the calibration inputs to ORT's calibrator in batches the model accepts."""

    def __init__(self, name: str, inputs: npt.NDArray[np.generic], batch: int) -> None:
        self._batches: Iterator[dict[str, npt.NDArray[np.generic]]] = iter(
            {name: inputs[i : i + batch]} for i in range(0, len(inputs), batch)
        )

    def get_next(self) -> dict[str, npt.NDArray[np.generic]] | None:
        return next(self._batches, None)


def quantize_onnx(source: Path, target: Path, inputs: npt.NDArray[np.generic], batch: int) -> None:
    """Write ``source`` quantized as ``SETTINGS`` say to ``target``, calibrated on ``inputs`` (N, C, H, W)."""
    name = onnx.load(str(source), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="quantize-") as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            _Reader(name, inputs, batch),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=False,
        )


def _source(model_dir: Path) -> tuple[ModelConfig, str, Path]:
    """The model's config, its newest version and that version's model file; refuses what cannot be quantized."""
    if not model_dir.is_dir():
        raise ExportError("repository", f"no model {model_dir.name!r} in {model_dir.parent}")
    try:
        config = load_model_config(model_dir)
    except ConfigError as err:
        raise ExportError("repository", str(err)) from err
    versions = version_dirs(model_dir)
    if not versions:
        raise ExportError("repository", f"{model_dir} has no version folder holding a {MODEL_FILENAME}")
    version, path = list(versions.items())[-1]
    types = {t.data_type for t in (*config.input, *config.output)}
    if types != {"TYPE_FP32"}:
        raise ExportError("precision", f"{config.name} has {sorted(types)} tensors; quantize takes FP32 in and out")
    info = config.versions.get(version)
    # The typed graph_precision is what the service goes by (an fp16 graph); the report says int8 for a version
    # quantized already, whose graph is fp32 at its edges.
    precision = "fp32" if info is None else info.graph_precision
    if precision == "fp32" and info is not None:
        precision = info.export_report.get("precision", "fp32")
    if precision != "fp32":
        raise ExportError("precision", f"{config.name} version {version} is {precision}; quantize takes an fp32 graph")
    return config, version, path


def quantize(
    name: str,
    repository: Path,
    source: str,
    *,
    samples: int | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
    version: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Quantize ``name``'s newest version and write it as the next one; returns the new model file and its report.

    Raises:
        ExportError: the model, the calibration images or the gate refused; nothing is written.
    """
    # Imported here: export.pipeline and export.validate import torch, which the bench (reusing quantize_onnx,
    # compare and speed) does without.
    from export.pipeline import next_version, publish, step
    from export.validate import load_session

    if not 0 <= max_drop < 1:
        raise ExportError("accuracy", f"--max-accuracy-drop {max_drop:g} must lie in [0, 1)")
    model_dir = repository / name
    config, source_version, fp32_path = _source(model_dir)
    new_version = next_version(model_dir, config, version)
    batch = config.max_batch_size
    with step(1, 4, f"preprocessing the calibration images ({source})"):
        images = calibration.load(source, config, samples)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=repository))
    try:
        int8_path = staging / MODEL_FILENAME
        with step(2, 4, f"quantizing version {source_version} on {len(images.calibration)} images"):
            try:
                quantize_onnx(fp32_path, int8_path, images.calibration, batch)
            except Exception as err:  # ORT raises its own types, and ValueError/KeyError on graphs it cannot handle
                raise ExportError("quantize", f"ONNX Runtime could not quantize {fp32_path}: {err!r}") from err
        with step(3, 4, f"comparing INT8 with FP32 on {len(images.holdout)} held-out images"):
            fp32, int8 = load_session(fp32_path), load_session(int8_path)
            result = compare(fp32, int8, images, batch)
            gated = gate(result, max_drop)
            timing = speed(fp32, int8, images.holdout, batch)
        report = _report(config, source_version, images, result, gated, timing, fp32_path, int8_path)
        info = VersionInfo(file_sha256(int8_path), report)
        merged = replace(config, versions={**config.versions, new_version: info})
        try:  # the written file must satisfy the same contract the service reads
            merged = model_config_from_dict(merged.to_dict(), source=f"quantization of {name}")
        except ConfigError as err:
            raise ExportError("config", str(err)) from err
        with step(4, 4, f"moving into {model_dir}/{new_version}"):
            publish(staging, model_dir, new_version, merged)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model_dir / new_version / MODEL_FILENAME, report


def _report(
    config: ModelConfig,
    source_version: str,
    images: calibration.CalibrationSet,
    result: Comparison,
    gated: dict[str, Any],
    timing: dict[str, Any],
    fp32_path: Path,
    int8_path: Path,
) -> dict[str, Any]:
    """The new version's ``export_report``: what was done, on what, and what it kept."""
    source_report = config.versions[source_version].export_report if source_version in config.versions else {}
    fp32_bytes, int8_bytes = fp32_path.stat().st_size, int8_path.stat().st_size
    return {
        "architecture": source_report.get("architecture", "unknown"),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
        "precision": "int8",
        "quantization": dict(SETTINGS),
        "source_version": source_version,
        "calibration": {"source": images.source, "count": len(images.calibration), "split": images.split},
        "holdout": {
            "count": result.size,
            "labelled": result.fp32_accuracy is not None,
            "fp32_accuracy": result.fp32_accuracy,
            "int8_accuracy": result.int8_accuracy,
            "top1_agreement": result.agreement,
        },
        "gate": gated,
        "size_bytes": {"fp32": fp32_bytes, "int8": int8_bytes, "ratio": fp32_bytes / int8_bytes},
        "speed": {**timing, "method": "alternating session.run in one process, median of each"},
    }


def describe(path: Path, report: dict[str, Any]) -> str:
    """The one-line result the CLI prints: where the model went and what it kept, in size and speed."""
    held, size, timing = report["holdout"], report["size_bytes"], report["speed"]
    kept = (
        f"held-out accuracy {held['int8_accuracy']:.2%} (FP32 {held['fp32_accuracy']:.2%}), "
        if held["labelled"]
        else ""
    )
    return (
        f"wrote {path}: INT8 {kept}top-1 agreement {held['top1_agreement']:.2%} on {held['count']} images; "
        f"{size['int8']:,} vs {size['fp32']:,} bytes; {timing['int8_speedup']:.2f}× FP32's speed at batch "
        f"{timing['batch']} (median of {timing['runs']} alternating runs)"
    )
