"""The image path's first stage alone: ``service.preprocess.preprocess`` (JPEG decode, resize, crop, normalise).

Runs in this process on one thread, so images per CPU-second is the per-core figure the bar is stated in; the
wall-clock rate is reported too (they differ when the machine is busy).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from service.preprocess import ImageTransform, configure_pillow, preprocess
from service.repository import load_model_config


@dataclass(frozen=True)
class PreprocessResult:
    """Images preprocessed, per CPU-second (the bar's unit) and per wall-clock second, and of what."""

    images: int
    images_per_cpu_s: float
    images_per_s_wall: float
    mean_jpeg_bytes: int
    output_shape: list[int]


def measure(model_dir: Path, images: list[bytes], seconds: float, max_pixels: int = 40_000_000) -> PreprocessResult:
    """Preprocess ``images`` in turn for ``seconds`` (at least one pass, at most 1,000,000 images)."""
    config = load_model_config(model_dir)
    if config.preprocessing is None:
        raise ValueError(f"{model_dir} has no preprocessing section; pick a model that takes images")
    configure_pillow()
    pipe = ImageTransform.from_config(config.preprocessing)
    for data in images:  # warm-up: first calls load codecs
        preprocess(data, pipe, max_pixels)
    count = 0
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    while (count < len(images) or time.perf_counter() - wall0 < seconds) and count < 1_000_000:
        preprocess(images[count % len(images)], pipe, max_pixels)
        count += 1
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    return PreprocessResult(
        images=count,
        images_per_cpu_s=count / cpu,
        images_per_s_wall=count / wall,
        mean_jpeg_bytes=sum(len(d) for d in images) // len(images),
        output_shape=list(preprocess(images[0], pipe, max_pixels).shape),
    )
