"""Image bytes → a Pillow image (or its pixels as an array), with every intermediate bounded by the pixel limit.

JPEGs decode with simplejpeg (libjpeg-turbo, bit-identical to Pillow's decoder at full scale). Asked for a smallest
side, the decoder scales in the DCT by 1/2, 1/4 or 1/8 while both sides stay at least that long: a 512-pixel photo
for a model resizing to 256 decodes at half scale, a quarter of the pixels, and the resize that follows has less to
do. A small plain PNG already in the model's mode (``service/png_plain.py``) decodes with OpenCV, Pillow's pixels
exactly. Everything else decodes with Pillow.
"""

from __future__ import annotations

import io
import os

import simplejpeg
from PIL import Image, UnidentifiedImageError

from service import png_plain
from service.png_plain import Pixels

_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = png_plain.SIGNATURE
_CHANNELS = {"L": 1, "RGB": 3}
#: A TIFF decodes a tile at a time, into a buffer the size of the tile the file declares whatever the image's size
#: (a 150-byte 1x1 TIFF declaring one 65536x16384 deflate tile took 1 GiB): a tile may hold the image's pixels or 1 M.
_TILE_PIXELS_MIN = 1 << 20
#: Pillow images freed to a cache of this many memory blocks instead of back to the C allocator. Uncached, every
#: decoded or resized image was fresh memory from the kernel: about 250 page faults an image, a third of the
#: preprocessing time for 224×224 JPEGs. Blocks are at most 16 MiB.
_PILLOW_BLOCKS_MAX = 8


def configure_pillow() -> None:
    """Give Pillow its cache of freed image blocks, unless the operator set ``PILLOW_BLOCKS_MAX`` (Pillow reads it).

    The setting is process-wide, so whoever runs preprocessing calls this once at startup (the app factory, the
    preprocessing benchmark) rather than this module changing it as a side effect of being imported.
    """
    if "PILLOW_BLOCKS_MAX" not in os.environ:
        Image.core.set_blocks_max(_PILLOW_BLOCKS_MAX)


class ImageError(ValueError):
    """The bytes are not a decodable image (corrupt, truncated, or a format Pillow does not read)."""


class ImageTooLarge(ValueError):
    """The image declares more pixels than allowed (a decompression bomb, or simply too big)."""


def _check_pixels(width: int, height: int, max_pixels: int, what: str = "image") -> None:
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{what} is {width}x{height} = {width * height} pixels, the limit is {max_pixels}; send a smaller {what}"
        )


def _scale_factor(width: int, height: int, min_side: int) -> int:
    """The largest of 1, 2, 4, 8 that shrinks both sides to at least ``min_side`` (1 when there is none).

    Only powers of two: libjpeg-turbo's other n/8 scales took longer than decoding every pixel (a 451x300 photo at
    7/8: 341 images per CPU-second against 475).
    """
    factor = 1
    while min_side and factor < 8 and min(width, height) >= 2 * factor * min_side:
        factor *= 2
    return factor


def _jpeg_pixels(data: bytes, mode: str, max_pixels: int, min_side: int) -> Pixels | None:
    """simplejpeg's decode: ``(H, W, 1)`` for a grey JPEG wanted as ``L``, otherwise ``(H, W, 3)`` RGB; None when
    it cannot (CMYK, damaged), so Pillow gets to try and to explain."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        _check_pixels(width, height, max_pixels)
        factor = _scale_factor(width, height, min_side)
        scale = {"min_height": -(-height // factor), "min_width": -(-width // factor)}  # exactly 1/factor
        grey = mode == "L" and colorspace == "Gray"
        pixels: Pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY" if grey else "RGB", **scale)
        return pixels
    except ValueError as err:
        if isinstance(err, ImageTooLarge):
            raise
        return None


def _png_pixels(data: bytes, mode: str, max_pixels: int) -> Pixels | None:
    """A plain PNG's pixels (``service/png_plain.py``) when they are ``mode``'s, after the pixel limit; else None."""
    found = png_plain.header(data)
    if found is None or found[2] != _CHANNELS[mode]:
        return None
    width, height, channels = found
    _check_pixels(width, height, max_pixels)
    return png_plain.decode(data, width, height, channels)


def as_image(pixels: Pixels, mode: str) -> Image.Image:
    """``(H, W, 1)`` grey or ``(H, W, 3)`` RGB pixels as a Pillow image of ``mode``: colour to grey through Pillow's
    luma weights, exactly as ``Image.open(...).convert("L")``."""
    if pixels.shape[2] == 1:
        return Image.fromarray(pixels[:, :, 0], "L")
    rgb = Image.fromarray(pixels, "RGB")
    return rgb if mode == "RGB" else rgb.convert(mode)


def decode(data: bytes, mode: str, max_pixels: int, min_side: int = 0) -> Image.Image:
    """Decode image bytes into a Pillow image of ``mode`` (``L`` or ``RGB``), refusing oversize images early.

    ``min_side`` > 0 lets a JPEG decode at a reduced scale whose sides are both at least that long (or whole).

    Decoding holds at most 8 bytes per admitted pixel in images (the decoded image and its conversion, at most 4 bytes
    a pixel each; or simplejpeg's 3-byte array and its Pillow copy), plus a tiled TIFF's tile (``_TILE_PIXELS_MIN``)
    or a progressive JPEG's coefficients (libjpeg keeps them whole: peak RSS measured 9 bytes a pixel in all).

    Raises:
        ImageTooLarge: the header declares more than ``max_pixels`` pixels, or a TIFF tile more than it may.
        ImageError: the bytes are not a complete image in a readable format.
    """
    decoded = decode_lean(data, mode, max_pixels, min_side)
    return decoded if isinstance(decoded, Image.Image) else as_image(decoded, mode)


def decode_lean(data: bytes, mode: str, max_pixels: int, min_side: int = 0) -> Pixels | Image.Image:
    """``decode``, minus the Pillow copy where it can: a JPEG that decodes straight into ``mode``, or a PNG OpenCV
    decodes, comes back as an ``(H, W, C)`` uint8 array; anything else as ``decode``'s image. Same limits and errors."""
    if data[:8] == _PNG_MAGIC:
        png = _png_pixels(data, mode, max_pixels)
        return png if png is not None else _decode_with_pillow(data, mode, max_pixels)
    pixels = _jpeg_pixels(data, mode, max_pixels, min_side) if data[:2] == _JPEG_MAGIC else None
    if pixels is not None and pixels.shape[2] == _CHANNELS[mode]:
        return pixels
    return as_image(pixels, mode) if pixels is not None else _decode_with_pillow(data, mode, max_pixels)


def _decode_with_pillow(data: bytes, mode: str, max_pixels: int) -> Image.Image:
    """Every format but the JPEGs simplejpeg takes; see ``decode``."""
    try:
        image = Image.open(io.BytesIO(data))
        _check_pixels(image.width, image.height, max_pixels)
        tags = getattr(image, "tag_v2", {})  # TIFF only: see _TILE_PIXELS_MIN
        tile_width, tile_length = tags.get(322), tags.get(323)  # the TileWidth and TileLength tags
        if isinstance(tile_width, int) and isinstance(tile_length, int):
            tile_max = min(max_pixels, max(image.width * image.height, _TILE_PIXELS_MIN))
            _check_pixels(tile_width, tile_length, tile_max, "TIFF tile")
        image.load()
    except UnidentifiedImageError as err:
        raise ImageError(
            f"cannot identify an image in {len(data)} bytes; send JPEG, PNG, WebP, BMP, GIF or TIFF"
        ) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's own guard fires inside Image.open, before ours can read the size (its warning is an
        # exception where warnings are errors).
        raise ImageTooLarge(f"{err}; the limit is {max_pixels} pixels, send a smaller image") from err
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageTooLarge):
            raise
        raise ImageError(f"image data is corrupt or truncated ({err}); send the complete file") from err
    try:
        return image if image.mode == mode else image.convert(mode)
    except ValueError as err:  # Pillow has no conversion from some modes (LAB to L)
        raise ImageError(
            f"cannot convert a {image.mode} image to {mode} ({err}); send an RGB, greyscale or palette image"
        ) from err


def declared_pixels(data: bytes) -> int | None:
    """The pixel count an image's header declares, read without decoding; None when there is no readable header."""
    if (sides := png_plain.size(data)) is not None:
        return sides[0] * sides[1]
    try:
        if data[:2] == _JPEG_MAGIC:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return int(width * height)
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None
