"""Image bytes → model input, exactly as torchvision's ``Resize(int) → CenterCrop → ToTensor → Normalize``; and top-k.

A model whose graph normalises itself (``normalize: graph``, a uint8 input) gets the pixels before ``ToTensor``.

Pure functions, run in the preprocessing thread pool. Decoding is ``service/image_decode.py``'s. With ``fidelity:
exact`` the resize is Pillow's own (torchvision calls it for PIL images, with its built-in antialiasing), and the only
difference from torchvision is float rounding in the fused normalisation (and a level or two in images beyond 16:1,
of which only the crop window is resized: see ``_WHOLE_AXIS_MAX``). The default, ``fast``, decodes a JPEG at least
twice the resize target at a reduced DCT scale and resizes with OpenCV (``service/preprocess_fast.py``); see
``FAST_BUDGET`` for what that costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import Image

from service.image_decode import as_image, decode, decode_lean
from service.preprocess_fast import FastPlan, resize_crop
from service.repository import Preprocessing

#: Largest absolute difference from torchvision's float32 output that the parity tests accept.
PARITY_TOLERANCE = 1e-5
#: How far ``fidelity: fast`` may move the model input from the exact path, in normalised units (with ImageNet's
#: std, 1.0 is about 57 levels of 255): the largest difference at any value, and the mean over the input. Measured on
#: scikit-image's photographs and a generated set (tests/service/test_fast_path.py): see docs/api.md.
FAST_BUDGET = (1.0, 0.05)

_RESAMPLE = {name: Image.Resampling[name.upper()] for name in ("bilinear", "bicubic", "nearest")}
#: Longest axis, in multiples of the resize target, that is resized whole (torchvision's pixels bit for bit): aspect
#: ratios up to 16:1. Beyond, only the crop window is resized, within a few levels of torchvision's uint8 pixels
#: (Pillow's window arithmetic rounds differently) instead of an intermediate as long as the client made the image.
_WHOLE_AXIS_MAX = 16
#: Source pixels the widest filter (bicubic) reads on either side of a sample point, before downscaling widens it.
_FILTER_SUPPORT = 2

#: One image as the model takes it: normalised float32, or uint8 pixels for a graph that normalises them itself.
ModelInput = npt.NDArray[np.float32] | npt.NDArray[np.uint8]


@dataclass(frozen=True)
class ImageTransform:
    """A model's ``Preprocessing`` compiled once: Pillow constants and the fused normalisation coefficients.

    ``ToTensor`` then ``Normalize`` computes ``(x / 255 - mean) / std`` (or ``(1 - x / 255 - mean) / std`` when
    inverting); that is ``x * scale + bias`` per channel, one multiply and one add over uint8 pixels. With
    ``in_graph`` the model does that itself: it gets the pixels, inverted here (``255 - x``, exact) when asked.
    """

    resize: int
    crop: tuple[int, int]
    mode: str
    resample: Image.Resampling
    scale: npt.NDArray[np.float32]  # (C, 1, 1)
    bias: npt.NDArray[np.float32]  # (C, 1, 1)
    jpeg_min_side: int = 0  # a JPEG may decode scaled while both sides stay this long; 0: every pixel
    in_graph: bool = False  # the graph normalises: hand it the uint8 pixels
    invert: bool = False  # applied to the pixels when in_graph (otherwise folded into scale and bias)
    fast: bool = False  # resize with OpenCV (service/preprocess_fast.py) where it can

    @classmethod
    def from_config(cls, pre: Preprocessing) -> ImageTransform:
        """Compile a repository ``Preprocessing`` section."""
        mean = np.asarray(pre.mean, dtype=np.float64)
        std = np.asarray(pre.std, dtype=np.float64)
        sign = -1.0 if pre.invert else 1.0
        offset = 1.0 if pre.invert else 0.0
        scale = (sign / (255.0 * std)).astype(np.float32).reshape(-1, 1, 1)
        bias = ((offset - mean) / std).astype(np.float32).reshape(-1, 1, 1)
        fast = pre.fidelity == "fast"
        min_side = pre.resize if fast else 0
        resample = _RESAMPLE[pre.interpolation]
        in_graph = pre.normalize == "graph"
        return cls(
            pre.resize, pre.crop, pre.color_mode, resample, scale, bias, min_side, in_graph, pre.invert,
            fast=fast and pre.interpolation == "bilinear",
        )  # fmt: skip


def _crop_origin(size: int, crop: int) -> int:
    """torchvision's CenterCrop offset; when the crop is larger it pads by ``(crop - size) // 2`` first."""
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


class _Axis(NamedTuple):
    """One axis of the resize (a named tuple: made twice an image, it must be cheap): the source window ``[start,
    end)`` resized to ``out`` pixels, then ``offset`` more pixels skipped by the crop still to do. ``exact``: Pillow's
    pixels are those of the whole-axis resize."""

    start: float
    end: float
    out: int
    offset: int
    exact: bool

    def reach(self, size: int) -> tuple[int, int]:
        """The source pixels the filter reads for the window: the window widened by the filter's support."""
        margin = _FILTER_SUPPORT * max(1.0, (self.end - self.start) / self.out) + 1
        return max(0, math.floor(self.start - margin)), min(size, math.ceil(self.end + margin))


def _axis_plan(size: int, new: int, crop: int, whole_max: int) -> _Axis:
    """One axis of the resize, in source pixels.

    Pillow samples output pixel ``i`` at source ``start + (i + 0.5) * scale``; resizing only the crop window gives
    the pixels of the full resize exactly when those products are exact in floating point, which holds when the
    scale ``size / new`` is a dyadic fraction (224→256, or any side resized to a power of two). Otherwise the axis
    is resized whole and cropped after, as torchvision does, while that costs at most ``whole_max`` pixels; a
    longer axis (an aspect ratio beyond ``_WHOLE_AXIS_MAX``) has only its window resized, so nothing scales with
    the shape the client chose.
    """
    offset = _crop_origin(new, crop)
    denominator = new // math.gcd(size, new)  # of the scale size / new in lowest terms
    exact = denominator & (denominator - 1) == 0 and denominator <= 1 << 20
    if size != new and offset >= 0 and offset + crop <= new and (exact or new > whole_max):
        # Integer true division is correctly rounded, as float(Fraction(...)) is, at a tenth of the cost.
        return _Axis(offset * size / new, (offset + crop) * size / new, crop, 0, exact)
    return _Axis(0.0, float(size), new, offset, True)


def resize_crop_normalise(image: Image.Image, transform: ImageTransform) -> ModelInput:
    """Resize the shorter side to ``transform.resize``, centre-crop, normalise into a ``(C, H, W)`` float32 array
    (or, for a graph that normalises itself, stop at the ``(C, H, W)`` uint8 pixels).

    Every image made here is bounded by the model's input, not by the source's shape: at most ``_WHOLE_AXIS_MAX``
    times ``resize`` pixels along the long axis (the source's own size where it is shrunk).
    """
    width, height = image.size
    new_w, new_h = _resized(width, height, transform.resize)
    crop_h, crop_w = transform.crop
    whole_max = _WHOLE_AXIS_MAX * transform.resize
    x, y = _axis_plan(width, new_w, crop_w, whole_max), _axis_plan(height, new_h, crop_h, whole_max)
    if (new_w, new_h) != (width, height):
        left = top = 0
        if not (x.exact and y.exact):
            # Pillow takes the window as float32, a fraction of a pixel off millions of pixels from the origin: cut
            # the source down to what the filter reads, so the window's coordinates stay small. (An integer shift
            # keeps an exact axis exact.)
            (left, right), (top, bottom) = x.reach(width), y.reach(height)
            image = image.crop((left, top, right, bottom))
        box = (x.start - left, y.start - top, x.end - left, y.end - top)  # whole numbers off doubles: exact
        image = image.resize((x.out, y.out), transform.resample, box=box)
    if (y.offset, x.offset, crop_h, crop_w) != (0, 0, y.out, x.out):
        image = image.crop((x.offset, y.offset, x.offset + crop_w, y.offset + crop_h))  # fills outside with 0
    return _normalise(np.asarray(image).reshape(crop_h, crop_w, -1), transform)


def _resized(width: int, height: int, resize: int) -> tuple[int, int]:
    """torchvision's ``Resize(resize)``: the shorter side becomes ``resize``, the longer keeps the aspect ratio."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize, int(resize * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _normalise(pixels: npt.NDArray[np.uint8], transform: ImageTransform) -> ModelInput:
    """``(H, W, C)`` uint8 pixels → the ``(C, H, W)`` model input (normalised, or the pixels for ``in_graph``)."""
    # Transposing the uint8 pixels into a contiguous CHW copy first makes the float arithmetic run on
    # contiguous memory: four times faster than normalising through a strided view. Converting to float32 first
    # and scaling in place gives the same values as a mixed uint8 × float32 multiply, without numpy's casting
    # buffers (a few per cent of the whole function).
    pixels = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    if transform.in_graph:
        return 255 - pixels if transform.invert else pixels
    out = pixels.astype(np.float32)
    out *= transform.scale
    out += transform.bias
    return out


def preprocess(data: bytes, transform: ImageTransform, max_pixels: int) -> ModelInput:
    """Decode and transform one image; the function the preprocessing pool runs."""
    if not transform.fast:
        return resize_crop_normalise(decode(data, transform.mode, max_pixels, transform.jpeg_min_side), transform)
    decoded = decode_lean(data, transform.mode, max_pixels, transform.jpeg_min_side)
    width, height = decoded.size if isinstance(decoded, Image.Image) else (decoded.shape[1], decoded.shape[0])
    new_w, new_h = _resized(width, height, transform.resize)
    crop_h, crop_w = transform.crop
    origin = (_crop_origin(new_h, crop_h), _crop_origin(new_w, crop_w))
    whole_max = _WHOLE_AXIS_MAX * transform.resize
    plan = FastPlan((new_w, new_h), transform.crop, origin)
    if plan.fits((width, height), whole_max):  # enlarged, so smaller than the target: a small array too
        if isinstance(decoded, Image.Image):
            decoded = np.asarray(decoded, dtype=np.uint8).reshape(height, width, -1)
        return _normalise(resize_crop(decoded, plan), transform)
    if not isinstance(decoded, Image.Image):
        decoded = as_image(decoded, transform.mode)
    return resize_crop_normalise(decoded, transform)


def softmax(logits: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Row-wise softmax of ``(N, K)`` logits, shifted by the row maximum so large logits do not overflow."""
    shifted = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k(scores: npt.NDArray[np.floating], k: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.floating]]:
    """The ``k`` best columns of every row, best first; ties keep the lower class index first."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, scores[np.arange(len(scores))[:, None], order]  # as take_along_axis, at half its overhead
