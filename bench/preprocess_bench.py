"""The image path's first stage alone: ``service.preprocess.preprocess`` (JPEG decode, resize, crop, normalise).

Runs in this process on one thread, so images per CPU-second is the per-core figure the bar is stated in; the
wall-clock rate is reported too (they differ when the machine is busy).

``python -m bench.preprocess_bench`` compares the two paths (``fidelity``: Pillow's exact resize, or the DCT-scaled
JPEG decode and OpenCV's resize) for an ImageNet model's preprocessing, on scikit-image's photographs at their own
sizes and as the 224x224 JPEGs of the bench, one photograph at a time.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from service.image_decode import configure_pillow
from service.preprocess import ImageTransform, preprocess
from service.preprocess_fast import configure_opencv
from service.repository import Preprocessing, load_model_config


@dataclass(frozen=True)
class PreprocessResult:
    """Images preprocessed, per CPU-second (the bar's unit) and per wall-clock second, and of what."""

    images: int
    images_per_cpu_s: float
    images_per_s_wall: float
    mean_jpeg_bytes: int
    output_shape: list[int]


def measure(model_dir: Path, images: list[bytes], seconds: float, max_pixels: int = 40_000_000) -> PreprocessResult:
    """Preprocess ``images`` in turn for ``seconds`` with ``model_dir``'s preprocessing."""
    config = load_model_config(model_dir)
    if config.preprocessing is None:
        raise ValueError(f"{model_dir} has no preprocessing section; pick a model that takes images")
    return measure_transform(ImageTransform.from_config(config.preprocessing), images, seconds, max_pixels)


def measure_transform(
    pipe: ImageTransform, images: list[bytes], seconds: float, max_pixels: int = 40_000_000
) -> PreprocessResult:
    """Preprocess ``images`` in turn for ``seconds`` (at least one pass, at most 1,000,000 images)."""
    configure_pillow()
    configure_opencv()
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


def main() -> None:
    """Images per CPU-second on both paths, per photograph, at its own size and as a 224x224 JPEG (docstring)."""
    import skimage.data

    from bench.images import PHOTOS, jpeg_bytes, square_jpeg

    imagenet = Preprocessing(resize=256, crop=(224, 224))
    pipes = {d: ImageTransform.from_config(dataclasses.replace(imagenet, fidelity=d)) for d in ("exact", "fast")}
    print("images per CPU-second, resize 256 + centre crop 224, one thread")
    for name in PHOTOS:
        pixels = getattr(skimage.data, name)()
        for size, data in (
            (f"{pixels.shape[1]}x{pixels.shape[0]}", jpeg_bytes(pixels)),
            ("224x224", square_jpeg(pixels, 224)),
        ):
            rates = {d: measure_transform(pipe, [data], 1.0).images_per_cpu_s for d, pipe in pipes.items()}
            print(f"{name:22} {size:>9}: exact {rates['exact']:7,.0f}  fast {rates['fast']:7,.0f}")


if __name__ == "__main__":
    main()
