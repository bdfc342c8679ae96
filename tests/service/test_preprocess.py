"""Preprocessing parity with torchvision on real photos, decode failures, decompression bombs, softmax and top-k."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from service.image_decode import ImageError, ImageTooLarge, declared_pixels, decode
from service.preprocess import PARITY_TOLERANCE, ImageTransform, preprocess, softmax, top_k
from service.repository import Preprocessing

T = pytest.importorskip("torchvision.transforms")
skimage_data = pytest.importorskip("skimage.data")

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")  # camera is greyscale
#: torchvision parity is the exact path's promise (``fidelity: exact``); the fast default has its own budget,
#: tested in test_fast_path.py.
CONFIGS = {
    "imagenet_224": Preprocessing(resize=256, crop=(224, 224), fidelity="exact"),
    "digits_inverted": Preprocessing(
        resize=32, crop=(32, 32), color_mode="L", mean=(0.3057,), std=(0.3235,), invert=True, fidelity="exact"
    ),
    "cifar_bicubic_wide_crop": Preprocessing(resize=40, crop=(24, 48), interpolation="bicubic", fidelity="exact"),
    "crop_larger_than_image": Preprocessing(resize=33, crop=(40, 36), fidelity="exact"),
}


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def torchvision_reference(data: bytes, pre: Preprocessing) -> np.ndarray:
    """What a PyTorch user writes: Image.open → convert → Resize(int) → CenterCrop → ToTensor → Normalize."""
    mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[pre.interpolation]
    steps = [T.Resize(pre.resize, interpolation=mode), T.CenterCrop(list(pre.crop)), T.ToTensor()]
    if pre.invert:
        steps.append(T.Lambda(lambda x: 1 - x))
    steps.append(T.Normalize(pre.mean, pre.std))
    image = Image.open(io.BytesIO(data)).convert(pre.color_mode)
    return T.Compose(steps)(image).numpy()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("photo", PHOTOS)
def test_matches_torchvision_within_the_stated_tolerance(photo: str, config: str, fmt: str) -> None:
    pre = CONFIGS[config]
    data = encode(getattr(skimage_data, photo)(), fmt)
    expected = torchvision_reference(data, pre)
    got = preprocess(data, ImageTransform.from_config(pre), max_pixels=10**8)
    assert got.shape == expected.shape
    assert got.dtype == np.float32
    error = float(np.abs(got - expected).max())
    assert error <= PARITY_TOLERANCE, f"max abs error {error} above {PARITY_TOLERANCE}"


def test_non_square_portrait_keeps_torchvision_rounding() -> None:
    portrait = np.ascontiguousarray(skimage_data.astronaut()[:, 100:413])  # 512 x 313: long side rounds down
    pre = Preprocessing(resize=100, crop=(90, 60))
    data = encode(portrait, "PNG")
    got = preprocess(data, ImageTransform.from_config(pre), max_pixels=10**8)
    assert np.abs(got - torchvision_reference(data, pre)).max() <= PARITY_TOLERANCE


def test_truncated_jpeg_is_an_image_error() -> None:
    data = encode(skimage_data.astronaut(), "JPEG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode(data[: len(data) // 2], "RGB", 10**8)


def test_truncated_png_is_an_image_error() -> None:
    data = encode(skimage_data.coffee(), "PNG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode(data[: len(data) // 2], "RGB", 10**8)


def test_bytes_that_are_no_image_say_which_formats_are_expected() -> None:
    with pytest.raises(ImageError, match="cannot identify an image in 11 bytes; send JPEG, PNG"):
        decode(b"hello world", "RGB", 10**8)


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height pixels, with a tiny (truncated) compressed body."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_images_above_the_pixel_limit_are_refused_before_decoding(fmt: str) -> None:
    data = encode(skimage_data.camera(), fmt)  # 512 x 512 = 262144 pixels
    with pytest.raises(ImageTooLarge, match="512x512 = 262144 pixels, the limit is 262143"):
        decode(data, "L", max_pixels=262143)


@pytest.mark.parametrize("side", [7000, 10000, 60000])  # below, between and above Pillow's own two thresholds
def test_decompression_bomb_header_is_refused_without_decoding(side: int) -> None:
    with pytest.raises(ImageTooLarge, match=f"{side * side}"):
        decode(_png_bomb(side, side), "L", max_pixels=40_000_000)


def test_softmax_is_stable_for_large_logits() -> None:
    scores = softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(scores, [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-6)


def test_top_k_orders_best_first_and_breaks_ties_by_index() -> None:
    indices, values = top_k(np.array([[0.1, 0.4, 0.4, 0.1]]), 3)
    assert indices.tolist() == [[1, 2, 0]]
    np.testing.assert_allclose(values, [[0.4, 0.4, 0.1]])


def test_pillow_keeps_freed_image_memory_for_reuse_once_configured_not_on_import() -> None:
    # Without a block cache every image is fresh memory from the kernel (page faults: a third of the time). The
    # setting is process-wide, so it is made at startup (configure_pillow), never as a side effect of an import.
    script = (
        "from PIL import Image; import service.image_decode as p; imported = Image.core.get_blocks_max(); "
        "p.configure_pillow(); print(imported, Image.core.get_blocks_max())"
    )
    env = {key: value for key, value in os.environ.items() if key != "PILLOW_BLOCKS_MAX"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    on_import, configured = map(int, done.stdout.split())
    assert on_import == 0
    assert configured >= 1


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16"])
@pytest.mark.parametrize(("width", "height"), [(8, 8), (3, 6_000_001 // 1000), (640, 1)])
def test_declared_pixels_of_a_png_are_read_from_its_header_as_pillow_reads_them(
    mode: str, width: int, height: int
) -> None:
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, "PNG")
    data = out.getvalue()
    with Image.open(io.BytesIO(data)) as image:
        assert declared_pixels(data) == image.width * image.height == width * height
    assert declared_pixels(data[:20]) is None  # the header cut short: Pillow cannot read it either
    assert declared_pixels(b"GIF89a" + data[6:]) is None  # no format that declares a size
