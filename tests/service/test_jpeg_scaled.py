"""``jpeg_decode: scaled``: a JPEG at least twice the resize target decodes at 1/2, 1/4 or 1/8 scale, within a stated
budget of the exact path, and smaller ones decode exactly as before.

The budget (``JPEG_SCALED_BUDGET``) is checked on scikit-image's colour photographs at their own sizes and on a
generated set from 640x480 to 4032x3024, for an ImageNet model's preprocessing. The figures are printed.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from service.image_decode import _scale_factor
from service.preprocess import JPEG_SCALED_BUDGET, ImageTransform, preprocess
from service.repository import ConfigError, Preprocessing, model_config_from_dict

skimage_data = pytest.importorskip("skimage.data")

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
GENERATED = ((640, 480), (1024, 768), (2048, 1536), (4032, 3024))
IMAGENET = Preprocessing(resize=256, crop=(224, 224))
MAX_PIXELS = 40_000_000


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _generated(width: int, height: int, seed: int) -> bytes:
    """A photo-like picture: smooth colour fields, a sharp-edged shape, and sensor-like noise."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    planes = np.stack([np.sin(6 * x + seed) / 2 + 0.5, np.cos(5 * y - seed) / 2 + 0.5, (x * y * 4) % 1], axis=-1)
    planes[(x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.02] = (0.9, 0.1, 0.2)
    planes += np.random.default_rng(seed).normal(0, 0.03, planes.shape)
    return _jpeg((np.clip(planes, 0, 1) * 255).astype(np.uint8))


def _images() -> dict[str, bytes]:
    images = {name: _jpeg(getattr(skimage_data, name)()) for name in PHOTOS}
    images |= {f"generated {w}x{h}": _generated(w, h, seed) for seed, (w, h) in enumerate(GENERATED)}
    return images


def test_scaled_decoding_stays_within_its_budget_of_the_exact_path() -> None:
    scaled = ImageTransform.from_config(IMAGENET)
    exact = ImageTransform.from_config(dataclasses.replace(IMAGENET, jpeg_decode="exact"))
    assert (scaled.jpeg_min_side, exact.jpeg_min_side) == (IMAGENET.resize, 0)
    max_budget, mean_budget = JPEG_SCALED_BUDGET
    print()
    for name, data in _images().items():
        width, height = Image.open(io.BytesIO(data)).size
        difference = np.abs(preprocess(data, scaled, MAX_PIXELS) - preprocess(data, exact, MAX_PIXELS))
        factor = _scale_factor(width, height, IMAGENET.resize)
        print(f"{name:24} {width}x{height} at 1/{factor}: max {difference.max():.3f}, mean {difference.mean():.4f}")
        if factor == 1:
            assert difference.max() == 0, f"{name} is under twice the resize target yet did not decode exactly"
        else:
            assert difference.max() <= max_budget, name
            assert difference.mean() <= mean_budget, name


@pytest.mark.parametrize(
    ("width", "height", "factor"),
    [(511, 600, 1), (512, 512, 2), (1023, 2000, 2), (1024, 1024, 4), (2048, 4096, 8), (8000, 6000, 8), (100, 50, 1)],
)
def test_the_scale_is_a_power_of_two_that_keeps_both_sides_at_least_the_target(
    width: int, height: int, factor: int
) -> None:
    assert _scale_factor(width, height, 256) == factor
    assert _scale_factor(width, height, 0) == 1  # exact decoding asks for no scale


def _config(preprocessing: dict[str, object]) -> dict[str, object]:
    return {
        "name": "m",
        "max_batch_size": 1,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [3, 224, 224]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [10]}],
        "preprocessing": {"resize": 256, "crop": [224, 224], **preprocessing},
    }


def test_config_json_chooses_the_decoding_and_scaled_is_the_default() -> None:
    def decoding(preprocessing: dict[str, object]) -> str:
        pre = model_config_from_dict(_config(preprocessing)).preprocessing
        assert pre is not None
        return pre.jpeg_decode

    assert decoding({}) == "scaled"
    assert decoding({"jpeg_decode": "exact"}) == "exact"
    with pytest.raises(ConfigError, match="jpeg_decode"):
        decoding({"jpeg_decode": "fast"})
