"""Fixtures shared by every test folder: real model repositories made by the real export pipeline; markers by folder.

``model_repository`` holds a copy of the committed default model (``lenet5_digits``) and ``small_cnn``, a
CIFAR-size CNN from the zoo exported on the spot. Export-dependent fixtures skip when torch is not installed.
Every test carries its folder's marker (``FOLDER_MARKERS``), so ``-m service`` or ``-m "not integration"``
selects by kind without listing paths.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import service  # noqa: F401  (before any test imports onnxruntime: it turns ORT's telemetry off)

# Apps built in the test process (``create_app``) serve no gRPC unless a test asks: the default port, 8001, may be
# taken on a developer's machine. Servers started as processes get a free gRPC port each (bench/servers.py).
os.environ.setdefault("CNNSERVE_GRPC_PORT", "0")

TESTS_ROOT = Path(__file__).resolve().parent
REPO_ROOT = TESTS_ROOT.parent
DEFAULT_MODEL = "lenet5_digits"

#: The marker each folder under tests/ gives its tests; the load harness talks to real servers like integration.
FOLDER_MARKERS = {
    "service": "service",
    "export": "export",
    "integration": "integration",
    "loadtest": "integration",
    "deploy": "deploy",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--soak-s``: how long tests/integration/test_soak.py runs (its default is CI-sized)."""
    parser.addoption("--soak-s", type=float, default=None, help="soak test duration in seconds")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test under tests/ with its folder's marker (``FOLDER_MARKERS``)."""
    for item in items:
        path = item.path.resolve()
        if path.is_relative_to(TESTS_ROOT):
            marker = FOLDER_MARKERS.get(path.relative_to(TESTS_ROOT).parts[0])
            if marker is not None:
                item.add_marker(marker)


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
