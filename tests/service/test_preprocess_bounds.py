"""Preprocessing memory is bounded by the model's input, not by the shape the client chose.

Hostile shapes (6,000,001×3, 1×N, huge images of every orientation, 1×1, smaller than the crop) and every decoder
mode path are each answered correctly or refused with their specific error. Each case prints its preprocessing
time and the peak size of its intermediates, measured from the images preprocessing makes (Pillow images, the
row pass inside Pillow's resize, simplejpeg's arrays) and numpy's allocations (tracemalloc), never from wall time.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import simplejpeg
from PIL import Image, ImageFile

from service.image_decode import ImageError, ImageTooLarge, decode
from service.preprocess import PARITY_TOLERANCE, ImageTransform, resize_crop_normalise
from service.repository import Preprocessing

MAX_PIXELS = 40_000_000  # CNNSERVE_MAX_IMAGE_PIXELS's default
CONFIGS = {
    "digits": Preprocessing(resize=32, crop=(32, 32), color_mode="L", mean=(0.3057,), std=(0.3235,)),
    "imagenet": Preprocessing(resize=256, crop=(224, 224)),
    "crop_larger_bicubic": Preprocessing(resize=33, crop=(40, 36), interpolation="bicubic"),
}
#: What preprocessing may hold after decoding, in pixels of the model's input side: a whole axis up to 16 times the
#: resize target (the exact path), plus the filter's margin; scaled by the shrink factor of images bigger than that.
WHOLE_AXIS_MAX = 16
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}  # Pillow's layouts


def image_bytes(image: Image.Image) -> int:
    return image.width * image.height * _BYTES_PER_PIXEL.get(image.mode, 4)


def transform_bound_bytes(pre: Preprocessing, width: int, height: int) -> int:
    """The largest intermediate resizing and cropping may make: 4 bytes a pixel, set by the model's input size."""
    side = max(pre.resize, *pre.crop) + 8
    shrink = max(1.0, min(width, height) / pre.resize)
    return int(4 * WHOLE_AXIS_MAX * side * side * shrink * shrink)


class Intermediates:
    """Spies (they call the real Pillow) recording the size of every image each preprocessing stage makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: dict[str, list[int]] = {"decode": [], "transform": []}
        self.stage: str | None = None  # recording only inside run(), not while a test makes its images
        self._loaded: list[Image.Image] = []  # load() runs again inside convert() and resize(): count images once
        self._spy(monkeypatch, ImageFile.ImageFile, "load", self._load_bytes)
        self._spy(monkeypatch, Image.Image, "convert", lambda _, out: image_bytes(out))
        self._spy(monkeypatch, Image.Image, "crop", lambda _, out: image_bytes(out))
        self._spy(monkeypatch, Image.Image, "resize", self._resize_bytes)
        self._spy(monkeypatch, Image, "fromarray", lambda _, out: image_bytes(out))
        self._spy(monkeypatch, simplejpeg, "decode_jpeg", lambda _, out: int(out.nbytes))

    def _spy(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, size: Callable[..., int]) -> None:
        original = getattr(owner, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if self.stage is not None:
                self.sizes[self.stage].append(size((args, kwargs), out))
            return out

        monkeypatch.setattr(owner, name, spy)

    def _load_bytes(self, call: tuple[tuple[Any, ...], dict[str, Any]], _: object) -> int:
        image = call[0][0]
        if any(seen is image for seen in self._loaded):
            return 0
        self._loaded.append(image)
        return image_bytes(image)

    @staticmethod
    def _resize_bytes(call: tuple[tuple[Any, ...], dict[str, Any]], out: Image.Image) -> int:
        """The output plus Pillow's row pass: output width × the source rows the vertical pass reads."""
        (source, (width, height), *_), box = call[0], call[1]["box"]
        scale = (box[3] - box[1]) / height
        rows = min(source.height, math.ceil(box[3] - box[1] + 2 * (2 * max(1.0, scale) + 1)))
        return image_bytes(out) + width * rows * _BYTES_PER_PIXEL.get(source.mode, 4)

    def run(self, data: bytes, pre: Preprocessing) -> tuple[np.ndarray, int, float]:
        """Preprocess; returns the output, numpy's traced peak while transforming, and the seconds it took."""
        started = time.perf_counter()
        self.stage = "decode"
        image = decode(data, pre.color_mode, MAX_PIXELS)
        self.stage = "transform"
        tracemalloc.start()
        try:
            out = resize_crop_normalise(image, ImageTransform.from_config(pre))
            numpy_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            self.stage = None
        return out, numpy_peak, time.perf_counter() - started


@pytest.fixture
def intermediates(monkeypatch: pytest.MonkeyPatch) -> Intermediates:
    return Intermediates(monkeypatch)  # monkeypatch takes the spies away after the test


@functools.cache
def png(width: int, height: int) -> bytes:
    """A uniform grey PNG: huge ones compress to kilobytes (6,000,001x3 is 17.6 KB)."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), 200).save(buffer, format="PNG")
    return buffer.getvalue()


def normalised(pre: Preprocessing, level: float) -> np.ndarray:
    """The values a uniform image of ``level`` becomes, per channel."""
    return (level / 255 - np.asarray(pre.mean)) / np.asarray(pre.std)


SMALL = sorted(CONFIGS)
SHAPES = [  # huge ones (a second or so each to decode) against the greyscale and the colour model only
    *[(6_000_001, 3, c) for c in ("digits", "imagenet")],
    *[(3, 6_000_001, c) for c in ("digits", "imagenet")],
    (40_000_000, 1, "digits"),
    (1, 4_000_000, "imagenet"),
    (8_000, 5_000, "imagenet"),
    (5_000, 8_000, "digits"),
    (6_324, 6_324, "digits"),
    *[(1, 1, c) for c in SMALL],
    *[(5, 3, c) for c in SMALL],
    *[(31, 2, c) for c in SMALL],
    *[(2, 4000, c) for c in SMALL],
]


@pytest.mark.parametrize(("width", "height", "config"), SHAPES)
def test_hostile_shapes_are_answered_within_a_bound_set_by_the_model_input(
    intermediates: Intermediates, width: int, height: int, config: str
) -> None:
    pre = CONFIGS[config]
    out, numpy_peak, seconds = intermediates.run(png(width, height), pre)
    decoded, transformed = intermediates.sizes["decode"], intermediates.sizes["transform"]
    bound = transform_bound_bytes(pre, width, height)
    print(
        f"{width}x{height} {config}: {seconds * 1e3:.0f} ms; decode peak {max(decoded)} B (source {width * height} px);"
        f" transform peak {max(transformed, default=0)} B, numpy {numpy_peak} B, bound {bound} B"
    )
    assert out.shape == (len(pre.mean), *pre.crop)
    inside, padding = normalised(pre, 200), normalised(pre, 0)
    centre = out[:, pre.crop[0] // 2, pre.crop[1] // 2]
    np.testing.assert_allclose(centre, inside, atol=PARITY_TOLERANCE)
    assert np.all(np.isclose(out, inside[:, None, None], atol=1e-5) | np.isclose(out, padding[:, None, None]))
    assert max(decoded) <= 4 * width * height
    assert max(transformed, default=0) <= bound
    assert numpy_peak <= bound


def test_one_pixel_row_too_many_is_refused_naming_the_dimensions_and_the_limit() -> None:
    with pytest.raises(ImageTooLarge, match="6000001x7 = 42000007 pixels, the limit is 40000000"):
        decode(png(6_000_001, 7), "L", MAX_PIXELS)


def _photo(width: int, height: int, mode: str = "RGB") -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(skimage_data.astronaut()).resize((width, height)).convert(mode)


def _torchvision(data: bytes, pre: Preprocessing) -> np.ndarray:
    transforms = pytest.importorskip("torchvision.transforms")
    mode = {"bilinear": transforms.InterpolationMode.BILINEAR, "bicubic": transforms.InterpolationMode.BICUBIC}
    steps = transforms.Compose(
        [
            transforms.Resize(pre.resize, interpolation=mode[pre.interpolation]),
            transforms.CenterCrop(list(pre.crop)),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]
    )
    return steps(Image.open(io.BytesIO(data)).convert(pre.color_mode)).numpy()


def _levels(error: np.ndarray, pre: Preprocessing) -> float:
    """An error in normalised units as uint8 levels of the source."""
    return float((error * np.asarray(pre.std).reshape(-1, 1, 1) * 255).max())


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize(("width", "height"), [(1500, 2), (2, 1500), (2000, 100), (100, 2000), (1600, 100)])
def test_extreme_aspect_ratios_stay_within_two_levels_of_torchvision(width: int, height: int, config: str) -> None:
    # Up to 16:1 (1600x100) the long axis is resized whole: torchvision's pixels exactly. Beyond, only the crop
    # window is, and Pillow rounds its window a little differently.
    pre = CONFIGS[config]
    buffer = io.BytesIO()
    _photo(width, height).save(buffer, format="PNG")
    data = buffer.getvalue()
    out = resize_crop_normalise(decode(data, pre.color_mode, MAX_PIXELS), ImageTransform.from_config(pre))
    error = np.abs(out - _torchvision(data, pre))
    print(f"{width}x{height} {config}: max error {error.max():.2e} = {_levels(error, pre):.2f} levels")
    if max(width, height) <= WHOLE_AXIS_MAX * min(width, height):
        assert error.max() <= PARITY_TOLERANCE
    assert _levels(error, pre) <= 2.0


def _encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


MODE_CASES: dict[str, Callable[[Image.Image], bytes]] = {
    "png_palette": lambda im: _encoded(im.convert("P"), "PNG"),
    "png_palette_transparency": lambda im: _encoded(im.convert("P"), "PNG", transparency=0),
    "png_grey_alpha": lambda im: _encoded(im.convert("LA"), "PNG"),
    "png_rgba": lambda im: _encoded(im.convert("RGBA"), "PNG"),
    "png_16bit": lambda im: _encoded(Image.fromarray(np.asarray(im.convert("L"), np.uint16) * 257), "PNG"),
    "png_bilevel": lambda im: _encoded(im.convert("1"), "PNG"),
    "jpeg_rgb": lambda im: _encoded(im, "JPEG"),
    "jpeg_grey": lambda im: _encoded(im.convert("L"), "JPEG"),
    "jpeg_cmyk": lambda im: _encoded(im.convert("CMYK"), "JPEG"),
    "tiff_cmyk": lambda im: _encoded(im.convert("CMYK"), "TIFF"),
    "tiff_32bit": lambda im: _encoded(im.convert("I"), "TIFF"),
    "tiff_float": lambda im: _encoded(im.convert("F"), "TIFF"),
    "gif": lambda im: _encoded(im, "GIF"),
    "webp_rgba": lambda im: _encoded(im.convert("RGBA"), "WEBP", lossless=True),
    "bmp_palette": lambda im: _encoded(im.convert("P"), "BMP"),
}


@pytest.mark.parametrize("config", ["digits", "imagenet"])
@pytest.mark.parametrize("case", sorted(MODE_CASES))
def test_every_mode_path_decodes_within_eight_bytes_a_pixel(
    intermediates: Intermediates, case: str, config: str
) -> None:
    pre = CONFIGS[config]
    width, height = 680, 40  # beyond 16:1: the windowed path
    data = MODE_CASES[case](_photo(width, height))
    out, numpy_peak, seconds = intermediates.run(data, pre)
    decoded = intermediates.sizes["decode"]
    levels = _levels(np.abs(out - _torchvision(data, pre)), pre)
    print(
        f"{case} -> {pre.color_mode}: {seconds * 1e3:.1f} ms; decode peak {max(decoded)} B, total {sum(decoded)} B "
        f"({sum(decoded) / (width * height):.1f} B/px); transform numpy {numpy_peak} B; {levels:.2f} levels"
    )
    assert sum(decoded) <= 8 * width * height
    assert max(intermediates.sizes["transform"]) <= transform_bound_bytes(pre, width, height)
    assert levels <= 2.0


def test_a_mode_pillow_cannot_convert_is_an_image_error_naming_both_modes() -> None:
    data = _encoded(_photo(40, 30).convert("LAB"), "TIFF")
    with pytest.raises(ImageError, match="cannot convert a LAB image to L"):
        decode(data, "L", MAX_PIXELS)
    assert decode(data, "RGB", MAX_PIXELS).mode == "RGB"


def _tiled_tiff(tile_width: int, tile_length: int, filled: bool) -> bytes:
    """A 1x1 greyscale TIFF stored as one deflate tile of the given size, its data whole or a mere 16 bytes."""
    payload = zlib.compress(b"\x80" * (tile_width * tile_length if filled else 16))
    tags = [(256, 1), (257, 1), (258, 8), (259, 8), (262, 1), (277, 1), (322, tile_width), (323, tile_length)]
    tags += [(324, 8 + 2 + 12 * (len(tags) + 2) + 4), (325, len(payload))]  # the tile's offset and byte count
    ifd = b"".join(struct.pack("<HHII", tag, 4, 1, value) for tag, value in tags)
    return b"II*\x00" + struct.pack("<IH", 8, len(tags)) + ifd + struct.pack("<I", 0) + payload


def test_a_tiff_tile_far_larger_than_its_image_is_refused_before_its_buffer_is_made(
    intermediates: Intermediates,
) -> None:
    # libtiff allocates a whole tile to decode into: this 150-byte file took 1 GiB and 2.4 s before the check.
    data = _tiled_tiff(65536, 16384, filled=False)
    with pytest.raises(ImageTooLarge, match="TIFF tile is 65536x16384 = 1073741824 pixels, the limit is 1048576"):
        intermediates.run(data, CONFIGS["digits"])
    assert len(data) < 200


def test_an_ordinary_tile_larger_than_a_small_image_still_decodes() -> None:
    image = decode(_tiled_tiff(256, 256, filled=True), "L", MAX_PIXELS)
    assert (image.size, image.getpixel((0, 0))) == ((1, 1), 0x80)
