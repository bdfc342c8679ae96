"""Images for INT8 calibration and for the check after it, made into model inputs exactly as the service makes them.

Every image goes through ``service.preprocess.preprocess`` with the model's own ``preprocessing`` section, from
encoded bytes (PNG, JPEG, …), the path an uploaded image takes; so the ranges calibration measures are those the
served model will see. Two sources:

- ``digits``: scikit-learn's digits, the seeded split of ``export/digits.py``: calibration on the training part,
  the check on the held-out part, whose labels are the digits (``"0"`` … ``"9"`` where the model has those labels).
- a folder: its image files (by suffix, subfolders included), sorted by relative path; every fifth one counting
  back from the last is held out (20 %, at least one), the rest calibrate. A folder carries no labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from export import digits
from export.errors import ExportError
from service.image_decode import ImageError, ImageTooLarge
from service.preprocess import ImageTransform, preprocess
from service.repository import ModelConfig
from service.settings import Settings

DIGITS = "digits"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
#: One held-out image in every this many of a folder's (the digits split holds out the same fifth).
HOLDOUT_EVERY = 5
#: The service's own decoded-pixel bound: an image it would refuse does not calibrate it either.
MAX_PIXELS: int = Settings.model_fields["max_image_pixels"].default


@dataclass(frozen=True)
class CalibrationSet:
    """Model inputs to calibrate on, held-out inputs to check on, and their class indices where known."""

    source: str  # "digits" or the folder as given
    split: str  # how calibration and held-out images were chosen, for the report
    calibration: npt.NDArray[np.generic]  # (N, C, H, W), as the service feeds the model
    holdout: npt.NDArray[np.generic]
    holdout_labels: npt.NDArray[np.int64] | None  # model output indices; None: no labels, agreement only


def load(source: str, config: ModelConfig, samples: int | None) -> CalibrationSet:
    """The calibration and held-out inputs of ``source`` (``digits`` or a folder) for ``config``'s model.

    Args:
        samples: at most this many calibration images (the first ones of the split); None: all of them.

    Raises:
        ExportError: ``calibration``: the model takes no images, the folder is missing or holds too few images, or
            an image cannot be decoded (named).
    """
    if config.preprocessing is None:
        raise ExportError("calibration", f"{config.name} has no preprocessing section: it takes no images")
    if samples is not None and samples < 1:
        raise ExportError("calibration", f"--samples {samples}: calibration needs at least one image")
    transform = ImageTransform.from_config(config.preprocessing)
    if source == DIGITS:
        return _digits(config, transform, samples)
    return _folder(Path(source), transform, samples)


def _inputs(encoded: list[tuple[str, bytes]], transform: ImageTransform) -> npt.NDArray[np.generic]:
    """Each (name, bytes) pair through the service's decode and preprocessing, stacked into one batch."""
    arrays = []
    for name, data in encoded:
        try:
            arrays.append(preprocess(data, transform, MAX_PIXELS))
        except (ImageError, ImageTooLarge) as err:
            raise ExportError("calibration", f"{name}: {err}") from err
    return np.stack(arrays)


def _digits(config: ModelConfig, transform: ImageTransform, samples: int | None) -> CalibrationSet:
    x_train, _, x_hold, y_hold = digits.split()
    x_train = x_train[:samples]
    wanted = [str(d) for d in range(10)]
    index = {label: i for i, label in enumerate(config.labels)}
    labelled = all(label in index for label in wanted)
    return CalibrationSet(
        source=DIGITS,
        split=f"sklearn digits, seed {digits.SEED}: training part calibrates, held-out {digits.HOLDOUT_FRACTION:g}",
        calibration=_inputs([(f"digits train[{i}]", digits.to_png(x)) for i, x in enumerate(x_train)], transform),
        holdout=_inputs([(f"digits held-out[{i}]", digits.to_png(x)) for i, x in enumerate(x_hold)], transform),
        holdout_labels=np.array([index[str(d)] for d in y_hold], dtype=np.int64) if labelled else None,
    )


def _folder(folder: Path, transform: ImageTransform, samples: int | None) -> CalibrationSet:
    if not folder.is_dir():
        raise ExportError("calibration", f"{folder}: no such folder (give `digits` or a folder of images)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 2:
        raise ExportError(
            "calibration",
            f"{folder} holds {len(files)} image file(s) ({', '.join(IMAGE_SUFFIXES)}); at least 2 are needed, "
            "one to calibrate and one to check",
        )
    held = set(range(len(files) - 1, -1, -HOLDOUT_EVERY))
    calibrate = [p for i, p in enumerate(files) if i not in held][:samples]
    holdout = [p for i, p in enumerate(files) if i in held]
    return CalibrationSet(
        source=str(folder),
        split=f"sorted by path, every {HOLDOUT_EVERY}th counting back from the last held out",
        calibration=_inputs([(str(p), p.read_bytes()) for p in calibrate], transform),
        holdout=_inputs([(str(p), p.read_bytes()) for p in holdout], transform),
        holdout_labels=None,
    )
