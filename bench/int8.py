"""FP32 against INT8 in raw ONNX Runtime, for ResNet-18 and LeNet-5: speed, size, and what the INT8 model kept.

Each model's version 1 is quantized as ``python -m export quantize`` does (``export.quantize.quantize_onnx``, the
same settings), into a temporary folder: the bench repository is left as it is, so its servers keep serving FP32.
LeNet-5 calibrates on the digits' training split and is checked on the held-out split, with labels; ResNet-18
(untrained weights, so no accuracy) on 224×224 crops of scikit-image's photographs, checked by top-1 agreement.
Both models then run the same batch in one process, alternating, with the raw ORT benchmark's session settings.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench import images, models, raw_ort
from export import calibration
from export.int8_check import compare, speed
from export.quantize import quantize_onnx
from service.repository import load_model_config

#: The models compared, and what each calibrates on (``digits``, or a folder made by ``crops``).
MODELS = ("lenet5_digits", "resnet18")
#: Calibration images: every one of the photo crops, a few hundred digits.
SAMPLES = 256
#: Photo crops per photograph (the centre and two opposite corners): 24 images, 19 to calibrate and 5 to check.
CORNERS = ((0.5, 0.5), (0.0, 0.0), (1.0, 1.0))


@dataclass(frozen=True)
class Int8Result:
    """One model, FP32 against INT8: calibration, held-out check, file sizes and the timed runs."""

    model: str
    calibration: str
    calibration_count: int
    holdout_count: int
    fp32_accuracy: float | None  # None: no labels (untrained ResNet-18)
    int8_accuracy: float | None
    agreement: float
    fp32_bytes: int
    int8_bytes: int
    speed: dict[str, Any]  # export.int8_check.speed: batch, runs, medians, int8_speedup
    seconds: float  # quantizing and measuring, all in

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def crops(folder: Path, size: int = 224) -> Path:
    """``folder`` filled with ``size``×``size`` JPEG crops of each photograph, shorter side scaled to 1.4×``size``."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    for name in images.PHOTOS:
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        scale = 1.4 * size / min(photo.size)
        photo = photo.resize((round(photo.width * scale), round(photo.height * scale)))
        for i, (fx, fy) in enumerate(CORNERS):
            path = folder / f"{name}-{i}.jpg"
            if not path.exists():
                left, top = round((photo.width - size) * fx), round((photo.height - size) * fy)
                box = photo.crop((left, top, left + size, top + size))
                path.write_bytes(images.jpeg_bytes(np.asarray(box)))
    return folder


def measure(repository: Path, model: str, source: str, runs: int) -> Int8Result:
    """Quantize ``model``'s version 1 calibrated on ``source`` and compare it with FP32 over ``runs`` timed runs."""
    started = time.monotonic()
    config = load_model_config(repository / model)
    fp32_path = models.model_file(repository, model)
    held = calibration.load(source, config, SAMPLES)
    setting = raw_ort.ThreadSetting(len(os.sched_getaffinity(0)), True)
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as work:
        int8_path = Path(work) / "model.onnx"
        quantize_onnx(fp32_path, int8_path, held.calibration, config.max_batch_size)
        fp32, int8 = raw_ort.session(fp32_path, setting), raw_ort.session(int8_path, setting)
        result = compare(fp32, int8, held, config.max_batch_size)
        timing = speed(fp32, int8, held.holdout, config.max_batch_size, runs)
        int8_bytes = int8_path.stat().st_size
    return Int8Result(
        model=model,
        calibration=source if source == calibration.DIGITS else "photo crops",
        calibration_count=len(held.calibration),
        holdout_count=result.size,
        fp32_accuracy=result.fp32_accuracy,
        int8_accuracy=result.int8_accuracy,
        agreement=result.agreement,
        fp32_bytes=fp32_path.stat().st_size,
        int8_bytes=int8_bytes,
        speed=timing,
        seconds=time.monotonic() - started,
    )


def measure_all(repository: Path, cache: Path, chosen: tuple[str, ...], runs: int) -> tuple[Int8Result, ...]:
    """``measure`` for each model of ``MODELS`` that the run includes."""
    sources = {"lenet5_digits": calibration.DIGITS, "resnet18": str(crops(cache / "images" / "int8-224"))}
    return tuple(measure(repository, model, sources[model], runs) for model in MODELS if model in chosen)


def markdown(results: tuple[Int8Result, ...]) -> list[str]:
    """The FP32-against-INT8 table, one row per model."""
    if not results:
        return []

    def accuracy(value: float | None) -> str:
        return "-" if value is None else f"{value:.2%}"

    lines = [
        "## FP32 against static INT8 (raw ONNX Runtime, `export.quantize` settings: QDQ, per-channel, U8S8)",
        "",
        "The same batch through both models in one process, alternating; medians. Accuracy and top-1 agreement on "
        "held-out images (ResNet-18 has untrained weights: agreement only).",
        "",
        "| model | batch × runs | FP32 ms | INT8 ms | INT8 speed-up | FP32 bytes | INT8 bytes | calibration | "
        "held-out | FP32 acc | INT8 acc | top-1 agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.speed
        lines.append(
            f"| {r.model} | {s['batch']} × {s['runs']} | {s['fp32_median_ms']:.2f} | {s['int8_median_ms']:.2f} | "
            f"{s['int8_speedup']:.2f}× | {r.fp32_bytes:,} | {r.int8_bytes:,} | {r.calibration_count} "
            f"({r.calibration}) | {r.holdout_count} | {accuracy(r.fp32_accuracy)} | {accuracy(r.int8_accuracy)} | "
            f"{r.agreement:.2%} |"
        )
    return [*lines, ""]
