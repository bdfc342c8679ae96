"""The fast preprocessing path (``fidelity: fast``, the default): OpenCV's SIMD resize where an image is enlarged.

Enlarging a 224×224 JPEG's centre to 256 took Pillow (the exact path's resize, as torchvision's) about half of the
image's preprocessing here; OpenCV's bilinear resize of the same pixels is several times faster and differs only in
how it rounds its fixed-point weights (a level of 255 at most). Shrinking stays with Pillow, after the JPEG decoded
at a reduced DCT scale: OpenCV's antialiased shrink (``INTER_AREA``) was slower than Pillow's at the factors below 2
that remain (2.2 against 1.0 ms for a 600×400 photograph), and its plain bilinear one aliases (2.2 normalised units
off on a 1000×872 photograph). ``FAST_BUDGET`` in ``service/preprocess.py`` states what the fast path may cost
against the exact path, and the tests measure it.

Only bilinear models take it (OpenCV's bicubic kernel is not Pillow's); an image whose long axis would be resized
beyond ``whole_max`` pixels, or that is smaller than the crop, takes the exact path too, which bounds and pads those.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import numpy.typing as npt


def configure_opencv() -> None:
    """Keep OpenCV on the calling thread: the preprocessing pool is the parallelism, and OpenCV's own pool would
    contend with it and with ONNX Runtime. Process-wide, so it is set at startup, as ``configure_pillow``."""
    cv2.setNumThreads(0)


class FastPlan(NamedTuple):
    """How the fast path makes the crop: enlarge the whole image to ``size`` (width, height), then cut ``crop``
    (height, width) from ``origin`` (top, left)."""

    size: tuple[int, int]
    crop: tuple[int, int]
    origin: tuple[int, int]

    def fits(self, source: tuple[int, int], whole_max: int) -> bool:
        """Whether the fast path can make it from a ``source`` image (width, height); if not, Pillow must (module
        docstring): the image is shrunk, resized past ``whole_max`` pixels, or smaller than the crop."""
        (width, height), (new_w, new_h), (crop_h, crop_w), (top, left) = source, self.size, self.crop, self.origin
        if new_w < width or new_h < height or max(new_w, new_h) > whole_max:
            return False
        return top >= 0 and left >= 0 and top + crop_h <= new_h and left + crop_w <= new_w


def resize_crop(pixels: npt.NDArray[np.uint8], plan: FastPlan) -> npt.NDArray[np.uint8]:
    """``(H, W, C)`` pixels enlarged and cropped as ``plan`` says (a view where no resize is needed)."""
    (new_w, new_h), (crop_h, crop_w), (top, left) = plan
    height, width, channels = pixels.shape
    if (new_w, new_h) != (width, height):
        resized = cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        pixels = resized.reshape(new_h, new_w, channels).astype(np.uint8, copy=False)  # OpenCV drops a lone axis
    return pixels[top : top + crop_h, left : left + crop_w]
