"""scikit-learn's bundled handwritten digits as images: the seeded held-out split and PNG encoding.

The 8×8 images hold ink intensities 0–16 (bright ink on a dark ground, like MNIST); they become uint8 greyscale
images, which is exactly what a client would upload. Training, tests and samples all use this one split.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
HOLDOUT_FRACTION = 0.2

Images = npt.NDArray[np.uint8]
Labels = npt.NDArray[np.int64]


def split() -> tuple[Images, Labels, Images, Labels]:
    """(train images, train labels, held-out images, held-out labels), stratified, seeded, uint8 8×8."""
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    x_train, x_hold, y_train, y_hold = train_test_split(
        images, labels, test_size=HOLDOUT_FRACTION, random_state=SEED, stratify=labels
    )
    return x_train, y_train, x_hold, y_hold


def to_png(image: Images) -> bytes:
    """Encode one greyscale image as PNG, as a client would send it."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
