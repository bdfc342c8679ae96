"""Fixtures shared by every test folder: real model repositories made by the real export pipeline.

``model_repository`` holds a copy of the committed default model (``lenet5_digits``) and ``small_cnn``, a
CIFAR-size CNN from the zoo exported on the spot. Export-dependent fixtures skip when torch is not installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "lenet5_digits"


@pytest.fixture(scope="session")
def committed_models() -> Path:
    """The repository's own ``models/`` folder (read-only: copy before changing anything)."""
    return REPO_ROOT / "models"


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory, committed_models: Path) -> Path:
    """A temporary repository with ``lenet5_digits`` (committed, trained) and ``small_cnn`` (exported now)."""
    pytest.importorskip("torch")
    from export.pipeline import ExportSpec, build
    from export.zoo import get

    repo = tmp_path_factory.mktemp("model_repository")
    shutil.copytree(committed_models / DEFAULT_MODEL, repo / DEFAULT_MODEL)
    entry = get("small_cnn")
    spec = ExportSpec(
        name="small_cnn",
        input_size=entry.input_size,
        labels=tuple(f"class_{i}" for i in range(entry.num_classes)),
        max_batch_size=32,
        rounding=entry.rounding,
    )
    build(entry.factory(num_classes=entry.num_classes), spec, repo, architecture=entry.name)
    return repo


@pytest.fixture(scope="session")
def digits_holdout() -> list[tuple[bytes, int]]:
    """The held-out digits the default model's accuracy was measured on, as (PNG bytes, label) pairs."""
    pytest.importorskip("sklearn")
    from export import digits

    _, _, images, labels = digits.split()
    return [(digits.to_png(img), int(label)) for img, label in zip(images, labels, strict=True)]
