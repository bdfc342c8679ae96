"""``fidelity: fast``, the default: a JPEG at least twice the resize target decodes at 1/2, 1/4 or 1/8 scale, and an
image that is enlarged is resized by OpenCV; both stay within a stated budget of the exact path (``FAST_BUDGET``).

Measured on scikit-image's colour photographs at their own sizes and as the 224x224 JPEGs the bench sends, on a
generated set from 640x480 to 4032x3024, and as top-1 agreement of the trained LeNet-5 on the held-out digits. The
figures are printed.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from bench.images import jpeg_bytes, square_jpeg
from service.image_decode import _scale_factor
from service.preprocess import FAST_BUDGET, ImageTransform, preprocess
from service.repository import ConfigError, Preprocessing, load_model_config, model_config_from_dict

skimage_data = pytest.importorskip("skimage.data")

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
GENERATED = ((640, 480), (1024, 768), (2048, 1536), (4032, 3024))
IMAGENET = Preprocessing(resize=256, crop=(224, 224))
MAX_PIXELS = 40_000_000
LENET = Path(__file__).resolve().parents[2] / "models" / "lenet5_digits"


def _generated(width: int, height: int, seed: int) -> bytes:
    """A photo-like picture: smooth colour fields, a sharp-edged shape, and sensor-like noise."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    planes = np.stack([np.sin(6 * x + seed) / 2 + 0.5, np.cos(5 * y - seed) / 2 + 0.5, (x * y * 4) % 1], axis=-1)
    planes[(x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.02] = (0.9, 0.1, 0.2)
    planes += np.random.default_rng(seed).normal(0, 0.03, planes.shape)
    return jpeg_bytes((np.clip(planes, 0, 1) * 255).astype(np.uint8))


def _images() -> dict[str, bytes]:
    images = {name: jpeg_bytes(getattr(skimage_data, name)()) for name in PHOTOS}
    images |= {f"{name} 224x224": square_jpeg(getattr(skimage_data, name)(), 224) for name in PHOTOS}
    images |= {f"generated {w}x{h}": _generated(w, h, seed) for seed, (w, h) in enumerate(GENERATED)}
    return images


def _both(pre: Preprocessing) -> tuple[ImageTransform, ImageTransform]:
    return ImageTransform.from_config(pre), ImageTransform.from_config(dataclasses.replace(pre, fidelity="exact"))


def test_the_fast_path_stays_within_its_budget_of_the_exact_path() -> None:
    fast, exact = _both(IMAGENET)
    assert (fast.jpeg_min_side, fast.fast, exact.jpeg_min_side, exact.fast) == (IMAGENET.resize, True, 0, False)
    max_budget, mean_budget = FAST_BUDGET
    one_level = float(np.abs(fast.scale).max())  # a level of 255, in normalised units
    print()
    for name, data in _images().items():
        width, height = Image.open(io.BytesIO(data)).size
        difference = np.abs(preprocess(data, fast, MAX_PIXELS) - preprocess(data, exact, MAX_PIXELS))
        factor = _scale_factor(width, height, IMAGENET.resize)
        print(f"{name:24} {width}x{height} at 1/{factor}: max {difference.max():.3f}, mean {difference.mean():.4f}")
        if min(width, height) < IMAGENET.resize:  # enlarged by OpenCV: its rounding differs by a level at most
            assert difference.max() <= one_level * 1.001, name
        elif factor == 1:  # shrunk by Pillow from every pixel: the exact path's own arithmetic
            assert difference.max() == 0, f"{name} is under twice the resize target yet was not preprocessed exactly"
        else:
            assert difference.max() <= max_budget, name
        assert difference.mean() <= mean_budget, name


def test_the_trained_lenet_answers_the_same_on_both_paths() -> None:
    digits = pytest.importorskip("export.digits")
    config = load_model_config(LENET)
    assert config.preprocessing is not None
    assert config.preprocessing.fidelity == "fast"
    fast, exact = _both(config.preprocessing)
    session = ort.InferenceSession(str(LENET / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    _, _, images, labels = digits.split()
    encoded = [digits.to_png(image) for image in images]
    top1 = {}
    for name, transform in (("fast", fast), ("exact", exact)):
        batch = np.stack([preprocess(png, transform, MAX_PIXELS) for png in encoded])
        top1[name] = session.run(None, {config.input[0].name: batch})[0].argmax(axis=1)
    agreement = float(np.mean(top1["fast"] == top1["exact"]))
    accuracy = {name: float(np.mean(answers == labels)) for name, answers in top1.items()}
    print(f"\n{len(encoded)} held-out digits: top-1 agreement {agreement:.2%}, accuracy {accuracy}")
    assert agreement >= 0.99
    assert accuracy["fast"] >= accuracy["exact"] - 0.01


@pytest.mark.parametrize(
    ("pre", "source"),
    [
        (dataclasses.replace(IMAGENET, interpolation="bicubic"), (300, 200)),  # OpenCV's bicubic is not Pillow's
        (IMAGENET, (40, 4000)),  # resized whole, the long axis would pass 16 times the target: the bounded path
        (Preprocessing(resize=20, crop=(24, 24)), (30, 20)),  # the crop is larger than the image: padded
    ],
)
def test_what_the_fast_path_does_not_take_is_preprocessed_exactly(pre: Preprocessing, source: tuple[int, int]) -> None:
    data = _generated(*source, seed=7)
    fast, exact = _both(pre)
    np.testing.assert_array_equal(preprocess(data, fast, MAX_PIXELS), preprocess(data, exact, MAX_PIXELS))


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


def test_config_json_chooses_the_path_and_fast_is_the_default() -> None:
    def fidelity(preprocessing: dict[str, object]) -> str:
        pre = model_config_from_dict(_config(preprocessing)).preprocessing
        assert pre is not None
        return pre.fidelity

    assert fidelity({}) == "fast"
    assert fidelity({"fidelity": "exact"}) == "exact"
    assert fidelity({"jpeg_decode": "scaled"}) == "fast"  # the field's name in configs written before
    assert fidelity({"jpeg_decode": "exact"}) == "exact"
    with pytest.raises(ConfigError, match="fidelity"):
        fidelity({"fidelity": "scaled"})
    with pytest.raises(ConfigError, match="jpeg_decode"):
        fidelity({"jpeg_decode": "fast"})
