"""PNG decoding: small plain PNGs (``service/png_plain.py``) decode with OpenCV to Pillow's pixels exactly; every
other PNG, damaged ones included, is Pillow's, with Pillow's answer, and libpng never writes to the log."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from service import png_plain
from service.image_decode import ImageError, ImageTooLarge, _decode_with_pillow, decode_lean

MAX_PIXELS = 40_000_000
_RNG = np.random.default_rng(7)
_GREY = _RNG.integers(0, 256, (37, 53), dtype=np.uint8)
_RGB = _RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)


def _png(pixels: np.ndarray, mode: str, **options: Any) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, "PNG", **options)
    return out.getvalue()


def _chunks(*names: bytes) -> PngImagePlugin.PngInfo:
    """Ancillary chunks that change nothing in Pillow's pixels: gamma, sRGB intent, text."""
    info = PngImagePlugin.PngInfo()
    payloads = {b"gAMA": struct.pack(">I", 100_000), b"sRGB": b"\x00", b"tEXt": b"k\x00v"}
    for name in names:
        info.add(name, payloads[name])
    return info


def _chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def _pillow(data: bytes, mode: str) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert(mode)).reshape(image.height, image.width, -1)


def _split_idat(data: bytes, parts: int) -> bytes:
    """The same PNG with its pixel stream spread over ``parts`` IDAT chunks, as larger encoders write it."""
    at = data.index(b"IDAT") - 4
    length = int.from_bytes(data[at : at + 4], "big")
    stream, step = data[at + 8 : at + 8 + length], -(-length // parts)
    chunks = b"".join(_chunk(b"IDAT", stream[i : i + step]) for i in range(0, length, step))
    return data[:at] + chunks + data[at + 12 + length :]


#: (PNG, mode) that OpenCV decodes: small plain PNGs already in the mode.
OPENCV = {
    "grey": (_png(_GREY, "L"), "L"),
    "1x1 grey": (_png(_GREY[:1, :1], "L"), "L"),
    "RGB": (_png(_RGB, "RGB"), "RGB"),
    "grey, stored uncompressed": (_png(_GREY, "L", compress_level=0), "L"),
    "grey, pixel stream in three IDAT chunks": (_split_idat(_png(_GREY, "L"), 3), "L"),
}
#: (PNG, mode) that Pillow decodes and converts.
PILLOW = {
    "RGB as grey": (_png(_RGB, "RGB"), "L"),
    "grey as RGB": (_png(_GREY, "L"), "RGB"),
    "palette": (_png(_RGB, "P"), "RGB"),
    "grey with a transparent level": (_png(_GREY, "L", transparency=5), "L"),
    "gamma, sRGB and text chunks": (_png(_GREY, "L", pnginfo=_chunks(b"gAMA", b"sRGB", b"tEXt")), "L"),
    "RGBA as RGB": (_png(np.dstack([_RGB, _GREY]), "RGBA"), "RGB"),
    "1-bit grey": (_png(_GREY, "1"), "L"),
    "16-bit grey": (_png(_GREY.astype(np.uint16) * 257, "I;16"), "L"),
    "animated": (_png(_GREY, "L", save_all=True, append_images=[Image.fromarray(255 - _GREY)]), "L"),
    "wider than libpng takes": (_png(np.zeros((1, 1_000_001), np.uint8), "L"), "L"),
    "over 64 KiB": (_png(np.random.default_rng(1).integers(0, 256, (300, 300), dtype=np.uint8), "L"), "L"),
}


@pytest.mark.parametrize("name", OPENCV)
def test_small_plain_pngs_decode_with_opencv_to_pillows_pixels(name: str) -> None:
    data, mode = OPENCV[name]
    pixels = decode_lean(data, mode, MAX_PIXELS)
    assert isinstance(pixels, np.ndarray), "expected OpenCV's array, got Pillow's image"
    assert pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous
    np.testing.assert_array_equal(pixels, _pillow(data, mode))


@pytest.mark.parametrize("name", PILLOW)
def test_every_other_png_is_pillows_and_libpng_says_nothing(name: str, capfd: pytest.CaptureFixture[str]) -> None:
    data, mode = PILLOW[name]
    image = decode_lean(data, mode, MAX_PIXELS)
    assert isinstance(image, Image.Image)
    assert image.mode == mode
    np.testing.assert_array_equal(np.asarray(image).reshape(image.height, image.width, -1), _pillow(data, mode))
    assert capfd.readouterr() == ("", "")


def _rebuilt(data: bytes, stream: bytes | None = None, crc_ok: bool = True, after: bytes = b"") -> bytes:
    """The grey PNG with its pixel stream replaced (one IDAT), its checksum broken, or chunks before IEND."""
    at = data.index(b"IDAT") - 4
    length = int.from_bytes(data[at : at + 4], "big")
    idat = _chunk(b"IDAT", data[at + 8 : at + 8 + length] if stream is None else stream)
    if not crc_ok:
        idat = idat[:-4] + bytes(b ^ 0xFF for b in idat[-4:])
    return data[:at] + idat + after + data[at + 12 + length :]


_SCANLINES = b"".join(b"\x00" + row.tobytes() for row in _GREY)
#: Damaged PNGs that libpng would complain about on standard error; each must reach Pillow, not OpenCV.
DAMAGED = {
    "truncated in the pixels": lambda d: d[: len(d) // 2],
    "truncated in the header": lambda d: d[:30],
    "no IEND": lambda d: d[:-12],
    "bytes after IEND": lambda d: d + b"\x00",
    "pixel checksum broken": lambda d: _rebuilt(d, crc_ok=False),
    "pixel stream not zlib": lambda d: _rebuilt(d, b"\x00" * 64),
    "pixel stream short": lambda d: _rebuilt(d, zlib.compress(_SCANLINES[:-10])),
    "pixel stream long": lambda d: _rebuilt(d, zlib.compress(_SCANLINES + b"\x00" * 54)),
    "bytes after the pixel stream": lambda d: _rebuilt(d, zlib.compress(_SCANLINES) + b"\x00"),
    "pixel stream's own checksum broken": lambda d: _rebuilt(d, zlib.compress(_SCANLINES)[:-1] + b"\x00"),
    "unknown row filter": lambda d: _rebuilt(d, zlib.compress(b"\x05" + _SCANLINES[1:])),
    "an IDAT after the stream ended": lambda d: _rebuilt(d, after=_chunk(b"IDAT", b"")),
    "a text chunk with a broken checksum": lambda d: _rebuilt(d, after=_chunk(b"tEXt", b"k\x00v")[:-1] + b"\x00"),
}


def _outcome(decoder: Any, data: bytes) -> str | list[Any]:
    """The grey pixels a decoder gives, or its error's message (Pillow decodes what it can: it does not check every
    checksum)."""
    try:
        return np.asarray(decoder(data, "L", MAX_PIXELS)).reshape(37, 53).tolist()
    except ImageError as err:
        return str(err)


@pytest.mark.parametrize("name", DAMAGED)
def test_a_damaged_png_never_reaches_opencv_so_the_log_stays_clean(
    name: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reached = []
    monkeypatch.setattr(png_plain.cv2, "imdecode", lambda *args: reached.append(args))
    data = DAMAGED[name](OPENCV["grey"][0])
    assert _outcome(decode_lean, data) == _outcome(_decode_with_pillow, data)  # Pillow's answer, as before
    assert reached == []
    assert capfd.readouterr() == ("", "")


def test_a_plain_png_makes_no_sound_either(capfd: pytest.CaptureFixture[str]) -> None:
    for data, mode in OPENCV.values():
        decode_lean(data, mode, MAX_PIXELS)
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("field", "value"),
    [(24, 16), (24, 4), (25, 3), (25, 4), (25, 6), (26, 1), (27, 1), (28, 1)],
    ids=["16-bit", "4-bit", "palette", "grey+alpha", "RGBA", "compression 1", "filtering 1", "interlaced"],
)
def test_only_8_bit_grey_or_rgb_uninterlaced_headers_are_plain(field: int, value: int) -> None:
    data = bytearray(OPENCV["grey"][0])
    assert png_plain.header(bytes(data)) == (53, 37, 1)
    data[field] = value
    assert png_plain.header(bytes(data)) is None


def test_the_pixel_limit_is_checked_before_any_decoder() -> None:
    header = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 8, 0, 0, 0, 0))
    with pytest.raises(ImageTooLarge, match="9000x9000 = 81000000 pixels, the limit is 40000000"):
        decode_lean(header + _chunk(b"IDAT", b"") + _chunk(b"IEND", b""), "L", MAX_PIXELS)
