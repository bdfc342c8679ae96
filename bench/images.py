"""Real images for the image-path benchmarks: scikit-image's photographs as JPEGs, and the repo's digit PNGs.

ResNet-18 gets 224×224 JPEGs (the size the preprocessing bar is stated for), the CIFAR-size CNN 32×32 JPEGs,
LeNet-5 the committed ``samples/digits`` PNGs. Written once into the bench cache and reused.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
DIGITS = REPO_ROOT / "samples" / "digits"
#: scikit-image's bundled colour photographs (no download needed).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "colorwheel", "cat", "hubble_deep_field")


def jpeg_bytes(photo: np.ndarray) -> bytes:
    """``photo`` (greyscale or colour) as an RGB JPEG of quality 90, at its own size."""
    buffer = io.BytesIO()
    Image.fromarray(photo).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def square_jpeg(photo: np.ndarray, size: int) -> bytes:
    """Resize the shorter side to ``size``, centre-crop a square, encode as JPEG quality 90."""
    image = Image.fromarray(photo).convert("RGB")
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))))
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return jpeg_bytes(np.asarray(image.crop((left, top, left + size, top + size))))


def photo_jpegs(folder: Path, size: int) -> Path:
    """``folder`` filled with one ``size``×``size`` JPEG per photograph (kept if already there)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        path = folder / f"{name}.jpg"
        if not path.exists():
            path.write_bytes(square_jpeg(getattr(skimage.data, name)(), size))
    return folder


def image_folder(cache: Path, model: str) -> Path:
    """The image set for ``model``'s REST benchmark."""
    if model == "lenet5_digits":
        return DIGITS
    if model == "resnet18":
        return photo_jpegs(cache / "images" / "jpeg224", 224)
    return photo_jpegs(cache / "images" / "jpeg32", 32)
